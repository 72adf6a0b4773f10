"""The reference side of a drift comparison: a table, a saved profile, or a model bundle's statistics.

All three become one :class:`Reference`: per column a ``data.profile`` profile (with its drift
``sketch``), the row count, and optionally a sample of rows for the domain classifier.

A saved profile (``mlsys drift --save-profile FILE TABLE``) is a Parquet file: its rows are the
seeded sample (``--domain-rows``, 0 for none: then no row of the data is stored), and its
key-value metadata ``mlsys-drift-profile`` holds the JSON profile::

    {"format": "mlsys-drift-profile", "version": 1, "mlsys_version": "...", "source": "...",
     "rows": N, "columns": {"age": {"type": "float", "kind": "numeric", ...}, ...}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError

PROFILE_FORMAT = "mlsys-drift-profile"
PROFILE_VERSION = 1
_META_KEY = b"mlsys-drift-profile"


@dataclass(frozen=True)
class ProfileSummary:
    """What ``--save-profile`` wrote."""

    profile: str
    source: str
    rows: int
    columns: int
    sample_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "source": self.source, "rows": self.rows, "columns": self.columns,
                "sample_rows": self.sample_rows}


@dataclass(frozen=True)
class Reference:
    """What current data is compared with."""

    kind: str
    name: str
    rows: int
    profiles: Mapping[str, Mapping[str, Any]]
    sample: Any = None
    manifest: Mapping[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.name, "rows": self.rows,
                "sample_rows": int(self.sample.num_rows) if self.sample is not None else 0}


def column_profile(column: Any, kind: str) -> dict[str, Any]:
    """The ``data.profile`` profile of one Arrow column, computed without pandas."""
    import pyarrow.compute as pc

    from mlsys_cli.data.profile import categories_profile, numeric_profile
    from mlsys_cli.monitor.scan import to_float, to_strings

    if kind != "string":
        return {"type": kind, **numeric_profile(to_float(column, kind))}
    s = to_strings(column)
    vc = pc.value_counts(s)
    counts = {v: int(c) for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()) if v is not None}
    return {"type": kind, **categories_profile(counts, len(s), int(s.null_count))}


def from_table(paths: Any, columns: Sequence[str], sample_rows: int, seed: int, include_shadow: bool = False) -> Reference:
    """Profile a reference table (and sample its rows for the domain classifier).

    A table of at most ``streamed.EDGE_ROWS`` rows is read once and profiled exactly (sorted). A larger one
    is streamed twice, never sorted: the first pass draws the seeded samples (the domain
    classifier's and ``streamed.EDGE_ROWS`` rows whose percentiles become the sketch's edges) and
    counts the categories, the second counts every number in those cells (see
    :mod:`mlsys_cli.monitor.streamed`).
    """
    from mlsys_cli.monitor import streamed
    from mlsys_cli.monitor.scan import Source

    src = Source(paths, include_shadow)
    rows = src.count_rows()
    if rows > streamed.EDGE_ROWS:
        profiles, sample = streamed.profile_streamed(src, columns, rows, sample_rows, seed)
        return Reference("table", src.name, rows, profiles, sample)
    types = src.types()
    table = src.sample(columns, rows, 0)
    sample = None
    if sample_rows:
        from mlsys_cli.monitor.scan import Sampler

        # The same seeded rows a separate pass would draw (positions depend on rows, n and seed only).
        sampler = Sampler(rows, sample_rows, seed)
        for batch in table.to_batches():
            sampler.take(batch)
        sample = sampler.table([src.schema.field(c) for c in columns])
    return Reference("table", src.name, rows, {c: column_profile(table.column(c), types[c]) for c in columns}, sample)


def table_columns(paths: Any, include_shadow: bool = False) -> dict[str, str | None]:
    """The columns of a table and their logical types."""
    from mlsys_cli.monitor.scan import Source

    return Source(paths, include_shadow).types()


def from_model(manifest: Mapping[str, Any], name: str) -> Reference:
    """The statistics a model bundle stores (``manifest.reference.features``)."""
    profiles = dict((manifest.get("reference") or {}).get("features") or {})
    if not profiles:
        raise InputError(f"{name}: the bundle stores no reference statistics", "retrain it with this mlsys, or give --reference TABLE")
    rows = max((int(p.get("count") or 0) for p in profiles.values()), default=0)
    return Reference("model", name, rows, profiles, None, manifest)


def read_profile(path: Any) -> Reference:
    """Load a profile written by :func:`write_profile`; one from another format version is refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a drift profile ({str(exc).splitlines()[0]})",
                         "write one with: mlsys drift --save-profile FILE TABLE") from None
    raw = (table.schema.metadata or {}).get(_META_KEY)
    doc = json.loads(raw) if raw else {}
    if doc.get("format") != PROFILE_FORMAT:
        raise InputError(f"{path}: not a drift profile", "write one with: mlsys drift --save-profile FILE TABLE")
    if doc.get("version") != PROFILE_VERSION:
        raise InputError(f"{path}: drift profile version {doc.get('version')} (written by mlsys {doc.get('mlsys_version')}); "
                         f"this mlsys reads version {PROFILE_VERSION}", "write it again with this mlsys: mlsys drift --save-profile")
    sample = table.replace_schema_metadata(None) if table.num_rows else None
    return Reference("profile", str(path), int(doc["rows"]), doc["columns"], sample)


def write_profile(paths: Any, out: Any, options: Any) -> ProfileSummary:
    """Profile a table and write the profile file atomically; returns its summary."""
    import pyarrow.parquet as pq

    from mlsys_cli import __version__
    from mlsys_cli.fsutil import atomic_path
    from mlsys_cli.monitor.scan import META_PREFIX

    types = table_columns(paths, options.include_shadow)
    skip = set(options.exclude) | {options.time_col, options.target}
    wanted = list(options.columns) if options.columns is not None else list(types)
    missing = [c for c in wanted if c not in types]
    if missing:
        raise InputError(f"no column {missing[0]!r} in {paths}")
    unknown = [c for c in options.exclude if c not in types]
    if unknown:  # as detect does: a misspelt exclusion would leave the column in, silently
        raise InputError(f"no column {unknown[0]!r} to exclude in {paths}")
    columns = [c for c in wanted if c not in skip and not c.startswith(META_PREFIX) and types[c] is not None]
    if not columns:
        raise InputError(f"{paths}: no column to profile")
    from mlsys_cli.monitor.scan import batch_memory

    with batch_memory():
        ref = from_table(paths, columns, options.domain_rows, options.seed, options.include_shadow)
    doc = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "mlsys_version": __version__,
           "source": ref.name, "rows": ref.rows, "columns": ref.profiles}
    import pyarrow as pa

    sample = ref.sample if ref.sample is not None else pa.table({c: pa.array([], pa.null()) for c in columns})
    sample = sample.replace_schema_metadata({_META_KEY: json.dumps(doc, allow_nan=False).encode()})
    with atomic_path(out) as tmp:
        pq.write_table(sample, tmp, compression="zstd")
    return ProfileSummary(str(out), ref.name, ref.rows, len(columns), int(ref.sample.num_rows) if ref.sample is not None else 0)


def reference_cells(name: str, prof: Mapping[str, Any]) -> tuple[Any, Any, bool]:
    """The :class:`~mlsys_cli.monitor.scan.Cells` of a profiled column, its counts, and whether
    its category list is complete (always True for numbers).

    Counts follow the cell codes (the missing count last). Profiles from bundles written before
    the drift sketch existed fall back to their decile histogram and top categories.
    """
    import numpy as np

    from mlsys_cli.monitor.scan import Cells

    kind = prof.get("type") or ("string" if prof.get("kind") == "categorical" else "float")
    nulls = int(prof.get("nulls") or 0)
    if prof.get("kind") == "categorical":
        sketch = prof.get("sketch") or {"counts": prof.get("top") or {}, "other": prof.get("other") or 0}
        cats = tuple(sketch["counts"])
        counts = np.array([*sketch["counts"].values(), int(sketch.get("other") or 0), nulls], dtype=np.float64)
        return Cells(name, "string", categories=cats), counts, not sketch.get("other")
    sketch = prof.get("sketch") or prof.get("histogram") or {"edges": [], "counts": [0]}
    edges, counts = [float(e) for e in sketch["edges"]], [float(c) for c in sketch["counts"]]
    lo, hi = prof.get("min"), prof.get("max")
    add_lo = lo is not None and (not edges or lo < edges[0])
    add_hi = hi is not None and (not edges or hi >= edges[-1])
    if add_lo:
        edges, counts = [lo, *edges], [0.0, *counts]
    if add_hi:
        edges, counts = [*edges, float(np.nextafter(hi, np.inf))], [*counts, 0.0]
    cells = Cells(name, kind, edges=tuple(edges), range_edges=(add_lo, add_hi))
    return cells, np.array([*counts, nulls], dtype=np.float64), True
