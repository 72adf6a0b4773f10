"""models/ensemble.py: combiners, honest cross-fitting, the ensemble bundle and its refusals."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.bundle import ModelBundle
from mlsys_cli.models.combiner import METHODS, Combiner, cross_fit
from mlsys_cli.models.ensemble import EnsembleSpec, KeptPredictor, StudySource, build_ensemble, ensemble, study_members
from mlsys_cli.models.train import TrainSpec, train_model


def _probs(p1):
    return np.column_stack([1 - p1, p1])


@pytest.fixture(scope="module")
def synthetic():
    """Three binary members on 400 rows: an informative one, a weaker one and pure noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    logit = 2.5 * (y - 0.5)
    good = 1 / (1 + np.exp(-(logit + rng.normal(0, 1.0, 400))))
    weak = 1 / (1 + np.exp(-(0.5 * logit + rng.normal(0, 1.5, 400))))
    noise = rng.uniform(0.05, 0.95, 400)
    return np.stack([_probs(good), _probs(weak), _probs(noise)]), y


@pytest.fixture(scope="module")
def members(small_tables, tmp_path_factory):
    """Two real binary members (linear, shallow xgboost) trained on the train slice, and a regressor."""
    root = tmp_path_factory.mktemp("members")
    t, r = small_tables["binary"], small_tables["regression"]
    out = {}
    for name, model, params, tables in (("linear", "linear", None, t), ("xgb", "xgboost", {"n_estimators": 40, "max_depth": 3}, t),
                                        ("ridge", "linear", None, r)):
        spec = TrainSpec(family=model, target=tables["target"], features={"drop": ["customer_id"]} if tables is t else None,
                         params=params, seed=0)
        bundle, _ = train_model(tables["train"], spec, valid=tables["valid"])
        out[name] = str(bundle.save(root / f"{name}.mlsys"))
    return out


def test_average_and_weighted_weights_lie_on_the_simplex(synthetic):
    P, y = synthetic
    avg = Combiner("average", "binary").fit(P, y)
    assert np.allclose(avg.weights_, 1 / 3)
    w = Combiner("weighted", "binary").fit(P, y)
    assert w.weights_.sum() == pytest.approx(1.0) and (w.weights_ >= 0).all()
    # The informative member carries the ensemble; noise gets no more than the weak member.
    assert w.weights_[0] > 0.5 and w.weights_[2] <= w.weights_[1]

    def log_loss(c):
        out = c.combine(P)
        return -np.mean(np.log(out[np.arange(len(y)), y]))

    assert log_loss(w) < log_loss(avg)


def test_select_is_greedy_with_replacement(synthetic):
    P, y = synthetic
    c = Combiner("select", "binary", rounds=20).fit(P, y)
    counts = np.round(c.weights_ * 1000).astype(int)
    assert c.weights_.sum() == pytest.approx(1.0)
    assert np.argmax(c.weights_) == 0  # the first pick is the best single member
    assert c.weights_[2] < c.weights_[0], counts
    # A member picked twice is averaged twice: the weights are multiples of 1 / picks.
    picks = round(1 / c.weights_[c.weights_ > 0].min())
    assert np.allclose(c.weights_ * picks, np.round(c.weights_ * picks))


def test_stack_is_a_logistic_model_on_member_probabilities(synthetic):
    P, y = synthetic
    c = Combiner("stack", "binary").fit(P, y)
    assert c.coef_.shape == (1, 3) and c.intercept_.shape == (1,)
    z = P[:, :, 1].T @ c.coef_[0] + c.intercept_[0]
    assert np.allclose(c.combine(P)[:, 1], 1 / (1 + np.exp(-z)))
    assert c.coef_[0, 0] > abs(c.coef_[0, 2])


@pytest.mark.parametrize("method", METHODS)
def test_combiner_round_trips_through_json(synthetic, method):
    P, y = synthetic
    c = Combiner(method, "binary").fit(P, y)
    again = Combiner.from_dict("binary", json.loads(json.dumps(c.to_dict())))
    assert np.allclose(again.combine(P), c.combine(P))


def test_regression_and_multiclass_combiners():
    rng = np.random.default_rng(1)
    y = rng.normal(size=300)
    P = np.stack([y + rng.normal(0, 0.3, 300), y + rng.normal(0, 1.0, 300)])
    for method in METHODS:
        out = Combiner(method, "regression", metric="rmse").fit(P, y).combine(P)
        assert out.shape == (300,)
    k = rng.integers(0, 3, 300)
    onehot = np.eye(3)[k] * 0.6 + 0.4 / 3
    Q = np.stack([onehot, np.full((300, 3), 1 / 3)])
    for method in METHODS:
        out = Combiner(method, "multiclass").fit(Q, k).combine(Q)
        assert out.shape == (300, 3) and np.allclose(out.sum(axis=1), 1)


def test_invalid_combiner_json_is_an_input_error():
    with pytest.raises(InputError):
        Combiner.from_dict("binary", {"method": "stack", "weights": [0.5, 0.5]})
    with pytest.raises(InputError):
        Combiner.from_dict("binary", {"weights": [1]})


def test_cross_fit_predicts_each_row_with_a_combiner_that_did_not_see_it(synthetic):
    from sklearn.model_selection import StratifiedKFold

    P, y = synthetic
    oof = cross_fit("stack", "binary", P, y, folds=4, seed=3)
    for fit_idx, held in StratifiedKFold(4, shuffle=True, random_state=3).split(np.zeros(len(y)), y):
        c = Combiner("stack", "binary", seed=3).fit(P[:, fit_idx], y[fit_idx])
        assert np.allclose(oof[held], c.combine(P[:, held]))


@pytest.mark.parametrize("method", ["average", "stack"])
def test_ensemble_bundle_predicts_the_combined_member_scores(members, small_tables, tmp_path, method):
    t = small_tables["binary"]
    result = ensemble([members["linear"], members["xgb"]], t["valid"], EnsembleSpec(method=method),
                      output=str(tmp_path / "e.mlsys"))
    assert result.output == str(tmp_path / "e.mlsys") and result.metric == "auc" and result.rows == 250
    assert [m["model"] for m in result.members] == [members["linear"], members["xgb"]]
    assert result.gain["best_member"] in (members["linear"], members["xgb"])
    loaded = ModelBundle.load(tmp_path / "e.mlsys")
    assert loaded.manifest["kind"] == "model" and loaded.manifest["predictor"]["kind"] == "ensemble"
    names = zipfile.ZipFile(tmp_path / "e.mlsys").namelist()
    assert any(n.startswith("members/0/") for n in names) and any(n.startswith("members/1/") for n in names)
    test = pd.read_parquet(t["test"])
    parts = [ModelBundle.load(p).predictor.predict_scores(test) for p in (members["linear"], members["xgb"])]
    combined = loaded.predictor.combiner.combine(np.stack(parts))
    assert np.allclose(loaded.predictor.predict_scores(test), combined)
    if method == "average":
        assert np.allclose(combined, (parts[0] + parts[1]) / 2)
    assert loaded.manifest["recipe"]["family"] == "ensemble"
    assert loaded.manifest["recipe"]["params"] == result.combiner


def test_a_model_ensembled_with_itself_is_refused_and_a_zero_gain_is_not_worth_it(members, small_tables, tmp_path):
    import shutil

    from mlsys_cli.models.ensemble import _verdict

    # A byte-identical copy is the same member given twice (it would double its weight): a usage error.
    twin = tmp_path / "twin.mlsys"
    shutil.copy(members["xgb"], twin)
    with pytest.raises(UsageError, match="same model as"):
        ensemble([members["xgb"], str(twin)], small_tables["binary"]["valid"], EnsembleSpec(method="average"))
    # What such an ensemble would have been told: no gain, not worth its latency.
    worth, verdict = _verdict("auc", True, {"value": 0.0, "ci95": [0.0, 0.0], "best_member": "xgb"}, 2.0)
    assert not worth and verdict.startswith("not worth it") and verdict.endswith("use xgb alone")


def test_refuses_a_members_training_data(members, small_tables):
    with pytest.raises(InputError, match="training data of member"):
        ensemble([members["linear"], members["xgb"]], small_tables["binary"]["train"])


def test_refuses_members_of_different_tasks_naming_them(members, small_tables):
    with pytest.raises(InputError, match="members disagree on the task") as err:
        ensemble([members["linear"], members["ridge"]], small_tables["binary"]["valid"])
    assert members["ridge"] in err.value.message


def test_refuses_a_single_member_and_data_without_the_target(members, small_tables, tmp_path):
    with pytest.raises(UsageError, match="at least two"):
        ensemble([members["linear"]], small_tables["binary"]["valid"])
    no_target = tmp_path / "nt.parquet"
    pd.read_parquet(small_tables["binary"]["valid"]).drop(columns=["churned"]).to_parquet(no_target)
    with pytest.raises(InputError, match="no target column 'churned'"):
        ensemble([members["linear"], members["xgb"]], str(no_target))


def test_refuses_a_tampered_member(members, small_tables, tmp_path):
    bad = tmp_path / "bad.mlsys"
    with zipfile.ZipFile(members["xgb"]) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".ubj"):
                data = data[:-8] + bytes(8)
            dst.writestr(item, data)
    with pytest.raises(InputError):
        ensemble([members["linear"], str(bad)], small_tables["binary"]["valid"])


@pytest.mark.slow
def test_members_from_a_study_train_its_best_distinct_trials(small_tables, tmp_path):
    from mlsys_cli.models.tuning import tune

    t = small_tables["binary"]
    storage = f"journal:{tmp_path}/s.log"
    tune(str(t["train"]), valid=str(t["valid"]), target="churned", model="linear", trials=4, storage=storage,
         study="s", features={"drop": ["customer_id"]})
    named, skipped = study_members(StudySource(storage, "s", 2, str(t["train"])))
    assert len(named) == 2 and all("linear" in name for name, _ in named) and not skipped
    # The study's featurizer options come with its trials: customer_id is not a feature.
    for _, bundle in named:
        assert "customer_id" not in [c["name"] for c in bundle.input_schema]
    _, result = build_ensemble(named, [str(t["valid"])], EnsembleSpec(method="weighted"))
    assert len(result.members) == 2
    with pytest.raises(InputError, match="no study"):
        study_members(StudySource(storage, "nope", 2, str(t["train"])))


def test_pick_trials_takes_each_family_best_first_then_the_next_best():
    import datetime as dt

    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from mlsys_cli.models.ensemble import pick_trials

    def trial(number, family, value, params):
        start = dt.datetime(2024, 1, 1)
        return optuna.trial.FrozenTrial(
            number=number, state=TrialState.COMPLETE, value=value, datetime_start=start,
            datetime_complete=start + dt.timedelta(seconds=1), params={"family": family},
            distributions={"family": CategoricalDistribution(["linear", "xgboost"])},
            user_attrs={"params": params}, system_attrs={}, intermediate_values={}, trial_id=number)

    done = [trial(0, "linear", 0.80, {"C": 1.0}), trial(1, "linear", 0.90, {"C": 2.0}),
            trial(2, "linear", 0.89, {"C": 3.0}), trial(3, "xgboost", 0.85, {"max_depth": 3}),
            trial(4, "linear", 0.90, {"C": 2.0})]
    # Best first; xgboost's best takes the second place ahead of better linear near-copies, and an
    # exact repeat of a configuration (trial 4) is never picked twice.
    assert [t.number for t in pick_trials(done, 2, maximize=True)] == [1, 3]
    assert [t.number for t in pick_trials(done, 3, maximize=True)] == [1, 2, 3]
    assert [t.number for t in pick_trials(done, 5, maximize=True)] == [1, 2, 3, 0]
    # Lower is better: the order flips.
    assert [t.number for t in pick_trials(done, 2, maximize=False)] == [0, 3]


@pytest.fixture(scope="module")
def kept_study(small_tables, tmp_path_factory):
    """A linear study on --valid whose tune run kept the models of its two best trials."""
    from mlsys_cli.models.tuning import tune

    t = small_tables["binary"]
    root = tmp_path_factory.mktemp("kept")
    storage = f"journal:{root}/s.log"
    result = tune(str(t["train"]), valid=str(t["valid"]), target="churned", model="linear", trials=5, storage=storage,
                  study="s", features={"drop": ["customer_id"]})
    return {"storage": storage, "store": root / "s.log.models", "result": result, "tables": t}


def _study_trials(storage):
    import optuna

    from mlsys_cli.models.study import open_storage

    return optuna.load_study(study_name="s", storage=open_storage(storage)).get_trials(deepcopy=False)


def test_tune_keeps_only_the_best_models_of_each_family(kept_study):
    assert kept_study["result"].outputs["models"] == str(kept_study["store"])
    trials = sorted((t for t in _study_trials(kept_study["storage"]) if t.value is not None), key=lambda t: (-t.value, t.number))
    stored = {p.name for p in kept_study["store"].iterdir()}
    # Bounded: the store holds the two best trials' bundles, nothing of the trials that dropped out.
    assert stored == {t.user_attrs["model"]["artifact"] for t in trials[:2]}
    assert all(t.user_attrs["model"]["sha256"] for t in trials[:2])


def test_ensemble_from_study_loads_the_kept_models_without_retraining(kept_study):
    named, skipped = study_members(StudySource(kept_study["storage"], "s", 2, None))
    assert all(isinstance(b.predictor, KeptPredictor) for _, b in named) and len(named) == 2 and not skipped
    best = max((t for t in _study_trials(kept_study["storage"]) if t.value is not None), key=lambda t: (t.value, -t.number))
    assert named[0][0] == f"s#trial{best.number}(linear)"
    # The kept model is the trial's model: it scores the trial's value on the validation rows.
    valid = pd.read_parquet(kept_study["tables"]["valid"])
    from sklearn.metrics import roc_auc_score

    scores = named[0][1].predict(valid)["probabilities"][:, 1]
    assert roc_auc_score(valid["churned"] == named[0][1].classes[1], scores) == pytest.approx(best.value, abs=1e-9)


def test_kept_model_bytes_are_reproducible(kept_study, tmp_path):
    from mlsys_cli.models.tuning import tune

    t = kept_study["tables"]
    storage = f"journal:{tmp_path}/s.log"
    tune(str(t["train"]), valid=str(t["valid"]), target="churned", model="linear", trials=5, storage=storage,
         study="s", features={"drop": ["customer_id"]})
    first = {t.number: t.user_attrs["model"]["sha256"] for t in _study_trials(kept_study["storage"]) if "model" in t.user_attrs}
    again = {t.number: t.user_attrs["model"]["sha256"] for t in _study_trials(storage) if "model" in t.user_attrs}
    assert first == again


def test_a_tampered_kept_model_is_refused_and_a_missing_one_retrained(kept_study):
    trials = [t for t in _study_trials(kept_study["storage"]) if "model" in t.user_attrs]
    victim = next(kept_study["store"] / t.user_attrs["model"]["artifact"] for t in trials
                  if (kept_study["store"] / t.user_attrs["model"]["artifact"]).exists())
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(InputError, match="does not match its sha256"):
            study_members(StudySource(kept_study["storage"], "s", 2, str(kept_study["tables"]["train"])))
        victim.unlink()
        with pytest.raises(UsageError, match="needs --train"):
            study_members(StudySource(kept_study["storage"], "s", 2, None))
        named, _ = study_members(StudySource(kept_study["storage"], "s", 2, str(kept_study["tables"]["train"])))
        by_trial = {name: isinstance(b.predictor, KeptPredictor) for name, b in named}
        assert sorted(by_trial.values()) == [False, True]
    finally:
        victim.write_bytes(original)


def test_ensemble_timeout_keeps_two_members_and_says_so(kept_study):
    source = StudySource(kept_study["storage"], "s", top=3, train=str(kept_study["tables"]["train"]))
    result = ensemble([], [str(kept_study["tables"]["valid"])], EnsembleSpec(method="select"), study=source, timeout=1e-6)
    assert len(result.members) == 2 and result.stopped_by == "timeout"
    assert len(result.skipped) == 1 and "--timeout" in result.skipped[0]["reason"]
    with pytest.raises(UsageError, match="--timeout"):
        ensemble([], [str(kept_study["tables"]["valid"])], study=StudySource(storage=kept_study["storage"], study="s"), timeout=0)


def test_averaged_class_probabilities_sum_to_one_exactly():
    rng = np.random.default_rng(1)
    raw = rng.random((3, 200, 4))
    # Members hand over float32 probabilities: their rows sum to 1 only up to float32 rounding.
    P = (raw / raw.sum(axis=2, keepdims=True)).astype(np.float32).astype(np.float64)
    y = rng.integers(0, 4, 200)
    for method in ("average", "weighted", "select"):
        out = Combiner(method, "multiclass").fit(P, y).combine(P)
        assert np.abs(out.sum(axis=1) - 1.0).max() <= 4 * np.finfo(np.float64).eps


def test_multiclass_average_renormalizes_in_the_bundle_and_its_onnx_graph(small_tables, tmp_path):
    from mlsys_cli.deploy.export import check_parity, to_onnx
    from mlsys_cli.deploy.onnx_model import OnnxModel

    t = small_tables["multiclass"]
    paths = []
    for family, params in (("xgboost", {"n_estimators": 15}), ("forest", {"n_estimators": 15})):
        bundle, _ = train_model(str(t["train"]), TrainSpec(family=family, target=t["target"], params=params), valid=str(t["valid"]))
        paths.append(str(bundle.save(tmp_path / f"{family}.mlsys")))
    ensemble(paths, str(t["valid"]), EnsembleSpec(method="average"), output=str(tmp_path / "ens.mlsys"))
    bundle = ModelBundle.load(tmp_path / "ens.mlsys")
    test = pd.read_parquet(t["test"])
    proba = bundle.predict(test)["probabilities"]
    assert np.abs(proba.sum(axis=1) - 1.0).max() <= 4 * np.finfo(np.float64).eps
    parity = check_parity(bundle, OnnxModel.from_proto(to_onnx(bundle)), test)
    assert parity["ok"], parity


def test_an_ensemble_of_kept_models_has_the_bytes_of_one_of_retrained_equal_models(kept_study, tmp_path):
    valid = [str(kept_study["tables"]["valid"])]
    named, _ = study_members(StudySource(kept_study["storage"], "s", 2, None))
    (name, first), rest = named[0], named[1:]
    first.save(tmp_path / "m.mlsys")
    copied, _ = build_ensemble(named, valid, EnsembleSpec(method="average"))
    rebuilt, _ = build_ensemble([(name, ModelBundle.load(tmp_path / "m.mlsys")), *rest], valid,
                                EnsembleSpec(method="average"))
    # The kept member is copied byte for byte; a loaded-and-rewritten one serializes to the same bytes.
    assert copied.to_writer().to_bytes() == rebuilt.to_writer().to_bytes()
