"""data/ingest.py: files, stdin-like spools and PostgreSQL into one Parquet table, streamed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mlsys_cli.data.ingest import CsvDialect, ingest, parse_schema, redact, safe_names
from mlsys_cli.data.io import read_lineage
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.fsutil import sha256_file
from tests.conftest import SAMPLE

CSV = "id,Name,Price\n1,a,1.5\n2,b,2.5\n3,c,x\n4,d\n5,e,5.5\n"


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_safe_names():
    assert safe_names(["Customer ID", "signupDate", "HTTPCode", "2nd", "a", "A", "", "Café (€)"]) == [
        "customer_id", "signup_date", "http_code", "col_2nd", "a", "a_2", "col_7", "cafe"]


def test_parse_schema_keeps_decimal_commas():
    assert parse_schema("a:int, b : decimal(10,2),c:varchar") == {"a": "int", "b": "decimal(10,2)", "c": "varchar"}
    with pytest.raises(UsageError):
        parse_schema("a-int")


def test_redact_hides_password():
    assert redact("postgresql://me:s3cret@db:5432/x?password=s3cret") == "postgresql://me:***@db:5432/x?password=***"
    assert redact("postgresql://me@db/x") == "postgresql://me@db/x"


def test_csv_types_names_order_and_lineage(tmp_path):
    src = _write(tmp_path / "in.csv", "Id,Signup Date,Amount,Active\n" + "".join(
        f"{i},2024-01-{1 + i % 28:02d},{i * 1.5},{'true' if i % 2 else 'false'}\n" for i in range(200, 0, -1)))
    out = tmp_path / "out.parquet"
    result = ingest([src], out)
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (200, 200, 0)
    assert [c["type"] for c in result.columns] == ["BIGINT", "DATE", "DOUBLE", "BOOLEAN"]
    assert {"from": "Signup Date", "to": "signup_date"} in result.renames
    table = pq.read_table(out)
    assert table.column_names == ["id", "signup_date", "amount", "active"]
    assert table.column("id").to_pylist() == list(range(200, 0, -1))  # input order kept
    lineage = read_lineage(out)
    assert lineage["command"] == "ingest"
    assert lineage["inputs"] == [{"path": str(src), "sha256": sha256_file(src)}]


def test_lineage_digests_of_many_files_and_stdin_are_stamped(tmp_path, monkeypatch):
    """The digests computed while DuckDB reads replace their placeholders in the written footer."""
    import io as stdio
    import sys

    a = _write(tmp_path / "a.csv", "x,y\n" + "".join(f"{i},{i * 2}\n" for i in range(3000)))
    b = _write(tmp_path / "b.csv", "x,y\n" + "".join(f"{i},{i * 3}\n" for i in range(100)))
    ingest([a, b], tmp_path / "ab.parquet")
    assert read_lineage(tmp_path / "ab.parquet")["inputs"] == [
        {"path": str(a), "sha256": sha256_file(a)}, {"path": str(b), "sha256": sha256_file(b)}]
    assert pq.read_table(tmp_path / "ab.parquet").num_rows == 3100  # the patched file still reads
    monkeypatch.setattr(sys, "stdin", stdio.TextIOWrapper(stdio.BytesIO(b.read_bytes())))
    ingest(["-"], tmp_path / "stdin.parquet")
    assert read_lineage(tmp_path / "stdin.parquet")["inputs"] == [{"path": "-", "sha256": sha256_file(b)}]


def test_rerun_gives_identical_bytes(tmp_path):
    src = _write(tmp_path / "in.csv", "a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(5000)))
    ingest([src], tmp_path / "1.parquet", dedupe_on="b")
    ingest([src], tmp_path / "2.parquet", dedupe_on="b")
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()


def test_bad_rows_go_to_rejects_and_the_load_goes_on(tmp_path):
    src = _write(tmp_path / "in.csv", CSV)
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.parquet"
    result = ingest([src], out, schema="price:double", rejects=rej)
    assert (result.rows_read, result.rows_written, result.rows_rejected) == (5, 3, 2)
    assert [r["id"] for r in _rows(out)] == [1, 2, 5]
    bad = _rows(rej)
    assert [(r["file"], r["line"], r["error"]) for r in bad] == [(str(src), 4, "CAST"), (str(src), 5, "MISSING COLUMNS")]
    assert len(bad) == result.rows_rejected
    assert bad[0]["raw_line"] == "3,c,x" and "Price" in bad[0]["reason"]


def test_strict_refuses_and_keeps_previous_output(tmp_path):
    src = _write(tmp_path / "in.csv", CSV)
    out = _write(tmp_path / "out.parquet", b"previous")
    with pytest.raises(InputError, match=r"2 bad rows .*in.csv:4"):
        ingest([src], out, schema="price:double", strict=True)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.parquet"]


def test_sample_data_defects_are_quarantined(tmp_path):
    defects = json.loads((SAMPLE / "churn_raw_defects.json").read_text())
    rej = tmp_path / "rejects.parquet"
    result = ingest([SAMPLE / "churn_raw.csv"], tmp_path / "churn.parquet", rejects=rej)
    assert sorted({r["line"] for r in _rows(rej)}) == sorted(defects["bad_lines"])
    assert result.rows_rejected == len(defects["bad_lines"])
    assert result.rows_written == defects["data_lines"] - len(defects["bad_lines"])
    types = {c["name"]: c["type"] for c in result.columns}
    assert types["monthly_charges"] == "DOUBLE" and types["age"] == "BIGINT"  # a few bad values do not make text


@pytest.mark.parametrize("dedupe", [False, True])
def test_counts_match_the_file_when_lines_are_rejected(tmp_path, dedupe):
    """Rows read = data lines, duplicates = rows kept before dedupe - rows written, one rejects row per bad line."""
    defects = json.loads((SAMPLE / "churn_raw_defects.json").read_text())
    rej = tmp_path / "rejects.parquet"
    result = ingest([SAMPLE / "churn_raw.csv"], tmp_path / "churn.parquet", rejects=rej, dedupe=dedupe)
    good = defects["data_lines"] - len(defects["bad_lines"])
    assert result.rows_read == defects["data_lines"]
    assert result.rows_written + result.duplicates_dropped == good
    lines = [r["line"] for r in _rows(rej)]
    assert lines == sorted(set(lines)) == sorted(defects["bad_lines"])  # one row per bad line
    short = [r for r in _rows(rej) if r["error"] == "MISSING COLUMNS"]
    assert short and all("," in r["column_name"] for r in short)  # its missing fields, joined


@pytest.mark.parametrize("sql", ["SELECT * FROM input; COPY (SELECT 1) TO 'evil.csv'", "COPY input TO 'evil.csv'",
                                 "CREATE TABLE t AS SELECT 1", "SELECT 1; SELECT 2", "PRAGMA version"])
def test_sql_is_one_read_only_select(tmp_path, sql, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _write(tmp_path / "in.csv", CSV)
    with pytest.raises(UsageError, match="--sql"):
        ingest([src], tmp_path / "out.parquet", sql=sql)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32", "cp1252"])
def test_encodings_without_a_bom_are_transcoded(tmp_path, encoding):
    src = _write(tmp_path / "in.csv", "name,price\ncafé,1.5\nnaïve,2.5\n".encode(encoding))
    result = ingest([src], tmp_path / "out.parquet", dialect=CsvDialect(encoding=encoding))
    assert result.rows_written == 2 and [r["name"] for r in _rows(tmp_path / "out.parquet")] == ["café", "naïve"]


def test_a_codec_that_is_not_a_text_encoding_is_refused_up_front(tmp_path):
    src = _write(tmp_path / "in.csv", "a\n1\n")
    with pytest.raises(UsageError, match="not a text encoding"):
        ingest([src], tmp_path / "out.parquet", dialect=CsvDialect(encoding="base64"))


def test_blank_lines_of_a_one_column_csv_are_not_rows(tmp_path):
    src = _write(tmp_path / "in.csv", "a\n1\n\n2\n\n")
    result = ingest([src], tmp_path / "out.parquet")
    assert (result.rows_read, result.rows_written) == (2, 2)
    assert [r["a"] for r in _rows(tmp_path / "out.parquet")] == [1, 2]


def test_a_double_quote_in_a_column_name_is_quoted_everywhere(tmp_path):
    src = _write(tmp_path / "in.csv", 'id,"say ""hi""",x\n1,a,2\n1,a,2\n2,b,3\n')
    result = ingest([src], tmp_path / "out.parquet", keep_names=True, dedupe_on='say "hi"')
    assert result.rows_written == 2 and result.duplicates_dropped == 1


def test_dedupe_keeps_first_in_input_order(tmp_path):
    src = _write(tmp_path / "in.csv", "k,v\nb,1\na,2\nb,1\nc,3\na,9\n")
    everything = ingest([src], tmp_path / "all.parquet", dedupe=True)
    assert everything.duplicates_dropped == 1
    assert [(r["k"], r["v"]) for r in _rows(tmp_path / "all.parquet")] == [("b", 1), ("a", 2), ("c", 3), ("a", 9)]
    keyed = ingest([src], tmp_path / "k.parquet", dedupe_on=["k"])
    assert (keyed.rows_read, keyed.rows_written, keyed.duplicates_dropped) == (5, 3, 2)
    assert [(r["k"], r["v"]) for r in _rows(tmp_path / "k.parquet")] == [("b", 1), ("a", 2), ("c", 3)]
    with pytest.raises(InputError, match="no column 'nope'"):
        ingest([src], tmp_path / "x.parquet", dedupe_on="nope")


def test_sql_over_input_view(tmp_path):
    src = _write(tmp_path / "in.csv", "Group,Value\nx,1\ny,2\nx,3\n")
    result = ingest([src], tmp_path / "o.parquet", sql="SELECT \"group\", sum(value) FROM input GROUP BY 1 ORDER BY 1")
    assert result.rows_read == 3 and result.rows_written == 2
    assert [c["name"] for c in result.columns] == ["group", "sum_value"]
    assert _rows(tmp_path / "o.parquet") == [{"group": "x", "sum_value": 4}, {"group": "y", "sum_value": 2}]
    with pytest.raises(UsageError, match="--sql"):
        ingest([src], tmp_path / "x.parquet", sql="SELECT nope FROM input")


def test_schema_override_by_raw_or_safe_name(tmp_path):
    src = _write(tmp_path / "in.csv", "Zip Code,n\n01234,1\n99999,2\n")
    a = ingest([src], tmp_path / "a.parquet", schema="Zip Code:varchar,n:smallint")
    b = ingest([src], tmp_path / "b.parquet", schema={"zip_code": "varchar"})
    assert [c["type"] for c in a.columns] == ["VARCHAR", "SMALLINT"]
    assert b.columns[0]["type"] == "VARCHAR" and _rows(tmp_path / "b.parquet")[0]["zip_code"] == "01234"
    with pytest.raises(UsageError, match="unknown type"):
        ingest([src], tmp_path / "x.parquet", schema="n:integr")
    with pytest.raises(UsageError, match="invalid type"):
        ingest([src], tmp_path / "x.parquet", schema="n:int); DROP TABLE x; --")
    with pytest.raises(InputError, match="no column 'missing'"):
        ingest([src], tmp_path / "x.parquet", schema="missing:int")


def test_json_ndjson_parquet_and_glob(tmp_path):
    _write(tmp_path / "a.json", '[{"A": 1, "b": "x"}, {"A": 2, "b": "y"}]')
    _write(tmp_path / "b.ndjson", '{"A": 3, "b": "z"}\n{"A": 4, "b": null}\n')
    ingest([tmp_path / "a.json"], tmp_path / "p1.parquet")
    ingest([tmp_path / "b.ndjson"], tmp_path / "p2.parquet", schema="a:double")
    result = ingest([str(tmp_path / "p*.parquet")], tmp_path / "all.parquet")
    assert result.format == "parquet" and result.rows_written == 4
    assert [r["a"] for r in _rows(tmp_path / "all.parquet")] == [1, 2, 3, 4]
    lineage = read_lineage(tmp_path / "all.parquet")
    assert lineage["inputs"][0]["lineage"]["command"] == "ingest"  # the chain back to the raw files


def test_many_csv_files_must_share_columns(tmp_path):
    _write(tmp_path / "1.csv", "a,b\n1,2\n")
    _write(tmp_path / "2.csv", "a,b\n3,4\n")
    result = ingest([str(tmp_path / "*.csv")], tmp_path / "o.parquet")
    assert result.files == [str(tmp_path / "1.csv"), str(tmp_path / "2.csv")] and result.rows_written == 2
    _write(tmp_path / "3.csv", "a,b,c\n5,6,7\n")
    with pytest.raises(InputError, match="columns differ"):
        ingest([str(tmp_path / "*.csv")], tmp_path / "o.parquet")
    _write(tmp_path / "4.json", "[]")
    with pytest.raises(InputError, match="mix formats"):
        ingest([tmp_path / "1.csv", tmp_path / "4.json"], tmp_path / "o.parquet")


def test_dialect_delimiter_header_quote_encodings(tmp_path):
    semi = _write(tmp_path / "semi.txt", "1;'x;y'\n2;'z'\n")
    result = ingest([semi], tmp_path / "s.parquet", dialect=CsvDialect(delimiter=";", header=False, quote="'"))
    assert [c["name"] for c in result.columns] == ["column0", "column1"]
    assert _rows(tmp_path / "s.parquet")[0] == {"column0": 1, "column1": "x;y"}
    latin = _write(tmp_path / "l.csv", "name,n\ncaf\xe9,1\n".encode("latin-1"))
    ingest([latin], tmp_path / "l.parquet", dialect=CsvDialect(encoding="latin-1"))
    cp = _write(tmp_path / "cp.csv", "name,n\n\u20ac uro,1\n".encode("cp1252"))
    ingest([cp], tmp_path / "cp.parquet", dialect=CsvDialect(encoding="cp1252"))
    utf16 = _write(tmp_path / "u16.csv", "name,n\nna\u00efve,1\n".encode("utf-16"))
    ingest([utf16], tmp_path / "u16.parquet")
    assert [_rows(tmp_path / f)[0]["name"] for f in ("l.parquet", "cp.parquet", "u16.parquet")] == ["caf\xe9", "\u20ac uro", "na\u00efve"]
    with pytest.raises(InputError, match="all 1 rejected"):
        ingest([latin], tmp_path / "x.parquet")  # Latin-1 read as UTF-8: nothing readable
    with pytest.raises(UsageError, match="unknown --encoding"):
        ingest([latin], tmp_path / "x.parquet", dialect=CsvDialect(encoding="klingon"))


def test_header_only_csv_keeps_columns(tmp_path):
    src = _write(tmp_path / "h.csv", "a,b\n")
    result = ingest([src], tmp_path / "h.parquet")
    assert result.rows_written == 0 and [c["name"] for c in result.columns] == ["a", "b"]
    assert pq.read_table(tmp_path / "h.parquet").column_names == ["a", "b"]


@pytest.mark.slow
def test_csv_larger_than_memory_limit_streams(tmp_path):
    import duckdb

    src = tmp_path / "big.csv"
    duckdb.connect().execute(
        f"COPY (SELECT i AS id, 'name_' || (i % 1000) AS name, (i * 7919 % 100000) / 100.0 AS x, "
        f"DATE '2020-01-01' + (i % 1000)::INT AS day, 'a longer free-text value number ' || i AS note "
        f"FROM range(1400000) t(i)) TO '{src}' (HEADER)")
    assert src.stat().st_size > 3 * (30 << 20)  # several times the memory limit

    class Recorder:  # the progress protocol (console.Progress duck type)
        def __init__(self):
            self.seen = []

        def update(self, *, completed=None, total=None, description=None):
            self.seen.append(completed)

    progress = Recorder()
    out = tmp_path / "big.parquet"
    result = ingest([src], out, memory_limit="30MB", threads=2, progress=progress)
    assert result.rows_written == 1_400_000 and result.rows_rejected == 0
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    assert ids == list(range(1_400_000))
    assert any(p and p > 0 for p in progress.seen)


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def shop(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS shop")
        conn.execute("CREATE DATABASE shop")
    url = postgres_url.rsplit("/", 1)[0] + "/shop"
    with psycopg.connect(url) as conn:
        conn.execute("""
            CREATE TABLE orders ("Order ID" int PRIMARY KEY, amount numeric(10,2), ratio numeric, placed timestamptz,
                                 day date, paid bool, note text, meta jsonb, span interval);
            INSERT INTO orders SELECT i, i * 1.25, i / 3.0, '2024-01-01 10:00+02'::timestamptz + i * interval '1 hour',
                   '2024-01-01'::date + i, i % 2 = 0, CASE WHEN i % 10 = 0 THEN NULL ELSE 'n' || i END,
                   jsonb_build_object('k', i), interval '1 day 2 hours'
            FROM generate_series(1, 45000) i;
            CREATE TABLE empty (a int, b text);
        """)
    return url


@pytest.mark.postgres
def test_postgres_table_types_and_batches(shop, tmp_path):
    from decimal import Decimal

    out = tmp_path / "orders.parquet"
    result = ingest([shop], out, table="orders")
    assert result.rows_written == 45000 and result.files == [shop]
    types = {c["name"]: c["type"] for c in result.columns}
    assert types == {"order_id": "INTEGER", "amount": "DECIMAL(10,2)", "ratio": "DOUBLE", "placed": "TIMESTAMP WITH TIME ZONE",
                     "day": "DATE", "paid": "BOOLEAN", "note": "VARCHAR", "meta": "VARCHAR", "span": "VARCHAR"}
    first = _rows(out)[0]
    assert first["amount"] == Decimal("1.25") and first["meta"] == '{"k": 1}' and first["placed"].hour == 9
    lineage = read_lineage(out)
    assert lineage["inputs"] == [{"path": shop, "query": 'SELECT * FROM "orders"'}]


@pytest.mark.postgres
def test_postgres_query_dedupe_and_empty_table(shop, tmp_path):
    result = ingest([shop], tmp_path / "q.parquet", sql="SELECT paid, day FROM orders ORDER BY 1, 2", dedupe_on="paid")
    assert result.rows_read == 45000 and result.rows_written == 2 and result.duplicates_dropped == 44998
    empty = ingest([shop], tmp_path / "e.parquet", table="public.empty")
    assert empty.rows_written == 0 and [c["name"] for c in empty.columns] == ["a", "b"]


@pytest.mark.postgres
def test_postgres_column_types_come_from_the_oid_not_the_first_batch(shop, tmp_path, monkeypatch):
    """NULL in the first batch, a NaN numeric, an unknown type: one type per column in every batch
    (a later batch of another inferred type was an internal error, a NaN turned a numeric into text)."""
    from decimal import Decimal

    monkeypatch.setattr("mlsys_cli.data.ingest._PG_BATCH", 2)
    sql = ("SELECT i, CASE WHEN i > 2 THEN ARRAY[i, 2] END AS a, CASE WHEN i = 3 THEN 'NaN' ELSE i * 1.5 END::numeric(10,2) AS n, "
           "CASE WHEN i > 2 THEN point(i, 2) END AS p, CASE WHEN i = 4 THEN ARRAY['x', NULL] END AS s, NULL::int AS z "
           "FROM generate_series(1, 5) i")
    result = ingest([shop], tmp_path / "t.parquet", sql=sql)
    types = {c["name"]: c["type"] for c in result.columns}
    assert types == {"i": "INTEGER", "a": "INTEGER[]", "n": "DECIMAL(10,2)", "p": "VARCHAR", "s": "VARCHAR[]", "z": "INTEGER"}
    rows = _rows(tmp_path / "t.parquet")
    assert [r["a"] for r in rows] == [None, None, [3, 2], [4, 2], [5, 2]]
    assert [r["n"] for r in rows] == [Decimal("1.50"), Decimal("3.00"), None, Decimal("6.00"), Decimal("7.50")]
    assert [r["p"] for r in rows] == [None, None, "(3,2)", "(4,2)", "(5,2)"] and rows[3]["s"] == ["x", None]


@pytest.mark.postgres
def test_postgres_values_no_column_type_holds_are_input_errors(shop, tmp_path):
    out = tmp_path / "x.parquet"
    with pytest.raises(InputError, match="column 'a': cannot be read as list") as info:  # a ragged array
        ingest([shop], out, sql="SELECT CASE WHEN i = 1 THEN ARRAY[1] ELSE ARRAY[ARRAY[1, 2]] END AS a FROM generate_series(1, 2) i")
    assert "a::text" in info.value.hint
    with pytest.raises(InputError, match="the query returns no columns"):
        ingest([shop], out, sql="SELECT FROM generate_series(1, 3)")
    with pytest.raises(InputError, match="date too large") as info:
        ingest([shop], out, sql="SELECT 'infinity'::date AS d")
    assert "--sql" in info.value.hint
    assert not out.exists()


@pytest.mark.postgres
def test_postgres_errors_are_input_errors(shop, postgres_url, tmp_path):
    out = tmp_path / "x.parquet"
    with pytest.raises(InputError, match='relation "nope" does not exist'):
        ingest([shop], out, table="nope")
    with pytest.raises(InputError, match="nosuchuser"):
        ingest([postgres_url.replace("postgres@", "nosuchuser@")], out, table="orders")
    with pytest.raises(UsageError, match="exactly one of --table"):
        ingest([shop], out)
    assert not out.exists()
