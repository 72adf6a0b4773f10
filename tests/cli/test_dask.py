"""--engine dask from the command line: exit codes, and a cluster started with the `dask` CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc
from tests.dask_cluster import free_port, partition

DASK = str(Path(sys.executable).parent / "dask")


@pytest.mark.parametrize("args", [
    ["featurize", "{train}", "--target", "churned", "-o", "f.mlsys"],
    ["tune", "{train}", "--valid", "{valid}", "--target", "churned", "--model", "xgboost", "-o", "f.mlsys"],
    ["drift", "{valid}", "--reference", "{train}", "-o", "f.mlsys"],
])
def test_without_the_extra_dask_is_a_usage_error_naming_the_install(small_tables, tmp_path, args):
    t = small_tables["binary"]
    argv = ["mlsys", *[a.format(train=t["train"], valid=t["valid"]) for a in args], "--engine", "dask"]
    # The real process, with dask made unimportable as on an install without the extra.
    code = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None; from mlsys_cli.app import main; "
            f"sys.argv = {argv!r}; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error: --engine dask needs the dask extra" in proc.stderr
    assert "pip install 'mlsys[dask]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "f.mlsys").exists()


def test_an_unreachable_scheduler_is_exit_3_after_the_timeout(small_tables, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t = small_tables["binary"]
    assert run_cli("featurize", t["train"], "--target", "churned", "-o", tmp_path / "f.mlsys").code == 0
    result = run_proc("featurize", "--apply", tmp_path / "f.mlsys", t["test"], "-o", "x.parquet", "--engine", "dask",
                      "--scheduler", address, "--connect-timeout", "1s", cwd=tmp_path, timeout=120)
    assert_clean_error(result, 3)
    assert f"cannot reach the Dask scheduler at {address}" in result.stderr
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("answer", [None, b"HTTP/1.0 400 Bad Request\r\n\r\n" + b"\xff" * 64], ids=["silent", "garbage"])
def test_an_address_that_is_not_a_dask_scheduler_is_exit_3_not_a_hang(small_tables, tmp_path, answer):
    """Something accepts the connection but never speaks Dask (silent, or an HTTP server's bytes):
    the handshake waited for ever, or decoded garbage into a 3 EiB allocation (exit 1)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            if answer:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    t = small_tables["binary"]
    try:
        result = run_proc("drift", t["valid"], "--reference", t["train"], "--engine", "dask", "--scheduler", address,
                          "--connect-timeout", "1s", cwd=tmp_path, timeout=120)
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert_clean_error(result, 3)
    assert f"Dask scheduler at {address}" in result.stderr


def test_the_scheduler_from_the_environment_is_used_by_dask_only(small_tables, tmp_path):
    t = small_tables["binary"]
    assert run_cli("featurize", t["train"], "--target", "churned", "-o", tmp_path / "f.mlsys").code == 0
    env = {"MLSYS_DASK_SCHEDULER": f"tcp://127.0.0.1:{free_port()}"}
    local = run_proc("featurize", "--apply", tmp_path / "f.mlsys", t["test"], "-o", "x.parquet", cwd=tmp_path, env=env)
    assert local.code == 0, local.stderr
    dask = run_proc("featurize", "--apply", tmp_path / "f.mlsys", t["test"], "-o", "y.parquet", "--engine", "dask",
                    "--connect-timeout", "1s", cwd=tmp_path, env=env, timeout=120)
    assert_clean_error(dask, 3)
    assert env["MLSYS_DASK_SCHEDULER"] in dask.stderr


def test_the_commands_own_cluster_serves_http_on_a_free_port_not_8787():
    """With dashboard_address=None the scheduler still binds 8787 (and warns when it is taken)."""
    from mlsys_cli.data.cluster import Engine, connect

    with connect(Engine("dask")) as client:
        services = client.scheduler_info()["services"]
    assert services and 8787 not in services.values()


@pytest.mark.parametrize("args,message", [
    (["--engine", "spark"], "unknown engine 'spark'"),
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --engine dask"),
])
def test_bad_engine_options_are_usage_errors(small_tables, tmp_path, args, message):
    result = run_cli("featurize", small_tables["binary"]["train"], "--target", "churned", "-o", tmp_path / "f.mlsys", *args)
    assert_clean_error(result, 2)
    assert message in result.stderr


@pytest.mark.parametrize("args,code,message", [
    (["--model", "linear"], 2, "--model linear has no distributed trainer for --engine dask"),
    (["--model", "auto"], 2, "--model auto has no distributed trainer for --engine dask"),
    (["--model", "xgboost", "--n-jobs", "2"], 2, "--n-jobs with --engine dask needs --scheduler"),
    (["--model", "xgboost", "--scheduler", "tcp://127.0.0.1:{port}", "--connect-timeout", "1s"], 3,
     "cannot reach the Dask scheduler at tcp://127.0.0.1:"),
])
def test_tune_on_dask_refuses_what_it_cannot_run(small_tables, tmp_path, args, code, message):
    t = small_tables["binary"]
    args = [a.format(port=free_port()) for a in args]
    result = run_cli("tune", t["train"], "--valid", t["valid"], "--target", "churned", "--trials", "2",
                     "-o", tmp_path / "p.json", "--engine", "dask", *args)
    assert_clean_error(result, code)
    assert message in result.stderr
    assert code == 3 or "xgboost" in result.stderr or "--scheduler" in message
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow
def test_a_cluster_started_with_the_dask_command_line(small_tables, tmp_path):
    """`dask scheduler` and `dask worker` as separate processes on loopback, the way users deploy them."""
    from distributed import Client

    t = small_tables["binary"]
    parts = partition(pd.concat([pd.read_parquet(t["train"]), pd.read_parquet(t["test"])]), tmp_path / "parts", 12)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                                  "--dashboard-address", ":0"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = subprocess.Popen([DASK, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                               "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
        assert run_cli("train", t["train"], "--target", "churned", "--param", "n_estimators=10", "-o", tmp_path / "m.mlsys").code == 0
        on = ["--engine", "dask", "--scheduler", address]
        for args in (["featurize", parts, "--target", "churned", "-o", "{out}.mlsys"],
                     ["predict", tmp_path / "m.mlsys", parts, "--keep", "customer_id", "-o", "{out}.parquet"]):
            local = run_cli(*[str(a).format(out="local") for a in args], cwd=tmp_path)
            dist = run_proc(*[str(a).format(out="dask") for a in args], *on, cwd=tmp_path)
            assert local.code == 0 and dist.code == 0, (local.stderr, dist.stderr)
        assert (pd.read_parquet(tmp_path / "dask.parquet").equals(pd.read_parquet(tmp_path / "local.parquet")))
        from mlsys_cli.bundle import BundleReader

        assert (BundleReader(tmp_path / "dask.mlsys").json("features/featurizer.json")
                == BundleReader(tmp_path / "local.mlsys").json("features/featurizer.json"))
    finally:  # each in its own session: kill the nanny's worker processes with it (a graceful stop takes ~10 s)
        for p in (worker, scheduler):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# One xdist worker runs every Dask test: they share one LocalCluster (tests/dask_cluster.py).
pytestmark = pytest.mark.xdist_group("dask")
