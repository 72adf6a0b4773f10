"""--backend alibi: alibi-detect's detectors behind the same decision rule (runs in .venv-alibi)."""

from __future__ import annotations

import sys

import pytest

from mlsys_cli.errors import UsageError
from mlsys_cli.monitor._detect import check_backend
from mlsys_cli.monitor.drift import DriftOptions, detect
from tests.conftest import assert_clean_error, run_cli
from tests.monitor.test_drift import population

ALIBI = DriftOptions(backend="alibi", domain_rows=800, permutations=50)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("alibi")
    population(3000, 0).to_parquet(d / "ref.parquet", index=False)
    population(3000, 1).to_parquet(d / "same.parquet", index=False)
    population(3000, 1, mean=1.0, new=0.15).to_parquet(d / "moved.parquet", index=False)
    return d


@pytest.mark.alibi
def test_alibi_finds_the_shifted_columns_only(tables):
    report = detect(tables / "moved.parquet", reference=tables / "ref.parquet", options=ALIBI)
    assert set(report.drifted) == {"normal", "tier"}
    assert all(f.test.startswith("alibi-") for f in report.features if f.decided)
    assert report.multivariate["test"] == "alibi ClassifierDrift" and report.multivariate["drifted"]


@pytest.mark.alibi
def test_alibi_quiet_without_shift(tables):
    report = detect(tables / "same.parquet", reference=tables / "ref.parquet", options=ALIBI)
    assert not report.drift_detected, report.drifted


@pytest.mark.alibi
def test_alibi_cli_and_model_reference_refused(tables):
    r = run_cli("drift", tables / "moved.parquet", "--reference", tables / "ref.parquet", "--backend", "alibi",
                "--domain-rows", "500", "--permutations", "30", "--json")
    assert r.code == 0, r.stderr
    assert "normal" in r.json["drifted"]


def test_alibi_backend_without_alibi_is_a_usage_error(monkeypatch, tables):
    monkeypatch.setitem(sys.modules, "alibi_detect", None)  # as if not installed
    with pytest.raises(UsageError, match="needs alibi-detect"):
        check_backend(ALIBI)
    assert_clean_error(run_cli("drift", tables / "same.parquet", "--reference", tables / "ref.parquet", "--backend", "alibi"), 2)
