"""Metrics by task: values agree with scikit-learn, undefined metrics are None, baselines behave."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from mlsys_cli.models.metrics import (HIGHER_IS_BETTER, baseline_metrics, baseline_outputs, compute_metrics,
                                      encode_labels, primary_metric)


def _binary(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)
    return np.array(["no", "yes"], dtype=object)[y], y, np.column_stack([1 - p1, p1])


def test_primary_metric():
    assert primary_metric("binary") == ("auc", True)
    assert primary_metric("multiclass") == ("log_loss", False)
    assert primary_metric("regression") == ("rmse", False)
    with pytest.raises(ValueError):
        primary_metric("ranking")


def test_binary_matches_sklearn_and_uses_class_labels():
    labels, y, proba = _binary()
    m = compute_metrics("binary", labels, {"probabilities": proba}, ["no", "yes"])
    assert set(m) == {"auc", "log_loss", "accuracy", "f1", "precision", "recall", "brier"}
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, proba[:, 1] >= 0.5))
    assert m["f1"] == pytest.approx(skm.f1_score(y, proba[:, 1] >= 0.5))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba[:, 1]))
    assert all(k in HIGHER_IS_BETTER for k in m)


def test_binary_threshold_and_one_dimensional_scores():
    labels, y, proba = _binary()
    strict = compute_metrics("binary", labels, proba[:, 1], ["no", "yes"], threshold=0.9)
    loose = compute_metrics("binary", labels, proba[:, 1], ["no", "yes"], threshold=0.1)
    assert strict["precision"] > loose["precision"] and strict["recall"] < loose["recall"]
    assert strict["auc"] == loose["auc"]


def test_one_class_slice_gives_none_not_a_crash():
    proba = np.tile([0.2, 0.8], (10, 1))
    m = compute_metrics("binary", [1] * 10, proba, [0, 1])
    assert m["auc"] is None
    assert m["accuracy"] == 1.0 and m["log_loss"] is not None
    multi = compute_metrics("multiclass", ["a"] * 5, np.tile([0.6, 0.3, 0.1], (5, 1)), ["a", "b", "c"])
    assert multi["auc_ovr"] is None and multi["accuracy"] == 1.0


def test_empty_input_gives_none():
    assert set(compute_metrics("binary", [], np.zeros((0, 2)), [0, 1]).values()) == {None}
    assert set(compute_metrics("regression", [], np.zeros(0)).values()) == {None}


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    raw = rng.uniform(size=(300, 3)) + np.eye(3)[y]
    proba = raw / raw.sum(axis=1, keepdims=True)
    m = compute_metrics("multiclass", np.array(["a", "b", "c"])[y], proba, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, proba.argmax(1)))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, proba.argmax(1), average="macro"))
    assert m["auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))


def test_regression_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.5, size=200)
    m = compute_metrics("regression", y, {"prediction": pred})
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))


def test_unknown_label_is_an_input_error_naming_why():
    from mlsys_cli.errors import InputError

    with pytest.raises(InputError, match="the target holds label the model does not know: x") as info:
        compute_metrics("binary", ["x"], np.array([[0.5, 0.5]]), ["a", "b"])
    assert info.value.hint == "the model's classes: a, b"
    # "1" read as text from a CSV and the model's 1 print alike: the hint says they differ in type.
    with pytest.raises(InputError, match="does not know: 0, 1") as info:
        compute_metrics("binary", ["0", "1"], np.array([[0.5, 0.5], [0.2, 0.8]]), [0, 1])
    assert info.value.hint == ("the model's classes: 0, 1 (int); these labels are str with the same text: "
                               "cast the target column to the model's type")


def test_encode_labels_treats_equal_numbers_as_one_class():
    assert encode_labels([1.0, np.int64(0), 2], [0, 1]).tolist() == [1, 0, -1]
    assert encode_labels([True, False], [False, True]).tolist() == [1, 0]


def test_baselines_are_seeded_and_uninformative():
    labels, _, _ = _binary(2000)
    first = baseline_metrics("binary", labels, labels, ["no", "yes"], seed=3)
    assert first == baseline_metrics("binary", labels, labels, ["no", "yes"], seed=3)
    assert first["zero_rule"]["auc"] == 0.5
    assert abs(first["random"]["auc"] - 0.5) < 0.05
    out = baseline_outputs("regression", [1.0, 2.0, 3.0], 4)
    assert out["zero_rule"].tolist() == [2.0] * 4
    assert set(out["random"]) <= {1.0, 2.0, 3.0}
