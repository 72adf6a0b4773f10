"""mlsys serve: wiring, the startup line, and the start-up errors (exit codes) as real processes."""

from __future__ import annotations

import json
import socket
import zipfile

import pytest

from tests.conftest import assert_clean_error, run_cli, run_proc
from tests.deploy.serving import Server, write_registry


@pytest.fixture(scope="module")
def bundle(small_tables, tmp_path_factory):
    t = small_tables["regression"]
    root = tmp_path_factory.mktemp("serve_cli")
    result = run_cli("train", t["train"], "--target", t["target"], "--model", "linear", "-o", root / "m.mlsys")
    assert result.code == 0, result.stderr
    (root / "test.parquet").write_bytes(t["test"].read_bytes())
    return root / "m.mlsys"


def test_bundle_is_served_through_its_onnx_graph(bundle, tmp_path):
    import pandas as pd

    from tests.deploy.serving import json_records

    with Server(bundle, "--name", "ltv", cwd=tmp_path) as s:
        (model,) = s.info["models"]
        assert model["engine"] == "onnx" and model["name"] == "ltv" and model["task"] == "regression"
        assert s.url.startswith("http://127.0.0.1:") and s.info["workers"] == 1
        status, _, body = s.request("GET", "/v2/models/ltv")
        meta = json.loads(body)
        assert status == 200 and meta["outputs"] == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        status, answer = s.predict(json_records(pd.read_parquet(bundle.parent / "test.parquet").head(5)))
        assert status == 200 and all(isinstance(p["prediction"], float) for p in answer["predictions"])
        assert s.stop() == 0
        assert "stopped after" in s.stderr()


def _tampered(src, dst):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename != "manifest.json":
                data = data[:-1] + bytes([data[-1] ^ 1])
            zout.writestr(info, data)


def _bad_task(src, dst):
    """A manifest (not itself hashed) naming a task no loader knows: refused, not a traceback."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "manifest.json":
                data = data.replace(b'"regression"', b'"regressioN"')
            zout.writestr(info, data)


@pytest.mark.parametrize("make,needle", [
    (lambda b, p: None, "no such model file"),
    (lambda b, p: p.write_text("not a model"), "not a model"),
    (lambda b, p: p.write_bytes(b.read_bytes()[:200]), "cannot serve the primary model"),
    (lambda b, p: _tampered(b, p), "cannot serve the primary model"),
    (lambda b, p: _bad_task(b, p), "cannot serve the primary model"),
])
def test_a_model_that_fails_to_load_is_exit_3(bundle, tmp_path, make, needle):
    path = tmp_path / "m.mlsys"
    make(bundle, path)
    result = run_proc("serve", path, "--port", "0", cwd=tmp_path, timeout=120)
    assert_clean_error(result, 3)
    assert needle in result.stderr


def test_a_worker_that_fails_to_load_is_exit_3(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x01garbage")
    result = run_proc("serve", path, "--port", "0", "--workers", "2", cwd=tmp_path, timeout=120)
    assert_clean_error(result, 3)
    assert "not a valid ONNX file" in result.stderr


def test_registry_errors_are_exit_3(bundle, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_proc("serve", "--registry", empty, "--port", "0", cwd=tmp_path)
    assert_clean_error(result, 3)
    assert "no champion yet" in result.stderr
    result = run_proc("serve", "--registry", tmp_path / "missing", "--port", "0", cwd=tmp_path)
    assert_clean_error(result, 3)
    registry = tmp_path / "reg"
    write_registry(registry, {"v0001": bundle}, "v0001")
    with Server("--registry", registry, cwd=tmp_path) as s:
        assert s.info["models"][0]["version"] == "v0001" and s.info["models"][0]["name"] == "reg"
        assert s.stop() == 0


def test_port_in_use_is_exit_3(bundle, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        result = run_proc("serve", bundle, "--port", str(taken.getsockname()[1]), cwd=tmp_path)
    finally:
        taken.close()
    assert_clean_error(result, 3)
    assert "cannot listen on 127.0.0.1" in result.stderr


@pytest.mark.parametrize("args,env,needle", [
    (["--registry", "r", "MODEL"], {}, "one of them"),
    (["--canary", "x.onnx"], {}, "FILE:SHARE"),
    (["--canary", "x.onnx:1.5"], {}, "FILE:SHARE"),
    (["--api-key-env", "MLSYS_TEST_NO_SUCH_VAR"], {}, "not set or empty"),
    (["--max-rows", "0"], {}, "--max-rows '0': must be >= 1"),
    (["--request-timeout", "soon"], {}, "--request-timeout"),
])
def test_bad_options_are_exit_2(bundle, args, env, needle):
    args = [str(bundle) if a == "MODEL" else a for a in args]
    if "MODEL" not in args and "--registry" not in args:
        args = [str(bundle), *args]
    result = run_cli("serve", *args, "--port", "0")
    assert_clean_error(result, 2)
    assert needle in result.stderr


def test_human_startup_line(bundle, tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "mlsys_cli", "serve", str(bundle), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("serving primary m ") and "at http://127.0.0.1:" in line and "/docs" in line
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
