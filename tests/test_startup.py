"""Start-up: ``--help`` loads no heavy module, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_contract import REGISTERED

HEAVY = ("numpy", "pandas", "polars", "pyarrow", "duckdb", "sklearn", "xgboost", "torch", "optuna",
         "onnx", "onnxruntime", "skl2onnx", "onnxmltools", "skops", "scipy", "fastapi", "uvicorn")


def _modules(args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mlsys_cli", *args],
                          capture_output=True, text=True, check=True)
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def _imported(args):
    return {name.split(".")[0] for name in _modules(args)}


@pytest.mark.parametrize("args", [["--help"]] + [[c, "--help"] for c in REGISTERED], ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_module(args):
    loaded = _imported(args)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_root_help_imports_no_command_module():
    """``mlsys --help`` lists commands from the generated index; a command's module loads only when it runs."""
    loaded = {m for m in _modules(["--help"]) if m.startswith("mlsys_cli.cli.") and m != "mlsys_cli.cli._index"}
    assert loaded <= {"mlsys_cli.cli._outputs", "mlsys_cli.cli._common", "mlsys_cli.cli._checks"}, sorted(loaded)
    assert not {f"mlsys_cli.cli.{c}" for c in REGISTERED} & loaded


def test_a_command_imports_only_its_own_module():
    code = ("import sys\nfrom mlsys_cli import app\ntry:\n    app.run(['info', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(m for m in sys.modules if m.startswith('mlsys_cli.cli.')), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(proc.stderr.split())
    assert "mlsys_cli.cli.info" in loaded
    assert not {f"mlsys_cli.cli.{c}" for c in REGISTERED if c != "info"} & loaded


def test_a_scikit_learn_bundle_is_predicted_without_importing_torch_or_dask(small_tables, tmp_path):
    """skops lists sklearn's estimators at import, which would import sklearn's torch and Dask adapters."""
    t = small_tables["binary"]
    model = tmp_path / "m.mlsys"
    from tests.conftest import run_cli

    train = run_cli("train", t["train"], "--target", t["target"], "--model", "linear", "-o", model)
    assert train.code == 0, train.stderr
    loaded = _imported(["predict", str(model), str(t["test"]), "-o", str(tmp_path / "p.parquet")])
    assert "skops" in loaded and "sklearn" in loaded  # the bundle was opened through skops
    assert not loaded & {"torch", "dask"}, sorted(loaded & {"torch", "dask"})
    # The placeholders hide nothing skops trusts: its list equals the one of a plain import.
    code = "from mlsys_cli.bundle import skops_io; skops_io(); from skops.io._trusted_types import {0} as n; print(len(n), sorted(n))"
    ours = subprocess.run([sys.executable, "-c", code.format("SKLEARN_ESTIMATOR_TYPE_NAMES")], capture_output=True, text=True)
    plain = subprocess.run([sys.executable, "-c", code.split("; ", 2)[2].format("SKLEARN_ESTIMATOR_TYPE_NAMES")],
                           capture_output=True, text=True)
    assert ours.returncode == 0 and ours.stdout == plain.stdout and int(ours.stdout.split()[0]) > 100, (ours, plain)
