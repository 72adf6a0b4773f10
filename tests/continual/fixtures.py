"""Fixtures for the registry and retrain tests: a small time-ordered churn window and registries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SAMPLE


@pytest.fixture(scope="session")
def churn(tmp_path_factory) -> dict[str, Path]:
    """600 customers of the churn sample: January-June, January-September, and the whole year."""
    df = pd.read_parquet(SAMPLE / "churn.parquet")
    df = df[df["customer_id"].isin(sorted(df["customer_id"].unique())[:600])]
    root = tmp_path_factory.mktemp("churn_window")
    when = pd.to_datetime(df["snapshot_date"])
    paths = {"h1": root / "h1.parquet", "q3": root / "q3.parquet", "all": root / "all.parquet"}
    df[when < "2025-07-01"].to_parquet(paths["h1"], index=False)
    df[when < "2025-10-01"].to_parquet(paths["q3"], index=False)
    df.to_parquet(paths["all"], index=False)
    return paths


def first_champion(registry: Path, data: Path, *extra: str):
    """Train a first champion (a linear model, no bootstrap) with the real CLI in this process."""
    from tests.conftest import run_cli

    return run_cli("retrain", "--registry", registry, "--data", data, "--time-col", "snapshot_date", "--target",
                   "churned", "--model", "linear", "--bootstrap", "0", *extra)


@pytest.fixture(scope="session")
def seeded_registry(churn, tmp_path_factory) -> Path:
    """A registry whose champion v0001 was trained on January-June (copy it before changing it)."""
    reg = tmp_path_factory.mktemp("seeded") / "reg"
    result = first_champion(reg, churn["h1"])
    assert result.code == 0, result.stderr
    return reg


@pytest.fixture
def registry(seeded_registry, tmp_path) -> Path:
    """A private copy of the seeded registry."""
    copy = tmp_path / "reg"
    shutil.copytree(seeded_registry, copy)
    return copy
