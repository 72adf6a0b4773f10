"""Reading the data drift compares: Arrow record batches in, counts per cell (and per window) out.

Parquet is read by pyarrow's dataset scanner (row groups decoded on several threads, one batch
of ``BATCH_ROWS`` rows in memory at a time); a single CSV/JSON file is streamed by DuckDB. Each
batch is turned into integer cell codes per column (the reference's quantile bin, or its category)
and counted with ``numpy.bincount``, one column per thread (NumPy and Arrow release the GIL).
Nothing is ever converted to pandas, and memory is bounded by the batch (and the Parquet reader's
buffers for one row group), not the table.

Measured (``benchmarks/bench_drift.py --sections kernels``, ``benchmarks/results/drift.md``): for
40 columns of 1M values on the shared 2-core machine, polars ``cut`` took 3.3 s, DuckDB's
``histogram(col, edges)`` 3.6 s and NumPy ``searchsorted`` 4.6 s; one column alone cost the same
in all three (~0.09 s), a binary search with a mispredicted branch per level. :class:`Binner`
replaces the binary search by a grid lookup and two vectorised steps (exactly the same codes, 0.5
ms instead of 2.9 ms per 65,536 values), so the NumPy kernel stays: the per-row codes are also what
the time windows and the row samples need in the same pass. String columns are read as Parquet
dictionaries when the caller asks (``batches(..., dictionary=...)``): their codes come from the few
distinct values of each batch, never from a string per row.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterator, Sequence

from mlsys_cli.errors import InputError, UsageError

BATCH_ROWS = 65_536
_SERVED = ("_mlsys_role", "_mlsys_model", "_mlsys_version")  # who answered a serve log's row
META_PREFIX = "_mlsys_"
_INT64_MIN = -(2**63)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def logical_type(arrow_type: Any) -> str | None:
    """The profile type of an Arrow column: float | bool | string | datetime | time, None if unsupported."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_duration(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    if pa.types.is_time(t):
        return "time"
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
    if pa.types.is_duration(arr.type) or pa.types.is_time(arr.type):  # seconds (since midnight), as the features read them
        unit = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[arr.type.unit]
        ints = arr.cast(pa.int32() if pa.types.is_time32(arr.type) else pa.int64())  # time32 casts only to int32
        return ints.to_numpy(zero_copy_only=False).astype(np.float64) / unit if arr.null_count == 0 else \
            np.where(arr.is_null().to_numpy(zero_copy_only=False), np.nan, ints.fill_null(0).to_numpy(zero_copy_only=False) / unit)
    x = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    finite = np.isfinite(x)
    # Most batches have no missing or infinite value: no copy then (the array may be read-only).
    return x if finite.all() else np.where(finite, x, np.nan)


def to_strings(arr: Any) -> Any:
    """An Arrow array as strings with ``""`` turned into null (the profile's missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)


class Binner:
    """``numpy.searchsorted(edges, x, side="right")``, exactly, about five times faster on percentile edges.

    A binary search costs a mispredicted branch per level (2.9 ms for 65,536 values in 99 edges,
    the largest cost of counting 1M x 40 numbers). Here a uniform grid of ``GRID`` cells over
    ``[edges[0], edges[-1]]`` gives each value a starting code (the edges at or below the cell
    before its own, so floating-point rounding of the cell never overshoots), and a few
    vectorised steps ``code += x >= edges[code]`` finish it (0.5 ms). Edges too crowded for the
    grid (more than ``MAX_STEPS`` edges within two cells) fall back to ``searchsorted``.
    """

    GRID = 4096
    MAX_STEPS = 8

    def __init__(self, edges: Sequence[float]):
        import numpy as np

        e = np.asarray(edges, dtype=np.float64)
        self.edges, self.steps = e, 0
        if len(e) < 8 or not np.isfinite(e).all() or e[-1] <= e[0]:
            return
        scale = self.GRID / (e[-1] - e[0])
        if not math.isfinite(scale):
            return
        bounds = e[0] + np.arange(self.GRID + 1) / scale
        below = np.searchsorted(e, bounds, side="right")
        start = np.r_[0, below[:-2]]
        steps = int((np.searchsorted(e, bounds[1:], side="right") - start).max()) + 1
        if steps > self.MAX_STEPS:
            return
        self.lo, self.scale, self.steps = float(e[0]), scale, steps
        self.start = np.r_[start, start[-1]].astype(np.intp)
        # NaN after the last edge: x >= NaN is False, so a code never passes len(edges).
        self.padded = np.r_[e, np.nan]

    def codes(self, x: Any) -> Any:
        """The code of each value: how many edges are at or below it (NaN: any code; callers overwrite it)."""
        import numpy as np

        if not self.steps:
            return np.searchsorted(self.edges, x, side="right")
        t = (x - self.lo) * self.scale
        np.clip(t, 0, self.GRID, out=t)
        t[np.isnan(t)] = 0
        codes = self.start[t.astype(np.intp)]
        for _ in range(self.steps):
            codes += x >= self.padded[codes]
        return codes


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

        if self.numeric:
            x = to_float(arr, self.kind)
            codes = self._binner.codes(x)
            codes[np.isnan(x)] = len(self.edges) + 1
            return codes, x
        k = len(self.categories)
        if pa.types.is_dictionary(arr.type):
            # Codes of the (few) dictionary values, then one lookup per row: no string is decoded per row.
            words = to_strings(arr.dictionary)
            table = np.append(self._category_codes(words), k + 1)
            idx = arr.indices.fill_null(len(words)).to_numpy(zero_copy_only=False)
            codes = table[idx]
            new = codes == k
            unseen = words.take(int_array(idx[new])) if new.any() else pa.array([], pa.string())
            return codes, unseen
        s = to_strings(arr)
        codes = self._category_codes(s)
        unseen = s.filter(pa.array((codes == k)))
        return codes, unseen

    @cached_property
    def _binner(self) -> "Binner":
        return Binner(self.edges)

    @cached_property
    def _category_array(self) -> Any:
        import pyarrow as pa

        return pa.array(list(self.categories), pa.string())

    def _category_codes(self, s: Any) -> Any:
        """Codes of a string array: its category, ``K`` for another value, ``K + 1`` for missing."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        k = len(self.categories)
        idx = pc.index_in(s, value_set=self._category_array)
        codes = idx.fill_null(k).to_numpy(zero_copy_only=False).astype(np.int64)
        codes[s.is_null().to_numpy(zero_copy_only=False)] = k + 1
        return codes


@dataclass
class Counts:
    """Counts of one column per cell, over all rows and per window; unseen strings.

    Numbers also keep the sum of the values in each cell (``sums``, ``window_sums``): the tails
    beyond the sketch's outer edges, which the Wasserstein distance needs, follow from them.
    """

    cells: Cells
    total: Any = None
    sums: Any = None
    windows: dict[int, Any] = field(default_factory=dict)
    window_sums: dict[int, Any] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)

    def add(self, arr: Any, window_ids: Any) -> Any:
        """Count one batch's column; returns its float values (numbers) or its unseen strings."""
        import numpy as np
        import pyarrow.compute as pc

        codes, extra = self.cells.codes(arr)
        size = self.cells.size
        weights = np.nan_to_num(extra, nan=0.0) if self.cells.numeric else None
        self.total = _plus(self.total, np.bincount(codes, minlength=size))
        if weights is not None:
            self.sums = _plus(self.sums, np.bincount(codes, weights=weights, minlength=size))
        if window_ids is not None:
            # One bincount over (window, cell) pairs rather than one pass per window.
            ids, inverse = np.unique(window_ids, return_inverse=True)
            pair = inverse.astype(np.int64) * size + codes
            per = np.bincount(pair, minlength=len(ids) * size).reshape(len(ids), size)
            sums = (np.bincount(pair, weights=weights, minlength=len(ids) * size).reshape(len(ids), size)
                    if weights is not None else None)
            for i, w in enumerate(ids.tolist()):
                self.windows[w] = _plus(self.windows.get(w), per[i])
                if sums is not None:
                    self.window_sums[w] = _plus(self.window_sums.get(w), sums[i])
        if not self.cells.numeric and len(extra) and len(self.unseen) < 10_000:
            vc = pc.value_counts(extra)
            for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                self.unseen[v] = self.unseen.get(v, 0) + int(c)
        return extra

    def tail_means(self, window: int | None = None) -> list[float]:
        """``[mean((e0 - x)+), mean((x - e_last)+)]`` over the non-missing values, e = the sketch's edges."""
        counts = self.total if window is None else self.windows[window]
        sums = self.sums if window is None else self.window_sums.get(window)
        present = float(counts[:-1].sum())
        inner = self.cells.sketch_edges
        if sums is None or present == 0 or not inner:
            return [0.0, 0.0]
        # Code c holds [edges[c-1], edges[c]); the cells up to the first sketch edge lie below it,
        # the cells from the last sketch edge on lie above it.
        first = int(self.cells.range_edges[0])
        last = first + len(inner)
        lo = sum(counts[c] * inner[0] - sums[c] for c in range(first + 1))
        hi = sum(sums[c] - counts[c] * inner[-1] for c in range(last, len(self.cells.edges) + 1))
        return [float(lo / present), float(hi / present)]


def _plus(acc: Any, part: Any) -> Any:
    return part if acc is None else acc + part


class Source:
    """A table to read in batches: Parquet files (pyarrow) or one CSV/JSON file (DuckDB).

    Parquet files are read one after the other with ``ParquetFile.iter_batches``, which decodes
    column pages batch by batch: memory holds one batch of the requested columns even when a
    file is a single row group of millions of rows.

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
        self._relation = None
        if self.parquet:
            self.schema = self._parquet_schema()
        else:
            from mlsys_cli.data.io import scan_table

            if len(self.files) != 1:
                raise InputError("give one CSV/JSON file, or Parquet files")
            self._relation = scan_table(self.files)
            self.schema = self._relation.limit(0).to_arrow_table().schema
        self._shadow = not include_shadow and "_mlsys_role" in self.schema.names

    def _parquet_schema(self) -> Any:
        from mlsys_cli.data.io import parquet_schema

        return parquet_schema(self.files, missing_ok=True)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def types(self) -> dict[str, str | None]:
        """Column -> logical type (None: a type drift cannot compare)."""
        return {f.name: logical_type(f.type) for f in self.schema}

    def count_rows(self) -> int:
        """Rows that pass the shadow filter (from the Parquet footers when there is none)."""
        if self._relation is not None:
            from mlsys_cli.data.io import relation_rows

            return relation_rows(self._relation)
        if not self._shadow:
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        return sum(b.num_rows for b in self.batches(["_mlsys_role"]))

    def batches(self, columns: Sequence[str], batch_rows: int = BATCH_ROWS, dictionary: Sequence[str] = ()) -> Iterator[Any]:
        """Record batches of ``columns`` (only rows that pass the shadow filter).

        String columns named in ``dictionary`` come as Arrow dictionary arrays when read from
        Parquet (their codes and the few distinct values, not a string per row; ``Cells.codes``
        and the samplers take both kinds).
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        columns = list(dict.fromkeys(columns))
        read = columns + (["_mlsys_role"] if self._shadow and "_mlsys_role" not in columns else [])
        raw = self._raw_batches(read, batch_rows, [c for c in dictionary if c in columns])
        for batch in read_ahead(raw):
            if self._shadow:
                role = batch.column("_mlsys_role")
                batch = batch.filter(pc.or_kleene(pc.not_equal(role, "shadow"), pc.is_null(role))).select(columns)
            if batch.num_rows:
                yield batch

    def served_by(self) -> list[dict[str, Any]]:
        """Rows per (role, model, version) of a serve log, shadow rows left out as by :meth:`batches`.

        Empty for a table that is no serve log. Tells which model versions and roles (primary,
        canary, shadow) answered the rows a drift report compares.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        if "_mlsys_role" not in self.schema.names:
            return []
        if self._relation is not None:
            names = [c for c in _SERVED if c in self.schema.names]
            tables = (pa.Table.from_batches([b]) for b in self.batches(names))
        else:
            # File by file: one model's file may lack the model or version columns another has.
            tables = (_served_table(f) for f in self.files)
        counts: dict[tuple, int] = {}
        for table in tables:
            if table is None:
                continue
            if self._shadow:
                role = table.column("_mlsys_role")
                table = table.filter(pc.or_kleene(pc.not_equal(role, "shadow"), pc.is_null(role)))
            names = [c for c in _SERVED if c in table.column_names]
            for row in table.group_by(names).aggregate([([], "count_all")]).to_pylist():
                key = tuple(row.get(c) for c in _SERVED)
                counts[key] = counts.get(key, 0) + row["count_all"]
        return [{"role": r, "model": m, "version": v, "rows": n}
                for (r, m, v), n in sorted(counts.items(), key=lambda kv: (-kv[1], tuple(map(str, kv[0]))))]

    def _raw_batches(self, columns: list[str], batch_rows: int, dictionary: Sequence[str] = ()) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._relation is not None:
            from mlsys_cli.data.io import quote_ident

            rel = self._relation.select(*[quote_ident(c) for c in columns])
            reader = rel.to_arrow_reader(batch_rows)
            yield from reader
            return
        fields = {c: self.schema.field(c) for c in columns}
        dictionary = [c for c in dictionary if pa.types.is_string(fields[c].type) or pa.types.is_large_string(fields[c].type)]
        target = pa.schema([fields[c].with_type(pa.dictionary(pa.int32(), fields[c].type)) if c in dictionary
                            else fields[c] for c in columns])
        for f in self.files:
            try:
                # Column chunks streamed through a small buffer, not pre-loaded whole: a file of one
                # huge row group would otherwise sit in memory compressed, all columns at once.
                # Checked before opening: read_dictionary naming a column the file lacks is a KeyError.
                missing = [c for c in columns if c not in pq.read_schema(f).names]
                if missing:
                    served = _served_by(f)
                    if self._shadow and served and all(role == "shadow" for role, *_ in served):
                        continue  # a shadow model's file (it reads fewer columns): its rows are left out anyway
                    raise InputError(f"{f}: no column {missing[0]!r}" + (f" (a serve log of {_who(served)})" if served else ""),
                                     "the log holds rows of models that read other columns (one model a file): give "
                                     "the files of one model" if served else
                                     "the files do not share one schema: leave the odd files out of the glob")
                pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20, read_dictionary=dictionary or None)
                for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True):
                    yield batch if batch.schema.equals(target) else batch.cast(target)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{f}: cannot read: {str(exc).splitlines()[0]}") from None

    def column(self, name: str) -> Any:
        """One whole column as a ChunkedArray (a reference profile needs all of its values)."""
        import pyarrow as pa

        return pa.chunked_array([b.column(0) for b in self.batches([name], 1 << 20)], self.schema.field(name).type)

    def sample(self, columns: Sequence[str], n: int, seed: int) -> Any:
        """A seeded random sample of ``n`` rows (all rows when there are fewer), as an Arrow table.

        Streamed: the chosen rows are taken from each batch as it passes, so memory holds the
        sample and one batch, never the table.
        """
        sampler = Sampler(self.count_rows(), n, seed)
        for batch in self.batches(columns):
            sampler.take(batch)
        return sampler.table([self.schema.field(c) for c in columns])


def _served_table(path: Any) -> Any:
    """A serve log file's role, model and version columns, those it has (None for any other file)."""
    import pyarrow.parquet as pq

    names = [c for c in _SERVED if c in pq.read_schema(path).names]
    return pq.read_table(path, columns=names) if "_mlsys_role" in names else None


def _served_by(path: Any) -> list[tuple[str, ...]]:
    """The (role, model, version) of a serve log file's rows (empty for any other file)."""
    table = _served_table(path)
    if table is None:
        return []
    groups = table.group_by(table.column_names).aggregate([])
    return sorted({tuple(str(v) for v in row.values()) for row in groups.to_pylist()})


def _who(served: Sequence[tuple[str, ...]]) -> str:
    return ", ".join(" ".join(parts) for parts in served[:3])


def read_ahead(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """The items of ``batches``, produced by a thread up to ``depth`` ahead of the consumer.

    Reading a Parquet batch (decompression, decoding) and counting it take about the same time;
    a generator does one, then the other, leaving one of the two cores idle half the time. Here
    the next batches are decoded while the current one is counted (Arrow releases the GIL while
    it reads). An exception of the reader is raised in the consumer; a consumer that stops early
    stops the reader at its next batch.
    """
    import queue
    import threading

    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(exc)
            return
        finally:
            # A generator left behind holds its open file until it is collected.
            getattr(batches, "close", lambda: None)()
        put(end)

    threading.Thread(target=produce, name="mlsys drift reader", daemon=True).start()
    try:
        while (item := ahead.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


@contextmanager
def batch_memory() -> Iterator[None]:
    """Memory settings for streaming batches, restored on exit: Arrow's jemalloc pool, no huge pages.

    Each batch allocates fresh buffers (Arrow) and arrays (NumPy) of about the same sizes as the
    last one. With Arrow's default pool (mimalloc) and transparent huge pages set to ``always``
    (this machine), freed memory went back to the kernel and came back as new 2 MB pages that the
    kernel zeroes: a profile of a 1M-row run (``perf``) spent a third of its samples in
    ``clear_page``, 2-4 s of system time. jemalloc keeps and reuses the buffers, and with huge
    pages off for the process (``prctl``, Linux) a fresh page costs 4 KB of zeroing, not 2 MB
    (``benchmarks/results/drift.md``).
    """
    import pyarrow as pa

    previous = pa.default_memory_pool()
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its pool
        pass
    huge = _huge_pages(disable=True)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        if huge is not None:
            _huge_pages(disable=huge)


def _huge_pages(disable: bool) -> bool | None:
    """Set this process's transparent-huge-page opt-out (``PR_SET_THP_DISABLE``); returns the previous
    setting, or None where prctl is missing (not Linux) or refuses."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    previous = prctl(42, 0, 0, 0, 0)  # PR_GET_THP_DISABLE
    if previous < 0 or prctl(41, int(disable), 0, 0, 0) != 0:  # PR_SET_THP_DISABLE
        return None
    return bool(previous)


def int_array(values: Any) -> Any:
    """An int64 Arrow array of a NumPy array, built from its buffer.

    ``pyarrow.array`` imports pandas on first use (0.8 s of CPU) to check for pandas objects;
    this keeps the first pass over the data free of it while a thread imports it (``_detect``).
    """
    import numpy as np
    import pyarrow as pa

    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


class Sampler:
    """Seeded rows of a stream of batches: ``n`` of ``rows`` positions drawn up front, taken as batches pass."""

    def __init__(self, rows: int, n: int, seed: int):
        import numpy as np

        self.pick = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, rows), replace=False))
        self.offset = 0
        self.parts: list[Any] = []

    def take(self, batch: Any, columns: Sequence[str] | None = None) -> None:
        import numpy as np
        import pyarrow as pa

        lo, hi = np.searchsorted(self.pick, [self.offset, self.offset + batch.num_rows])
        if hi > lo:
            chosen = batch.take(int_array(self.pick[lo:hi] - self.offset))
            self.parts.append(chosen.select(list(columns)) if columns is not None else chosen)
        self.offset += batch.num_rows

    def table(self, fields: Sequence[Any]) -> Any:
        import pyarrow as pa

        schema = pa.schema(list(fields))
        return pa.Table.from_batches([p.cast(schema) for p in self.parts], schema=schema) if self.parts else schema.empty_table()


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
