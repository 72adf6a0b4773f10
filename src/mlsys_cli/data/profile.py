"""Reference statistics of a table: what drift detection compares new data against.

A model bundle stores the profile of every input feature and of its predictions, so drift can
be measured later without the training data. Per column:

- numbers, booleans and datetimes (as epoch seconds): count, nulls, mean, std, min, max,
  quantiles, and a histogram with **fixed edges**: ``edges`` are the reference's interior cut
  points (deciles by default) and ``counts`` has ``len(edges) + 1`` bins,
  ``(-inf, e0), [e0, e1), ..., [e_last, inf)``, so any new value falls in exactly one bin;
- strings: count, nulls, number of distinct values, the counts of the ``top`` most frequent
  categories and the count of all ``other`` ones.

For drift tests (``mlsys drift``) each profile also has a finer ``sketch``: numbers keep the
reference's percentiles as edges (``SKETCH_BINS`` bins, the same bin convention as the histogram),
and the mean distance beyond the outer edges (``tails``), enough for a Kolmogorov–Smirnov test
within a percentile and a Wasserstein distance; strings keep
the counts of up to ``SKETCH_CATEGORIES`` categories (``other`` counts the rest), enough for a
chi-square test and for telling an unseen category from a rare one.

Inputs may be raw (as read) or already canonical (``features.schema.canonicalize``): missing
is ``None``/NaN, ``""`` for strings and ``INT64_MIN`` for integer datetimes. Infinite numbers
count as missing. Every value is plain JSON (no NaN).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
BINS = 10
TOP = 20
SKETCH_BINS = 100
SKETCH_CATEGORIES = 1000
_INT64_MIN = -(2**63)


def _num(x: float) -> float | None:
    import math

    x = float(x)
    return x if math.isfinite(x) else None


def _numeric_values(series: Any, kind: str) -> Any:
    """The column as float64 with NaN for missing (datetimes as epoch seconds)."""
    import numpy as np
    import pandas as pd
    from pandas.api import types as pdt

    if kind == "datetime":
        if pdt.is_integer_dtype(series.dtype):
            x = series.to_numpy(dtype=np.float64, na_value=np.nan)
            return np.where(series.to_numpy(dtype=np.int64, na_value=_INT64_MIN) == _INT64_MIN, np.nan, x)
        ts = pd.to_datetime(series, errors="coerce", utc=True)
        # From the column's own unit: through datetime64[ns] a year-9999 timestamp wraps round silently.
        seconds = ts.dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)
        return np.where(ts.isna().to_numpy(), np.nan, seconds.astype(np.float64))
    if kind == "time":  # seconds since midnight, as the features read them
        from mlsys_cli.data.timeofday import column_seconds

        return column_seconds(series)[0]
    if series.dtype.kind == "m":  # durations in seconds, as the features read them
        x = series.dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    elif pdt.is_bool_dtype(series.dtype) or pdt.is_numeric_dtype(series.dtype):
        x = series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    elif kind == "bool":
        lowered = series.astype("string").str.strip().str.lower()
        x = lowered.map({"true": 1.0, "t": 1.0, "yes": 1.0, "1": 1.0, "false": 0.0, "f": 0.0, "no": 0.0, "0": 0.0})
        x = x.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        x = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(x), x, np.nan)


def numeric_profile(values: Any, bins: int = BINS) -> dict[str, Any]:
    """Profile of numbers (NaN = missing)."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    present = x[np.isfinite(x)]
    n = int(len(x))
    out: dict[str, Any] = {"kind": "numeric", "count": n, "nulls": n - int(len(present)),
                           "null_rate": (n - len(present)) / n if n else None}
    if not len(present):
        return {**out, "mean": None, "std": None, "min": None, "max": None,
                "quantiles": {"levels": list(QUANTILES), "values": [None] * len(QUANTILES)},
                "histogram": {"edges": [], "counts": [0]}, "sketch": {"edges": [], "counts": [0]}}
    # One sort serves everything: quantiles by interpolation between order statistics (NumPy's
    # default "linear" method), bin counts by binary search of the edges, tails by partial sums.
    ordered = np.sort(present)
    levels = np.linspace(0, 1, bins + 1)[1:-1]
    fine = np.linspace(0, 1, SKETCH_BINS + 1)[1:-1]
    edges = np.unique(_sorted_quantiles(ordered, levels))
    sketch_edges = np.unique(_sorted_quantiles(ordered, fine))
    with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308 overflow: no mean/std (None), no warning
        mean, std = present.mean(), present.std()
    return {
        **out,
        "mean": _num(mean), "std": _num(std),
        "min": _num(ordered[0]), "max": _num(ordered[-1]),
        "quantiles": {"levels": list(QUANTILES), "values": [_num(v) for v in _sorted_quantiles(ordered, QUANTILES)]},
        "histogram": {"edges": [_num(e) for e in edges], "counts": _sorted_counts(ordered, edges)},
        "sketch": {"edges": [_num(e) for e in sketch_edges], "counts": _sorted_counts(ordered, sketch_edges),
                   "tails": tail_means(ordered, sketch_edges)},
    }


def _sorted_quantiles(ordered: Any, levels: Any) -> Any:
    """Quantiles of sorted values, as ``numpy.quantile(..., method="linear")``."""
    import numpy as np

    pos = np.asarray(levels, dtype=np.float64) * (len(ordered) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(ordered) - 1)
    a, b, t = ordered[lo], ordered[hi], pos - lo
    with np.errstate(over="ignore", invalid="ignore"):
        q = a + (b - a) * t
    # Between -1e308 and 1e308 the difference overflows (a NaN edge, an infinite quantile); the
    # weighted sum cannot, and equals the formula above up to rounding.
    return np.where(np.isfinite(q), q, a * (1 - t) + b * t)


def _sorted_counts(ordered: Any, edges: Any) -> list[int]:
    """Counts of sorted values in ``(-inf, e0), [e0, e1), ..., [e_last, inf)``."""
    import numpy as np

    below = np.searchsorted(ordered, edges, side="left")
    return [int(c) for c in np.diff(np.concatenate([[0], below, [len(ordered)]]))]


def tail_means(ordered: Any, edges: Any) -> list[float]:
    """``[mean((e0 - x)+), mean((x - e_last)+)]`` of sorted values: the area between the distribution
    function and the outer edges, which a Wasserstein distance needs beyond the bins."""
    import numpy as np

    if not len(edges) or not len(ordered):
        return [0.0, 0.0]
    k = int(np.searchsorted(ordered, edges[0], side="left"))
    m = int(np.searchsorted(ordered, edges[-1], side="right"))
    n = len(ordered)
    return [float((k * edges[0] - ordered[:k].sum()) / n), float((ordered[m:].sum() - (n - m) * edges[-1]) / n)]


def categorical_profile(values: Any, top: int = TOP) -> dict[str, Any]:
    """Profile of categories (``None``, NaN and ``""`` = missing)."""
    import numpy as np
    import pandas as pd

    if not isinstance(values, pd.Series):
        values = np.asarray(values, dtype=object)
    n = int(len(values))
    # Hash each row once, then count and name the distinct values (a few, however many rows).
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    per_code = np.bincount(codes[codes >= 0], minlength=len(uniques))
    counts: dict[str, int] = {}
    nulls = n - int(per_code.sum())
    for value, count in zip(uniques.tolist(), per_code.tolist()):
        key = value if isinstance(value, str) else str(value.item() if hasattr(value, "item") else value)
        if key == "":
            nulls += count
        else:
            counts[key] = counts.get(key, 0) + count
    return categories_profile(counts, n, nulls, top)


def categories_profile(counts: Mapping[str, int], n: int, nulls: int, top: int = TOP) -> dict[str, Any]:
    """Profile of categories from their counts (``n`` rows in all, ``nulls`` of them missing)."""
    # Ties broken by name so the profile does not depend on row order.
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = ranked[:top]
    sketch = ranked[:SKETCH_CATEGORIES]
    return {
        "kind": "categorical", "count": n, "nulls": nulls,
        "null_rate": nulls / n if n else None, "n_unique": int(len(counts)),
        "top": {str(k): int(v) for k, v in kept}, "other": int(sum(v for _, v in ranked[top:])),
        "sketch": {"counts": {str(k): int(v) for k, v in sketch}, "other": int(sum(v for _, v in ranked[SKETCH_CATEGORIES:]))},
    }


def profile_frame(df: Any, input_schema: Sequence[Mapping[str, Any]], bins: int = BINS, top: int = TOP) -> dict[str, Any]:
    """Reference statistics of every column in ``input_schema``.

    Parameters
    ----------
    df : pandas.DataFrame
        Raw or canonical rows.
    input_schema : list of dict
        ``[{"name", "type": float|bool|string|datetime}, ...]``.
    bins, top : int
        Histogram bins for numbers; categories kept by name for strings.

    Returns
    -------
    dict
        Column name -> profile (see the module docstring), plus ``"type"`` (the logical type).
    """
    profiles: dict[str, Any] = {}
    for column in input_schema:
        name, kind = column["name"], column["type"]
        series = df[name]
        if kind == "string":
            prof = categorical_profile(series, top)
        else:
            prof = numeric_profile(_numeric_values(series, kind), bins)
        profiles[name] = {"type": kind, **prof}
    return profiles


def profile_values(values: Any, bins: int = BINS, top: int = TOP) -> dict[str, Any]:
    """Profile of one array (e.g. predictions): numeric when it holds numbers, else categorical."""
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return numeric_profile(np.where(np.isfinite(arr.astype(np.float64)), arr.astype(np.float64), np.nan), bins)
    return categorical_profile(arr, top)
