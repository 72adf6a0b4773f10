"""Shared fixtures: run the real ``mlsys`` in-process or as a subprocess, and the sample data."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["tests.pg", "tests.continual.fixtures", "tests.dask_cluster"]  # postgres_url; the churn window and registries; dask_cluster

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
# A relative PYTHONPATH (PYTHONPATH=src from a checkout) would name another directory in the
# processes tests start with cwd=tmp_path: the installed copy would run instead of this tree.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in os.environ["PYTHONPATH"].split(os.pathsep) if p)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self):
        import json

        return json.loads(self.stdout)


def run_cli(*args: str, cwd: str | os.PathLike | None = None) -> Result:
    """Run mlsys in this process (fast); returns exit code, stdout, stderr."""
    from mlsys_cli import console
    from mlsys_cli.app import run

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    console.reset()
    console.state.quiet = False
    console.state.verbose = 0
    try:
        if cwd:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            code = run([str(a) for a in args])
            sys.stdout.flush()
    finally:
        os.chdir(old)
        console.reset()
    return Result(int(code), out.getvalue(), err.getvalue())


def run_proc(*args: str, cwd: str | os.PathLike | None = None, input: bytes | None = None, timeout: float = 600, env: dict | None = None) -> Result:
    """Run the real ``mlsys`` process (python -m mlsys_cli) end to end."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "mlsys_cli", *map(str, args)], cwd=cwd, input=input,
                          capture_output=True, timeout=timeout, env=full_env)
    return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def assert_clean_error(result: Result, code: int) -> None:
    """A user error: the documented exit code, one ``error:`` line, no traceback."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(line.startswith("error: ") for line in lines), result.stderr


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def proc():
    return run_proc


@pytest.fixture(scope="session")
def sample() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def small_tables(tmp_path_factory) -> dict:
    """Small train/valid/test Parquet slices of the sample data, one per task, for fast model tests.

    ``{"binary": {"train": path, "valid": path, "test": path, "target": "churned"}, "multiclass": ...,
    "regression": ...}``; 500/250/250 disjoint rows drawn with a fixed seed.
    """
    import pandas as pd

    root = tmp_path_factory.mktemp("small_tables")
    out = {}
    for task, (name, target) in {"binary": ("churn", "churned"), "multiclass": ("segments", "segment"),
                                 "regression": ("ltv", "ltv")}.items():
        df = pd.read_parquet(SAMPLE / f"{name}.parquet").sample(n=1000, random_state=0)
        parts = {"train": df.iloc[:500], "valid": df.iloc[500:750], "test": df.iloc[750:1000]}
        out[task] = {"target": target}
        for split, part in parts.items():
            path = root / f"{name}_{split}.parquet"
            part.reset_index(drop=True).to_parquet(path, index=False)
            out[task][split] = path
    return out


def missing_service(reason: str) -> None:
    """A system service a test needs (PostgreSQL, Chromium) is not installed: fail, saying how to get it.

    These tests prove what mlsys ships (database ingest, distributed tuning, HTML reports), so a
    run without the service is not a pass (README: ``apt-get install -y postgresql chromium``).
    """
    pytest.fail(reason, pytrace=False)


def _alibi_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("alibi_detect") is not None


def pytest_collection_modifyitems(config, items):
    """Tests of ``--backend alibi`` run where alibi-detect is installed: its own venv (``.ci/run``).

    alibi-detect pins numpy<2, so the main environment does not have it; there the ``alibi`` tests
    are deselected (counted as such in the summary, never skipped). The CI step that builds
    ``.venv-alibi`` sets ``MLSYS_ALIBI_ENV=1``: then a missing alibi-detect is an error, not a
    silent deselection.
    """
    if _alibi_importable():
        return
    if os.environ.get("MLSYS_ALIBI_ENV"):
        raise pytest.UsageError("MLSYS_ALIBI_ENV is set but alibi_detect is not importable: install mlsys[alibi] in this venv")
    chosen = [item for item in items if item.get_closest_marker("alibi") is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("alibi") is not None])
        items[:] = chosen
