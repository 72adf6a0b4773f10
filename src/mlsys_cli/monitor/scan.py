"""Reading the data drift compares: Arrow record batches in, counts per cell (and per window) out.

Parquet is read by pyarrow's dataset scanner (row groups decoded on several threads, one batch
of ``BATCH_ROWS`` rows in memory at a time); a single CSV/JSON file is streamed by DuckDB. Each
batch is turned into integer cell codes per column (the reference's quantile bin, or its category)
and counted with ``numpy.bincount``, one column per thread (NumPy and Arrow release the GIL).
Nothing is ever converted to pandas, and memory is bounded by the batch, not the table.

Measured against polars and DuckDB for the same counts (``benchmarks/bench_drift.py --kernels``):
see ``benchmarks/results/drift.md``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from mlsys_cli.errors import InputError, UsageError

BATCH_ROWS = 262_144
META_PREFIX = "_mlsys_"
_INT64_MIN = -(2**63)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def logical_type(arrow_type: Any) -> str | None:
    """The profile type of an Arrow column: float | bool | string | datetime, None if unsupported."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return None


def parse_window(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``1d``, ``7d``, ``2w`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"invalid --window {text!r}", "use a positive length with a unit: 30m, 1h, 1d, 7d, 2w")
    return int(m.group(1)) * _UNITS[m.group(2)]


def to_float(arr: Any, kind: str) -> Any:
    """An Arrow array as float64 NumPy with NaN for missing (datetimes as epoch seconds)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if kind == "datetime":
        if pa.types.is_date(arr.type):
            arr = arr.cast(pa.timestamp("s"))
        if pa.types.is_timestamp(arr.type):
            unit = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[arr.type.unit]
            ints = arr.cast(pa.timestamp(arr.type.unit)).cast(pa.int64()).fill_null(_INT64_MIN).to_numpy(zero_copy_only=False)
            return np.where(ints == _INT64_MIN, np.nan, ints / unit)
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    x = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(x), x, np.nan)


def to_strings(arr: Any) -> Any:
    """An Arrow array as strings with ``""`` turned into null (the profile's missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)


@dataclass(frozen=True)
class Cells:
    """The cells a column is counted in: quantile bins (``edges``) or ``categories``.

    Codes: numbers ``0..len(edges)`` (bins) and ``len(edges) + 1`` for missing; strings
    ``0..K-1`` (categories), ``K`` for a value outside the list, ``K + 1`` for missing.
    """

    name: str
    kind: str
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    # Edges added at the reference's min and just above its max (cells that are empty in the
    # reference): a value outside the reference range lands in a cell of its own, which the
    # percentile bins alone cannot show (a constant reference has a single edge).
    range_edges: tuple[bool, bool] = (False, False)

    @property
    def sketch_edges(self) -> tuple[float, ...]:
        """The edges of the reference's sketch, without the range edges."""
        lo, hi = self.range_edges
        return self.edges[int(lo):len(self.edges) - int(hi)]

    def sketch_counts(self, counts: Any) -> Any:
        """Counts over the sketch's bins (range cells merged back), missing count last."""
        import numpy as np

        lo, hi = self.range_edges
        c = np.asarray(counts, dtype=np.float64)
        body = c[:-1]
        if lo:
            body = np.concatenate([[body[0] + body[1]], body[2:]])
        if hi:
            body = np.concatenate([body[:-2], [body[-2] + body[-1]]])
        return np.concatenate([body, c[-1:]])

    @property
    def numeric(self) -> bool:
        return self.kind != "string"

    @property
    def size(self) -> int:
        """Number of codes, missing included."""
        return len(self.edges) + 2 if self.numeric else len(self.categories) + 2

    def codes(self, arr: Any) -> tuple[Any, Any]:
        """Cell codes of an Arrow array, and its float values (NaN = missing) or its unseen strings."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.numeric:
            x = to_float(arr, self.kind)
            codes = np.searchsorted(np.asarray(self.edges, dtype=np.float64), x, side="right")
            codes[np.isnan(x)] = len(self.edges) + 1
            return codes, x
        s = to_strings(arr)
        idx = pc.index_in(s, value_set=pa.array(list(self.categories), pa.string()))
        k = len(self.categories)
        codes = idx.fill_null(k).to_numpy(zero_copy_only=False).astype(np.int64)
        missing = s.is_null().to_numpy(zero_copy_only=False)
        codes[missing] = k + 1
        unseen = s.filter(pa.array((codes == k)))
        return codes, unseen


@dataclass
class Counts:
    """Counts of one column over all rows and per window; tail sums of numbers; unseen strings.

    ``tails`` (and ``window_tails``) hold ``[sum((e0 - x)+), sum((x - e_last)+)]`` over the
    non-missing values, for the Wasserstein distance beyond the outer edges.
    """

    cells: Cells
    total: Any = None
    windows: dict[int, Any] = field(default_factory=dict)
    tails: Any = None
    window_tails: dict[int, Any] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)

    def add(self, arr: Any, window_ids: Any) -> None:
        import numpy as np
        import pyarrow.compute as pc

        codes, extra = self.cells.codes(arr)
        size = self.cells.size
        counts = np.bincount(codes, minlength=size)
        self.total = counts if self.total is None else self.total + counts
        tails = self._tails(extra) if self.cells.numeric else None
        if tails is not None:
            self.tails = tails.sum(axis=1) if self.tails is None else self.tails + tails.sum(axis=1)
        if window_ids is not None:
            for w in np.unique(window_ids):
                mask = window_ids == w
                part = np.bincount(codes[mask], minlength=size)
                self.windows[int(w)] = self.windows[int(w)] + part if int(w) in self.windows else part
                if tails is not None:
                    t = tails[:, mask].sum(axis=1)
                    self.window_tails[int(w)] = self.window_tails[int(w)] + t if int(w) in self.window_tails else t
        if not self.cells.numeric and len(extra) and len(self.unseen) < 10_000:
            vc = pc.value_counts(extra)
            for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                self.unseen[v] = self.unseen.get(v, 0) + int(c)

    def _tails(self, x: Any) -> Any:
        """Per row ``[(e0 - x)+, (x - e_last)+]`` (0 for missing), shape (2, rows)."""
        import numpy as np

        edges = self.cells.sketch_edges
        if not edges:
            return np.zeros((2, len(x)))
        lo = np.where(np.isnan(x), 0.0, np.maximum(edges[0] - x, 0.0))
        hi = np.where(np.isnan(x), 0.0, np.maximum(x - edges[-1], 0.0))
        return np.vstack([lo, hi])

    def tail_means(self, window: int | None = None) -> list[float]:
        """Mean tail distances over the non-missing values (overall or in one window)."""
        total = self.total if window is None else self.windows[window]
        sums = self.tails if window is None else self.window_tails.get(window)
        present = float(total[:-1].sum())
        if sums is None or present == 0:
            return [0.0, 0.0]
        return [float(sums[0] / present), float(sums[1] / present)]


class Source:
    """A table to read in batches: Parquet files (pyarrow dataset) or one CSV/JSON file (DuckDB).

    Parameters
    ----------
    paths : path, glob, directory, or a list of them
    include_shadow : bool
        Keep rows a shadow model served (serve logs); they are filtered out otherwise.
    """

    def __init__(self, paths: Any, include_shadow: bool = False):
        from mlsys_cli.data.io import detect_format, resolve_inputs

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.files = resolve_inputs(list(paths))
        self.name = ", ".join(str(p) for p in paths)
        self.parquet = all(detect_format(f) == "parquet" for f in self.files)
        self._dataset = self._relation = None
        if self.parquet:
            import pyarrow as pa
            import pyarrow.dataset as ds

            for f in self.files:
                if f.stat().st_size == 0:
                    raise InputError(f"{f}: empty file")
            try:
                self._dataset = ds.dataset([str(f) for f in self.files], format="parquet")
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{self.name}: cannot read Parquet: {str(exc).splitlines()[0]}") from None
            self.schema = self._dataset.schema
        else:
            from mlsys_cli.data.io import scan_table

            if len(self.files) != 1:
                raise InputError("give one CSV/JSON file, or Parquet files")
            self._relation = scan_table(self.files)
            self.schema = self._relation.limit(0).to_arrow_table().schema
        self._filter = None
        if not include_shadow and "_mlsys_role" in self.schema.names:
            import pyarrow.compute as pc

            role = pc.field("_mlsys_role")
            self._filter = (role != "shadow") | role.is_null()

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def types(self) -> dict[str, str | None]:
        """Column -> logical type (None: a type drift cannot compare)."""
        return {f.name: logical_type(f.type) for f in self.schema}

    def count_rows(self) -> int:
        if self._dataset is not None:
            return int(self._dataset.count_rows(filter=self._filter))
        return int(self._relation.aggregate("count(*)").fetchone()[0])

    def batches(self, columns: Sequence[str], batch_rows: int = BATCH_ROWS) -> Iterator[Any]:
        """Record batches of ``columns`` (only rows that pass the shadow filter)."""
        import pyarrow as pa

        if self._dataset is not None:
            try:
                yield from (b for b in self._dataset.to_batches(columns=list(columns), filter=self._filter,
                                                                 batch_size=batch_rows, use_threads=True) if b.num_rows)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{self.name}: cannot read: {str(exc).splitlines()[0]}") from None
            return
        rel = self._relation.select(*[f'"{c}"' for c in columns])
        reader = rel.fetch_arrow_reader(batch_rows) if hasattr(rel, "fetch_arrow_reader") else rel.record_batch(batch_rows)
        yield from (b for b in reader if b.num_rows)

    def column(self, name: str) -> Any:
        """One whole column as a ChunkedArray (a reference profile needs all of its values)."""
        import pyarrow as pa

        if self._dataset is not None:
            return self._dataset.to_table(columns=[name], filter=self._filter).column(0)
        return pa.Table.from_batches(list(self.batches([name])), schema=pa.schema([self.schema.field(name)])).column(0)

    def sample(self, columns: Sequence[str], n: int, seed: int) -> Any:
        """A seeded random sample of ``n`` rows (all rows when there are fewer), as an Arrow table."""
        import numpy as np
        import pyarrow as pa

        rows = self.count_rows()
        if self._dataset is not None and self._filter is None:
            pick = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, rows), replace=False))
            return self._dataset.take(pa.array(pick), columns=list(columns))
        table = pa.Table.from_batches(list(self.batches(columns)), schema=pa.schema([self.schema.field(c) for c in columns]))
        pick = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=min(n, table.num_rows), replace=False))
        return table.take(pa.array(pick))


def window_ids(arr: Any, seconds: int, name: str) -> Any:
    """The window of each row: ``floor(epoch seconds / window)`` (windows aligned to the epoch, UTC)."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        import pyarrow.compute as pc

        try:
            arr = pc.cast(arr, pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"time column {name!r}: cannot parse its values as timestamps",
                             "use ISO 8601 (2025-01-31T12:00:00) or a timestamp/date column") from None
    if logical_type(arr.type) != "datetime":
        raise InputError(f"time column {name!r} is {arr.type}, not a timestamp or date")
    t = to_float(arr, "datetime")
    if np.isnan(t).any():
        raise InputError(f"time column {name!r} has missing values", "drop those rows or pick another --time-col")
    return np.floor(t / seconds).astype(np.int64)
