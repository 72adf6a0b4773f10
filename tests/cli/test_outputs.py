"""The output guard: an output is never an input, and a failed command leaves no new files."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_clean_error, run_cli


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [float(i % 7) for i in range(60)], "y": [i % 2 for i in range(60)]}), path)
    return path


def _same_bytes(path, before):
    return path.read_bytes() == before


# Every command that writes a file, with the output pointed at one of its inputs.
CASES = {
    "ingest -o": lambda t: ["ingest", t, "-o", t],
    "ingest --rejects": lambda t: ["ingest", t, "-o", t.parent / "o.parquet", "--rejects", t],
    "featurize -o": lambda t: ["featurize", t, "--target", "y", "-o", t],
    "featurize --apply -o": lambda t: ["featurize", "--apply", t.parent / "f.mlsys", t, "-o", t],
    "train -o": lambda t: ["train", t, "--target", "y", "-o", t],
    "train --report": lambda t: ["train", t, "--target", "y", "-o", t.parent / "m.mlsys", "--report", t],
    "tune -o": lambda t: ["tune", t, "--target", "y", "-o", t],
    "tune --save-model": lambda t: ["tune", t, "--target", "y", "--save-model", t],
    "predict -o": lambda t: ["predict", t.parent / "m.mlsys", t, "-o", t],
    "export -o": lambda t: ["export", t, "-o", t],
    "evaluate --html": lambda t: ["evaluate", t.parent / "m.mlsys", t, "--html", t],
    "split -o DIR": lambda t: ["split", t.parent / "train.parquet", "-o", t.parent],
    "via a symlink": lambda t: ["ingest", t, "-o", t.parent / "link.parquet"],
    "via a relative detour": lambda t: ["ingest", t, "-o", t.parent / "sub" / ".." / t.name],
}


@pytest.mark.parametrize("case", CASES)
def test_output_equal_to_an_input_is_refused_before_reading(case, table, tmp_path):
    (tmp_path / "sub").mkdir()
    os.symlink(table, tmp_path / "link.parquet")
    (tmp_path / "train.parquet").write_bytes(table.read_bytes())
    before = table.read_bytes()
    result = run_cli(*CASES[case](table))
    assert_clean_error(result, 2)
    assert "is also the input" in result.stderr
    assert _same_bytes(table, before) and _same_bytes(tmp_path / "train.parquet", before)


def test_two_outputs_naming_one_file_are_refused(table, tmp_path):
    result = run_cli("train", table, "--target", "y", "-o", tmp_path / "m.mlsys", "--report", tmp_path / "m.mlsys")
    assert_clean_error(result, 2)
    assert "name the same file" in result.stderr


def test_a_failed_tune_leaves_no_journal_or_directories(table, tmp_path):
    store = tmp_path / "new" / "deeper" / "study.log"
    result = run_cli("tune", table, "--target", "nope", "--storage", f"journal:{store}", "--trials", "1",
                     "-o", tmp_path / "out" / "params.json")
    assert_clean_error(result, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_a_failed_ensemble_from_study_leaves_no_journal(table, tmp_path):
    store = tmp_path / "missing.log"
    result = run_cli("ensemble", "--from-study", "--storage", f"journal:{store}", "--study", "s", "--data", table,
                     "-o", tmp_path / "ens.mlsys")
    assert result.code in (2, 3), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_a_failed_command_keeps_files_that_were_there(table, tmp_path):
    old = tmp_path / "m.mlsys"
    old.write_bytes(b"previous model")
    assert_clean_error(run_cli("train", table, "--target", "nope", "-o", old), 3)
    assert old.read_bytes() == b"previous model"


def test_a_failed_gate_keeps_its_reports(tmp_path, small_tables):
    t = small_tables["binary"]
    model = tmp_path / "m.mlsys"
    assert run_cli("train", t["train"], "--target", "churned", "--model", "linear", "-o", model).code == 0
    html, report = tmp_path / "e.html", tmp_path / "e.json"
    result = run_cli("evaluate", model, t["test"], "--require", "auc>=0.999", "--bootstrap", "0",
                     "--html", html, "--report", report)
    assert_clean_error(result, 4)
    assert html.exists() and report.exists()
