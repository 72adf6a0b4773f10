"""``drift --engine dask``: the current data counted per Parquet partition on Dask workers.

The local scan (:func:`mlsys_cli.monitor._detect._count`) reads the current data batch by batch
and adds each batch's counts into one :class:`~mlsys_cli.monitor.scan.Counts` per column. Here
each file is a task: a worker reads it with the same :class:`~mlsys_cli.monitor.scan.Source`
(the whole table's schema, the same shadow filter and batches), counts every batch in the same
cells with the same code, and returns the batch's counts; the client adds them in file and batch
order. Integer counts are summed on the worker (exact in any order); the per-cell sums of the
values (the Wasserstein tails) are floating point, so each batch's sums come back and are added
in the local order, and the counts equal the local scan's bit for bit. The domain classifier's
row sample is drawn at the same global row positions (the seeded positions split by file).

What the client holds: per batch of :data:`~mlsys_cli.monitor.scan.BATCH_ROWS` rows and numeric
column, its cell sums (about 0.8 KB for a 100-cell sketch), the unseen strings (at most 10,000
per column, as locally), and the row sample: not the table. The model checks of ``--model``
run there too: each worker loads the model once (checked against the client's sha256), predicts
its file batch by batch as the local scan does, and returns the outputs and labels (a few numbers
a row), joined here in file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mlsys_cli.errors import InputError
from mlsys_cli.monitor.scan import Cells, Counts, Sampler, Source

UNSEEN_KEPT = 10_000  # Counts.add stops adding unseen strings once a column has this many


@dataclass(frozen=True)
class CountJob:
    """What every counting task needs besides its file (sent to the workers)."""

    cells: tuple[Cells, ...]
    columns: tuple[str, ...]
    strings: tuple[str, ...]
    schema: Any
    include_shadow: bool
    time_col: str | None
    seconds: int | None
    sample_columns: tuple[str, ...]
    picks: tuple[Any, ...]


def counter(engine: Any, local: Callable[..., Any]) -> Callable[..., Any]:
    """The scan of the current data: ``local`` (the local ``_count``), or :func:`count_dask` on ``--engine dask``."""
    if engine is None or not engine.is_dask:
        return local
    from functools import partial

    return partial(count_dask, engine=engine)


def count_dask(source: Source, cells: Sequence[Cells], options: Any, sample: tuple[Sequence[str], int] | None,
               engine: Any) -> tuple[dict[str, Counts], int, Any]:
    """``_count``'s result (counts per column, rows, the domain sample) computed on a Dask cluster.

    Raises
    ------
    UsageError
        The dask extra is missing (exit 2).
    InputError
        The current data is not Parquet files, a file cannot be read, the scheduler does not
        answer, or a worker is lost beyond Dask's retries (exit 3).
    """
    import numpy as np

    from mlsys_cli.data.cluster import connect, require_dask
    from mlsys_cli.data.partitioned import run_partitions
    from mlsys_cli.monitor.scan import parse_window

    require_dask()
    if not source.parquet:
        raise InputError(f"{source.name}: --engine dask reads Parquet files (a directory or glob of them)",
                         "convert it first: mlsys ingest FILE -o table.parquet")
    seconds = parse_window(options.window) if options.window else None
    if options.time_col and options.time_col not in source.columns:
        raise InputError(f"no time column {options.time_col!r} in {source.name}")
    columns = [c.name for c in cells] + ([options.time_col] if seconds else [])
    base = CountJob(cells=tuple(cells), columns=tuple(dict.fromkeys(columns)),
                    strings=tuple(c.name for c in cells if not c.numeric and c.name != options.time_col),
                    schema=source.schema, include_shadow=options.include_shadow, time_col=options.time_col,
                    seconds=seconds, sample_columns=tuple(sample[0]) if sample else (), picks=())
    with connect(engine) as client:
        picks: tuple[Any, ...] = ()
        if sample:
            rows = [r["rows"] for r in run_partitions(client, file_rows, base, source.files)]
            pick = Sampler(sum(rows), sample[1], options.seed + 1).pick
            starts = np.concatenate([[0], np.cumsum(rows)])
            picks = tuple(pick[(pick >= a) & (pick < b)] - a for a, b in zip(starts[:-1], starts[1:]))
        from dataclasses import replace

        results = run_partitions(client, count_partition, replace(base, picks=picks), source.files)
    return _merge(cells, results), sum(r["rows"] for r in results), _drawn(source, sample, results)


def _file_source(job: CountJob, path: str) -> Source:
    """One file read as the whole table's :class:`Source` reads it (its unified schema)."""
    src = Source([path], job.include_shadow)
    src.schema = job.schema
    return src


def file_rows(job: CountJob, index: int, path: str) -> dict[str, Any]:
    """The rows of one file that pass the shadow filter (runs on a worker)."""
    return {"rows": _file_source(job, path).count_rows()}


def count_partition(job: CountJob, index: int, path: str) -> dict[str, Any]:
    """Count one file's batches in the cells (runs on a worker); see the module docstring."""
    from mlsys_cli.monitor.scan import window_ids

    src = _file_source(job, path)
    totals = {c.name: Counts(c) for c in job.cells}
    batches: list[dict[str, Any]] = []
    sampler = _sampler(job.picks[index]) if job.picks else None
    rows = 0
    for batch in src.batches(list(job.columns), dictionary=list(job.strings)):
        rows += batch.num_rows
        wins = window_ids(batch.column(job.time_col), job.seconds, job.time_col) if job.seconds else None
        record = {}
        for cell in job.cells:
            one = Counts(cell)
            one.add(batch.column(cell.name), wins)
            record[cell.name] = _floats(one, totals[cell.name])
            _add_ints(totals[cell.name], one)
        batches.append(record)
        if sampler is not None:
            sampler.take(batch, job.sample_columns)
    return {"rows": rows, "totals": {n: (c.total, c.windows) for n, c in totals.items()}, "batches": batches,
            "sample": sampler.parts if sampler is not None else []}


def _sampler(local_pick: Any) -> Sampler:
    """A :class:`Sampler` taking this file's share of the global seeded positions."""
    sampler = Sampler(0, 0, 0)
    sampler.pick = local_pick
    return sampler


def _floats(one: Counts, seen: Counts) -> dict[str, Any]:
    """A batch's float sums and unseen strings: what must be added in the local order.

    Unseen strings are dropped once this file alone has ``UNSEEN_KEPT`` (the whole table then
    has at least as many, so the local scan adds no more either).
    """
    unseen = None
    if one.unseen and len(seen.unseen) < UNSEEN_KEPT:
        unseen = one.unseen
        for v, n in unseen.items():
            seen.unseen[v] = seen.unseen.get(v, 0) + n
    return {"sums": one.sums, "window_sums": one.window_sums, "unseen": unseen}


def _add_ints(acc: Counts, one: Counts) -> None:
    acc.total = one.total if acc.total is None else acc.total + one.total
    for w, counts in one.windows.items():
        acc.windows[w] = counts if w not in acc.windows else acc.windows[w] + counts


def _merge(cells: Sequence[Cells], results: Sequence[dict[str, Any]]) -> dict[str, Counts]:
    """The files' counts added into one :class:`Counts` per column, in the local scan's order."""
    out = {c.name: Counts(c) for c in cells}
    for result in results:
        for name, (total, windows) in result["totals"].items():
            _add_ints(out[name], Counts(out[name].cells, total=total, windows=windows))
        for record in result["batches"]:
            for name, part in record.items():
                acc = out[name]
                if part["sums"] is not None:
                    acc.sums = part["sums"] if acc.sums is None else acc.sums + part["sums"]
                for w, sums in part["window_sums"].items():
                    acc.window_sums[w] = sums if w not in acc.window_sums else acc.window_sums[w] + sums
                if part["unseen"] and len(acc.unseen) < UNSEEN_KEPT:
                    for v, n in part["unseen"].items():
                        acc.unseen[v] = acc.unseen.get(v, 0) + n
    return out


def _drawn(source: Source, sample: tuple[Sequence[str], int] | None, results: Sequence[dict[str, Any]]) -> Any:
    """The domain sample: every file's sampled rows, in file order (``Sampler.table``'s result)."""
    if not sample:
        return None
    sampler = _sampler(None)
    sampler.parts = [part for r in results for part in r["sample"]]
    return sampler.table([source.schema.field(c) for c in sample[0]])
