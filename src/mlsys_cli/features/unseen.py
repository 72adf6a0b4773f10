"""Categories a model never saw in training, counted per categorical input column.

An unseen category is normal (a new city) and is predicted through the unseen/infrequent
encoding. A column whose *every* value is unseen is another matter: integer codes or booleans
given for a column fitted on text (``'red'``, ``'green'``), or a category set renamed upstream.
The model then predicts as if the column were missing, with exit 0. Numbers can be legitimate
categories (zip codes), so this is told, never refused: ``predict`` and ``evaluate`` warn and
report the counts (``unseen_categories``), ``serve`` counts in ``/metrics`` and adds a warning
to the answer.

The counts are taken on each column's distinct raw values (a table's factorized column, a
request's values), turned into their canonical category string exactly as the model does
(:func:`mlsys_cli.features.schema.canonical_column`), so ``3`` and ``3.0`` are one category here too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from mlsys_cli.features.schema import string_category

# The manifest stores at most this many categories of a column (features.pipeline): with that
# many, the list may be cut short and "unseen" cannot be told.
CATEGORY_LIMIT = 1000
# Fewer rows all unseen can be a rare new category, not a column given as another kind.
MIN_ROWS = 5


def _kind(v: Any) -> str:
    import datetime as dt

    import numpy as np

    if isinstance(v, (bool, np.bool_)):
        return "booleans"
    if isinstance(v, (int, np.integer)):
        return "integers"
    if isinstance(v, (float, np.floating)):
        return "numbers"
    if isinstance(v, (dt.date, dt.datetime, np.datetime64)):
        return "datetimes"
    return "text"


def _fitted_kind(categories: Sequence[str]) -> str | None:
    """``text`` when no category reads as a number, ``numbers`` when every one does, else None."""
    numeric = 0
    for c in categories:
        try:
            float(c)
            numeric += 1
        except ValueError:
            pass
    return "text" if numeric == 0 else "numbers" if numeric == len(categories) else None


class UnseenCategories:
    """Counts, per categorical column of ``input_schema``, the rows holding a category it never saw.

    Only columns whose fitted categories are all in the schema (fewer than ``CATEGORY_LIMIT``)
    are counted. A count is ``{"rows": rows with a value, "unseen": rows with an unseen one,
    "given": the kind of the unseen values (integers, numbers, booleans, datetimes, text) or
    None when mixed, "fitted": text | numbers | None}``.

    Parameters
    ----------
    input_schema : list of dict
        The model's input schema (``categories`` of each string column).
    """

    def __init__(self, input_schema: Sequence[Mapping[str, Any]]):
        self.known = {c["name"]: frozenset(c["categories"]) for c in input_schema
                      if c["type"] == "string" and c.get("categories") and len(c["categories"]) < CATEGORY_LIMIT}
        self.fitted = {name: _fitted_kind(list(cats)) for name, cats in self.known.items()}

    def _count(self, name: str, distinct: Sequence[Any], counts: Sequence[int]) -> dict[str, Any] | None:
        known, rows, unseen, kinds = self.known[name], 0, 0, set()
        for value, n in zip(distinct, counts):
            category = value if type(value) is str else string_category(value)
            if category == "":  # missing
                continue
            rows += int(n)
            if category not in known:
                unseen += int(n)
                kinds.add(_kind(value))
        if not unseen:
            return None
        return {"rows": rows, "unseen": unseen, "given": kinds.pop() if len(kinds) == 1 else None,
                "fitted": self.fitted[name]}

    def frame(self, df: Any) -> dict[str, dict[str, Any]]:
        """The counts of a pandas DataFrame's columns (a column it lacks is not counted)."""
        import numpy as np
        import pandas as pd

        out = {}
        for name in self.known:
            if name not in df.columns:
                continue
            try:
                codes, uniques = pd.factorize(df[name], use_na_sentinel=True)
            except TypeError:  # unhashable values: refused by name where the model reads them
                continue
            counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
            count = self._count(name, list(uniques), counts.tolist())
            if count is not None:
                out[name] = count
        return out

    def columns(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, dict[str, Any]]:
        """The counts of plain values per column (``serve``: JSON values, already validated)."""
        out = {}
        for name, known in self.known.items():
            values = columns.get(name)
            # The common case, a known category in every row, without a Counter.
            if not values or all(type(v) is str and v in known for v in values):
                continue
            tally = Counter(values)
            count = self._count(name, list(tally), list(tally.values()))
            if count is not None:
                out[name] = count
        return out

    def records(self, records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """The counts of a list of JSON records (``serve``'s ``/predict``; validated)."""
        return self.columns({name: [r.get(name) for r in records] for name in self.known})


def unseen_categories(df: Any, input_schema: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """:meth:`UnseenCategories.frame` for one table (a batch of ``predict``, ``evaluate``'s rows)."""
    return UnseenCategories(input_schema).frame(df)


def add_unseen(total: Mapping[str, Mapping[str, Any]], counts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``total`` plus ``counts`` column by column (a table read in batches)."""
    out = {k: dict(v) for k, v in total.items()}
    for name, c in counts.items():
        if name not in out:
            out[name] = dict(c)
            continue
        t = out[name]
        t["rows"] += c["rows"]
        t["unseen"] += c["unseen"]
        t["given"] = t["given"] if t["given"] == c["given"] else None
    return out


def unseen_warnings(counts: Mapping[str, Mapping[str, Any]], min_rows: int = MIN_ROWS) -> list[str]:
    """One warning per column whose every value (at least ``min_rows``) is a category unseen in training."""
    out = []
    for name, c in counts.items():
        if c["unseen"] < c["rows"] or c["rows"] < min_rows:
            continue
        kinds = c.get("fitted"), c.get("given")
        differ = None not in kinds and kinds[0] != kinds[1] and not (kinds[0] == "numbers" and kinds[1] in ("integers", "numbers"))
        out.append(f"column {name!r}: every value ({c['rows']} rows) is a category unseen in training"
                   + (f" (fitted on {kinds[0]}, given {kinds[1]})" if differ else "")
                   + "; the model reads each as an unknown category")
    return out


def input_counts(df: Any, input_schema: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What every command that reads a table for a fitted model reports about it: ``out_of_range``
    (per float column, values read as missing: inf or beyond float32) and ``unseen_categories``."""
    from mlsys_cli.features.schema import out_of_range

    return {"out_of_range": out_of_range(df, input_schema), "unseen_categories": unseen_categories(df, input_schema)}


def input_warnings(report: Mapping[str, Any]) -> list[str]:
    """The warnings of :func:`input_counts`' keys in a report, the same words on every command."""
    from mlsys_cli.features.schema import out_of_range_warnings

    return out_of_range_warnings(report.get("out_of_range") or {}) + unseen_warnings(report.get("unseen_categories") or {})
