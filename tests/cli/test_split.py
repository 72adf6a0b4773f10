"""mlsys split: wiring, output, exit codes and every kind of bad input (nothing written)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SAMPLE, assert_clean_error, run_cli, run_proc

CHURN = SAMPLE / "churn.parquet"


@pytest.fixture
def small(tmp_path):
    """The sample churn rows of 40 customers (~400 rows over 12 months: fast to split)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(CHURN)
    path = tmp_path / "small.parquet"
    pq.write_table(table.filter(pc.less(table["customer_id"], "C000040")), path)
    return path


def written(directory):
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_json_report_on_the_sample_data(tmp_path):
    out = tmp_path / "data"
    result = run_cli("split", CHURN, "--by", "time:snapshot_date", "--target", "churned", "--group", "customer_id",
                     "--seed", "1", "-o", out, "--json", "--report", tmp_path / "report.json")
    assert result.code == 0, result.stderr
    d = result.json
    assert set(d) >= {"inputs", "output", "by", "column", "ratios", "seed", "target", "rows", "parts", "checks",
                      "leakage", "balance", "warnings"}
    assert d["by"] == "time" and d["column"] == "snapshot_date" and d["seed"] == 1 and d["target"] == "churned"
    assert [p["name"] for p in d["parts"]] == ["train", "valid", "test"]
    assert sum(p["rows"] for p in d["parts"]) == d["rows"] == 23967
    train, valid, test = d["parts"]
    assert train["time_max"] < valid["time_min"] and valid["time_max"] < test["time_min"]
    assert set(train["classes"]) == {"true", "false"}
    assert d["checks"]["time_overlap"]["status"] == "ok"
    assert d["checks"]["group_overlap"]["status"] == "found"  # the same customers recur every month
    assert d["leakage"] is True
    assert json.loads((tmp_path / "report.json").read_text()) == d
    assert written(out) == ["test.parquet", "train.parquet", "valid.parquet"]


def test_human_output_and_info_shows_lineage(small, tmp_path):
    out = tmp_path / "out"
    result = run_cli("split", small, "--by", "group:customer_id", "--target", "churned", "--ratios", "0.8,0.2", "-o", out)
    assert result.code == 0, result.stderr
    assert "# parts" in result.stdout and "train\t" in result.stdout and "group_overlap\tok" in result.stdout
    info = run_cli("info", out / "train.parquet", "--json")
    step = info.json["lineage"][0]
    assert step["command"] == "split" and step["role"] == "train" and step["target"] == "churned"


def test_balance_and_strict_from_the_command_line(small, tmp_path):
    result = run_cli("split", small, "--by", "group:customer_id", "--group", "customer_id", "--strict",
                     "--target", "churned", "--balance", "over", "--ignore", "customer_id,snapshot_date",
                     "-o", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    after = result.json["balance"]["after"]
    assert after["true"] == after["false"]
    assert result.json["checks"]["duplicates"]["ignore"] == ["customer_id", "snapshot_date"]


def test_the_real_process_is_deterministic(small, tmp_path):
    from mlsys_cli.fsutil import sha256_file

    hashes = []
    for _ in range(2):  # the same command line: lineage (which records it) is identical too
        result = run_proc("-q", "split", small, "--by", "stratified:churned", "--seed", "11", "-o", tmp_path / "out")
        assert result.code == 0, result.stderr
        assert result.stderr == "" and "# split 272 rows" in result.stdout  # -q: the result, no logs
        hashes.append([sha256_file(tmp_path / "out" / f"{part}.parquet") for part in ("train", "valid", "test")])
    assert hashes[0] == hashes[1]


def _bad_inputs(tmp_path, small):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "notes.txt").write_text("no tables here\n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    pq.write_table(pq.read_table(small).slice(0, 0), tmp_path / "no_rows.parquet")
    (tmp_path / "header.csv").write_text("a,b,c\n")
    (tmp_path / "junk.parquet").write_bytes(bytes(range(256)) * 4)
    ids = pq.read_table(small).column("customer_id")
    pq.write_table(pa.Table.from_arrays([ids, ids], names=["id", "id"]), tmp_path / "repeated.parquet")
    return {
        "missing file": ([tmp_path / "nope.parquet"], 3),
        "directory without tables": ([tmp_path / "empty_dir"], 3),
        "empty file": ([tmp_path / "empty.parquet"], 3),
        "table without rows": ([tmp_path / "no_rows.parquet"], 3),
        "header-only csv": ([tmp_path / "header.csv"], 3),
        "binary junk": ([tmp_path / "junk.parquet"], 3),
        "duplicate column names": ([tmp_path / "repeated.parquet"], 3),
        "unknown split column": ([small, "--by", "group:no_such_column"], 3),
        "unknown target": ([small, "--target", "no_such_column"], 3),
        "unknown ignore column": ([small, "--ignore", "nope"], 3),
        "ratios not summing to 1": ([small, "--ratios", "0.7,0.2,0.2"], 2),
        "negative ratio": ([small, "--ratios", "1.2,-0.2"], 2),
        "one ratio": ([small, "--ratios", "1"], 2),
        "four ratios": ([small, "--ratios", "0.4,0.2,0.2,0.2"], 2),
        "ratios not numbers": ([small, "--ratios", "a,b"], 2),
        "invalid --by": ([small, "--by", "shuffle"], 2),
        "--by kind without column": ([small, "--by", "time"], 2),
        "time column not a time": ([small, "--by", "time:plan"], 3),
        "balance without target": ([small, "--balance", "under"], 2),
        "invalid balance": ([small, "--target", "churned", "--balance", "smote"], 2),
        "balance on a numeric target": ([small, "--target", "monthly_charges", "--balance", "under"], 3),
        "strict with leakage": ([small, "--group", "customer_id", "--strict"], 3),
    }


BAD = ["missing file", "directory without tables", "empty file", "table without rows", "header-only csv",
       "binary junk", "duplicate column names", "unknown split column", "unknown target", "unknown ignore column", "ratios not summing to 1",
       "negative ratio", "one ratio", "four ratios", "ratios not numbers", "invalid --by", "--by kind without column",
       "time column not a time", "balance without target", "invalid balance", "balance on a numeric target",
       "strict with leakage"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_exit_code_no_output(case, small, tmp_path):
    args, code = _bad_inputs(tmp_path, small)[case]
    out = tmp_path / "out"
    result = run_cli("split", *args, "-o", out)
    assert_clean_error(result, code)
    assert sum(line.startswith("error: ") for line in result.stderr.splitlines()) == 1, result.stderr
    assert written(out) == []


def test_one_class_target_for_stratification(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(CHURN).slice(0, 100)
    table = table.set_column(table.schema.get_field_index("churned"), "churned", pa.array([False] * 100))
    pq.write_table(table, tmp_path / "one.parquet")
    result = run_cli("split", tmp_path / "one.parquet", "--by", "stratified:churned", "-o", tmp_path / "out")
    assert_clean_error(result, 3)
    assert "only one class" in result.stderr
    assert written(tmp_path / "out") == []


def test_bad_input_in_the_real_process_has_no_traceback(small, tmp_path):
    result = run_proc("split", small, "--by", "time:region", "-o", tmp_path / "out")
    assert_clean_error(result, 3)
    assert "is not a time" in result.stderr
    assert written(tmp_path / "out") == []


def test_output_that_is_a_file(small, tmp_path):
    (tmp_path / "out").write_text("x")
    assert_clean_error(run_cli("split", small, "-o", tmp_path / "out"), 3)
    assert (tmp_path / "out").read_text() == "x"
