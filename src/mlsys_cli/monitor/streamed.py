"""Reference profiles of large tables, streamed: two passes over the batches, no sort, bounded memory.

Sorting every numeric column of the reference was the largest cost of ``mlsys drift`` on
1M x 50 (5.2 s of CPU for 40 columns, measured with cProfile; ``benchmarks/results/drift.md``).
The sketch does not need exact percentiles: its edges only define the cells both sides are counted
in, and every statistic (Kolmogorov–Smirnov, PSI, Wasserstein) is computed from the two sides'
exact counts in the same cells, so the tests stay valid with edges taken from a sample. So:

1. :func:`first_pass` reads every column once and draws a seeded sample of ``EDGE_ROWS`` rows
   whose percentiles become the edges (each cell then holds 1% of the reference give or take 0.2
   points, the standard error of a percentile of 65,536 rows), the exact minimum and maximum of
   each number (the outer cells; Arrow's ``min_max``), the domain classifier's sample, and the
   complete category counts (string columns read as Parquet dictionaries: the codes of a batch
   come from its dictionary, the strings are never decoded row by row), so strings are read once;
2. :meth:`FirstPass.second_pass` reads the numeric columns again and counts every row in those
   cells (with the per-cell sums the Wasserstein tails need) and the moments.

Running the second pass in a thread beside the count of the current data (it needs only the
cells) was measured and dropped: both passes are CPU-bound on two cores, and together they took
more CPU and about 60% more memory for no shorter wall time (``benchmarks/results/drift.md``).

Memory holds the samples and one batch per pass. The profile has the keys of
:func:`mlsys_cli.data.profile.numeric_profile` and ``categories_profile``; its ``quantiles``
(inner levels) come from the sample, and its ``histogram`` is the sketch's cells merged ten by ten.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlsys_cli.monitor.scan import Cells, Counts, Sampler, Source

# A reference of more rows than this takes its sketch's percentiles from a seeded sample of this
# many rows (its counts stay exact); one of at most this many is profiled exactly (sorted).
EDGE_ROWS = 65_536


def profile_streamed(src: Source, columns: Sequence[str], rows: int, sample_rows: int,
                     seed: int) -> tuple[dict[str, dict[str, Any]], Any]:
    """Profiles of ``columns`` of ``src`` (``rows`` rows) and the domain sample (None when 0 rows)."""
    first = first_pass(src, columns, rows, sample_rows, seed)
    return first.second_pass(), first.sample


@dataclass(frozen=True)
class FirstPass:
    """What the first pass over a reference table learnt: enough to count any data in its cells."""

    src: Source
    rows: int
    columns: tuple[str, ...]
    cells: Mapping[str, Cells]
    extremes: Mapping[str, tuple[float, float]]
    categories: Mapping[str, dict[str, Any]]
    sample: Any

    def second_pass(self) -> dict[str, dict[str, Any]]:
        """Every profile: the numeric columns counted in their cells (one more pass over them)."""
        numeric = list(self.cells)
        accs = {c: _Numeric(self.cells[c], self.extremes[c]) for c in numeric}
        with ThreadPoolExecutor(max_workers=2) as pool:
            for batch in (self.src.batches(numeric) if numeric else ()):
                list(pool.map(lambda c: accs[c].add(batch.column(c)), numeric))
        profiles = {c: accs[c].profile(self.cells[c].kind, self.rows) for c in numeric}
        return {c: profiles[c] if c in profiles else self.categories[c] for c in self.columns}


def first_pass(src: Source, columns: Sequence[str], rows: int, sample_rows: int, seed: int) -> FirstPass:
    """One pass over every column of ``columns``: edges, extremes, categories and the domain sample."""
    types = src.types()
    numeric = [c for c in columns if types[c] != "string"]
    strings = [c for c in columns if types[c] == "string"]
    # Another seed than the domain sample's: the two samples are drawn independently.
    edges = Sampler(rows, EDGE_ROWS, seed + 104_729)
    domain = Sampler(rows, sample_rows, seed) if sample_rows else None
    extremes = {c: _Extremes(types[c]) for c in numeric}
    cats = {c: _Categories() for c in strings}
    accs: dict[str, Any] = {**extremes, **cats}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for batch in src.batches(columns, dictionary=strings):
            list(pool.map(lambda c: accs[c].add(batch.column(c)), columns))
            edges.take(batch, numeric)
            if domain is not None:
                domain.take(batch)
    drawn = edges.table([src.schema.field(c) for c in numeric])
    sample = domain.table([src.schema.field(c) for c in columns]) if domain is not None else None
    return FirstPass(src, rows, tuple(columns), {c: _cells(c, types[c], drawn.column(c)) for c in numeric},
                     {c: (e.lo, e.hi) for c, e in extremes.items()},
                     {c: cats[c].profile(types[c], rows) for c in strings}, sample)


class _Extremes:
    """The exact minimum and maximum of a numeric column (missing and infinite values left out)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.lo, self.hi = math.inf, -math.inf

    def add(self, arr: Any) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from mlsys_cli.monitor.scan import to_float

        if self.kind == "float" and not pa.types.is_dictionary(arr.type):
            # Arrow's min_max skips nulls and NaN in one pass; an infinite extreme (missing here,
            # as in to_float) or an all-NaN batch takes the NumPy way below.
            found = pc.min_max(arr)
            lo, hi = found["min"].as_py(), found["max"].as_py()
            if lo is None:
                return
            if math.isfinite(float(lo)) and math.isfinite(float(hi)):
                self.lo, self.hi = min(self.lo, float(lo)), max(self.hi, float(hi))
                return
        x = to_float(arr, self.kind)
        if len(x) and not np.isnan(x).all():
            self.lo = min(self.lo, float(np.fmin.reduce(x)))
            self.hi = max(self.hi, float(np.fmax.reduce(x)))


def _cells(name: str, kind: str, values: Any) -> Cells:
    """The sketch's cells of one column: the percentiles of its sampled values."""
    import numpy as np

    from mlsys_cli.data.profile import SKETCH_BINS
    from mlsys_cli.monitor.scan import to_float

    x = to_float(values, kind)
    ordered = np.sort(x[np.isfinite(x)])
    if not len(ordered):
        return Cells(name, kind)
    fine = np.linspace(0, 1, SKETCH_BINS + 1)[1:-1]
    return Cells(name, kind, edges=tuple(float(e) for e in np.unique(np.quantile(ordered, fine))))


class _Numeric:
    """Counts and per-cell sums in the sketch's cells, and the moments, of one column (extremes known)."""

    def __init__(self, cells: Cells, extremes: tuple[float, float]):
        self.counts = Counts(cells)
        self.lo, self.hi = extremes
        self.pivot: float | None = None
        self.squares = 0.0

    def add(self, arr: Any) -> None:
        import numpy as np

        x = self.counts.add(arr, None)
        present = ~np.isnan(x)
        if not present.any():
            return
        if self.pivot is None:
            self.pivot = float(x[np.argmax(present)])
        # Squares about a pivot (the first value seen): the variance without the cancellation of
        # sum(x^2) - n mean^2 when the mean is large against the spread (epoch seconds).
        dev = x - self.pivot
        np.copyto(dev, 0.0, where=~present)
        # einsum, not dev @ dev: BLAS's threads cost 25 times the sum itself on 65,536 values.
        self.squares += float(np.einsum("i,i", dev, dev))

    def profile(self, kind: str, rows: int) -> dict[str, Any]:
        from mlsys_cli.data.profile import QUANTILES

        c = self.counts
        cells = c.cells
        total = c.total if c.total is not None else [0] * cells.size
        nulls = int(total[-1])
        present = rows - nulls
        out: dict[str, Any] = {"type": kind, "kind": "numeric", "count": rows, "nulls": nulls,
                               "null_rate": nulls / rows if rows else None}
        if present == 0:
            return {**out, "mean": None, "std": None, "min": None, "max": None,
                    "quantiles": {"levels": list(QUANTILES), "values": [None] * len(QUANTILES)},
                    "histogram": {"edges": [], "counts": [0]}, "sketch": {"edges": [], "counts": [0]}}
        mean = float(c.sums[:-1].sum()) / present
        var = max(self.squares / present - (mean - self.pivot) ** 2, 0.0)
        counts = [int(v) for v in total[:-1]]
        edges = list(cells.edges)
        return {**out, "mean": mean, "std": math.sqrt(var), "min": self.lo, "max": self.hi,
                "quantiles": {"levels": list(QUANTILES), "values": _quantiles(edges, self.lo, self.hi)},
                "histogram": _merged(edges, counts),
                "sketch": {"edges": edges, "counts": counts, "tails": c.tail_means()}}


def _quantiles(edges: Sequence[float], lo: float, hi: float) -> list[float | None]:
    """The profile's quantile levels from the sketch's percentile edges (ends: the exact extremes)."""
    from mlsys_cli.data.profile import QUANTILES

    out: list[float | None] = []
    for q in QUANTILES:
        if q <= 0.0 or q >= 1.0 or len(edges) != 99:
            out.append(lo if q <= 0.0 else hi if q >= 1.0 else None)
        else:
            out.append(edges[round(q * 100) - 1])
    return out


def _merged(edges: Sequence[float], counts: Sequence[int], groups: int = 10) -> dict[str, Any]:
    """The sketch's cells merged ``groups`` consecutive ones at a time (about deciles)."""
    import numpy as np

    if len(edges) < groups:
        return {"edges": list(edges), "counts": list(counts)}
    cuts = np.linspace(0, len(edges), groups + 1).round().astype(int)[1:-1]
    merged_edges = [edges[i] for i in cuts]
    bounds = [0, *[int(i) + 1 for i in cuts], len(counts)]
    return {"edges": merged_edges, "counts": [int(sum(counts[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]}


class _Categories:
    """Counts of each category of one string column (dictionary batches counted by their codes)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.nulls = 0

    def add(self, arr: Any) -> None:
        for value, count in category_counts(arr).items():
            if value is None:
                self.nulls += count
            else:
                self.counts[value] = self.counts.get(value, 0) + count

    def profile(self, kind: str, rows: int) -> dict[str, Any]:
        from mlsys_cli.data.profile import categories_profile

        return {"type": kind, **categories_profile(self.counts, rows, self.nulls)}


def category_counts(arr: Any) -> Mapping[str | None, int]:
    """Rows per value of a string (or dictionary-of-string) Arrow array; ``""`` and null count as None."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str | None, int] = {}
    if pa.types.is_dictionary(arr.type):
        values = arr.dictionary.to_pylist()
        idx = arr.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
        per = np.bincount(idx, minlength=len(values) + 1)
        pairs = zip([*values, None], per.tolist())
    else:
        vc = pc.value_counts(arr)
        pairs = zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())
    for value, count in pairs:
        if count:
            key = None if value is None or value == "" else str(value)
            out[key] = out.get(key, 0) + int(count)
    return out
