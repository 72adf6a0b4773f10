"""A table read one column at a time: the featurizer's fit when the rows do not fit in memory.

``Featurizer.fit`` works column by column: each column's type and role, each block's
statistics, each leakage score and each reference profile depend on that column (a cross on
two) and the target only. A :class:`ColumnTable` gives the fit exactly the values a pandas
frame of the whole table would, loading a column when the fit asks for it and keeping only
the few it used last, so this process holds the target and a few columns, never every row of
every column. ``features.dask_featurize.read_train`` builds one whose columns are read on a
Dask cluster (each file's part on a worker); the fitted featurizer is the one the local fit
computes, because the fit runs the same code on the same values.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

KEEP = 2  # canonical columns kept between uses: a block and the leakage check run on two threads


@dataclass(frozen=True)
class ColumnTypes:
    """What the fit needs to know of every column before reading one: its logical type, nesting."""

    types: dict[str, str]
    nested: frozenset[str]


class ColumnTable:
    """A frame-like view of a table whose columns are loaded on demand.

    Supports what ``Featurizer.fit`` and ``featurize`` ask of a pandas frame: ``columns``,
    ``len()``, ``table[name]`` (the column as the pandas Series ``read_frame`` gives), ``table[mask]``
    (the rows where a boolean array is true), ``drop(columns=...)``, and :meth:`canonical`.

    Parameters
    ----------
    columns : list of str
        The table's columns, in order.
    rows : int
        The table's row count.
    load : callable
        ``load(name) -> pandas.Series``: one whole column, every row.
    types : ColumnTypes
        Each column's logical type (``schema.logical_type`` of the whole column) and nesting.
    """

    def __init__(self, columns: Sequence[str], rows: int, load: Callable[[str], Any], types: ColumnTypes,
                 mask: np.ndarray | None = None):
        self.columns = list(columns)
        self.rows = rows
        self.load = load
        self.types = types
        self.mask = mask

    def __len__(self) -> int:
        return self.rows if self.mask is None else int(self.mask.sum())

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key not in self.columns:
                raise KeyError(key)
            series = self.load(key)
            return series if self.mask is None else series[self.mask]
        mask = np.asarray(key, dtype=bool)
        if self.mask is not None:  # a mask of this view's rows -> a mask of the table's rows
            full = np.zeros(self.rows, dtype=bool)
            full[np.flatnonzero(self.mask)[mask]] = True
            mask = full
        return ColumnTable(self.columns, self.rows, self.load, self.types, mask)

    def drop(self, columns: Sequence[str]) -> "ColumnTable":
        gone = set(columns)
        return ColumnTable([c for c in self.columns if c not in gone], self.rows, self.load, self.types, self.mask)

    def logical_type(self, name: str) -> str:
        return self.types.types[name]

    def nested_columns(self) -> list[str]:
        return [c for c in self.columns if c in self.types.nested]

    def canonical(self, schema: Sequence[dict[str, Any]], convert: Callable[[str, Any, str], np.ndarray]) -> "CanonicalColumns":
        """``schema.canonical_arrays`` of this view, each column converted by ``convert`` (its
        ``canonical_column``, passed in: this module sits below ``schema``) when first used."""
        return CanonicalColumns(self, schema, convert)


class CanonicalColumns(Mapping):
    """name -> canonical array of a :class:`ColumnTable`, loaded on use, the last :data:`KEEP` kept.

    Thread-safe: the featurizer's leakage check reads columns on a second thread.
    """

    def __init__(self, table: ColumnTable, schema: Sequence[dict[str, Any]], convert: Callable[[str, Any, str], np.ndarray]):
        self.table = table
        self.convert = convert
        self.kinds = {c["name"]: c["type"] for c in schema}
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> np.ndarray:
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
            values = self.convert(name, self.table[name], self.kinds[name])
            self._cache[name] = values
            while len(self._cache) > KEEP:
                self._cache.popitem(last=False)
            return values

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds)

    def __len__(self) -> int:
        return len(self.kinds)
