"""Model families: every family x task fits, persists without pickle, and reloads identically."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlsys_cli.bundle import BundleReader, BundleWriter
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.families import FAMILIES, get_family, resolve_params

SMALL = {"baseline": {}, "linear": {}, "forest": {"n_estimators": 30}, "xgboost": {"n_estimators": 40}, "hgb": {"max_iter": 40}}


def _data(task, n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    signal = X[:, 0] + 0.5 * X[:, 1]
    if task == "regression":
        return X, signal + rng.normal(scale=0.1, size=n)
    if task == "binary":
        return X, (signal > 0).astype(int)
    return X, np.digitize(signal, [-0.7, 0.7])


def _roundtrip(family, est, task, n_classes, params):
    writer = BundleWriter("model")
    family.save(est, writer, "model/")
    spec = {"task": task, "n_classes": n_classes, "params": params, "seed": 0, "n_features": est.n_features_,
            "fit_info": getattr(est, "fit_info_", {})}
    return family.load(BundleReader("mem.mlsys", data=writer.to_bytes()), "model/", spec)


def _scores(est, task, X):
    return est.predict(X) if task == "regression" else est.predict_proba(X)


@pytest.mark.parametrize("task,n_classes", [("binary", 2), ("multiclass", 3), ("regression", 0)])
@pytest.mark.parametrize("name", ["baseline", "linear", "forest", "xgboost", "hgb"])
def test_fit_save_load_roundtrip(name, task, n_classes):
    family = get_family(name)
    X, y = _data(task)
    params = resolve_params(family, task, SMALL[name])
    est = family.make(task, n_classes, params, seed=0).fit(X[:200], y[:200])
    before = _scores(est, task, X[200:])
    if task != "regression":
        assert before.shape == (100, n_classes)
        np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-6)
        assert set(est.predict(X[200:])) <= set(range(n_classes))
    after = _scores(_roundtrip(family, est, task, n_classes, params), task, X[200:])
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)
    importance = family.importances(est)
    assert importance.shape == (5,) and (importance >= 0).all()
    if name != "baseline":
        assert importance.sum() == pytest.approx(1.0)
        assert importance.argmax() == 0, "the strongest feature ranks first"


@pytest.mark.parametrize("name", ["linear", "forest", "xgboost", "hgb"])
def test_models_beat_the_baseline(name):
    from mlsys_cli.models.metrics import compute_metrics

    X, y = _data("binary", 600)
    est = get_family(name).make("binary", 2, resolve_params(get_family(name), "binary", SMALL[name]), 0).fit(X[:400], y[:400])
    assert compute_metrics("binary", y[400:], est.predict_proba(X[400:]), [0, 1])["auc"] > 0.9


def test_same_seed_same_model():
    X, y = _data("binary")
    fam = get_family("xgboost")
    params = resolve_params(fam, "binary", {"n_estimators": 20, "subsample": 0.7, "colsample_bytree": 0.6})
    a = fam.make("binary", 2, params, seed=7).fit(X, y).predict_proba(X)
    b = fam.make("binary", 2, params, seed=7).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)


def test_xgboost_early_stopping_keeps_the_best_round():
    X, y = _data("regression", 400)
    fam = get_family("xgboost")
    params = resolve_params(fam, "regression", {"n_estimators": 2000, "learning_rate": 0.3, "early_stopping_rounds": 5})
    est = fam.make("regression", 0, params, 0).fit(X[:300], y[:300], eval_set=(X[300:], y[300:]))
    info = est.fit_info_
    assert info["stopped_by"] == "early_stopping"
    assert info["n_estimators"] < 2000 and info["best_iteration"] == info["n_estimators"] - 1


def test_xgboost_callback_gets_the_validation_loss():
    X, y = _data("binary")
    fam = get_family("xgboost")
    seen = []
    fam.make("binary", 2, resolve_params(fam, "binary", {"n_estimators": 5}), 0).fit(
        X[:200], y[:200], eval_set=(X[200:], y[200:]), callback=lambda step, loss: seen.append((step, loss)))
    assert [s for s, _ in seen] == [0, 1, 2, 3, 4] and seen[-1][1] < seen[0][1]


class _Progress:
    def __init__(self):
        self.total, self.done = None, 0

    def update(self, completed=None, total=None, description=None):
        self.total = total if total is not None else self.total

    def advance(self, n=1):
        self.done += n


@pytest.mark.parametrize("name", ["xgboost", "forest", "hgb"])
def test_timeout_stops_iterative_fitting(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 20))
    y = (X[:, 0] + rng.normal(size=3000) > 0).astype(int)
    fam = get_family(name)
    params = resolve_params(fam, "binary", {fam.rounds_param: 100_000, **({"n_jobs": 1} if name == "forest" else {})})
    progress = _Progress()
    start = time.monotonic()
    est = fam.make("binary", 2, params, 0).fit(X, y, timeout=0.5, progress=progress)
    assert time.monotonic() - start < 30
    assert est.fit_info_["stopped_by"] == "timeout"
    assert 0 < est.fit_info_["n_estimators"] < 100_000
    assert progress.total == 100_000 and progress.done == est.fit_info_["n_estimators"]


def test_forest_grown_in_chunks_equals_one_fit():
    from sklearn.ensemble import RandomForestClassifier

    X, y = _data("binary")
    fam = get_family("forest")
    est = fam.make("binary", 2, resolve_params(fam, "binary", {"n_estimators": 60, "n_jobs": 1}), seed=3).fit(X, y)
    whole = RandomForestClassifier(n_estimators=60, random_state=3, n_jobs=1).fit(X, y)
    assert np.array_equal(est.predict_proba(X), whole.predict_proba(X))
    assert est.estimator.warm_start is False


def test_extra_trees_kind_and_bad_kind():
    fam = get_family("forest")
    est = fam.make("regression", 0, resolve_params(fam, "regression", {"kind": "extra", "n_estimators": 10}), 0)
    assert type(est.estimator).__name__ == "ExtraTreesRegressor"
    with pytest.raises(UsageError, match="kind"):
        fam.make("binary", 2, {**fam.default_params("binary"), "kind": "boosted"}, 0)


def test_unknown_parameter_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown parameter 'depth'") as info:
        resolve_params(get_family("xgboost"), "binary", {"depth": 3})
    assert "max_depth" in info.value.hint


def test_parameter_of_the_wrong_kind_is_a_usage_error():
    with pytest.raises(UsageError, match="'early_stopping_rounds' of --model xgboost must be a number"):
        resolve_params(get_family("xgboost"), "binary", {"early_stopping_rounds": None})
    with pytest.raises(UsageError, match="must be a number"):
        resolve_params(get_family("xgboost"), "binary", {"learning_rate": "fast"})
    # ints and floats interchange, and a string default takes a number (max_features="sqrt" or 0.5).
    assert resolve_params(get_family("xgboost"), "binary", {"learning_rate": 1})["learning_rate"] == 1
    forest = get_family("forest")
    if isinstance(forest.default_params("binary").get("max_features"), str):
        assert resolve_params(forest, "binary", {"max_features": 0.5})["max_features"] == 0.5


def test_unknown_family_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown model family"):
        get_family("svm")
    assert FAMILIES == ("baseline", "linear", "forest", "xgboost", "hgb", "mlp")


def test_every_family_of_the_index_is_registered_under_its_name():
    from mlsys_cli.features.pipeline import PRESETS
    from mlsys_cli.features.presets import FAMILY_PRESETS

    for name, preset in FAMILY_PRESETS.items():
        family = get_family(name)
        assert family.name == name and family.preset == preset and preset in PRESETS


def test_mlp_is_registered_lazily():
    import sys

    pytest.importorskip("torch", reason="torch (the nn extra) is not installed")
    fam = get_family("mlp")
    assert fam.name == "mlp" and "mlsys_cli.models.mlp" in sys.modules


class _Trial:
    """A stand-in Optuna trial that returns the low end of every range (records the calls)."""

    def __init__(self):
        self.calls = {}

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.calls[name] = ("float", low, high, log)
        return low

    def suggest_int(self, name, low, high, *, step=1, log=False):
        self.calls[name] = ("int", low, high, log)
        return low

    def suggest_categorical(self, name, choices):
        self.calls[name] = ("cat", tuple(choices))
        return choices[0]


@pytest.mark.parametrize("name", ["baseline", "linear", "forest", "xgboost", "hgb"])
def test_search_space_gives_valid_parameters(name):
    fam = get_family(name)
    for task in ("binary", "regression"):
        trial = _Trial()
        params = fam.search_space(trial, task)
        assert set(params) <= set(fam.default_params(task))
        resolve_params(fam, task, params)
    if name == "xgboost":
        assert trial.calls["learning_rate"][3] is True, "learning rate is searched on a log scale"
    if name == "linear":
        assert trial.calls["alpha"][3] is True, "regularization is searched on a log scale"
    if name == "hgb":
        for key in ("learning_rate", "max_leaf_nodes", "min_samples_leaf", "l2_regularization"):
            assert trial.calls[key][-1] is True, f"{key} is searched on a log scale"


def test_tampered_booster_is_refused():
    X, y = _data("binary")
    fam = get_family("xgboost")
    est = fam.make("binary", 2, resolve_params(fam, "binary", {"n_estimators": 5}), 0).fit(X, y)
    writer = BundleWriter("model")
    writer.add_bytes("model/booster.ubj", b"not a booster")
    spec = {"task": "binary", "n_classes": 2, "params": fam.default_params("binary"), "n_features": 5}
    with pytest.raises(InputError, match="cannot load the XGBoost model"):
        fam.load(BundleReader("mem.mlsys", data=writer.to_bytes()), "model/", spec)
    assert est.n_features_ == 5


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_hgb_early_stopping_on_the_validation_rows_equals_one_fit(task):
    """Grown in chunks with warm_start, stopped by the validation rows: the same model as one fit."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X, y = _data(task, 600)
    fam = get_family("hgb")
    params = resolve_params(fam, task, {"max_iter": 400, "learning_rate": 0.3})
    est = fam.make(task, 2, params, 0).fit(X[:400], y[:400], eval_set=(X[400:], y[400:]))
    info = est.fit_info_
    assert info["stopped_by"] == "early_stopping" and info["n_estimators"] < 400
    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    one = cls(max_iter=400, learning_rate=0.3, early_stopping=True, categorical_features=None, random_state=0)
    one.fit(X[:400], y[:400], X_val=X[400:], y_val=y[400:])
    assert one.n_iter_ == info["n_estimators"]
    np.testing.assert_allclose(_scores(est, task, X), one.predict(X) if task == "regression" else one.predict_proba(X))


@pytest.mark.parametrize("task,n_classes", [("binary", 2), ("multiclass", 3), ("regression", 0)])
def test_hgb_onnx_parity_with_missing_values(task, n_classes):
    """The hand-written graph (skl2onnx's converter fails on scikit-learn >= 1.6 models) matches
    scikit-learn, NaN routing included; inputs are float32-representable as the featurizer's are."""
    import onnxruntime as ort

    X, y = _data(task, 800)
    X = X.astype(np.float32).astype(np.float64)
    X[::5, 1] = np.nan
    fam = get_family("hgb")
    est = fam.make(task, n_classes, resolve_params(fam, task, {"max_iter": 60}), 0).fit(X, y)
    model = fam.to_onnx(est, 5, task, n_classes)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"features": X.astype(np.float32)})[0]
    ref = _scores(est, task, X)
    if task == "regression":
        np.testing.assert_allclose(out.ravel(), ref, rtol=1e-5, atol=1e-5)
    else:
        assert out.shape == (800, n_classes)
        np.testing.assert_allclose(out, ref, atol=1e-6)
