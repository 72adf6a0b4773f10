"""featurize --engine dask: the same fitted featurizer as local, and the same feature table."""

from __future__ import annotations

import pandas as pd
import pytest

from mlsys_cli.bundle import BundleReader
from mlsys_cli.data.cluster import Engine
from mlsys_cli.errors import InputError
from mlsys_cli.features.bundle import load_features_bundle
from functools import partial

from mlsys_cli.features.dask_featurize import apply_dask, read_train
from mlsys_cli.features.featurize import apply, featurize
from tests.dask_cluster import partition


@pytest.fixture(scope="module")
def parts(small_tables, tmp_path_factory):
    frame = pd.read_parquet(small_tables["binary"]["train"])
    return partition(frame, tmp_path_factory.mktemp("featurize_parts"), 5)


@pytest.mark.parametrize("params", [{"preset": "trees"}, {"preset": "linear", "cross": ["plan,region"], "bins": 5}])
def test_the_featurizer_fitted_on_dask_equals_the_local_one(parts, dask_cluster, tmp_path, params):
    engine = Engine("dask", dask_cluster.scheduler_address)
    featurize([parts], tmp_path / "local.mlsys", target="churned", **params)
    featurize([str(parts / "*.parquet")], tmp_path / "dask.mlsys", target="churned", read=partial(read_train, engine=engine),
              **params)
    local, dist = BundleReader(tmp_path / "local.mlsys"), BundleReader(tmp_path / "dask.mlsys")
    assert dist.json("features/featurizer.json") == local.json("features/featurizer.json")
    fz_local, _ = load_features_bundle(tmp_path / "local.mlsys")
    fz_dask, _ = load_features_bundle(tmp_path / "dask.mlsys")
    assert fz_dask.to_onnx().SerializeToString() == fz_local.to_onnx().SerializeToString()


def test_apply_on_dask_writes_the_local_table(parts, dask_cluster, tmp_path):
    engine = Engine("dask", dask_cluster.scheduler_address)
    featurize([parts], tmp_path / "f.mlsys", target="churned", preset="linear")
    local = apply(tmp_path / "f.mlsys", [parts], tmp_path / "local.parquet", batch_rows=32)
    dist = apply_dask(tmp_path / "f.mlsys", [parts], tmp_path / "dask.parquet", batch_rows=32, engine=engine)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "local.parquet"))
    assert (dist.rows, dist.n_features, dist.target) == (local.rows, local.n_features, "churned")


def test_apply_refuses_partitions_missing_a_fitted_column(parts, dask_cluster, tmp_path):
    featurize([parts], tmp_path / "f.mlsys", target="churned")
    odd = tmp_path / "odd"
    partition(pd.read_parquet(parts), odd, 2)
    pd.read_parquet(odd / "part-001.parquet").drop(columns="tenure_months").to_parquet(odd / "part-001.parquet")
    with pytest.raises(InputError, match=r"part-001\.parquet has no column 'tenure_months'"):
        apply_dask(tmp_path / "f.mlsys", [odd], tmp_path / "x.parquet", engine=Engine("dask", dask_cluster.scheduler_address))
    assert not (tmp_path / "x.parquet").exists()




@pytest.fixture(scope="module")
def odd_parts(tmp_path_factory):
    """Twelve files of one schema: a category only in each file, a file without `num` or `day`
    values, an all-missing date column in the first file (its type comes from the next ones),
    a high-cardinality column, and rows without a target."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.features.frames import raw_frame

    frame = raw_frame(1200, seed=3)
    n, parts = len(frame), 12
    size = n // parts
    frame["cat"] = [f"only{i // size}" if i % 9 == 0 else c for i, c in enumerate(frame["cat"])]
    frame["hc"] = [f"h{v}" for v in np.random.default_rng(3).integers(0, 300, n)]
    frame.loc[frame.index[:size], "day"] = None
    frame.loc[frame.index[3 * size:4 * size], "num"] = np.nan
    frame.loc[frame.index[7 * size + 2], "skewed"] = np.inf  # counted by out_of_range
    frame["y"] = frame["y"].astype(object)
    frame.loc[frame.index[5::11], "y"] = None
    schema = pa.Table.from_pandas(frame, preserve_index=False).schema.remove_metadata()
    directory = tmp_path_factory.mktemp("odd_parts")
    for i in range(parts):
        piece = pa.Table.from_pandas(frame.iloc[i * size:(i + 1) * size], schema=schema, preserve_index=False)
        pq.write_table(piece, directory / f"part-{i:03d}.parquet")
    return directory


@pytest.mark.parametrize("params", [{"preset": "trees"}, {"preset": "mlp", "bins": 3, "cross": ["cat,city"]}])
def test_the_column_by_column_fit_on_many_odd_partitions_equals_the_local_one(odd_parts, dask_cluster, tmp_path, params):
    engine = Engine("dask", dask_cluster.scheduler_address)
    featurize([odd_parts], tmp_path / "local.mlsys", target="y", **params)
    featurize([odd_parts], tmp_path / "dask.mlsys", target="y", read=partial(read_train, engine=engine), **params)
    local, dist = BundleReader(tmp_path / "local.mlsys"), BundleReader(tmp_path / "dask.mlsys")
    assert dist.json("features/featurizer.json") == local.json("features/featurizer.json")
    state = local.json("features/featurizer.json")["fitted"]
    assert state["roles_"]["day"]["role"] == "datetime" and state["roles_"]["hc"]["role"] == "categorical_high"
    assert dist.manifest["out_of_range"] == {"skewed": 1}
    for key in ("reference", "out_of_range", "input_schema", "roles", "report"):
        assert dist.manifest.get(key) == local.manifest.get(key), key


@pytest.mark.slow
@pytest.mark.xdist_group("dask-loss")  # mostly waiting for Dask to notice the death: beside the other group
def test_a_worker_killed_during_the_fit_and_the_apply_is_retried(odd_parts, loss_cluster, tmp_path, monkeypatch):
    """Dask reruns the lost worker's reads and transforms elsewhere: the same bundle and table as local."""
    import glob
    import threading

    from mlsys_cli.features import dask_featurize
    from tests.dask_cluster import kill_a_worker_during

    engine = Engine("dask", loss_cluster.scheduler_address)
    read = threading.Event()
    gather = dask_featurize.gather_column
    monkeypatch.setattr(dask_featurize, "gather_column", lambda *a: (read.set(), gather(*a))[1])
    featurize([odd_parts], tmp_path / "local.mlsys", target="y", preset="linear")
    outcome = kill_a_worker_during(loss_cluster, lambda: featurize(
        [odd_parts], tmp_path / "dask.mlsys", target="y", preset="linear", read=partial(read_train, engine=engine)), read.is_set)
    assert "result" in outcome, outcome
    local, dist = BundleReader(tmp_path / "local.mlsys"), BundleReader(tmp_path / "dask.mlsys")
    assert dist.json("features/featurizer.json") == local.json("features/featurizer.json")
    apply(tmp_path / "local.mlsys", [odd_parts], tmp_path / "local.parquet", batch_rows=10)
    outcome = kill_a_worker_during(
        loss_cluster, lambda: apply_dask(tmp_path / "local.mlsys", [odd_parts], tmp_path / "dask.parquet", batch_rows=10,
                                         engine=engine),
        lambda: bool(glob.glob(str(tmp_path / ".dask.parquet*" / "part-*.parquet"))))
    assert "result" in outcome, outcome
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "local.parquet"))


# One xdist worker runs every Dask test: they share one LocalCluster (tests/dask_cluster.py).
pytestmark = pytest.mark.xdist_group("dask")
