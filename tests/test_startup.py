"""Start-up: ``--help`` loads no heavy module, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_contract import REGISTERED

HEAVY = ("numpy", "pandas", "polars", "pyarrow", "duckdb", "sklearn", "xgboost", "torch", "optuna",
         "onnx", "onnxruntime", "skl2onnx", "onnxmltools", "skops", "scipy", "fastapi", "uvicorn")


def _imported(args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mlsys_cli", *args],
                          capture_output=True, text=True, check=True)
    return {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"]] + [[c, "--help"] for c in REGISTERED], ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_module(args):
    loaded = _imported(args)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
