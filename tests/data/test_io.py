"""data/io.py: what a table read gives the rest of mlsys (never an index column, never two of one name)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys_cli.data.io import is_metadata_column, read_frame, read_table, scan_table
from mlsys_cli.errors import InputError


def test_a_pandas_index_written_with_the_table_is_not_a_column(tmp_path):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]}, index=[7, 3, 5])  # shuffled: no RangeIndex
    df.to_parquet(tmp_path / "t.parquet")  # index kept, as __index_level_0__
    assert "__index_level_0__" in pq.read_schema(tmp_path / "t.parquet").names
    assert read_table(tmp_path / "t.parquet").column_names == ["x", "y"]
    assert list(read_frame(tmp_path / "t.parquet").columns) == ["x", "y"]


def test_metadata_columns():
    assert is_metadata_column("__index_level_0__") and is_metadata_column("_mlsys_time")
    assert not is_metadata_column("index") and not is_metadata_column("mlsys_score")


def test_repeated_column_names_are_refused_by_name(tmp_path):
    pq.write_table(pa.table([[1, 2], [3, 4], [5, 6]], names=["a", "a", "b"]), tmp_path / "t.parquet")
    with pytest.raises(InputError, match="repeated column name 'a'"):
        read_table(tmp_path / "t.parquet")


def test_csv_is_read_eagerly(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,x\n2,y\n")
    assert read_frame(tmp_path / "t.csv").to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}


def test_a_corrupt_parquet_file_is_an_input_error(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"a": list(range(100))}), good)
    data = good.read_bytes()
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data[:4] + b"\x00" * 200 + data[-60:])
    with pytest.raises(InputError, match="bad.parquet"):
        read_table(bad)


@pytest.mark.parametrize("name", ["pipe", "pipe.csv", "pipe.parquet"])
def test_a_fifo_input_is_refused_at_once_not_read(tmp_path, name):
    # Sniffing a FIFO's format blocked until a writer came (predict hung forever on "mkfifo t"),
    # and with a writer (<(zcat t.csv)) it ate the first bytes the reader then missed.
    import os
    import threading

    fifo = tmp_path / name
    os.mkfifo(fifo)
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(read_table, fifo)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # unblock the old code's read so the test ends: it failed by blocking
        with open(fifo, "wb"):
            pass
        reader.join(timeout=30)
        pytest.fail("reading a FIFO blocked")
    assert "not a regular file" in outcome[0]


def _error_of(func, *args):
    try:
        func(*args)
    except InputError as exc:
        return exc.message
    return "no error"


def _parts(tmp_path, first, second):
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(pa.table(first), d / "p1.parquet")
    pq.write_table(pa.table(second), d / "p2.parquet")
    return d


@pytest.mark.parametrize("second, named", [
    ({"k": [0.5, 1.5], "s": ["c", "d"]}, None),  # int64 + double: read as double by both readers
    ({"k": pa.array([2, 3], pa.int32()), "s": pa.array(["c", "d"]).dictionary_encode()}, None),  # widen; categories
    ({"k": ["x", "y"], "s": ["c", "d"]}, r"p2.parquet: column 'k' is string, .*p1.parquet has int64"),
    ({"s": ["c", "d"]}, r"p2.parquet has no column 'k'"),
])
def test_files_of_one_table_share_one_schema_in_both_readers(tmp_path, second, named):
    # DuckDB read every file as the first one's schema (0.5 and 1.5 became the int64s 0 and 2,
    # silently, in split's outputs); pyarrow filled a file's missing column with nulls, and a
    # string against a number (or plain strings against categories) was an internal error.
    from mlsys_cli.data.io import scan_table

    d = _parts(tmp_path, {"k": [0, 1], "s": ["a", "b"]}, second)
    if named:
        for read in (read_table, lambda p: scan_table(p).to_arrow_table()):
            with pytest.raises(InputError, match=named):
                read(d)
        return
    arrow, duck = read_table(d), scan_table(d).to_arrow_table()
    expected = [0.0, 1.0, 0.5, 1.5] if isinstance(second["k"], list) else [0, 1, 2, 3]
    assert arrow.column("k").to_pylist() == duck.column("k").to_pylist() == expected
    assert arrow.column("s").to_pylist() == duck.column("s").to_pylist() == ["a", "b", "c", "d"]


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_csv_dates_whose_day_month_order_is_a_guess_are_refused_by_every_reader(tmp_path, suffix, sep):
    path = tmp_path / f"it's{suffix}"
    path.write_text(f"when{sep}v\n01/02/2024{sep}1\n01/03/2024{sep}2\n")
    for read in (read_table, read_frame):
        with pytest.raises(InputError, match=r"'when': dates like '01/02/2024' read as day/month and as month/day") as info:
            read(path)
        assert "--schema when:varchar" in info.value.hint
    path.write_text(f"when{sep}v\n01/02/2024{sep}1\n01/13/2024{sep}2\n")  # 13 can only be a day: month first
    assert [str(d) for d in read_table(path).column("when").to_pylist()] == ["2024-01-02", "2024-01-13"]


@pytest.mark.parametrize("suffix,sep", [(".csv", ";"), (".tsv", "\t")])
def test_decimal_commas_are_numbers_in_every_reader(tmp_path, suffix, sep):
    path = tmp_path / f"it's{suffix}"
    path.write_text(f"price{sep}units{sep}y\n2,5{sep}1.500{sep}a\n-1.234,5{sep}2.000{sep}b\n{sep}{sep}c\n")
    for read in (read_table, lambda p: scan_table(p).to_arrow_table()):
        table = read(path)
        assert table.column("price").to_pylist() == [2.5, -1234.5, None]
        assert table.column("units").to_pylist() == [1500.0, 2000.0, None]
        assert table.column("y").to_pylist() == ["a", "b", "c"]
    path.write_text(f"price{sep}y\n1,250{sep}a\n")  # 1.25 or 1250
    with pytest.raises(InputError, match="'price': numbers like '1,250' read as a decimal comma and as a thousands comma"):
        read_frame(path)
