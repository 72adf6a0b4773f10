"""Confidence-based performance estimation: right when the probabilities are calibrated."""

from __future__ import annotations

import numpy as np

from mlsys_cli.monitor.model_checks import estimate_performance, expected_auc
from mlsys_cli.monitor.stats import auc_from_scores


def test_expected_auc_and_accuracy_match_labels_drawn_from_the_probabilities():
    rng = np.random.default_rng(0)
    p = rng.beta(0.7, 2.5, size=200_000)
    y = rng.uniform(size=p.size) < p  # calibrated by construction
    assert abs(expected_auc(p) - auc_from_scores(p, y)) < 0.005
    manifest = {"task": "binary", "classes": ["no", "yes"], "metrics": {}, "reference": {}}
    est = estimate_performance(np.column_stack([1 - p, p]), manifest, 0.5)
    assert abs(est["estimated"]["accuracy"] - np.mean((p >= 0.5) == y)) < 0.005
    assert est["reliable"] is False and "not checked" in est["calibration"]  # the bundle gives nothing to check against


def test_estimate_is_flagged_when_the_bundle_is_not_calibrated():
    edges = list(np.linspace(0.05, 0.95, 19))
    prof = {"min": 0.0, "max": 1.0, "sketch": {"edges": edges, "counts": [1] * 20}}
    manifest = {"task": "binary", "classes": ["no", "yes"], "reference": {"predictions": {"proba_yes": prof}},
                "metrics": {"evaluated_on": "valid", "valid": {"accuracy": 0.95}}}
    est = estimate_performance(np.array([[0.3, 0.7]]), manifest, 0.5)
    assert est["reliable"] is False and est["calibration"].startswith("poorly calibrated")
    manifest["metrics"]["valid"]["accuracy"] = 0.75  # expected accuracy of uniform scores
    assert estimate_performance(np.array([[0.3, 0.7]]), manifest, 0.5)["reliable"] is True


def test_current_labels_of_another_kind_than_the_models_are_reported_not_a_crash(tmp_path):
    # A bool-target model checked on data whose label column holds 0/1/2 (unknown classes) or
    # strings (another type): the report says so; drift still runs on the features.
    import pandas as pd

    from mlsys_cli.models.train import TrainSpec, train_model
    from mlsys_cli.monitor.drift import detect

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    df["y"] = df["a"] + rng.normal(size=400) > 0
    df.to_parquet(tmp_path / "t.parquet")
    bundle, _ = train_model(str(tmp_path / "t.parquet"), TrainSpec(family="linear", target="y"))
    bundle.save(tmp_path / "m.mlsys")
    ints, strings = df.assign(y=rng.integers(0, 3, 400)), df.assign(y=np.where(df["y"], "yes", "no"))
    ints.to_parquet(tmp_path / "ints.parquet")
    strings.to_parquet(tmp_path / "strings.parquet")

    report = detect(str(tmp_path / "ints.parquet"), model=str(tmp_path / "m.mlsys")).to_dict()
    assert "not among the model's classes" in report["model"]["metrics"]["note"]
    report = detect(str(tmp_path / "strings.parquet"), model=str(tmp_path / "m.mlsys")).to_dict()
    assert {"column": "y", "change": "type changed", "reference": "number", "current": "string"} in report["schema_changes"]
    assert {f["name"] for f in report["features"]} >= {"a", "b"}
