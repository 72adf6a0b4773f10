"""``featurize --engine dask``: the train table read on Dask workers, features applied per partition.

Fitting: each Parquet file of the train table is read on a worker and the client fits the
Featurizer on the gathered table with the local code, so the fitted featurizer is the local one
(same JSON state, same ONNX graph). Its statistics (medians, quantile bins, category
frequencies, cross-fitted target encodings, the leakage check's trees) need every train row
of the fitted columns in one place; this process must hold them.

Applying (``--apply``): one task per partition; each worker loads the features bundle once
(by path and sha256, verified like a local load), transforms its partition in batches with
the local code and writes a part file; the client streams the parts, in input order, into the
one output file (atomic), the same table local ``featurize --apply`` writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


@dataclass(frozen=True)
class ApplyJob:
    """What every transform task needs besides its partition (sent to the workers)."""

    bundle: str
    sha256: str
    target: str | None
    columns: tuple[str, ...]
    keep_target: str | None
    batch_rows: int
    scratch: str


def read_train(files: Sequence[Path], *, engine: Any) -> Any:
    """The train table as one pandas frame, its files read on the cluster (``read_frame``'s result)."""
    from mlsys_cli.data.cluster import connect
    from mlsys_cli.data.partitioned import gather_frame, partitions

    parts = partitions(files)
    parts.require()
    with connect(engine) as client:
        return gather_frame(client, parts)


def _worker_featurizer(bundle: str, sha256: str, target: str | None) -> Any:
    from mlsys_cli.data.cluster import cached_artifact
    from mlsys_cli.features.bundle import load_features_bundle

    return cached_artifact(bundle, sha256, lambda path: load_features_bundle(path, target)[0])


def transform_partition(job: ApplyJob, index: int, path: str) -> dict[str, Any]:
    """Featurize one partition into ``scratch/part-<index>.parquet`` (runs on a worker)."""
    import pyarrow.parquet as pq

    from mlsys_cli.data.partitioned import part_file
    from mlsys_cli.features.featurize import feature_batch, feature_schema

    fz = _worker_featurizer(job.bundle, job.sha256, job.target)
    source = pq.ParquetFile(path)
    schema = feature_schema(fz, source.schema_arrow, job.keep_target)
    rows = batches = 0
    with part_file(job.scratch, index) as (part, tmp):
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in source.iter_batches(batch_size=job.batch_rows, columns=list(job.columns)):
                writer.write_table(feature_batch(fz, batch, schema, job.keep_target))
                rows += batch.num_rows
                batches += 1
    return {"part": str(part), "rows": rows, "batches": batches}


def apply_dask(bundle: str | os.PathLike, data: Sequence[str | os.PathLike], output: str | os.PathLike, *,
               target: str | None = None, batch_rows: int = 65_536, progress: Any = None, engine: Any) -> Any:
    """``featurize --apply --engine dask``: :func:`mlsys_cli.features.featurize.apply` over a Dask cluster.

    Raises
    ------
    UsageError
        The dask extra is missing (exit 2).
    InputError
        As local ``--apply``; also partitions with inconsistent schemas, an unreachable
        scheduler, a worker lost beyond Dask's retries (exit 3; nothing written).
    """
    from mlsys_cli.data.cluster import connect, require_dask
    from mlsys_cli.data.partitioned import concatenate, partitions, run_partitions
    from mlsys_cli.features.bundle import load_features_bundle
    from mlsys_cli.features.featurize import ApplyResult, apply_columns, apply_lineage
    from mlsys_cli.fsutil import sha256_file, temp_dir

    if batch_rows < 1:
        from mlsys_cli.errors import UsageError

        raise UsageError("batch size must be at least 1")
    require_dask()
    digest = sha256_file(bundle)  # before loading: the client's checks and the workers' file are one version
    fz, manifest = load_features_bundle(bundle, target)
    parts = partitions(data)
    select, keep_target = apply_columns(fz, manifest, parts.names)
    parts.require(select)
    if progress:
        progress.update(total=parts.total_rows, description="featurizing")
    with connect(engine) as client, temp_dir(output) as scratch:
        job = ApplyJob(bundle=str(Path(bundle).resolve()), sha256=digest, target=target, columns=tuple(select),
                       keep_target=keep_target, batch_rows=batch_rows, scratch=str(Path(scratch).resolve()))
        results = run_partitions(client, transform_partition, job, parts.files, progress)
        lineage = apply_lineage(bundle, manifest, list(parts.files), parts.total_rows, keep_target)
        concatenate([r["part"] for r in results], output, lineage, parts.total_rows)
    return ApplyResult(output=str(output), bundle=str(bundle), rows=parts.total_rows,
                       n_features=len(fz.get_feature_names_out()), target=keep_target,
                       batches=sum(r["batches"] for r in results))
