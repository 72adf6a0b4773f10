"""mlsys ingest: wiring, the report, stdin, and one clear line for every bad input."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SAMPLE, assert_clean_error, run_cli, run_proc

KEYS = ["output", "format", "files", "rows_read", "rows_written", "rows_rejected", "duplicates_dropped",
        "columns", "renames", "rejects", "seconds"]


def _no_output(directory, name="out.parquet"):
    assert not (directory / name).exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(f".{name}")], "temporary files left behind"


def test_sample_csv_report_and_rejects(tmp_path):
    out, rej, report = tmp_path / "churn.parquet", tmp_path / "rejects.parquet", tmp_path / "report.json"
    result = run_cli("ingest", SAMPLE / "churn_raw.csv", "-o", out, "--rejects", rej, "--report", report, "--json")
    assert result.code == 0, result.stderr
    data = result.json
    assert list(data) == KEYS
    assert data["rows_rejected"] > 0 and data["rows_written"] + data["rows_rejected"] == data["rows_read"]
    assert {"from": "Customer ID", "to": "customer_id"} in data["renames"]
    assert json.loads(report.read_text()) == data
    assert out.is_file() and rej.is_file()


def test_human_output_and_warning_without_rejects(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\n3\n4,5\n")
    result = run_cli("ingest", src, "-o", tmp_path / "o.parquet")
    assert result.code == 0, result.stderr
    assert "rows written: 2" in result.stdout and "rows rejected: 1" in result.stdout
    assert "warning: 1 bad rows skipped" in result.stderr


def test_stdin_in_the_real_process(tmp_path):
    result = run_proc("ingest", "-", "-o", tmp_path / "o.parquet", "--dedupe", "--json", input=b"x,y\n1,a\n1,a\n2,b\n")
    assert result.code == 0, result.stderr
    assert result.json["files"] == ["-"] and result.json["duplicates_dropped"] == 1
    info = run_proc("info", tmp_path / "o.parquet", "--json")
    assert info.json["rows"] == 2 and info.json["lineage"][0]["command"] == "ingest"
    assert [p.name for p in tmp_path.iterdir()] == ["o.parquet"]  # the stdin spool is gone


def test_duplicate_column_names_are_made_unique(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("Name,name,NAME\n1,2,3\n")
    result = run_cli("ingest", src, "-o", tmp_path / "o.parquet", "--json")
    assert result.code == 0, result.stderr
    assert [c["name"] for c in result.json["columns"]] == ["name", "name_1", "name_2"]  # DuckDB numbers repeats; names stay unique
    assert {"from": "NAME_2", "to": "name_2"} in result.json["renames"]


def test_header_only_csv_is_an_empty_table(tmp_path):
    src = tmp_path / "h.csv"
    src.write_text("a,b\n")
    result = run_cli("ingest", src, "-o", tmp_path / "o.parquet", "--json")
    assert result.code == 0 and result.json["rows_written"] == 0 and len(result.json["columns"]) == 2
    assert "warning: the input holds no rows" in result.stderr
    # The empty table is refused one step later, with one clear line.
    split = run_cli("split", tmp_path / "o.parquet", "-o", tmp_path / "parts")
    assert_clean_error(split, 3)
    assert "no rows" in split.stderr and not (tmp_path / "parts").exists()


BAD = {
    "missing file": (lambda d: [d / "nope.csv"], [], 3, "no such file"),
    "directory without tables": (lambda d: [_mkdir(d / "empty")], [], 3, "holds no tables"),
    "empty file": (lambda d: [_file(d / "e.csv", b"")], [], 3, "empty input"),
    "binary junk": (lambda d: [_file(d / "j.csv", bytes(range(256)) * 40)], [], 3, "binary data"),
    "wrong delimiter": (lambda d: [_file(d / "w.csv", b"a,b,c\n1,2,3\n")], ["--delimiter", ";"], 3, "--delimiter ','"),
    "ragged rows with --strict": (lambda d: [_file(d / "r.csv", b"a,b\n1,2\n3\n")], ["--strict"], 3, "1 bad row (--strict); first at"),
    "invalid --schema type": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--schema", "a:integr"], 2, "unknown type"),
    "malformed --schema": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--schema", "a"], 2, "invalid --schema"),
    "--schema unknown column": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--schema", "b:int"], 3, "no column 'b'"),
    "bad SQL": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--sql", "SELEC a FROM input"], 2, "--sql:"),
    "unknown --format": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--format", "xlsx"], 2, "unknown --format"),
    "not Parquet": (lambda d: [_file(d / "s.parquet", b"a\n1\n")], [], 3, "not a Parquet file"),
    "--table without a database": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--table", "t"], 2, "--table is for a database"),
    "bad memory limit": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--memory-limit", "lots"], 2, "--memory-limit"),
    "every row ragged": (lambda d: [_file(d / "r.csv", b"a,b\n1,2,3,4\nx\n")], [], 3, "no row could be read, all 2 rejected"),
    "inputs mixing formats": (lambda d: [_file(d / "a.csv", b"a\n1\n"), _file(d / "b.json", b"[1]")], [], 3, "inputs mix formats"),
    "stdin twice": (lambda d: ["-", "-"], [], 2, "stdin (-) can be read only once"),
    "unknown --encoding": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--encoding", "klingon"], 2, "unknown --encoding"),
    "bytes not in --encoding": (lambda d: [_file(d / "s.csv", b"a\n\x81\xff\n")], ["--encoding", "shift_jis"], 3, "not shift_jis"),
    "--dedupe-on unknown column": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--dedupe-on", "zz"], 3, "--dedupe-on: no column 'zz'"),
    "dates whose day/month order is a guess": (lambda d: [_file(d / "m.csv", b"d,v\n01/02/2024,1\n01/03/2024,2\n01/04/2024,3\n")],
                                               [], 3, "dates like '01/02/2024' read as day/month and as month/day alike"),
    "zero --threads": (lambda d: [_file(d / "s.csv", b"a\n1\n")], ["--threads", "0"], 2, "--threads '0': must be >= 1"),
    "decimal or thousands comma is a guess": (lambda d: [_file(d / "c.csv", b"a;b\n1;1,234\n2;5,000\n")], [], 3,
                                              "numbers like '1,234' read as a decimal comma and as a thousands comma alike"),
}


def _mkdir(path):
    path.mkdir()
    return path


def _file(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_gets_one_clear_line(case, tmp_path):
    make, extra, code, text = BAD[case]
    result = run_cli("ingest", *make(tmp_path), "-o", tmp_path / "out.parquet", *extra)
    assert_clean_error(result, code)
    assert text in result.stderr, result.stderr
    assert sum(line.startswith("error: ") for line in result.stderr.splitlines()) == 1, result.stderr
    _no_output(tmp_path)


@pytest.mark.parametrize("text,expected", [
    (b"d\n13/02/2024\n01/03/2024\n", ["2024-02-13", "2024-03-01"]),  # a day above 12 settles the order
    (b"d\n02/13/2024\n03/01/2024\n", ["2024-02-13", "2024-03-01"]),
    (b"d\n2024-02-03\n2024-03-04\n", ["2024-02-03", "2024-03-04"]),  # ISO: never ambiguous
    (b"d\n03/03/2024\n04/04/2024\n", ["2024-03-03", "2024-04-04"]),  # both orders give the same dates
])
def test_dates_read_in_the_one_order_the_sample_allows(tmp_path, text, expected):
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_bytes(text)
    result = run_cli("ingest", tmp_path / "d.csv", "-o", tmp_path / "o.parquet")
    assert result.code == 0, result.stderr
    assert [str(v) for v in pq.read_table(tmp_path / "o.parquet").column("d").to_pylist()] == expected


def test_ambiguous_dates_read_in_the_order_the_hint_gives(tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "m.csv").write_bytes(b"d,v\n01/02/2024,1\n01/03/2024,2\n")
    refused = run_cli("ingest", tmp_path / "m.csv", "-o", tmp_path / "o.parquet")
    hint = next(line for line in refused.stderr.splitlines() if line.startswith("hint: "))
    assert "--schema d:varchar" in hint
    result = run_cli("ingest", tmp_path / "m.csv", "-o", tmp_path / "o.parquet", "--schema", "d:varchar",
                     "--sql", "SELECT * REPLACE (strptime(d, '%m/%d/%Y')::DATE AS d) FROM input")
    assert result.code == 0, result.stderr
    assert [str(v) for v in pq.read_table(tmp_path / "o.parquet").column("d").to_pylist()] == ["2024-01-02", "2024-01-03"]


@pytest.mark.parametrize("text,expected", [
    # a semicolon file's decimal commas, with and without dots grouping thousands; integers among them
    (b"k;price;name\n1;2,5;x\n2;-1.234,75;y\n3;7;\n", {"price": [2.5, -1234.75, 7.0], "name": ["x", "y", None]}),
    # once the file's decimal mark is the comma, a column of 1.500 holds thousands, not 1.5
    (b"k;price;units\n1;2,5;1.500\n2;3,25;12.000\n", {"price": [2.5, 3.25], "units": [1500.0, 12000.0]}),
    (b"k\tprice\n1\t0,5\n2\t10,25\n", {"price": [0.5, 10.25]}),  # TSV
    (b"k,price\n1,\"2,5\"\n", {"price": ["2,5"]}),  # a comma file: the quoted comma is not taken for a decimal mark
])
def test_decimal_commas_are_read_as_numbers(tmp_path, text, expected):
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_bytes(text)
    result = run_cli("ingest", tmp_path / "d.csv", "-o", tmp_path / "o.parquet")
    assert result.code == 0, result.stderr
    table = pq.read_table(tmp_path / "o.parquet")
    assert {c: table.column(c).to_pylist() for c in expected} == expected


def test_ambiguous_commas_read_as_the_hint_says(tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "c.csv").write_bytes(b"a;b\n1;1,234\n2;5,000\n")
    refused = run_cli("ingest", tmp_path / "c.csv", "-o", tmp_path / "o.parquet")
    hint = next(line for line in refused.stderr.splitlines() if line.startswith("hint: "))
    assert "--schema b:varchar" in hint
    result = run_cli("ingest", tmp_path / "c.csv", "-o", tmp_path / "o.parquet", "--schema", "b:varchar",
                     "--sql", "SELECT * REPLACE (replace(b, ',', '.')::DOUBLE AS b) FROM input")
    assert result.code == 0, result.stderr
    assert pq.read_table(tmp_path / "o.parquet").column("b").to_pylist() == [1.234, 5.0]


def test_output_that_is_a_directory(tmp_path):
    src = _file(tmp_path / "s.csv", b"a\n1\n")
    (tmp_path / "out").mkdir()
    result = run_cli("ingest", src, "-o", tmp_path / "out")
    assert_clean_error(result, 3)
    assert "is a directory" in result.stderr and list((tmp_path / "out").iterdir()) == []
    same = run_cli("ingest", src, "-o", tmp_path / "o.parquet", "--rejects", tmp_path / "o.parquet")
    assert_clean_error(same, 2)
    assert "same file" in same.stderr and not (tmp_path / "o.parquet").exists()


def test_unreachable_database_never_prints_the_password(tmp_path):
    result = run_proc("ingest", "postgresql://me:hunter2@127.0.0.1:1/db", "--table", "t", "-o", tmp_path / "out.parquet")
    assert_clean_error(result, 3)
    assert "cannot connect to postgresql://me:***@127.0.0.1:1/db" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    _no_output(tmp_path)


@pytest.mark.postgres
def test_postgres_query_end_to_end(postgres_url, tmp_path):
    out = tmp_path / "out.parquet"
    result = run_proc("ingest", postgresql_query_url(postgres_url), "--sql", "SELECT g AS \"Id\", g % 3 = 0 AS flag FROM generate_series(1, 10) g",
                      "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert result.json["rows_written"] == 10 and [c["name"] for c in result.json["columns"]] == ["id", "flag"]
    missing = run_cli("ingest", postgres_url, "--table", "no_such_table", "-o", tmp_path / "x.parquet")
    assert_clean_error(missing, 3)
    assert "no_such_table" in missing.stderr


def postgresql_query_url(url):
    """The same server, with the connection options a user would add to the URL."""
    return url + "?application_name=mlsys-test"
