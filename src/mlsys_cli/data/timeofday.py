"""Times of day as seconds since midnight: the one reading every path uses.

A time of day (Arrow ``time32``/``time64``, SQL ``TIME``, Python ``datetime.time``,
``"HH:MM[:SS[.ffffff]]"`` text, or a number of seconds in ``[0, 86400]``) is a number: 08:30 sits
between 08:00 and 09:00 for every model, where a category per minute would not generalise. The
features (``features.schema``), the reference profiles (``data.profile``) and the drift counts
read it through these functions, so they agree by construction.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import re
from typing import Any

import numpy as np

DAY_S = 86_400
# Colons required: a bare "12" would be 12 seconds as a number but 12:00 to ISO 8601; refused, not guessed.
# An offset ("08:30+02:00") is accepted and ignored: the wall clock is the feature.
_TEXT = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?")


def seconds(v: Any) -> float:
    """Seconds since midnight of one value; NaN for a missing one.

    Raises
    ------
    ValueError
        Not a time of day: other text, a number outside ``[0, 86400]`` (epoch seconds or a
        duration longer than a day), a date or datetime (refused, not cut to its clock).
    """
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return np.nan
    if isinstance(v, str):
        return _text(v.strip())
    if isinstance(v, _dt.time):
        return v.hour * 3600 + v.minute * 60 + v.second + v.microsecond / 1e6
    if isinstance(v, (int, float, np.number, decimal.Decimal)) and not isinstance(v, (bool, np.bool_)):
        if v != v:
            return np.nan
        if not 0 <= v <= DAY_S:
            raise ValueError(v)
        return float(v)
    if isinstance(v, _dt.timedelta) and _dt.timedelta(0) <= v <= _dt.timedelta(days=1):  # TIME read as a duration
        return v.total_seconds()
    raise ValueError(v)


@functools.lru_cache(maxsize=4096)
def _text(v: str) -> float:
    m = _TEXT.fullmatch(v)
    if not m or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3] or 0) > 60:
        raise ValueError(v)
    return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3] or 0) + float(f"0.{m[4] or 0}")


def column_seconds(series: Any) -> tuple[np.ndarray, np.ndarray]:
    """A pandas column of times of day as seconds (NaN for missing), and the mask of values that are not one.

    Each distinct value is read once (a column of a million rows holds at most 86,400 whole seconds).
    """
    import pandas as pd

    codes, uniques = pd.factorize(series.astype(object), use_na_sentinel=True)
    values = np.empty(len(uniques) + 1, dtype=np.float64)
    bad = np.zeros(len(uniques) + 1, dtype=bool)
    values[-1] = np.nan  # code -1: missing
    for i, v in enumerate(uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)):
        try:
            values[i] = seconds(v)
        except ValueError:
            values[i], bad[i] = np.nan, True
    return values[codes], bad[codes]
