"""predict --engine dask: the same predictions as local, the model loaded once per worker, clean failures."""

from __future__ import annotations

import glob
import json
import os
import signal
import threading

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlsys_cli.data.cluster import Engine
from mlsys_cli.deploy.dask_predict import predict_dask
from mlsys_cli.deploy.predict import predict_file
from mlsys_cli.errors import InputError
from tests.conftest import run_cli
from tests.dask_cluster import partition


@pytest.fixture(scope="module")
def setup(small_tables, tmp_path_factory):
    """A binary and a regression model (bundle + ONNX) and their test tables split into many files."""
    root = tmp_path_factory.mktemp("dask_predict")
    out = {}
    for task in ("binary", "regression"):
        t = small_tables[task]
        model = root / f"{task}.mlsys"
        assert run_cli("train", t["train"], "--target", t["target"], "--model", "xgboost",
                       "--param", "n_estimators=20", "-o", model).code == 0
        onnx = root / f"{task}.onnx"
        assert run_cli("export", model, "-o", onnx).code == 0
        parts = partition(pd.read_parquet(t["test"]), root / f"{task}_parts", 7)
        out[task] = {"model": model, "onnx": onnx, "parts": parts, "test": t["test"]}
    return out


def _engine(cluster) -> Engine:
    return Engine("dask", cluster.scheduler_address)


@pytest.mark.parametrize("task,kind", [("binary", "model"), ("regression", "model"), ("binary", "onnx")])
def test_dask_predictions_equal_local(setup, dask_cluster, tmp_path, task, kind):
    s = setup[task]
    keep = ["customer_id"] if task == "binary" else []
    local = predict_file(s[kind], s["parts"], tmp_path / "local.parquet", keep=keep, batch_rows=40)
    dist = predict_dask(s[kind], str(s["parts"] / "*.parquet"), tmp_path / "dask.parquet", keep=keep, batch_rows=40,
                        engine=_engine(dask_cluster))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "local.parquet"))
    assert (dist.rows, dist.columns, dist.summary) == (local.rows, local.columns, local.summary)
    lineage = pq.read_schema(tmp_path / "dask.parquet").metadata[b"mlsys"]
    assert b'"command": "predict"' in lineage and b"part-006.parquet" in lineage
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no scratch left behind


def test_each_worker_loads_the_model_once(setup, dask_cluster, tmp_path):
    from distributed import Client

    from mlsys_cli.data import cluster as cluster_module

    s = setup["binary"]
    for run in range(2):
        predict_dask(s["model"], s["parts"], tmp_path / f"p{run}.parquet", engine=_engine(dask_cluster))
    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        cached = client.run(lambda: [k[0] for k in cluster_module._CACHE])
    # 7 partitions x 2 runs over 3 workers: every worker that ran a task holds the model once.
    assert all(paths.count(str(s["model"].resolve())) <= 1 for paths in cached.values())
    assert sum(paths.count(str(s["model"].resolve())) for paths in cached.values()) >= 1


def test_a_changed_model_is_not_served_from_the_cache(setup, dask_cluster, tmp_path):
    s = setup["binary"]
    copy = tmp_path / "m.mlsys"
    copy.write_bytes(s["model"].read_bytes())
    predict_dask(copy, s["parts"], tmp_path / "a.parquet", engine=_engine(dask_cluster))
    copy.write_bytes(setup["regression"]["model"].read_bytes())  # same path, another model
    result = predict_dask(copy, setup["regression"]["parts"], tmp_path / "b.parquet", engine=_engine(dask_cluster))
    assert result.task == "regression" and "prediction" in pd.read_parquet(tmp_path / "b.parquet")


def test_inconsistent_partitions_are_named(setup, dask_cluster, tmp_path):
    parts = tmp_path / "parts"
    partition(pd.read_parquet(setup["binary"]["test"]), parts, 3)
    odd = pd.read_parquet(parts / "part-001.parquet")
    odd["age"] = odd["age"].astype(str)
    odd.to_parquet(parts / "part-001.parquet", index=False)
    with pytest.raises(InputError, match=r"part-001\.parquet: column 'age' is (large_)?string.*part-000\.parquet has double"):
        predict_dask(setup["binary"]["model"], parts, tmp_path / "p.parquet", engine=_engine(dask_cluster))
    pd.read_parquet(parts / "part-002.parquet").drop(columns="plan").to_parquet(parts / "part-002.parquet")
    with pytest.raises(InputError, match=r"part-002\.parquet has no column 'plan'"):
        predict_dask(setup["binary"]["model"], parts, tmp_path / "p.parquet", engine=_engine(dask_cluster))
    assert not (tmp_path / "p.parquet").exists()


def test_a_bad_value_in_one_partition_fails_the_job_cleanly(setup, dask_cluster, tmp_path):
    parts = tmp_path / "parts"
    partition(pd.read_parquet(setup["binary"]["test"]), parts, 4)
    (tmp_path / "p.parquet").write_bytes(b"previous")
    bad = pd.read_parquet(parts / "part-002.parquet")
    bad.loc[bad.index[3], "signup_date"] = pd.NaT
    bad["signup_date"] = bad["signup_date"].astype(str)  # a date column now holding text
    bad["signup_date"] = bad["signup_date"].where(bad.index != bad.index[3], "not a date")
    for f in parts.glob("*.parquet"):  # one schema everywhere, so only the value is wrong
        frame = pd.read_parquet(f)
        frame["signup_date"] = bad["signup_date"] if f.name == "part-002.parquet" else frame["signup_date"].astype(str)
        frame.to_parquet(f, index=False)
    with pytest.raises(InputError, match=r"part-002\.parquet: .*signup_date"):
        predict_dask(setup["binary"]["model"], parts, tmp_path / "p.parquet", engine=_engine(dask_cluster))
    assert (tmp_path / "p.parquet").read_bytes() == b"previous"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_a_directory_output_has_one_part_per_input_partition(setup, dask_cluster, tmp_path):
    s = setup["binary"]
    local = predict_file(s["model"], s["parts"], tmp_path / "local.parquet", keep=["customer_id"])
    out = tmp_path / "preds"
    for run in range(2):  # the second run replaces the first output's parts
        result = predict_dask(s["model"], s["parts"], f"{out}/", keep=["customer_id"], engine=_engine(dask_cluster))
    names = sorted(os.listdir(out))
    assert names == [f"part-{i:06d}.parquet" for i in range(7)] and result.rows == local.rows
    pd.testing.assert_frame_equal(pd.concat([pd.read_parquet(out / n) for n in names], ignore_index=True),
                                  pd.read_parquet(tmp_path / "local.parquet"))
    for i, name in enumerate(names):  # each part's lineage names its own input file and its rows
        lineage = json.loads(pq.read_schema(out / name).metadata[b"mlsys"])
        assert [r["path"] for r in lineage["inputs"]][1:] == [str(s["parts"] / f"part-{i:03d}.parquet")]
        assert lineage["rows"] == pq.ParquetFile(out / name).metadata.num_rows
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no scratch or old parts left


def test_a_directory_holding_other_files_is_not_replaced(setup, dask_cluster, tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds other files than part-\*\.parquet \(notes\.txt\)"):
        predict_dask(setup["binary"]["model"], setup["binary"]["parts"], out, engine=_engine(dask_cluster))
    assert os.listdir(out) == ["notes.txt"] and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_a_directory_output_needs_the_dask_engine(setup, tmp_path):
    from tests.conftest import assert_clean_error

    result = run_cli("predict", setup["binary"]["model"], setup["binary"]["parts"], "-o", f"{tmp_path}/preds/")
    assert_clean_error(result, 2)
    assert "names a directory; give a file name" in result.stderr and "or --engine dask for one part" in result.stderr
    assert not (tmp_path / "preds").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_job_fails_cleanly_and_writes_nothing(setup, tmp_path):
    """With no retries allowed, a lost worker is exit 3 and no output; scratch parts are removed."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    parts = partition(pd.concat([pd.read_parquet(setup["binary"]["test"])] * 8), tmp_path / "parts", 40)
    out = tmp_path / "out" / "p.parquet"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=logging.CRITICAL) as cluster:
            with Client(cluster, set_as_default=False) as client:
                pids = list(client.run(os.getpid).values())
            outcome = {}

            def job():
                try:
                    predict_dask(setup["binary"]["model"], parts, out, batch_rows=8, engine=Engine("dask", cluster.scheduler_address))
                    outcome["ok"] = True
                except InputError as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=job)
            thread.start()
            while thread.is_alive() and not glob.glob(str(out.parent / ".p.parquet*" / "part-*.parquet")):
                thread.join(0.05)
            assert thread.is_alive(), "the job ended before any partition was written"
            os.kill(pids[0], signal.SIGKILL)
            thread.join()
    assert "error" in outcome, outcome
    assert "worker was lost" in outcome["error"].message
    assert not out.exists() and os.listdir(out.parent) == []


@pytest.mark.slow
@pytest.mark.xdist_group("dask-loss")  # mostly waiting for Dask to notice the death: beside the other group
def test_a_worker_killed_mid_job_is_retried_and_the_directory_output_is_complete(setup, loss_cluster, tmp_path):
    """With Dask's retries (the default), the killed worker's partitions run again elsewhere: every part, once."""
    from tests.dask_cluster import kill_a_worker_during

    parts = partition(pd.concat([pd.read_parquet(setup["binary"]["test"])] * 8), tmp_path / "parts", 40)
    predict_file(setup["binary"]["model"], parts, tmp_path / "local.parquet")
    out = tmp_path / "preds"
    outcome = kill_a_worker_during(
        loss_cluster, lambda: predict_dask(setup["binary"]["model"], parts, f"{out}/", batch_rows=8, engine=_engine(loss_cluster)),
        lambda: bool(glob.glob(str(tmp_path / ".preds*" / "part-*.parquet"))))
    assert "result" in outcome, outcome
    names = sorted(os.listdir(out))
    assert names == [f"part-{i:06d}.parquet" for i in range(40)]
    pd.testing.assert_frame_equal(pd.concat([pd.read_parquet(out / n) for n in names], ignore_index=True),
                                  pd.read_parquet(tmp_path / "local.parquet"))
    assert sorted(os.listdir(tmp_path)) == ["local.parquet", "parts", "preds"]


# One xdist worker runs every Dask test: they share one LocalCluster (tests/dask_cluster.py).
pytestmark = pytest.mark.xdist_group("dask")
