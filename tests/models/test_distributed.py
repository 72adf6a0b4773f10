"""train --engine dask: xgboost.dask, the local bundle format, predictions within XGBoost's distributed tolerance.

Tolerance. XGBoost's distributed ``hist`` training is the single-node algorithm; what differs is
the histogram bin construction (per-worker quantile sketches merged) and the order in which
floating-point gradient sums are added (dmlc/xgboost discussion 12671). So: when every feature
has no more distinct values than ``max_bin`` the bins are the exact values on both sides and the
predictions must agree to 1e-6; with continuous features the split candidates differ and only
the model's quality must agree (held-out AUC within 0.02).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.bundle import BundleReader
from tests.conftest import assert_clean_error, run_cli
from tests.dask_cluster import partition


def _table(rows: int, rounded: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5))
    X = np.round(X, 1) if rounded else X  # about 70 distinct values per column when rounded (< max_bin 256)
    logit = X[:, 0] - 0.8 * X[:, 1] + 0.5 * X[:, 2] * X[:, 3]
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    df["plan"] = np.array(["a", "b", "c"])[rng.integers(0, 3, rows)]
    df["y"] = rng.random(rows) < 1 / (1 + np.exp(-logit))
    df["amount"] = logit + rng.normal(scale=0.3, size=rows)
    return df


def _train(dask_cluster, parts, out, *extra):
    on = ["--engine", "dask", "--scheduler", dask_cluster.scheduler_address] if dask_cluster else []
    result = run_cli("train", parts, "--param", "n_estimators=30", "-o", out, "--json", *extra, *on)
    assert result.code == 0, result.stderr
    return result.json


@pytest.mark.parametrize("target,column", [("y", "proba_True"), ("amount", "prediction")])
def test_with_exact_bins_dask_predictions_equal_local(dask_cluster, tmp_path, target, column):
    df = _table(3000, rounded=True, seed=1).drop(columns=["amount" if target == "y" else "y"])
    parts = partition(df, tmp_path / "parts", 6)
    local = _train(None, parts, tmp_path / "l.mlsys", "--target", target)
    dist = _train(dask_cluster, parts, tmp_path / "d.mlsys", "--target", target)
    assert dist["fit"]["engine"] == "dask" and dist["fit"]["workers"] == 3 and dist["task"] == local["task"]
    for name in ("l", "d"):
        assert run_cli("predict", tmp_path / f"{name}.mlsys", parts, "-o", tmp_path / f"{name}.parquet").code == 0
    got, expected = pd.read_parquet(tmp_path / "d.parquet"), pd.read_parquet(tmp_path / "l.parquet")
    np.testing.assert_allclose(got[column], expected[column], rtol=0, atol=1e-6)


def test_with_continuous_features_the_quality_matches_and_the_bundle_is_the_local_format(dask_cluster, tmp_path):
    parts = partition(_table(4000, rounded=False, seed=2).drop(columns="amount"), tmp_path / "parts", 5)
    valid = tmp_path / "valid.parquet"
    _table(1500, rounded=False, seed=3).drop(columns="amount").to_parquet(valid, index=False)
    local = _train(None, parts, tmp_path / "l.mlsys", "--target", "y", "--valid", valid)
    dist = _train(dask_cluster, parts, tmp_path / "d.mlsys", "--target", "y", "--valid", valid)
    assert abs(dist["metrics"]["valid"]["auc"] - local["metrics"]["valid"]["auc"]) < 0.02
    assert dist["baselines"] == local["baselines"]
    d, m = BundleReader(tmp_path / "d.mlsys").manifest, BundleReader(tmp_path / "l.mlsys").manifest
    assert sorted(d) == sorted(m) and d["input_schema"] == m["input_schema"]
    for layout in (d["predictor"], m["predictor"]):  # the fit record differs: another model, its own best round
        del layout["estimator"]["fit_info"]
    assert d["predictor"] == m["predictor"]
    assert sorted(BundleReader(tmp_path / "d.mlsys").names()) == sorted(BundleReader(tmp_path / "l.mlsys").names())
    assert run_cli("export", tmp_path / "d.mlsys", "-o", tmp_path / "d.onnx").code == 0  # parity-checked export


def test_a_features_bundle_is_used_as_fitted(dask_cluster, tmp_path):
    parts = partition(_table(1200, rounded=True, seed=4).drop(columns="amount"), tmp_path / "parts", 4)
    assert run_cli("featurize", parts, "--target", "y", "--preset", "linear", "-o", tmp_path / "f.mlsys").code == 0
    _train(dask_cluster, parts, tmp_path / "d.mlsys", "--target", "y", "--features", tmp_path / "f.mlsys")
    fitted = BundleReader(tmp_path / "f.mlsys").json("features/featurizer.json")
    assert BundleReader(tmp_path / "d.mlsys").json("features/featurizer.json") == fitted


@pytest.mark.parametrize("args,message", [
    (["--model", "forest"], "--model forest has no distributed trainer for --engine dask"),
    (["--calibrate", "isotonic"], "--calibrate is not supported with --engine dask"),
])
def test_what_dask_cannot_train_is_a_usage_error(dask_cluster, tmp_path, args, message):
    parts = partition(_table(300, rounded=True, seed=5), tmp_path / "parts", 2)
    result = run_cli("train", parts, "--target", "y", "-o", tmp_path / "m.mlsys", *args,
                     "--engine", "dask", "--scheduler", dask_cluster.scheduler_address)
    assert_clean_error(result, 2)
    assert message in result.stderr
    assert "xgboost" in result.stderr or "--calibrate" in message
    assert not (tmp_path / "m.mlsys").exists()


def test_a_text_target_trains_and_a_blank_one_is_refused_on_the_cluster_as_a_missing_one(dask_cluster, tmp_path):
    """A text target was an internal error (np.dtype of pandas' StringDtype); Parquet keeps an empty
    label as "": missing, as train refuses it locally (not a class "")."""
    df = _table(300, rounded=True, seed=6)
    df["y"] = np.where(df["y"], "yes", "no").astype(object)
    words = partition(df.drop(columns=["amount"]), tmp_path / "words", 2)
    assert _train(dask_cluster, words, tmp_path / "w.mlsys", "--target", "y")["classes"] == ["no", "yes"]
    df.loc[[4, 150], "y"] = ["", "  "]
    parts = partition(df.drop(columns=["amount"]), tmp_path / "parts", 2)
    result = run_cli("train", parts, "--target", "y", "-o", tmp_path / "m.mlsys",
                     "--engine", "dask", "--scheduler", dask_cluster.scheduler_address)
    assert_clean_error(result, 3)
    assert "target 'y' has 2 missing or infinite value(s)" in result.stderr


def test_timeout_stops_training_on_every_worker_at_one_round(dask_cluster, tmp_path):
    parts = partition(_table(1200, rounded=True, seed=6).drop(columns="amount"), tmp_path / "parts", 3)
    report = _train(dask_cluster, parts, tmp_path / "d.mlsys", "--target", "y", "--param", "n_estimators=100000",
                    "--timeout", "2s")
    assert report["fit"]["stopped_by"] == "timeout" and report["fit"]["n_estimators"] < 100000


@pytest.mark.slow
@pytest.mark.xdist_group("dask-loss")  # mostly waiting for Dask to notice the death: beside the other group
def test_a_worker_killed_during_training_fails_cleanly_or_is_retried(loss_cluster, tmp_path):
    from mlsys_cli.data.cluster import Engine
    from mlsys_cli.errors import InputError
    from mlsys_cli.models.distributed import train_dask
    from mlsys_cli.models.train import TrainSpec
    from tests.dask_cluster import kill_a_worker_during

    parts = partition(_table(20000, rounded=False, seed=7).drop(columns="amount"), tmp_path / "parts", 8)
    events = []
    spec = TrainSpec(family="xgboost", target="y", params={"n_estimators": 3000, "max_depth": 8}, seed=0)
    engine = Engine("dask", loss_cluster.scheduler_address)

    class Progress:  # the trainer says when it starts training on the cluster
        def update(self, description=None, **_):
            events.append(description)

    from mlsys_cli.models.train import FitRun

    outcome = kill_a_worker_during(loss_cluster, lambda: train_dask([parts], spec, run=FitRun(progress=Progress()),
                                                                    engine=engine),
                                   lambda: "training on the Dask cluster" in events)
    if "error" in outcome:
        assert isinstance(outcome["error"], InputError), outcome
        assert "a worker was lost" in outcome["error"].message
    else:
        bundle, _ = outcome["result"]
        assert bundle.manifest["recipe"]["fit"]["engine"] == "dask"
    assert sorted(os.listdir(tmp_path)) == ["parts"]


def test_a_dask_tunes_refit_trains_on_the_cluster(dask_cluster, tmp_path):
    from types import SimpleNamespace

    from mlsys_cli.models.dask_trials import refit_on_cluster
    from mlsys_cli.models.train import FitRun, TrainSpec

    parts = partition(_table(900, rounded=True, seed=8).drop(columns="amount"), tmp_path / "parts", 3)
    pd.read_parquet(parts).to_csv(tmp_path / "train.csv", index=False)
    engine = {"name": "dask", "scheduler": dask_cluster.scheduler_address, "connect_timeout": 10.0}
    spec = TrainSpec(family="xgboost", target="y", params={"n_estimators": 10}, seed=0)
    bundle = refit_on_cluster(SimpleNamespace(engine=engine, train=str(parts), valid=None), spec, FitRun())
    assert bundle.manifest["recipe"]["fit"]["engine"] == "dask"
    for job, family in ((SimpleNamespace(engine=None, train=str(parts), valid=None), "xgboost"),
                        (SimpleNamespace(engine=engine, train=str(parts), valid=None), "linear"),
                        (SimpleNamespace(engine=engine, train=str(tmp_path / "train.csv"), valid=None), "xgboost")):
        assert refit_on_cluster(job, TrainSpec(family=family, target="y", seed=0), FitRun()) is None  # refit locally


# One xdist worker runs every Dask test: they share one LocalCluster (tests/dask_cluster.py).
pytestmark = pytest.mark.xdist_group("dask")
