"""Training: task inference, every family x task end to end, weights, calibration, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.train import (EstimatorSpec, FitData, TrainSpec, fit_estimator, infer_task, load_params, sample_weights,
                                    train_model)

FAST = {"baseline": {}, "linear": {}, "forest": {"n_estimators": 20}, "xgboost": {"n_estimators": 30}}


@pytest.mark.parametrize("values,task,classes", [
    ([True, False, True], "binary", [False, True]),
    (["b", "a", "c", "a"], "multiclass", ["a", "b", "c"]),
    ([0, 1, 1, 0], "binary", [0, 1]),
    ([0.0, 1.0, 1.0], "binary", [0, 1]),
    ([1, 2, 3, 4, 5], "multiclass", [1, 2, 3, 4, 5]),
    (list(range(100)), "regression", None),
    ([0.5, 1.5, 2.25], "regression", None),
])
def test_infer_task(values, task, classes):
    assert infer_task(pd.Series(values)) == (task, classes)


def test_task_override_and_errors():
    assert infer_task(pd.Series([1, 2, 3]), "regression") == ("regression", None)
    with pytest.raises(UsageError):
        infer_task(pd.Series([1, 2]), "ranking")
    with pytest.raises(InputError, match="only one class"):
        infer_task(pd.Series(["a", "a", "a"]))
    with pytest.raises(InputError, match="has 3 classes"):
        infer_task(pd.Series(["a", "b", "c"]), "binary")
    with pytest.raises(InputError, match="regression"):
        infer_task(pd.Series(["a", "b"]), "regression")


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("family", ["baseline", "linear", "forest", "xgboost"])
def test_every_family_and_task(small_tables, family, task):
    t = small_tables[task]
    bundle, result = train_model(str(t["train"]), TrainSpec(family=family, target=t["target"], params=FAST[family]), valid=str(t["valid"]))
    assert result.task == task and result.evaluated_on == "valid"
    assert set(result.baselines) == {"zero_rule", "random"}
    primary = result.primary_metric
    model, zero = result.metrics["valid"][primary], result.baselines["zero_rule"][primary]
    if family == "baseline":
        assert model == pytest.approx(zero, rel=0.05)
    else:
        better = model > zero if primary == "auc" else model < zero
        assert better, (family, task, model, zero)
        assert result.top_features and result.top_features[0]["importance"] > 0
    test = pd.read_parquet(t["test"])
    out = bundle.predict(test)
    assert len(next(iter(out.values()))) == len(test)


def test_no_valid_means_train_metrics_with_a_warning(small_tables):
    t = small_tables["regression"]
    _, result = train_model(str(t["train"]), TrainSpec(family="linear", target=t["target"]))
    assert result.evaluated_on == "train" and result.metrics["valid"] is None
    assert any("no --valid" in w for w in result.warnings)


def test_calibration_is_stored_and_used(small_tables):
    t = small_tables["binary"]
    bundle, result = train_model(str(t["train"]), TrainSpec(family="forest", target=t["target"], params=FAST["forest"],
                                                            calibrate="isotonic"), valid=str(t["valid"]))
    assert bundle.predictor.calibrator is not None and result.calibrate == "isotonic"
    assert bundle.manifest["recipe"]["calibrate"] == "isotonic"
    with pytest.raises(UsageError, match="--valid"):
        train_model(str(t["train"]), TrainSpec(family="linear", target=t["target"], calibrate="sigmoid"))
    with pytest.raises(UsageError, match="--calibrate"):
        train_model(str(t["train"]), TrainSpec(target=t["target"], calibrate="platt"), valid=str(t["valid"]))


def test_class_weight_balanced_raises_minority_recall(small_tables):
    t = small_tables["binary"]
    spec = TrainSpec(family="linear", target=t["target"])
    _, plain = train_model(str(t["train"]), spec, valid=str(t["valid"]))
    _, weighted = train_model(str(t["train"]), spec.replace(class_weight="balanced"), valid=str(t["valid"]))
    assert weighted.metrics["valid"]["recall"] > plain.metrics["valid"]["recall"]


def test_sample_weights():
    y = np.array([0, 0, 0, 1])
    w = sample_weights(pd.DataFrame({"w": [1.0, 1.0, 1.0, 1.0]}), None, "balanced", y, "binary", 2)
    assert w[3] == pytest.approx(3 * w[0]) and w.sum() == pytest.approx(4)
    df = pd.DataFrame({"w": [1.0, 2.0, 0.0, 1.0]})
    assert sample_weights(df, "w", None, y, "binary", 2).tolist() == [1.0, 2.0, 0.0, 1.0]
    with pytest.raises(InputError, match="non-negative"):
        sample_weights(pd.DataFrame({"w": [1.0, -1.0, 1.0, 1.0]}), "w", None, y, "binary", 2)
    with pytest.raises(UsageError):
        sample_weights(df, None, "inverse", y, "binary", 2)
    with pytest.raises(UsageError):
        sample_weights(df, None, "balanced", y.astype(float), "regression", 0)


def test_sample_weight_column_is_not_a_feature(small_tables, tmp_path):
    t = small_tables["regression"]
    df = pd.read_parquet(t["train"]).assign(weight=lambda d: np.where(d.index % 2 == 0, 1.0, 3.0))
    df.to_parquet(tmp_path / "w.parquet", index=False)
    bundle, _ = train_model(str(tmp_path / "w.parquet"), TrainSpec(family="linear", target="ltv", sample_weight="weight"))
    assert "weight" not in {c["name"] for c in bundle.input_schema}
    assert bundle.manifest["recipe"]["sample_weight"] == "weight"


def test_fit_estimator_on_matrices():
    from mlsys_cli.models.families import get_family

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    est = fit_estimator(get_family("xgboost"), EstimatorSpec("binary", n_classes=2, params={"n_estimators": 10}), FitData(X, y))
    assert est.predict_proba(X).shape == (200, 2) and est.fit_info_["n_estimators"] == 10
    with pytest.raises(UsageError, match="unknown parameter"):
        fit_estimator(get_family("linear"), EstimatorSpec("binary", n_classes=2, params={"alpha": 1}), FitData(X, y))


def test_load_params(tmp_path):
    (tmp_path / "plain.json").write_text('{"max_depth": 3}')
    (tmp_path / "tuned.json").write_text('{"family": "forest", "params": {"n_estimators": 50}, "metric": "auc"}')
    (tmp_path / "bad.json").write_text("max_depth: 3")
    (tmp_path / "list.json").write_text("[1, 2]")
    assert load_params(tmp_path / "plain.json") == ({"max_depth": 3}, None)
    assert load_params(tmp_path / "tuned.json") == ({"n_estimators": 50}, "forest")
    for name in ("bad.json", "list.json", "missing.json"):
        with pytest.raises(InputError):
            load_params(tmp_path / name)


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({"x": x, "color": rng.choice(["red", "blue", "green"], n), "y": (x > 0).astype(int)})


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.assign(y=1), "one class"),
    (lambda d: d.assign(y=d["y"].astype(float).where(d.index != 3)), "missing or infinite"),
    (lambda d: d.assign(y=np.where(d.index == 5, np.inf, d["x"])), "missing or infinite"),
    # An empty label in Parquet is "" (in a CSV, null): missing either way, never a class "".
    (lambda d: d.assign(y=np.where(d.index == 7, "", np.where(d["y"] == 1, "yes", "no"))), "1 missing .* at row 7"),
    (lambda d: d.assign(y=np.where(d.index == 7, "  ", np.where(d["y"] == 1, "yes", "no"))), "1 missing .* at row 7"),
    (lambda d: d.drop(columns="y"), "no target column 'y'"),
])
def test_bad_training_input(tmp_path, mutate, message):
    mutate(_frame()).to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(InputError, match=message):
        train_model(str(tmp_path / "t.parquet"), TrainSpec(family="linear", target="y"))


def test_constant_and_empty_columns_are_left_out_with_a_warning(tmp_path):
    _frame().assign(flat=7.0, empty=np.nan).to_parquet(tmp_path / "t.parquet", index=False)
    bundle, result = train_model(str(tmp_path / "t.parquet"), TrainSpec(family="linear", target="y"))
    assert any("'flat' is constant" in w for w in result.warnings), result.warnings
    assert any("'empty' is entirely missing" in w for w in result.warnings), result.warnings
    # Not learned from, so not required to predict: a table without them predicts the same.
    with_cols = _frame().assign(flat=7.0, empty=np.nan)
    np.testing.assert_array_equal(bundle.predict(with_cols)["probabilities"], bundle.predict(_frame())["probabilities"])


def test_drop_accepts_a_constant_column(tmp_path):
    _frame().assign(flat=7.0).to_parquet(tmp_path / "t.parquet", index=False)
    bundle, _ = train_model(str(tmp_path / "t.parquet"), TrainSpec(family="linear", target="y", features={"drop": ["flat"]}))
    assert "flat" not in {c["name"] for c in bundle.input_schema}


def test_valid_with_an_unseen_class_is_refused(tmp_path):
    _frame().to_parquet(tmp_path / "t.parquet", index=False)
    _frame(seed=1).assign(y=2).to_parquet(tmp_path / "v.parquet", index=False)
    with pytest.raises(InputError, match="v.parquet: the target holds label the model does not know: 2"):
        train_model(str(tmp_path / "t.parquet"), TrainSpec(family="linear", target="y"), valid=str(tmp_path / "v.parquet"))


def test_features_bundle_for_another_target_is_refused(tmp_path):
    from mlsys_cli.bundle import BundleWriter
    from mlsys_cli.features import Featurizer

    df = _frame().assign(z=lambda d: d["x"] * 2 + 1)
    df.to_parquet(tmp_path / "t.parquet", index=False)
    fz = Featurizer(target="z", preset="trees").fit(df)
    writer = BundleWriter("features", {"target": "z"})
    fz.save(writer, prefix="features/")
    writer.write(tmp_path / "f.mlsys")
    with pytest.raises(InputError, match="fitted for target 'z'"):
        train_model(str(tmp_path / "t.parquet"), TrainSpec(target="y", features=str(tmp_path / "f.mlsys")))


def test_an_estimator_in_fitrun_init_is_refused_not_dropped(small_tables):
    # train_model continues from a whole model (featurizer + estimator) given as init=; an estimator
    # alone in FitRun(init=) would otherwise be replaced without a word.
    from mlsys_cli.models.train import FitRun
    with pytest.raises(TypeError, match="init="):
        t = small_tables["binary"]
        train_model(t["train"], TrainSpec(family="linear", target=t["target"]), run=FitRun(init=object()))
