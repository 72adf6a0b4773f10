"""``featurize --engine dask``: the train table read on Dask workers, features applied per partition.

Fitting: the client never holds the train table. :func:`read_train` gives the fit a
:class:`~mlsys_cli.features.columns.ColumnTable`: every column the fit reads is read from each
Parquet file on a worker and only that column comes back (the target stays; a column is
dropped once the fit moved on to others). The fit is the local code on the same values, so the
fitted featurizer is the local one (same JSON state, same ONNX graph), while this process holds
a few columns' rows instead of the whole table: a table too large for one process fits when its
columns do. The columns' types are decided on the workers from each file (the first file where
a column has a value decides, as the first values decide locally).

Applying (``--apply``): one task per partition; each worker loads the features bundle once
(by path and sha256, verified like a local load), transforms its partition in batches with
the local code and writes a part file; the client streams the parts, in input order, into the
one output file (atomic), the same table local ``featurize --apply`` writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
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
    """The train table as a ColumnTable whose columns are read on the cluster, one at a time.

    The connection is the process's shared client (:func:`mlsys_cli.data.cluster.shared_client`):
    the fit reads columns until it returns.

    Raises
    ------
    InputError
        Partitions with inconsistent schemas, an unreachable scheduler, a worker lost (exit 3).
    """
    from mlsys_cli.data.cluster import shared_client
    from mlsys_cli.data.partitioned import partitions

    parts = partitions(files)
    parts.require()
    return column_table(shared_client(engine), parts)


def column_table(client: Any, parts: Any) -> Any:
    """The partitioned table ``parts`` as a ColumnTable read through ``client`` (kept open by the caller)."""
    from mlsys_cli.features.columns import ColumnTable

    paths = [str(Path(f).resolve()) for f in parts.files]
    types = _column_types(client, paths, parts.names)
    return ColumnTable(parts.names, parts.total_rows, partial(gather_column, client, paths), types)


def partition_types(path: str, names: Sequence[str]) -> dict[str, tuple[int, str, bool]]:
    """name -> (values present, logical type, nested) of one partition's columns (runs on a worker)."""
    from mlsys_cli.data.partitioned import read_partition
    from mlsys_cli.features.schema import is_nested, logical_type

    frame = read_partition(path, names)
    return {n: (int(frame[n].notna().sum()), logical_type(frame[n]), bool(is_nested(frame[n]))) for n in names}


def _column_types(client: Any, paths: Sequence[str], names: Sequence[str]) -> Any:
    """Each column's type as the first file holding a value of it says (the first file's when none do)."""
    from mlsys_cli.data.partitioned import gathered
    from mlsys_cli.features.columns import ColumnTypes

    per_file = gathered(client, client.map(partition_types, paths, names=list(names), pure=False))
    types, nested = {}, set()
    for name in names:
        present, kind, is_nested = next((p[name] for p in per_file if p[name][0]), per_file[0][name])
        types[name] = kind
        if is_nested:
            nested.add(name)
    return ColumnTypes(types=types, nested=frozenset(nested))


def gather_column(client: Any, paths: Sequence[str], name: str) -> Any:
    """One column of every file, read on the workers, as the pandas Series ``read_frame`` gives."""
    import pyarrow as pa

    from mlsys_cli.data.partitioned import gathered, read_arrow

    tables = gathered(client, client.map(read_arrow, paths, columns=[name], pure=False))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.replace_schema_metadata(None).to_pandas()[name]


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
    from mlsys_cli.data.partitioned import concatenate, job_scratch, partitions, run_partitions
    from mlsys_cli.features.bundle import load_features_bundle
    from mlsys_cli.features.featurize import ApplyResult, apply_columns, apply_lineage
    from mlsys_cli.fsutil import sha256_file

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
    with connect(engine) as client, job_scratch(output) as scratch:
        job = ApplyJob(bundle=str(Path(bundle).resolve()), sha256=digest, target=target, columns=tuple(select),
                       keep_target=keep_target, batch_rows=batch_rows, scratch=str(Path(scratch).resolve()))
        results = run_partitions(client, transform_partition, job, parts.files, progress)
        lineage = apply_lineage(bundle, manifest, list(parts.files), parts.total_rows, keep_target)
        concatenate([r["part"] for r in results], output, lineage, parts.total_rows)
    return ApplyResult(output=str(output), bundle=str(bundle), rows=parts.total_rows,
                       n_features=len(fz.get_feature_names_out()), target=keep_target,
                       batches=sum(r["batches"] for r in results))
