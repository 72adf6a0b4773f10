"""The canonical form of raw values, shared by fit, transform, predict, export and serve.

Every path into a fitted pipeline first maps raw columns to one canonical form
(ARCHITECTURE.md, "Raw values"), so the Python pipeline and its ONNX graph see the same values:

========== ============================================== ==================
type       canonical NumPy value                          ONNX graph input
========== ============================================== ==================
float      float32-rounded, stored as float64; NaN        tensor(float)
           (durations: seconds)
bool       0.0 / 1.0; missing = NaN                       tensor(float)
string     Python str; missing = ""                       tensor(string)
datetime   int64 epoch seconds (UTC); missing = INT64_MIN tensor(int64)
time       seconds since midnight (wall clock, 0-86400),  tensor(float)
           float32-rounded, stored as float64; NaN
========== ============================================== ==================

A time of day (Arrow ``time32``/``time64``, Python ``datetime.time``, ``"HH:MM[:SS[.ffffff]]"``
text) is a number, not a category per minute: 08:30 sits between 08:00 and 09:00 for every model.

Infinite numbers, and numbers too large for float32 (``|x| > 3.4e38``, e.g. ``1e300``), are
treated as missing: they cannot travel through a float32 graph input, and silently turning them
into ``inf`` would poison scaling and sums. The count is reported by :func:`out_of_range`.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
from typing import Any, Sequence

import numpy as np

from mlsys_cli.data import timeofday
from mlsys_cli.errors import InputError
from mlsys_cli.features.columns import ColumnTable

TYPES = ("float", "bool", "string", "datetime", "time")
INT64_MIN = int(np.iinfo(np.int64).min)
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The datetimes every path can hold: pandas' nanosecond range (years 1677-2262) in whole epoch
# seconds. Beyond it a number or a date is refused by name, never a crash or a silent missing value.
DATETIME_MIN_S, DATETIME_MAX_S = -9_223_372_036, 9_223_372_036
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def to_pandas(data: Any) -> Any:
    """A pandas DataFrame from pandas, pyarrow or polars input (no copy when already pandas)."""
    import pandas as pd

    if isinstance(data, (pd.DataFrame, ColumnTable)):  # a ColumnTable loads its columns on use
        return data
    if hasattr(data, "to_pandas"):
        return data.to_pandas()
    if isinstance(data, dict) or isinstance(data, list):
        return pd.DataFrame(data)
    raise InputError(f"cannot read a table from a {type(data).__name__}")


def missing_target(values: Any) -> np.ndarray:
    """Which target values are missing: null, NaN, or a string that is empty or only whitespace.

    The one definition every command that reads a target uses (train, tune, ensemble and the
    validation tables refuse such rows; featurize, evaluate, compress and retrain leave them out
    and count them). A CSV reads an empty field as null while Parquet keeps it as ``""``: the
    same unwritten label must not become a class of its own depending on the file format.

    Parameters
    ----------
    values : pandas.Series or array-like

    Returns
    -------
    numpy.ndarray of bool, one per value
    """
    import pandas as pd
    from pandas.api import types as pdt

    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    missing = series.isna().to_numpy(dtype=bool)
    if pdt.is_numeric_dtype(series.dtype) or pdt.is_bool_dtype(series.dtype) or pdt.is_datetime64_any_dtype(series.dtype):
        return missing
    try:  # the distinct values only: the labels are few, the rows many
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    except TypeError:  # unhashable values (lists): not labels at all, refused where they are encoded
        return missing
    blank = np.array([isinstance(v, str) and not v.strip() for v in uniques.tolist()], dtype=bool)
    if blank.any():
        missing = missing | ((codes >= 0) & blank[np.maximum(codes, 0)])
    return missing


def regression_values(values: Any, what: str) -> np.ndarray:
    """A regression target as float64, refusing what no model can learn from (exit 3).

    Text, ``inf`` and values beyond float32 range (``|y| > 3.4e38``, e.g. ``1e308``) are refused
    rather than fitted: the families and the ONNX output compute in float32, and squared errors
    of such values overflow, so they could only give inf metrics or a crash. ``values``: a pandas
    Series or array-like; ``what`` names the target in the message (``"target 'price'"``).
    Missing values are the caller's to drop first.
    """
    try:
        y = (values.to_numpy(dtype=np.float64, na_value=np.nan) if hasattr(values, "to_numpy")
             else np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(f"{what} is not numeric; regression needs numbers") from None
    with np.errstate(invalid="ignore"):
        bad = np.isinf(y) | (np.abs(y) > FLOAT32_MAX)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{what} holds {int(bad.sum())} infinite or too large value(s) (first {float(y[row])!r} at row {row}); "
                         f"regression targets must lie within +/-{FLOAT32_MAX:.3g}",
                         "filter or rescale those rows first")
    return y


def _first_values(series: Any, n: int = 50) -> list[Any]:
    return series.dropna().head(n).tolist()


def logical_type(series: Any) -> str:
    """The logical type (float | bool | string | datetime) of a raw pandas column."""
    import pandas as pd
    from pandas.api import types as pdt

    dtype = series.dtype
    if pdt.is_bool_dtype(dtype):
        return "bool"
    if pdt.is_numeric_dtype(dtype) or _is_duration(dtype):
        return "float"
    if pdt.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype):
        return "string"
    if _is_time(dtype):
        return "time"
    values = _first_values(series)
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        return "bool"
    if values and all(isinstance(v, _dt.time) for v in values):
        return "time"
    if values and all(isinstance(v, (_dt.date, np.datetime64)) for v in values):
        return "datetime"
    # Decimal: a DECIMAL/NUMERIC column (Parquet decimal128, PostgreSQL NUMERIC) arrives as Python
    # Decimal objects; it is a number, not a category per distinct amount.
    if values and all(isinstance(v, (int, float, np.number, decimal.Decimal)) and not isinstance(v, bool) for v in values):
        return "float"
    return "string"


def nested_columns(df: Any) -> list[str]:
    """The columns of a pandas frame (or ColumnTable) holding lists, arrays or structs."""
    if isinstance(df, ColumnTable):
        return df.nested_columns()
    return [str(c) for c in df.columns if is_nested(df[c])]


def is_nested(series: Any) -> bool:
    if series.dtype != object and "[" not in str(series.dtype) and "struct" not in str(series.dtype):
        return False
    return any(isinstance(v, (list, tuple, dict, np.ndarray)) for v in _first_values(series))


def infer_schema(df: Any, types: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The raw schema of a table: ``[{"name", "type"}]`` in column order.

    Parameters
    ----------
    df : pandas.DataFrame, pyarrow.Table or polars.DataFrame
    types : dict, optional
        Overrides: column name -> logical type.
    """
    from mlsys_cli.data.io import is_metadata_column, refuse_repeated

    df = to_pandas(df)
    refuse_repeated([str(c) for c in df.columns])
    types = types or {}
    nested = set(nested_columns(df))  # left out by the featurizer's fit with a warning (role nested)
    schema = []
    for name in df.columns:
        # A pandas index, mlsys metadata, an empty name (no graph input can carry it): never a feature.
        if is_metadata_column(str(name)) or str(name) in nested or not str(name).strip():
            continue
        kind = types.get(str(name)) or (df.logical_type(name) if isinstance(df, ColumnTable) else logical_type(df[name]))
        if kind not in TYPES:
            raise ValueError(f"unknown logical type {kind!r}")
        schema.append({"name": str(name), "type": kind})
    return schema


def _bad_value(name: str, kind: str, values: Any, mask: np.ndarray) -> InputError:
    row = int(np.flatnonzero(mask)[0])
    return InputError(
        f"column {name!r}: expected {kind} values, found {values[row]!r} (row {row})",
        "fix the value or the column type (--numeric/--categorical/--datetime when fitting)",
    )


def _is_duration(dtype: Any) -> bool:
    """A timedelta column (Arrow ``duration``): a number of seconds, not one category per length."""
    return getattr(dtype, "kind", "") == "m" or "duration" in str(dtype)


def _is_time(dtype: Any) -> bool:
    """An Arrow ``time32``/``time64`` column held as a pandas ``ArrowDtype``."""
    import pyarrow as pa

    return pa.types.is_time(getattr(dtype, "pyarrow_dtype", None) or pa.null())


def _beyond_dates(name: str, values: Any, mask: np.ndarray) -> InputError:
    row = int(np.flatnonzero(mask)[0])
    return InputError(f"column {name!r}: {values[row]!r} (row {row}) is beyond the datetimes mlsys can hold "
                      "(years 1677 to 2262)", "replace far-past or far-future sentinels with a missing value")


def _as_float(name: str, series: Any) -> np.ndarray:
    import pandas as pd
    from pandas.api import types as pdt

    if _is_duration(series.dtype):
        x = pd.to_timedelta(series).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    elif pdt.is_bool_dtype(series.dtype) or pdt.is_numeric_dtype(series.dtype):
        x = series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raw = series.astype(object).to_numpy()
        present = ~pd.isna(raw) & (raw != "")
        # dtype=object: a Series of Timestamps would be inferred datetime64, which to_numeric
        # turns into nanoseconds since 1970 (dates given for a number were predicted on as 1.7e18).
        x = pd.to_numeric(pd.Series(raw, dtype=object).where(present), errors="coerce").to_numpy(dtype=np.float64,
                                                                                                 na_value=np.nan)
        bad = present & np.isnan(x) & ~np.array([isinstance(v, str) and v.strip().lower() == "nan" for v in raw], dtype=bool)
        if bad.any():
            raise _bad_value(name, "numeric", raw, bad)
    with np.errstate(invalid="ignore"):
        x = np.where(np.isfinite(x) & (np.abs(x) <= FLOAT32_MAX), x, np.nan)
    return x.astype(np.float32).astype(np.float64)


def _as_bool(name: str, series: Any) -> np.ndarray:
    import pandas as pd
    from pandas.api import types as pdt

    if pdt.is_bool_dtype(series.dtype) or pdt.is_numeric_dtype(series.dtype):
        x = series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isnan(x) & (x != 0) & (x != 1)
        if bad.any():
            raise _bad_value(name, "boolean", x, bad)
        return x
    raw = series.astype(object).to_numpy()
    out = np.full(len(raw), np.nan)
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v == "":
            continue
        text = str(v).strip().lower()
        if isinstance(v, (bool, np.bool_)):
            out[i] = float(v)
        elif text in _TRUE:
            out[i] = 1.0
        elif text in _FALSE:
            out[i] = 0.0
        else:
            raise _bad_value(name, "boolean", raw, np.arange(len(raw)) == i)
    return out


def _str_value(v: Any) -> str:
    # Whole floats print as ints, so that 3 and 3.0 are one category on every path.
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _as_string(name: str, series: Any) -> np.ndarray:
    import pandas as pd

    # Hash each row once (Arrow strings are dictionary-encoded in C), convert the distinct values,
    # and index back: one shared Python string per category instead of one per row.
    try:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    except TypeError:  # unhashable: a list, array or dict where a category belongs
        raw = series.astype(object).to_numpy()
        raise _bad_value(name, "string", raw, np.array([isinstance(v, (list, dict, np.ndarray)) for v in raw])) from None
    distinct = np.asarray(uniques, dtype=object)
    if pd.api.types.infer_dtype(distinct, skipna=True) not in ("string", "empty"):
        distinct = np.array([v if isinstance(v, str) else _str_value(v) for v in distinct.tolist()], dtype=object)
    # Code -1 (missing) picks the appended "".
    return np.append(distinct, np.array([""], dtype=object))[codes]


def _as_datetime(name: str, series: Any) -> np.ndarray:
    import pandas as pd
    from pandas.api import types as pdt

    if pdt.is_numeric_dtype(series.dtype) and not pdt.is_bool_dtype(series.dtype):
        x = series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            beyond = np.isfinite(x) & ((x < DATETIME_MIN_S) | (x > DATETIME_MAX_S))
        if beyond.any():  # the int64 cast would make them garbage or "missing"
            raise _beyond_dates(name, series.to_numpy(dtype=object), beyond)
        return np.where(np.isfinite(x), np.floor(np.nan_to_num(x)), INT64_MIN).astype(np.int64)
    if not pdt.is_datetime64_any_dtype(series.dtype):
        raw = series.astype(object).to_numpy()
        present = ~pd.isna(raw) & (raw != "")
        try:
            parsed = pd.to_datetime(pd.Series(raw).where(present), errors="coerce", utc=True, format="mixed")
        except (ValueError, TypeError):
            parsed = pd.Series(pd.NaT, index=range(len(raw)), dtype="datetime64[ns, UTC]")
        bad = present & parsed.isna().to_numpy()
        if bad.any():
            raise _bad_value(name, "datetime", raw, bad)
        series = parsed
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    missing = series.isna().to_numpy()
    # From the column's own unit: a datetime64[s] or [us] column (Parquet) beyond the nanosecond
    # range would wrap round silently through datetime64[ns] (9999-12-31 became 1816).
    seconds = series.to_numpy().astype("datetime64[s]").astype(np.int64)
    beyond = ~missing & ((seconds < DATETIME_MIN_S) | (seconds > DATETIME_MAX_S))
    if beyond.any():
        raise _beyond_dates(name, series.to_numpy(dtype=object), beyond)
    return np.where(missing, INT64_MIN, seconds).astype(np.int64)


def _as_time(name: str, series: Any) -> np.ndarray:
    x, bad = timeofday.column_seconds(series)
    if bad.any():
        raise _bad_value(name, "time-of-day", series.astype(object).to_numpy(), bad)
    return x.astype(np.float32).astype(np.float64)


_CONVERT = {"float": _as_float, "bool": _as_bool, "string": _as_string, "datetime": _as_datetime, "time": _as_time}


def canonical_column(name: str, series: Any, kind: str) -> np.ndarray:
    """One raw column in canonical form (see the module docstring)."""
    return _CONVERT[kind](name, series)


def canonicalize(df: Any, input_schema: Sequence[dict[str, Any]]) -> Any:
    """Map raw columns to the canonical form of ``input_schema``.

    Parameters
    ----------
    df : pandas.DataFrame, pyarrow.Table or polars.DataFrame
        Raw rows; extra columns are ignored.
    input_schema : list of dict
        ``[{"name", "type"}, ...]`` as fitted.

    Returns
    -------
    pandas.DataFrame
        The schema's columns in order: float64 (float, bool), object str (string), int64 (datetime).

    Raises
    ------
    InputError
        A column is missing, or holds a value that its type cannot hold (the column is named).
    """
    import pandas as pd

    out = canonical_arrays(df, input_schema)
    # Explicit object Series: pandas 3 would otherwise turn each string column into its Arrow
    # string dtype, which every consumer then converts back (two copies of every string per batch).
    n = len(next(iter(out.values()))) if out else len(to_pandas(df))
    return pd.DataFrame({k: pd.Series(v, dtype=object, copy=False) if v.dtype == object else v for k, v in out.items()},
                        index=pd.RangeIndex(n))


def canonical_arrays(df: Any, input_schema: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """:func:`canonicalize` as a dict of NumPy arrays (no DataFrame, so no consolidating copy).

    A list of records (dicts) takes :func:`canonical_records`, which gives the same values
    without building a DataFrame (the single-row path of ``serve``).
    """
    if isinstance(df, list):
        return canonical_records(df, input_schema)
    df = to_pandas(df)
    if isinstance(df, ColumnTable):  # a ColumnTable: each column converted when the fit first reads it
        return df.canonical(input_schema, canonical_column)
    columns = {str(c): c for c in df.columns}
    missing = [c["name"] for c in input_schema if c["name"] not in columns]
    if missing:
        raise InputError(
            f"column {missing[0]!r} is missing from the input" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            "the features were fitted on: " + ", ".join(c["name"] for c in input_schema),
        )
    for c in input_schema:
        if c.get("tz"):
            refuse_naive_times(c, df[columns[c["name"]]])
    return {c["name"]: canonical_column(c["name"], df[columns[c["name"]]], c["type"]) for c in input_schema}


def datetime_zone(series: Any) -> str | None:
    """The time zone of a zone-aware datetime column; ``None`` for naive times, text or numbers."""
    zone = getattr(getattr(series, "dtype", None), "tz", None)
    return str(zone) if zone is not None else None


def refuse_naive_times(entry: dict[str, Any], series: Any) -> None:
    """Refuse times without a zone for a column fitted on zone-aware times (``entry["tz"]``).

    Naive times are read as UTC. Times fitted in, say, Europe/Berlin and given as Berlin wall
    clock without the zone would be shifted by an hour or two, silently: every hour-of-day and
    day feature moves. Zone-aware times (any zone: converted to UTC) and epoch numbers are absolute.
    """
    from pandas.api import types as pdt

    if pdt.is_datetime64_any_dtype(series.dtype):
        naive = datetime_zone(series) is None
    elif pdt.is_numeric_dtype(series.dtype):
        naive = False
    else:  # text: the first dates say whether they carry an offset
        naive = any(_naive_text(v) for v in _first_values(series) if isinstance(v, (str, _dt.datetime)))
    if naive:
        raise naive_times_error(entry)


def naive_times_error(entry: dict[str, Any]) -> InputError:
    """The refusal of times without a zone for a column fitted on zone-aware times (tables and records)."""
    name, zone = entry["name"], entry["tz"]
    return InputError(f"column {name!r}: the model was fitted on times with a time zone ({zone}); these have none, "
                      "and would be read as UTC (shifting every time feature)",
                      f"give the times their zone first (pandas: .dt.tz_localize({zone!r})), or write them with a UTC offset")


def _naive_text(v: Any) -> bool:
    """Whether a date (text or ``datetime``) has no zone or offset."""
    if isinstance(v, _dt.datetime):
        return v.tzinfo is None
    return _naive_date_text(v)


@functools.lru_cache(maxsize=4096)
def _naive_date_text(v: str) -> bool:
    """Cached: records repeat the same dates request after request."""
    try:
        return _dt.datetime.fromisoformat(v.strip()).tzinfo is None
    except ValueError:  # another format: pandas says whether it holds an offset
        import pandas as pd

        try:
            return pd.Timestamp(v).tzinfo is None
        except (ValueError, TypeError):
            return False


def out_of_range(df: Any, input_schema: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Count, per float column, the raw values canonicalize treats as missing (inf, |x| > float32 max)."""
    df = to_pandas(df)
    counts = {}
    for c in input_schema:
        if c["type"] != "float" or c["name"] not in df.columns:
            continue
        try:
            x = df[c["name"]].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            continue
        with np.errstate(invalid="ignore"):
            n = int((~np.isnan(x) & ~(np.abs(x) <= FLOAT32_MAX)).sum())
        if n:
            counts[c["name"]] = n
    return counts


def add_counts(total: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    """``total`` plus ``counts``, column by column (the counts of a table read in batches)."""
    return {**total, **{k: total.get(k, 0) + n for k, n in counts.items()}}


def out_of_range_warnings(counts: dict[str, int], where: str = "") -> list[str]:
    """One warning per column of :func:`out_of_range`'s counts, the same words on every command."""
    return [f"{name!r}{where}: {n} values are inf or beyond float32 range; treated as missing" for name, n in counts.items()]


# --------------------------------------------------------------------------- records (no pandas)
#
# The online path: JSON records straight to canonical arrays. Building a DataFrame for one row
# costs milliseconds; these loops cost microseconds. They give the values canonicalize gives for
# the same rows (tests/features/test_schema.py compares them value by value).

_ABSENT = object()


class _Bad(Exception):
    """A value its column's type cannot hold (turned into the named InputError by the caller)."""


def _float_value(v: Any, strict: bool) -> float:
    if v is None:
        return np.nan
    if isinstance(v, str):
        text = v.strip()
        if text == "" or (text.lower() == "nan" and not strict):  # strict (serve): null is the missing value
            return np.nan
        if "_" in text or not text.isascii():  # Python reads "1_000" and "١٢٣"; the table path (pandas) does not
            raise _Bad()
        try:
            v = float(text)
        except ValueError:
            raise _Bad() from None
    elif isinstance(v, (bool, np.bool_)) and strict:  # JSON true where a number belongs: a wrong type
        raise _Bad()
    elif isinstance(v, (bool, int, float, np.number, decimal.Decimal)):
        try:
            v = float(v)
        except OverflowError:  # an integer beyond float64 (Python reads 10**400 exactly)
            v = float("inf")
    else:
        raise _Bad()
    if v != v or abs(v) > FLOAT32_MAX:  # NaN, inf, beyond float32: missing (strict: refused)
        if strict:
            raise _Bad()
        return np.nan
    return v


def _bool_value(v: Any, strict: bool) -> float:
    if v is None or (isinstance(v, str) and v == ""):
        return np.nan
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, (int, float, np.number)):
        if v != v:
            return np.nan
        if v in (0, 1):
            return float(v)
        raise _Bad()
    if isinstance(v, str):
        text = v.strip().lower()
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
    raise _Bad()


def _string_value(v: Any, strict: bool) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (float, np.floating)) and v != v:
        return ""
    if strict and not isinstance(v, (bool, int, float, np.number)):
        raise _Bad()  # a JSON object or array where a category belongs
    return _str_value(v)


def string_category(v: Any) -> str:
    """The category one raw value is to a string column, as :func:`canonical_column` reads it ("" = missing)."""
    return _string_value(v, False)


def _datetime_value(v: Any, strict: bool) -> int:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return INT64_MIN
    if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)):
        if not np.isfinite(v):
            return INT64_MIN
        if not DATETIME_MIN_S <= v <= DATETIME_MAX_S:
            raise _Bad()
        return int(np.floor(v))
    if not isinstance(v, str):
        raise _Bad()
    return _datetime_text(v)


def _zoned_datetime_value(v: Any, strict: bool) -> int:
    """A value of a column fitted on zone-aware times: text without an offset goes to the general path."""
    if type(v) is str and _naive_date_text(v):
        raise _Bad()
    return _datetime_value(v, strict)


@functools.lru_cache(maxsize=4096)
def _datetime_text(v: str) -> int:
    """Epoch seconds of a date string (cached: the same dates come back request after request)."""
    try:
        parsed = _dt.datetime.fromisoformat(v.strip())
    except ValueError:
        return _datetime_pandas(v)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    # Whole seconds, rounded down like the datetime64[s] cast of the frame path.
    seconds = int(np.floor(parsed.timestamp())) if parsed.microsecond else int(parsed.timestamp())
    if not DATETIME_MIN_S <= seconds <= DATETIME_MAX_S:  # the frame path's parser refuses it too
        raise _Bad()
    return seconds


def _datetime_pandas(v: str) -> int:
    """A date in a format ``fromisoformat`` does not read: pandas' parser, as the frame path uses."""
    import pandas as pd

    try:
        parsed = pd.to_datetime(pd.Series([v]), errors="coerce", utc=True, format="mixed")
    except (ValueError, TypeError):
        raise _Bad() from None
    if parsed.isna().iloc[0]:
        raise _Bad()
    seconds = int(parsed.dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)[0])
    if not DATETIME_MIN_S <= seconds <= DATETIME_MAX_S:
        raise _Bad()
    return seconds


def _time_value(v: Any, strict: bool) -> float:
    try:
        return timeofday.seconds(v)
    except ValueError:
        raise _Bad() from None


_VALUE = {"float": (_float_value, np.float64, "numeric"), "bool": (_bool_value, np.float64, "boolean"),
          "string": (_string_value, object, "string"), "datetime": (_datetime_value, np.int64, "datetime"),
          "time": (_time_value, np.float64, "time-of-day")}


def canonical_columns(columns: dict[str, Sequence[Any]], input_schema: Sequence[dict[str, Any]],
                      strict: bool = False) -> dict[str, np.ndarray]:
    """Canonical arrays from plain Python values per column (JSON data), without pandas.

    Parameters
    ----------
    columns : dict
        Column name -> a sequence of raw values (None = missing), all of one length.
    input_schema : list of dict
    strict : bool
        Refuse what the frame path would quietly treat as missing or stringify: numbers beyond
        float32 (and inf), and JSON objects or arrays where a category belongs (``serve``).

    Raises
    ------
    InputError
        A column is missing or holds a value its type cannot hold (named, with the row).
    """
    missing = [c["name"] for c in input_schema if c["name"] not in columns]
    if missing:
        raise InputError(
            f"column {missing[0]!r} is missing from the input" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            "the model reads: " + ", ".join(c["name"] for c in input_schema),
        )
    # One NumPy array per type for all its columns (a row of it per column): for one row the
    # cost is the Python conversions, not one array allocation per column.
    n = len(columns[input_schema[0]["name"]]) if input_schema else 0
    flat: dict[str, list[Any]] = {}
    names: dict[str, list[str]] = {}
    for c in input_schema:
        name, kind = c["name"], c["type"]
        convert = _VALUE[kind][0]
        values = columns[name]
        if len(values) != n:
            raise InputError(f"column {name!r} has {len(values)} values, the others {n}")
        if c.get("tz") and any(_naive_text(v) for v in values if isinstance(v, (str, _dt.datetime))):
            raise naive_times_error(c)  # JSON records and V2 tensors: as refuse_naive_times for tables
        try:
            # The common case first, without a call: a JSON value already of the column's type.
            if kind == "float":
                converted = [v if type(v) is float and -FLOAT32_MAX <= v <= FLOAT32_MAX else convert(v, strict) for v in values]
            elif kind == "string":
                converted = [v if type(v) is str else convert(v, strict) for v in values]
            else:
                converted = [convert(v, strict) for v in values]
            flat.setdefault(kind, []).extend(converted)
        except _Bad:
            raise _named(name, kind, values, convert, strict) from None
        names.setdefault(kind, []).append(name)
    out = {}
    for kind, values in flat.items():
        if kind == "string":
            block = _object_array(values).reshape(len(names[kind]), n)
        else:
            block = np.array(values, dtype=_VALUE[kind][1]).reshape(len(names[kind]), n)
            if kind in ("float", "time"):
                block = block.astype(np.float32).astype(np.float64)
        out.update(zip(names[kind], block))
    return {c["name"]: out[c["name"]] for c in input_schema}


def _named(name: str, kind: str, values: Sequence[Any], convert: Any, strict: bool) -> InputError:
    """The error naming the first value of ``name`` its type cannot hold, and its row."""
    for row, v in enumerate(values):
        try:
            convert(v, strict)
        except _Bad:
            if kind == "datetime" and _is_date_like(v):
                return _beyond_dates(name, values, np.arange(len(values)) == row)
            if kind == "float" and _beyond_float32(v):
                # A number all the same (a sentinel such as 1e308): the table paths read it as missing
                # and count it; a request is refused, but for what it is, not as "not a number".
                return InputError(f"column {name!r}: {_shown(v)} (row {row}) is beyond float32's range (+/-{FLOAT32_MAX:.4g})",
                                  "the model computes in float32; send null for a missing value")
            return InputError(f"column {name!r}: expected {_VALUE[kind][2]} values, found {_shown(v)} (row {row})",
                              "send a value of the column's type, or null for a missing value")
    return InputError(f"column {name!r}: a value of the wrong type")


def _shown(v: Any, width: int = 40) -> str:
    """A value as an error message quotes it: its repr, cut to ``width`` characters (a 400-digit
    integer or a long text would otherwise fill the line), saying how long it was."""
    text = repr(v)
    if len(text) <= width:
        return text
    unit = "digits" if isinstance(v, int) else "characters"
    return f"{text[:width - 3]}... ({len(text.lstrip('-')) if unit == 'digits' else len(text)} {unit})"


def _beyond_float32(v: Any) -> bool:
    """A number (or its text) that is infinite or beyond float32, which strict reading refuses."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return False
    try:
        return not abs(float(v)) <= FLOAT32_MAX and float(v) == float(v)
    except OverflowError:
        return True
    except (TypeError, ValueError):
        return False


def _is_date_like(v: Any) -> bool:
    """A number, or a date ``fromisoformat`` reads: refused for its range, not its type."""
    if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)):
        return True
    try:
        _dt.datetime.fromisoformat(str(v).strip())
    except ValueError:
        return False
    return True


def _object_array(values: list[str]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def canonical_records(records: Sequence[Any], input_schema: Sequence[dict[str, Any]],
                      strict: bool = False) -> dict[str, np.ndarray]:
    """Canonical arrays from a list of records (dicts of raw values), without pandas.

    A key absent from a record is a missing value, as in a frame built from the records; with
    ``strict`` every record must name every column (null for a missing value). Extra keys are
    ignored. See :func:`canonical_columns` for ``strict`` and the errors, and
    :class:`RecordReader` for the same conversion compiled once for a schema (the online path).
    """
    return RecordReader(input_schema, strict)(records)


class RecordReader:
    """:func:`canonical_records` for one input schema, compiled once (``serve``, ``predict`` on records).

    The schema's columns are grouped by type when the reader is built, so reading records is
    one pass per type over the values (a list comprehension whose common case is a type check,
    no call) and one NumPy array per type whose rows are its columns: for one record, about a
    tenth of the general path's cost, which builds a list, an array and a cast per column.
    Whatever the common case does not cover (a key absent, a record that is not an object, a
    value its column's type refuses) goes to the general path (:func:`canonical_columns`), which
    fills or names the problem; both use the same value conversions, so they agree by construction.

    Parameters
    ----------
    input_schema : list of dict
        ``[{"name", "type"}, ...]``.
    strict : bool
        As in :func:`canonical_columns`.
    """

    def __init__(self, input_schema: Sequence[dict[str, Any]], strict: bool = False):
        self.input_schema = list(input_schema)
        self.strict = strict
        groups: dict[str, list[str]] = {}
        for c in self.input_schema:
            # Zone-aware columns apart: their text must carry an offset (the general path names the column).
            kind = "datetime_tz" if c["type"] == "datetime" and c.get("tz") else c["type"]
            groups.setdefault(kind, []).append(c["name"])
        self._groups = [(kind, tuple(names)) for kind, names in groups.items()]
        self._order = tuple(c["name"] for c in self.input_schema)

    def __call__(self, records: Sequence[Any]) -> dict[str, np.ndarray]:
        try:
            return self._common(records)
        except (KeyError, TypeError, _Bad):
            return self._general(records)

    def _common(self, records: Sequence[Any]) -> dict[str, np.ndarray]:
        n, strict, out = len(records), self.strict, {}
        for kind, names in self._groups:
            values = [r[name] for name in names for r in records]  # KeyError, TypeError: the general path
            if kind == "float":
                # JSON numbers are floats or ints (a count, a whole amount): both without a call.
                block = np.array([v if type(v) is float and -FLOAT32_MAX <= v <= FLOAT32_MAX
                                  else float(v) if type(v) is int and -FLOAT32_MAX <= v <= FLOAT32_MAX
                                  else _float_value(v, strict) for v in values], dtype=np.float32).astype(np.float64)
            elif kind == "string":
                block = _object_array([v if type(v) is str else _string_value(v, strict) for v in values])
            elif kind == "bool":
                block = np.array([(1.0 if v else 0.0) if type(v) is bool else _bool_value(v, strict) for v in values],
                                 dtype=np.float64)
            elif kind == "time":
                block = np.array([_time_value(v, strict) for v in values], dtype=np.float32).astype(np.float64)
            elif kind == "datetime_tz":
                block = np.array([_zoned_datetime_value(v, strict) for v in values], dtype=np.int64)
            else:
                block = np.array([_datetime_text(v) if type(v) is str and v and not v[0].isspace() else _datetime_value(v, strict)
                                  for v in values], dtype=np.int64)
            out.update(zip(names, block.reshape(len(names), n)))
        return {name: out[name] for name in self._order}

    def _general(self, records: Sequence[Any]) -> dict[str, np.ndarray]:
        input_schema, strict = self.input_schema, self.strict
        for row, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(f"record {row} is not an object (found {type(record).__name__})",
                                 'send {"column": value, ...} or a list of them')
        columns: dict[str, list[Any]] = {}
        for c in input_schema:
            name = c["name"]
            values = [r.get(name, _ABSENT) for r in records]
            if _ABSENT in values:
                row = next(i for i, v in enumerate(values) if v is _ABSENT)
                if strict or all(v is _ABSENT for v in values):
                    raise InputError(f"column {name!r} is missing from the input" + (f" (record {row})" if strict else ""),
                                     "the model reads: " + ", ".join(c["name"] for c in input_schema))
                values = [None if v is _ABSENT else v for v in values]
            columns[name] = values
        return canonical_columns(columns, input_schema, strict=strict)
