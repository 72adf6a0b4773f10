"""drift --engine dask: the current data counted per partition on the workers equals the local scan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys_cli.data.cluster import Engine
from mlsys_cli.errors import InputError
from mlsys_cli.monitor.drift import DriftOptions, detect
from tests.conftest import assert_clean_error, run_cli
from tests.dask_cluster import free_port, partition
from tests.monitor.test_drift import population


def _current(n, seed):
    """Shifted data with serve-log columns: a time, shadow rows, categories the reference never saw."""
    df = population(n, seed, mean=0.2, new=0.1)
    rng = np.random.default_rng(seed)
    df["_mlsys_time"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 4 * 86400, n), unit="s")
    df["_mlsys_role"] = np.where(rng.uniform(size=n) < 0.1, "shadow", "champion")
    df.loc[rng.uniform(size=n) < 0.02, "city"] = "brand_new"
    return df


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_drift")
    ref = root / "ref.parquet"
    population(5000, 1).to_parquet(ref, index=False)
    cur = _current(90_000, 2)
    parts = root / "cur"
    parts.mkdir()
    # One file of more rows than a batch (65,536): its batches are added in order, as locally.
    cur.iloc[:70_000].to_parquet(parts / "part-000.parquet", index=False)
    partition(cur.iloc[70_000:].reset_index(drop=True), root / "rest", 4)
    for f in sorted((root / "rest").iterdir()):
        f.rename(parts / f"part-1{f.name[5:]}")
    return ref, parts


@pytest.mark.parametrize("options", [
    DriftOptions(domain_rows=500, permutations=19),
    DriftOptions(domain_classifier=False, time_col="_mlsys_time", window="1d", include_shadow=True),
])
def test_drift_on_dask_is_the_local_report(tables, dask_cluster, options):
    ref, parts = tables
    local = detect(parts, reference=ref, options=options).to_dict()
    dist = detect(str(parts / "*.parquet"), reference=ref, options=options,
                  engine=Engine("dask", dask_cluster.scheduler_address)).to_dict()
    for d in (local, dist):
        d.pop("seconds")
        d["current"].pop("source")
    assert dist == local
    assert local["drift_detected"] and {"normal", "tier"} <= set(local["drifted"])


def test_the_counts_are_the_local_ones_bit_for_bit(tables, dask_cluster):
    from mlsys_cli.monitor._detect import _count
    from mlsys_cli.monitor.dask_scan import count_dask
    from mlsys_cli.monitor.reference import from_table, reference_cells
    from mlsys_cli.monitor.scan import Source

    ref, parts = tables
    options = DriftOptions(time_col="_mlsys_time", window="1d")
    columns = ["normal", "skewed", "partly_missing", "city", "tier"]
    profiles = from_table(ref, columns, 0, 0).profiles
    cells = [reference_cells(c, profiles[c])[0] for c in columns]
    sample = (["normal", "city"], 300)
    local = _count(Source(parts), cells, options, sample)
    dist = count_dask(Source(parts), cells, options, sample, Engine("dask", dask_cluster.scheduler_address))
    assert dist[1] == local[1] and dist[2].equals(local[2])
    for name in columns:
        a, b = local[0][name], dist[0][name]
        assert np.array_equal(a.total, b.total) and a.unseen == b.unseen
        assert (a.sums is None and b.sums is None) or a.sums.tobytes() == b.sums.tobytes()
        assert sorted(a.windows) == sorted(b.windows)
        assert all(np.array_equal(a.windows[w], b.windows[w]) for w in a.windows)
        assert all(a.window_sums[w].tobytes() == b.window_sums[w].tobytes() for w in a.window_sums)


def test_a_partition_missing_a_column_is_named(tables, dask_cluster, tmp_path):
    ref, parts = tables
    odd = partition(pd.read_parquet(parts / "part-1000.parquet"), tmp_path / "odd", 2)
    pd.read_parquet(odd / "part-001.parquet").drop(columns="normal").to_parquet(odd / "part-001.parquet", index=False)
    with pytest.raises(InputError, match=r"part-001\.parquet: no column 'normal'"):
        detect(odd, reference=ref, options=DriftOptions(domain_classifier=False),
               engine=Engine("dask", dask_cluster.scheduler_address))


@pytest.mark.parametrize("args,code,message", [
    (["--save-profile", "p.profile"], 2, "--save-profile profiles on this machine"),
    (["--reference", "{ref}", "--scheduler", "tcp://127.0.0.1:{port}", "--connect-timeout", "1s"], 3,
     "cannot reach the Dask scheduler"),
])
def test_drift_on_dask_bad_input(tables, tmp_path, args, code, message):
    ref, parts = tables
    args = [a.format(ref=ref, port=free_port()) for a in args]
    result = run_cli("drift", parts, "--engine", "dask", *args, cwd=tmp_path)
    assert_clean_error(result, code)
    assert message in result.stderr
    assert not (tmp_path / "p.profile").exists()


def test_current_data_that_is_not_parquet_is_refused(tables, dask_cluster, tmp_path):
    ref, parts = tables
    pd.read_parquet(parts / "part-1000.parquet").to_csv(tmp_path / "cur.csv", index=False)
    result = run_cli("drift", tmp_path / "cur.csv", "--reference", ref, "--engine", "dask",
                     "--scheduler", dask_cluster.scheduler_address)
    assert_clean_error(result, 3)
    assert "--engine dask reads Parquet files" in result.stderr


# One xdist worker runs every Dask test: they share one LocalCluster (tests/dask_cluster.py).
pytestmark = pytest.mark.xdist_group("dask")


def test_the_model_checks_run_on_the_workers_and_equal_the_local_ones(dask_cluster, tmp_path):
    """drift --model: each file predicted on a worker (model loaded there once), the outputs and
    labels joined in file order: the report's model part equals the local one."""
    from mlsys_cli.models.train import TrainSpec, train_model

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.normal(size=3000), "b": rng.normal(size=3000), "c": rng.choice(["x", "y", "z"], 3000)})
    df["y"] = df["a"] + rng.normal(size=3000) > 0
    df.iloc[:1500].to_parquet(tmp_path / "ref.parquet", index=False)
    train_model(str(tmp_path / "ref.parquet"), TrainSpec(family="linear", target="y"))[0].save(tmp_path / "m.mlsys")
    cur = df.iloc[1500:].reset_index(drop=True)
    cur["a"] += 0.5
    partition(cur, tmp_path / "cur", 5)
    options = DriftOptions(domain_classifier=False)
    local = detect(str(tmp_path / "cur"), reference=tmp_path / "ref.parquet", model=str(tmp_path / "m.mlsys"),
                   options=options).to_dict()
    dist = detect(str(tmp_path / "cur" / "*.parquet"), reference=tmp_path / "ref.parquet", model=str(tmp_path / "m.mlsys"),
                  options=options, engine=Engine("dask", dask_cluster.scheduler_address)).to_dict()
    assert dist["model"]["outputs"] == "predicted by the model (on the Dask workers)"
    for d in (local, dist):
        d.pop("seconds")
        d["current"].pop("source")
        d["model"].pop("outputs")
    assert dist == local
    assert local["model"]["rows"] == 1500 and local["model"]["metrics"]["current"]["auc"] > 0.5
