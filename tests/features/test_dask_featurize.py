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


# One xdist worker runs every Dask test: they share one LocalCluster (tests/dask_cluster.py).
pytestmark = pytest.mark.xdist_group("dask")
