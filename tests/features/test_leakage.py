"""Leakage checks: near-perfect single features and missing patterns on train, missing shift on held-out data."""

from __future__ import annotations

import numpy as np
import pytest

from mlsys_cli.features import Featurizer
from mlsys_cli.features.leakage import missing_shift
from tests.features.frames import raw_frame


@pytest.fixture(scope="module")
def leaky():
    df = raw_frame(400)
    rng = np.random.default_rng(5)
    df["refund"] = np.where(df["y"], rng.normal(100, 5, len(df)), rng.normal(10, 5, len(df)))
    df["cancel_reason"] = np.where(df["y"], rng.choice(["price", "service"], len(df)), None)
    return df


def test_near_perfect_feature_is_dropped_and_reported(leaky):
    fz = Featurizer(target="y").fit(leaky)
    checks = {f["column"]: f["check"] for f in fz.report_["leakage"]}
    assert checks["refund"] == "near_perfect_predictor"
    assert "cancel_reason" in checks
    assert fz.roles_["refund"]["role"] == "leaky" and "refund" not in [c["name"] for c in fz.input_schema_]
    assert "num" not in checks and "cat" not in checks


def test_warn_keeps_the_feature(leaky):
    fz = Featurizer(target="y", leakage="warn").fit(leaky)
    assert fz.report_["leakage"] and "refund" in fz.get_feature_names_out()


def test_regression_derivative(leaky):
    df = leaky.assign(amount=leaky["num"].fillna(50) * 7.0, double=lambda d: d["amount"] * 2 + 1)
    fz = Featurizer(target="amount", drop=["y", "refund", "cancel_reason"]).fit(df)
    flagged = {f["column"] for f in fz.report_["leakage"]}
    assert "double" in flagged and "count" not in flagged


def test_missing_shift():
    schema = [{"name": "a", "type": "float"}, {"name": "b", "type": "string"}]
    check = {"a": np.array([np.nan] * 5 + [1.0] * 5), "b": np.array(["x"] * 9 + [""], dtype=object)}
    found = missing_shift({"a": 0.02, "b": 0.05}, check, schema, "valid.parquet")
    assert [f["column"] for f in found] == ["a"] and found[0]["missing"] == 0.5


def test_folds_are_made_once_per_fit_and_auc_is_sklearns(monkeypatch):
    # A wide table (2000 columns) spent most of its fit here: the folds (which depend only on the
    # target) were split again for every column, and every AUC went through sklearn's validation.
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from mlsys_cli.features import leakage

    rng = np.random.default_rng(0)
    n, k = 120, 30
    data = {f"c{i}": rng.normal(size=n) for i in range(k)}
    data["c0"][rng.random(n) < 0.2] = np.nan  # a missing pattern is scored too, on the same folds
    schema = [{"name": c, "type": "float"} for c in data]
    roles = {c: {"role": "numeric"} for c in data}
    y = rng.integers(0, 2, n)
    calls = []
    split = StratifiedKFold.split
    monkeypatch.setattr(StratifiedKFold, "split", lambda self, *a, **kw: calls.append(1) or split(self, *a, **kw))
    every = leakage.single_feature_findings(data, schema, roles, y, "binary", threshold=-1.0)
    assert len(calls) == 1 and len(every) == k
    for _ in range(2):
        score = rng.integers(0, 5, n).astype(float)  # ties, counted half as in sklearn
        assert leakage.auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
