"""Batch prediction on Dask: one task per Parquet partition, the model loaded once per worker.

The client opens the model (verifying it, as ``predict`` does) and hashes the file; each task
gets the model's path and sha256, and a worker loads a model once and keeps it
(:func:`mlsys_cli.data.cluster.cached_artifact`, keyed by path and sha256, so a model replaced
on disk is never served from the cache, and a worker whose copy differs from the client's
refuses it; loading verifies the bundle's hashes as the local engine does). A task
predicts its partition in batches with the local engine's own :func:`prediction_table` and
writes a part file into a scratch directory beside the output; the client then streams the parts,
in input order, into the one output file (atomic). The output therefore holds exactly what
local ``predict`` writes for the same rows. With ``-o DIR/`` (a trailing slash, or an existing
directory) the parts themselves are the output: one Parquet file per input partition, in input
order (``part-000000.parquet``, ...), each stamped with its own lineage (the model and its input
file), and the scratch directory is renamed into place once every part is written. A job that fails (a bad partition, a worker lost
beyond Dask's retries) leaves the previous output or nothing: the scratch directory is removed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mlsys_cli.errors import InputError, UsageError


@dataclass(frozen=True)
class PartitionJob:
    """What every prediction task needs besides its partition (sent to the workers)."""

    model: str
    sha256: str
    columns: tuple[str, ...]
    keep: tuple[str, ...]
    batch_rows: int
    scratch: str
    stamps: tuple[bytes, ...] = ()


def worker_model(path: str, sha256: str) -> Any:
    """The model at ``path`` whose file hashes to ``sha256``, loaded once per worker process."""
    from mlsys_cli.data.cluster import cached_artifact
    from mlsys_cli.deploy.predict import load_model

    return cached_artifact(path, sha256, load_model)


def predict_partition(job: PartitionJob, index: int, path: str) -> dict[str, Any]:
    """Predict one partition into ``scratch/part-<index>.parquet`` (runs on a worker)."""
    import pyarrow.parquet as pq

    from mlsys_cli.data.partitioned import part_file
    from mlsys_cli.deploy.predict import empty_schema, prediction_table, summary_update
    from mlsys_cli.features.schema import add_counts
    from mlsys_cli.features.unseen import add_unseen

    model = worker_model(job.model, job.sha256)
    acc: dict[str, Any] = {}
    ranges: dict[str, int] = {}
    unseen: dict[str, dict[str, Any]] = {}
    rows = batches = 0
    source = pq.ParquetFile(path)
    with part_file(job.scratch, index) as (part, tmp):
        writer = None
        try:
            for batch in source.iter_batches(batch_size=job.batch_rows, columns=list(job.columns)):
                try:
                    table, out = prediction_table(model, batch, job.keep)
                except InputError as exc:
                    raise InputError(f"{exc.message} in rows {rows}..{rows + batch.num_rows - 1}", exc.hint) from None
                if writer is None:
                    writer = pq.ParquetWriter(tmp, _stamped(job, index, table.schema), compression="zstd")
                writer.write_table(table)
                summary_update(acc, out, model.task)
                ranges = add_counts(ranges, out["out_of_range"])
                unseen = add_unseen(unseen, out["unseen_categories"])
                rows += batch.num_rows
                batches += 1
            if writer is None:
                writer = pq.ParquetWriter(tmp, _stamped(job, index, empty_schema(model, source.schema_arrow, job.keep)),
                                          compression="zstd")
        finally:
            if writer is not None:
                writer.close()
    return {"part": str(part), "rows": rows, "batches": batches, "summary": acc, "out_of_range": ranges,
            "unseen_categories": unseen}


def _stamped(job: PartitionJob, index: int, schema: Any) -> Any:
    """The part's schema, with its lineage when the parts are the output."""
    from mlsys_cli.data.io import LINEAGE_KEY

    return schema.with_metadata({LINEAGE_KEY: job.stamps[index]}) if job.stamps else schema


def _part_stamps(model: Any, model_path: Any, parts: Any, keep: Sequence[str]) -> tuple[bytes, ...]:
    """Each part's lineage: the model and the one input file it predicts."""
    from mlsys_cli.data.io import lineage_metadata
    from mlsys_cli.deploy.predict import prediction_lineage

    return tuple(lineage_metadata(prediction_lineage(model, model_path, [f], keep), rows).encode()
                 for f, rows in zip(parts.files, parts.rows))


def predict_dask(model_path: str | os.PathLike, data: Sequence[Any] | str | os.PathLike, output: str | os.PathLike,
                 keep: Sequence[str] = (), batch_rows: int = 65_536, progress: Any = None, *, engine: Any) -> Any:
    """``predict --engine dask``: :func:`mlsys_cli.deploy.predict.predict_file` over a Dask cluster.

    Raises
    ------
    UsageError
        The dask extra is missing (exit 2).
    InputError
        As local ``predict``; also partitions with inconsistent schemas, an unreachable
        scheduler, a worker lost beyond Dask's retries (exit 3; nothing written).
    """
    from mlsys_cli.data.cluster import connect, require_dask
    from mlsys_cli.data.partitioned import (concatenate, is_directory_output, job_scratch, partitions, publish_directory,
                                            run_partitions)
    from mlsys_cli.deploy.predict import PredictResult, load_model, output_columns, prediction_lineage, read_columns
    from mlsys_cli.fsutil import sha256_file

    start = time.perf_counter()
    if batch_rows < 1:
        raise UsageError("batch size must be at least 1")
    require_dask()
    digest = sha256_file(model_path)  # before loading: the client's checks and the workers' file are one version
    model = load_model(model_path)
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    keep = list(dict.fromkeys(keep))
    parts = partitions(paths)
    columns = read_columns(model, parts.names, keep)
    parts.require(columns)
    if progress is not None:
        progress.update(total=parts.total_rows)
    directory = is_directory_output(output)
    stamps = _part_stamps(model, model_path, parts, keep) if directory else ()
    with connect(engine) as client, job_scratch(str(output).rstrip("/" + os.sep) or output) as scratch:
        job = PartitionJob(model=str(Path(model_path).resolve()), sha256=digest, columns=tuple(columns),
                           keep=tuple(keep), batch_rows=batch_rows, scratch=str(Path(scratch).resolve()), stamps=stamps)
        results = run_partitions(client, predict_partition, job, parts.files, progress)
        if directory:
            publish_directory(scratch, output)
        else:
            lineage = prediction_lineage(model, model_path, list(parts.files), keep)
            concatenate([r["part"] for r in results], output, lineage, parts.total_rows)
    from mlsys_cli.deploy.predict import summarize
    from mlsys_cli.features.schema import add_counts
    from mlsys_cli.features.unseen import add_unseen

    acc: dict[str, Any] = {}
    ranges: dict[str, int] = {}
    unseen: dict[str, dict[str, Any]] = {}
    for r in results:
        _merge(acc, r["summary"], model.task)
        ranges = add_counts(ranges, r["out_of_range"])
        unseen = add_unseen(unseen, r["unseen_categories"])

    return PredictResult(output=str(output), model=str(model_path), task=model.task, rows=sum(r["rows"] for r in results),
                         columns=[*keep, *output_columns(model)], batches=sum(r["batches"] for r in results),
                         seconds=round(time.perf_counter() - start, 3), summary=summarize(acc, model.task),
                         out_of_range=ranges, unseen_categories=unseen)


def _merge(acc: dict[str, Any], part: dict[str, Any], task: str) -> None:
    """Fold one partition's summary accumulator into the job's (the local accumulator's keys)."""
    if task != "regression":
        for label, count in part.items():
            acc[label] = acc.get(label, 0) + count
        return
    acc["sum"] = acc.get("sum", 0.0) + part.get("sum", 0.0)
    acc["n"] = acc.get("n", 0) + part.get("n", 0)
    for key, pick in (("min", min), ("max", max)):
        if key in part:
            acc[key] = pick(acc[key], part[key]) if key in acc else part[key]
