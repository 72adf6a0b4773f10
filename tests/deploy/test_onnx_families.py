"""Per-family ONNX graphs and the graph surgery, checked against the fitted estimators they come from."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from mlsys_cli.deploy import onnx_families as fam
from mlsys_cli.errors import InputError


def _run(model, X):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {fam.FEATURES: np.asarray(X, dtype=np.float32)})))


def _data(n=400, k=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    # Canonical inputs are float32-representable: the contract the tree thresholds rely on.
    X = rng.normal(size=(n, k)).astype(np.float32).astype(np.float64)
    y = (X[:, 0] * 2 + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int) * (classes - 2)
    return X, np.minimum(y, classes - 1)


def test_forest_vote_ties_break_like_scikit_learn():
    """Fully grown trees vote 0/1; tied votes must give scikit-learn's label (the first class)."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = _data(classes=3)
    est = RandomForestClassifier(n_estimators=6, random_state=0).fit(X, y)
    proba = est.predict_proba(X[:200] + 0.05)
    out = _run(fam.sklearn_to_onnx(est, X.shape[1], "multiclass"), X[:200] + 0.05)[fam.PROBA]
    sorted_p = np.sort(proba, axis=1)
    assert (sorted_p[:, -1] == sorted_p[:, -2]).any()  # the case under test occurs
    assert np.abs(out - proba).max() <= 1e-6
    assert (out.argmax(axis=1) == proba.argmax(axis=1)).all()


def test_binary_forest_and_missing_values_follow_learned_side():
    from sklearn.ensemble import RandomForestClassifier

    X, y = _data(classes=2)
    X[::4, 0] = np.nan
    est = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y)
    out = _run(fam.sklearn_to_onnx(est, X.shape[1], "binary"), X)[fam.PROBA]
    np.testing.assert_allclose(out, est.predict_proba(X), atol=1e-6)


def test_linear_models_are_computed_in_double():
    from sklearn.linear_model import LogisticRegression, Ridge

    X, y = _data(classes=3)
    big = (X * 1e4 + 5e4).astype(np.float32).astype(np.float64)  # unscaled, large: float32 products cancel
    target = big @ np.array([3.0, -2.0, 1.0, 0.5, 0.0]) + 7.0
    ridge = Ridge(alpha=1.0).fit(big, target)
    pred = _run(fam.family_to_onnx("linear", ridge, 5, "regression"), big)[fam.PREDICTION].ravel()
    np.testing.assert_allclose(pred, ridge.predict(big), rtol=1e-7)
    logit = LogisticRegression(max_iter=500).fit(X, y)
    proba = _run(fam.family_to_onnx("linear", logit, 5, "multiclass", 3), X)[fam.PROBA]
    np.testing.assert_allclose(proba, logit.predict_proba(X), atol=1e-7)


def test_xgboost_multiclass():
    import xgboost as xgb

    X, y = _data(classes=3)
    est = xgb.XGBClassifier(n_estimators=10, max_depth=3, random_state=0).fit(X, y)
    out = _run(fam.family_to_onnx("xgboost", est, 5, "multiclass", 3), X)[fam.PROBA]
    np.testing.assert_allclose(out, est.predict_proba(X), atol=1e-6)


def test_baselines():
    from sklearn.dummy import DummyClassifier

    X, y = _data(classes=3)
    frequent = DummyClassifier(strategy="most_frequent").fit(X, y)
    out = _run(fam.family_to_onnx("baseline", frequent, 5, "multiclass", 3), X)[fam.PROBA]
    np.testing.assert_allclose(out, frequent.predict_proba(X))
    stratified = DummyClassifier(strategy="stratified").fit(X, y)
    with pytest.raises(InputError, match="'stratified' has no ONNX form"):
        fam.family_to_onnx("baseline", stratified, 5, "multiclass", 3)


def test_absent_class_is_scattered_to_its_column():
    from sklearn.linear_model import LogisticRegression

    X, y = _data(classes=3)
    y = np.where(y == 1, 2, y)  # class 1 never seen in training
    est = LogisticRegression(max_iter=500).fit(X, y)
    out = _run(fam.family_to_onnx("linear", est, 5, "multiclass", 3), X)[fam.PROBA]
    assert out.shape == (len(X), 3) and np.all(out[:, 1] == 0)
    np.testing.assert_allclose(out[:, [0, 2]], est.predict_proba(X), atol=1e-7)


def test_combiners_and_finish():
    """Two constant members combined by weights and by a stack, then labelled with a threshold."""
    X, _ = _data()
    a = fam.constant_to_onnx([0.8, 0.2], 5, "binary")
    b = fam.constant_to_onnx([0.2, 0.8], 5, "binary")
    avg = _run(fam.parallel([a, b], fam.weighted_average([1.0, 3.0], "binary")), X)[fam.PROBA]
    np.testing.assert_allclose(avg[0], [0.35, 0.65], atol=1e-7)
    coef, intercept = np.array([[2.0], [-1.0]]), np.array([0.5])
    stack = _run(fam.parallel([a, b], fam.linear_stack(coef, intercept, "binary", drop_first=True)), X)[fam.PROBA]
    p1 = 1 / (1 + np.exp(-(0.2 * 2 - 0.8 + 0.5)))
    np.testing.assert_allclose(stack[0], [1 - p1, p1], atol=1e-7)
    for threshold, label in ((0.5, "yes"), (0.7, "no")):
        out = _run(fam.finish(fam.parallel([a, b], fam.weighted_average([1.0, 3.0], "binary")), "binary",
                              ["no", "yes"], threshold=threshold), X[:3])
        assert out[fam.LABEL].tolist() == [label] * 3
