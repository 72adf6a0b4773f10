"""The canonical form: one mapping of raw values for fit, transform, predict, export and serve."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsys_cli.errors import InputError
from mlsys_cli.features.schema import (INT64_MIN, RecordReader, canonical_arrays, canonicalize, infer_schema, missing_target,
                                       out_of_range, regression_values)
from tests.features.frames import raw_frame


@pytest.mark.parametrize("values", [
    pd.Series(["a", "", " \t", None, "b"], dtype=object),
    pd.Series(["a", "", " \t", None, "b"], dtype="category"),
    pd.Series(["a", "", " \t", None, "b"], dtype="string[pyarrow]"),
    ["a", "", " \t", None, "b"],
])
def test_a_blank_text_target_is_missing_like_a_null(values):
    np.testing.assert_array_equal(missing_target(values), [False, True, True, True, False])


def test_missing_target_of_numbers_is_null_only():
    np.testing.assert_array_equal(missing_target(pd.Series([0.0, np.nan, 1.0])), [False, True, False])
    np.testing.assert_array_equal(missing_target(pd.Series([0, 1, 2])), [False, False, False])


def test_regression_values_refuse_what_float32_models_cannot_fit():
    y = regression_values(pd.Series([1, 2.5, -3.4e38], dtype="Float64"), "target 'y'")
    assert y.dtype == np.float64 and y.tolist() == [1.0, 2.5, -3.4e38]
    for bad, needle in [([1.0, 1e308], r"first 1e\+308 at row 1"), ([np.inf, 0.0], "at row 0"), ([0.0, -1e39], "too large"),
                        (["a", "b"], "not numeric")]:
        with pytest.raises(InputError, match=needle):
            regression_values(np.asarray(bad, dtype=object), "target 'y'")


def test_infer_schema_types_from_pandas_and_arrow_agree():
    df = raw_frame(50)
    expected = {"cust_id": "string", "num": "float", "count": "float", "flag": "bool", "cat": "string",
                "when": "datetime", "day": "datetime", "empty": "float", "y": "bool"}
    for data in (df, pa.Table.from_pandas(df, preserve_index=False)):
        types = {c["name"]: c["type"] for c in infer_schema(data)}
        assert {k: types[k] for k in expected} == expected


def test_canonical_values():
    df = pd.DataFrame({
        "x": [1.1, np.nan, np.inf, -np.inf, 1e300, -1e300, 3.0],
        "b": pd.array([True, False, None, True, False, True, None], dtype="boolean"),
        "s": ["a", None, "", "b", 3.0, 4.5, "c"],
        "t": pd.to_datetime(["1970-01-01 00:00:01", None, "1969-12-31 23:59:59", "2024-02-29 12:00:00",
                             "2000-01-01 00:00:00", "1900-01-01 00:00:00", "2038-01-20 00:00:00"]),
    })
    schema = [{"name": "x", "type": "float"}, {"name": "b", "type": "bool"}, {"name": "s", "type": "string"},
              {"name": "t", "type": "datetime"}]
    c = canonicalize(df, schema)
    assert c["x"].iloc[0] == float(np.float32(1.1)) and c["x"].iloc[0] != 1.1
    assert np.isnan(c["x"].iloc[1:6]).all() and c["x"].iloc[6] == 3.0  # inf and beyond float32 are missing
    assert c["b"].tolist()[:2] == [1.0, 0.0] and np.isnan(c["b"].iloc[2])
    assert c["s"].tolist() == ["a", "", "", "b", "3", "4.5", "c"]
    assert c["t"].tolist()[:3] == [1, INT64_MIN, -1]
    assert c["t"].iloc[3] == int(pd.Timestamp("2024-02-29 12:00:00", tz="UTC").timestamp())
    assert out_of_range(df, schema) == {"x": 4}


def test_dates_timezones_and_numeric_strings():
    df = pd.DataFrame({
        "d": [dt.date(2024, 1, 2), None],
        "tz": pd.to_datetime(["2024-01-02 01:00:00+01:00", None], utc=True).tz_convert("Europe/Paris"),
        "n": ["12.5", None],
        "flag": ["yes", "False"],
    })
    schema = [{"name": "d", "type": "datetime"}, {"name": "tz", "type": "datetime"}, {"name": "n", "type": "float"},
              {"name": "flag", "type": "bool"}]
    c = canonicalize(df, schema)
    midnight = int(pd.Timestamp("2024-01-02", tz="UTC").timestamp())
    assert c["d"].tolist() == [midnight, INT64_MIN]
    assert c["tz"].tolist() == [midnight, INT64_MIN]
    assert c["n"].iloc[0] == 12.5 and np.isnan(c["n"].iloc[1])
    assert c["flag"].tolist() == [1.0, 0.0]


def test_extra_columns_ignored_and_order_follows_schema():
    df = pd.DataFrame({"extra": [1], "b": ["x"], "a": [2.0]})
    c = canonicalize(df, [{"name": "a", "type": "float"}, {"name": "b", "type": "string"}])
    assert list(c.columns) == ["a", "b"]


def test_missing_column_is_named():
    with pytest.raises(InputError, match="column 'a' is missing"):
        canonicalize(pd.DataFrame({"b": [1]}), [{"name": "a", "type": "float"}])


@pytest.mark.parametrize("kind, value", [("float", "abc"), ("bool", "maybe"), ("datetime", "not a date"), ("bool", 2.0)])
def test_wrong_value_is_named(kind, value):
    df = pd.DataFrame({"c": [None, value]}, dtype=object)
    with pytest.raises(InputError, match=r"column 'c': expected .* \(row 1\)"):
        canonicalize(df, [{"name": "c", "type": kind}])


@pytest.mark.parametrize("kind, column", [
    # datetime64 was read as nanoseconds since 1970: a number column given dates predicted silently
    ("float", pd.Series([pd.NaT, pd.Timestamp("2024-01-01")])),
    ("float", pd.Series([None, pd.Timestamp("2024-01-01", tz="UTC")])),
    # unhashable values were an internal TypeError
    ("string", pd.Series([None, [1, 2]], dtype=object)), ("string", pd.Series([None, np.array([1])], dtype=object)),
    ("string", pd.Series([None, {"a": 1}], dtype=object)), ("float", pd.Series([None, [1.0]], dtype=object)),
])
def test_a_value_of_another_kind_is_refused_by_name_not_converted(kind, column):
    with pytest.raises(InputError, match=r"column 'c': expected .* \(row 1\)"):
        canonicalize(pd.DataFrame({"c": column}), [{"name": "c", "type": kind}])
    table = pa.Table.from_pandas(pd.DataFrame({"c": column}), preserve_index=False)
    with pytest.raises(InputError, match=r"column 'c': expected .* \(row 1\)"):
        canonicalize(table, [{"name": "c", "type": kind}])


def _json_records(df):
    """The rows as a JSON client sends them: ISO dates, null for missing, plain numbers."""
    import json

    return json.loads(df.to_json(orient="records", date_format="iso", date_unit="s"))


def test_records_give_the_frame_path_values():
    from mlsys_cli.features.schema import canonical_arrays, canonical_records
    from tests.features.frames import unseen_frame

    df = unseen_frame(60).drop(columns=["y"])
    df.loc[20:22, ["num", "skewed"]] = np.nan  # JSON has no inf; strict mode refuses beyond-float32 numbers
    schema = infer_schema(df)
    records = _json_records(df)
    frame = canonical_arrays(pd.DataFrame(records), schema)
    fast = canonical_records(records, schema)
    strict = canonical_records(records, schema, strict=True)
    assert set(fast) == {c["name"] for c in schema}
    for name in fast:
        assert fast[name].dtype == frame[name].dtype, name
        np.testing.assert_array_equal(fast[name], frame[name], err_msg=name)
        np.testing.assert_array_equal(strict[name], frame[name], err_msg=name)


@pytest.mark.parametrize("strict", [False, True])
def test_record_reader_common_path_gives_the_general_paths_values(strict):
    """RecordReader's common path (one pass per type) and its general path (per column) agree value
    for value, on JSON rows and on the value forms the common path converts with a call."""
    from mlsys_cli.features.schema import RecordReader
    from tests.features.frames import unseen_frame

    df = unseen_frame(60).drop(columns=["y"])
    df.loc[20:22, ["num", "skewed"]] = np.nan  # JSON has no inf; strict mode refuses beyond-float32 numbers
    schema = infer_schema(df)
    records = _json_records(df)
    records[1].update(num=7, flag="yes", cat=3.0, when=86400.7)  # an int, a bool as text, a number as category, epoch seconds
    records[2].update(num="12.5", flag=0, cat=True, when=" ")  # a number as text, 0/1, a bool as category, a blank date
    reader = RecordReader(schema, strict)
    common, general = reader._common(records), reader._general(records)
    assert list(common) == list(general) == [c["name"] for c in schema]
    for name in general:
        assert common[name].dtype == general[name].dtype, name
        np.testing.assert_array_equal(common[name], general[name], err_msg=name)
    assert reader(records[:1])["num"].shape == (1,)


def test_records_value_forms():
    from mlsys_cli.features.schema import canonical_records

    schema = [{"name": "x", "type": "float"}, {"name": "b", "type": "bool"}, {"name": "s", "type": "string"},
              {"name": "t", "type": "datetime"}]
    rows = [{"x": "12.5", "b": "yes", "s": 3.0, "t": "2024-01-02T01:00:00+01:00"},
            {"x": None, "b": None, "s": None, "t": None},
            {"x": 7, "b": 0, "s": "a", "t": 86400.7},
            {"x": 1e300, "b": True, "s": True, "t": "2024-01-02"}]
    c = canonical_records(rows, schema)
    midnight = int(pd.Timestamp("2024-01-02", tz="UTC").timestamp())
    assert c["x"][0] == 12.5 and np.isnan(c["x"][1]) and c["x"][2] == 7.0 and np.isnan(c["x"][3])
    assert c["b"][0] == 1.0 and np.isnan(c["b"][1]) and c["b"][2] == 0.0 and c["b"][3] == 1.0
    assert c["s"].tolist() == ["3", "", "a", "True"]
    assert c["t"].tolist() == [midnight, INT64_MIN, 86400, midnight]
    # The frame path on the same rows (a number among date strings is epoch seconds here, as in a
    # numeric column; pandas would read it as nanoseconds in a mixed column, so row 2 is left out).
    frame = canonicalize(pd.DataFrame(rows[:2]), schema)
    for name in ("x", "b", "s", "t"):
        np.testing.assert_array_equal(frame[name].to_numpy(), c[name][:2], err_msg=name)


@pytest.mark.parametrize("rows,needle", [
    ([{"x": "abc", "s": "a"}], "column 'x': expected numeric values, found 'abc' (row 0)"),
    ([{"x": 1, "s": "a"}, {"x": [1], "s": "a"}], "column 'x': expected numeric values, found [1] (row 1)"),
    ([{"x": 1, "s": {"k": 1}}], "column 's': expected string values"),
    # A number all the same: refused for its range (the table paths read it as missing and count it).
    ([{"x": 1e300, "s": "a"}], "column 'x': 1e+300 (row 0) is beyond float32's range (+/-3.403e+38)"),
    ([{"x": 1, "s": "a"}, {"x": "-1e39", "s": "a"}], "column 'x': '-1e39' (row 1) is beyond float32's range"),
    ([{"x": 10**400, "s": "a"}], "is beyond float32's range"),  # was an OverflowError (exit 1, a 500)
    # Long values are cut in the message, saying how long they were (a 400-digit number printed whole).
    ([{"x": 10**400, "s": "a"}], "column 'x': 1000000000000000000000000000000000000... (401 digits) (row 0)"),
    ([{"x": "y" * 500, "s": "a"}], "found 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy... (502 characters) (row 0)"),
    ([{"s": "a"}], "column 'x' is missing from the input (record 0)"),
    ([{"x": 1, "s": "a"}, {"s": "b"}], "column 'x' is missing from the input (record 1)"),
    (["not a record"], "record 0 is not an object"),
    ([{"x": "NaN", "s": "a"}], "column 'x': expected numeric values, found 'NaN' (row 0)"),  # null is the missing value
    ([{"x": 1.0, "s": "a"}, {"x": True, "s": "a"}], "column 'x': expected numeric values, found True (row 1)"),
    ([{"x": float("nan"), "s": "a"}], "column 'x': expected numeric values, found nan (row 0)"),
])
def test_records_strict_errors_name_the_problem(rows, needle):
    from mlsys_cli.features.schema import canonical_records

    if rows == [{"x": 10**400, "s": "a"}]:  # not strict: missing, as 1e300 is
        assert np.isnan(canonical_records(rows, [{"name": "x", "type": "float"}], strict=False)["x"][0])

    schema = [{"name": "x", "type": "float"}, {"name": "s", "type": "string"}]
    with pytest.raises(InputError) as info:
        canonical_records(rows, schema, strict=True)
    assert needle in info.value.message
    assert len(info.value.message) < 200


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662\u0663"])  # Python's float() reads both; pandas does not
@pytest.mark.parametrize("strict", [False, True])
def test_numbers_as_text_only_the_table_path_reads_are_read_by_records(text, strict):
    """A serve record and a predict table holding the same text get the same answer (audit F6: "1_000" was 1000 online)."""
    from mlsys_cli.features.schema import canonical_records

    schema = [{"name": "x", "type": "float"}]
    with pytest.raises(InputError, match="expected numeric values"):
        canonicalize(pd.DataFrame({"x": pd.Series([text], dtype=object)}), schema)
    with pytest.raises(InputError, match="expected numeric values"):
        canonical_records([{"x": text}], schema, strict=strict)


def test_decimal_columns_are_numbers_not_categories():
    # Parquet decimal128 / PostgreSQL NUMERIC arrive in pandas as Decimal objects: a price column
    # must be a number (as drift reads it), not one category per distinct amount.
    import decimal

    import pyarrow as pa

    from mlsys_cli.features.schema import canonical_records, canonicalize, infer_schema

    amounts = [decimal.Decimal("1.25"), None, decimal.Decimal("3.50"), decimal.Decimal("-7")]
    df = pa.table({"price": pa.array(amounts, type=pa.decimal128(10, 2))}).to_pandas()
    schema = infer_schema(df)
    assert schema == [{"name": "price", "type": "float"}]
    np.testing.assert_array_equal(canonicalize(df, schema)["price"].to_numpy(), [1.25, np.nan, 3.5, -7.0])
    np.testing.assert_array_equal(canonical_records([{"price": a} for a in amounts], schema)["price"], [1.25, np.nan, 3.5, -7.0])


def test_durations_are_seconds_on_every_path():
    # An Arrow duration column (session length, time to ship) is a number of seconds for the
    # features, the reference profile and drift alike: not one category (or an "id") per length.
    from mlsys_cli.data.profile import profile_frame
    from mlsys_cli.monitor.scan import logical_type as arrow_kind
    from mlsys_cli.monitor.scan import to_float

    arr = pa.array([1500, None, 3000, 60_000], type=pa.duration("ms"))
    df = pa.table({"wait": arr}).to_pandas()
    schema = infer_schema(df)
    assert schema == [{"name": "wait", "type": "float"}]
    seconds = [1.5, np.nan, 3.0, 60.0]
    np.testing.assert_array_equal(canonicalize(df, schema)["wait"].to_numpy(), seconds)
    assert profile_frame(df, schema)["wait"]["max"] == 60.0
    assert arrow_kind(arr.type) == "float"
    np.testing.assert_array_equal(to_float(arr, "float"), seconds)


@pytest.mark.parametrize("value", [1e20, -1e20, 9.3e18, 1e12, "9999-12-31", "1500-01-01T00:00:00"])
def test_datetimes_beyond_what_every_path_holds_are_refused_by_name_in_both_paths(value):
    """A number of epoch seconds or a date outside pandas' range was a crash (OverflowError) in
    the record path (a 500 in serve) and a silent missing value or a wrapped date in the frame path."""
    schema = [{"name": "when", "type": "datetime"}, {"name": "x", "type": "float"}]
    with pytest.raises(InputError, match=r"column 'when': .* \(row 1\) is beyond the datetimes"):
        RecordReader(schema)([{"when": 1.7e9, "x": 1.0}, {"when": value, "x": 2.0}])
    with pytest.raises(InputError, match=r"column 'when': .* \(row 1\) is beyond the datetimes"):
        canonicalize(pd.DataFrame({"when": [1.7e9 if isinstance(value, float) else "2020-01-01", value], "x": [1.0, 2.0]}),
                     schema)


def test_a_timestamp_column_in_seconds_beyond_nanoseconds_is_refused_not_wrapped():
    schema = [{"name": "when", "type": "datetime"}]
    far = pd.DataFrame({"when": pd.Series([np.datetime64("2020-01-01", "s"), np.datetime64("9999-12-31", "s")],
                                          dtype="datetime64[s]")})
    with pytest.raises(InputError, match=r"\(row 1\) is beyond the datetimes mlsys can hold"):
        canonicalize(far, schema)  # was 1816-03-30 through datetime64[ns]
    near = far.iloc[:1]
    assert canonical_arrays(near, schema)["when"].tolist() == [1577836800]


def test_times_of_day_are_seconds_since_midnight_on_every_path():
    # A TIME column (Arrow time32/time64, datetime.time, "HH:MM[:SS]" text) is a number of seconds
    # since midnight for the features, the records path, the reference profile and drift alike:
    # it used to be one category per value, dropped as an 'id' when every time was distinct.
    from mlsys_cli.data.profile import profile_frame
    from mlsys_cli.features.roles import infer_roles
    from mlsys_cli.features.schema import canonical_records
    from mlsys_cli.monitor.scan import logical_type as arrow_kind
    from mlsys_cli.monitor.scan import to_float

    times = [dt.time(8, 30), None, dt.time(23, 59, 59, 500_000), dt.time(0, 0, 1)]
    seconds = [30600.0, np.nan, 86399.5, 1.0]
    for arr in (pa.array(times, pa.time64("us")), pa.array(times, pa.time64("ns"))):
        df = pa.table({"t": arr}).to_pandas()
        schema = infer_schema(df)
        assert schema == [{"name": "t", "type": "time"}]
        np.testing.assert_array_equal(canonicalize(df, schema)["t"].to_numpy(), seconds)
        assert arrow_kind(arr.type) == "time"
        np.testing.assert_array_equal(to_float(arr, "time"), seconds)
    assert infer_schema(pd.DataFrame({"t": pd.array(times, dtype=pd.ArrowDtype(pa.time32("s")))}))[0]["type"] == "time"
    np.testing.assert_array_equal(to_float(pa.array([dt.time(0, 2), None], pa.time32("s")), "time"), [120.0, np.nan])
    assert profile_frame(df, schema)["t"]["max"] == 86399.5
    roles = infer_roles(canonical_arrays(pd.DataFrame({"t": [dt.time(h, m) for h in range(24) for m in (0, 30)]}), schema), schema)
    assert roles["t"]["role"] == "numeric"
    # Text and numbers (a CSV, a JSON client) read as the same seconds on both paths.
    text = pd.DataFrame({"t": ["08:30", None, "23:59:59.5", "0:00:01"]}, dtype=object)
    np.testing.assert_array_equal(canonicalize(text, schema)["t"].to_numpy(), seconds)
    records = [{"t": "08:30:00"}, {"t": None}, {"t": 86399.5}, {"t": "00:00:01+02:00"}]
    for strict in (False, True):
        np.testing.assert_array_equal(canonical_records(records, schema, strict=strict)["t"], seconds)
        np.testing.assert_array_equal(RecordReader(schema, strict)(records)["t"], seconds)


@pytest.mark.parametrize("value", ["25:00", "12", "2024-01-01T08:00:00", 90_000, -1, dt.datetime(2024, 1, 1, 8)])
def test_what_is_not_a_time_of_day_is_refused_by_name_in_both_paths(value):
    # Epoch seconds, a datetime, a bare number as text: refused, not cut to a clock or guessed.
    from mlsys_cli.features.schema import canonical_records

    schema = [{"name": "t", "type": "time"}]
    with pytest.raises(InputError, match=r"column 't': expected time-of-day values, found .* \(row 1\)"):
        canonicalize(pd.DataFrame({"t": ["08:00", value]}, dtype=object), schema)
    with pytest.raises(InputError, match=r"column 't': expected time-of-day values, found .* \(row 1\)"):
        canonical_records([{"t": "08:00"}, {"t": value}], schema, strict=True)


def test_json_integers_in_a_float_column_read_like_floats_up_to_float32s_range():
    """Integers take the record reader's common path (no call per value); the bounds stay the
    general path's: beyond float32 an integer is refused when strict and missing otherwise."""
    schema = [{"name": "x", "type": "float"}]
    ints, floats = [{"x": v} for v in (0, -3, 33, 10**30)], [{"x": float(v)} for v in (0, -3, 33, 10**30)]
    for strict in (False, True):
        reader = RecordReader(schema, strict)
        np.testing.assert_array_equal(reader(ints)["x"], reader(floats)["x"])
        np.testing.assert_array_equal(reader._common(ints)["x"], reader._general(ints)["x"])
    with pytest.raises(InputError, match=r"column 'x'.*\(row 1\)"):
        RecordReader(schema, strict=True)([{"x": 1}, {"x": 10**40}])
    assert np.isnan(RecordReader(schema)([{"x": 1}, {"x": -(10**40)}])["x"][1])


def test_records_for_a_zone_aware_column_refuse_naive_text_as_the_table_path_does():
    """serve's JSON records and V2 tensors go through RecordReader / canonical_columns: a model fitted
    on Europe/Berlin times given Berlin wall clock without an offset must be refused there too
    (read as UTC, every time feature would shift), while offsets, epoch numbers and nulls read."""
    from mlsys_cli.errors import InputError
    from mlsys_cli.features.schema import RecordReader, canonical_columns

    schema = [{"name": "t", "type": "datetime", "tz": "Europe/Berlin"}, {"name": "x", "type": "float"}]
    reader = RecordReader(schema)
    for naive in ("2024-01-01T10:00:00", "2024-01-01 10:00", "01/02/2024 10:00"):
        with pytest.raises(InputError, match="time zone \\(Europe/Berlin\\)"):
            reader([{"t": "2024-01-01T09:00:00+01:00", "x": 1.0}, {"t": naive, "x": 2.0}])
        with pytest.raises(InputError, match="time zone"):
            canonical_columns({"t": [naive], "x": [1.0]}, schema)
    got = reader([{"t": "2024-01-01T10:00:00+01:00", "x": 1.0}, {"t": 1704099600, "x": 2.0}, {"t": None, "x": 3.0}])
    assert got["t"][:2].tolist() == [1704099600, 1704099600]
    naive_model = RecordReader([{"name": "t", "type": "datetime"}])  # fitted on naive times: naive text is UTC, as before
    assert naive_model([{"t": "2024-01-01T09:00:00"}])["t"].tolist() == [1704099600]
