"""Partitioned Parquet input for the Dask engine: one partition per file.

A table given as a directory or a glob of Parquet files is read file by file on the workers.
Before anything is submitted, every file's footer is read here (metadata only, cheap for
thousands of files) and the files must agree on the columns a command reads and their types:
a file that lacks a column, or stores it with another type, is named with the column, because
a partition that disagrees would otherwise fail (or silently change dtype) halfway through.

Each partition is read exactly as :func:`mlsys_cli.data.io.read_frame` reads a file (pyarrow,
then ``to_pandas``), so featurizing or predicting a partition on a worker sees the same values
as the local engine.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mlsys_cli.data.io import LINEAGE_KEY, check_parquet, detect_format, lineage_metadata, refuse_repeated, resolve_inputs
from mlsys_cli.errors import InputError

SHOWN = 3  # differences named in one error line


@dataclass(frozen=True)
class Partitions:
    """The Parquet files of a partitioned table, with each file's Arrow schema and row count."""

    files: tuple[Path, ...]
    schemas: tuple[Any, ...]
    rows: tuple[int, ...]

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    @property
    def names(self) -> list[str]:
        """The columns of the first file (the table's columns when the files agree)."""
        return [n for n in self.schemas[0].names if not n.startswith("__index_level_")]

    def require(self, columns: Sequence[str] | None = None) -> Any:
        """The Arrow schema of ``columns`` (default: every column), the same in every file.

        Raises
        ------
        InputError
            A column is missing from some files, or files disagree on its type: the files and
            columns are named (exit 3).
        """
        import pyarrow as pa

        wanted = list(columns) if columns is not None else self.names
        problems = disagreements(self.files, self.schemas, wanted)
        if problems:
            more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
            raise InputError("partitions do not share one schema: " + "; ".join(problems[:SHOWN]) + more,
                             "rewrite the odd files with the common types, or leave them out of the glob")
        return pa.schema([self.schemas[0].field(c) for c in wanted])


def partitions(paths: Sequence[str | os.PathLike]) -> Partitions:
    """The Parquet files of ``paths`` (files, directories, globs), with their footers read.

    Raises
    ------
    InputError
        A file is not Parquet or its footer is unreadable (exit 3).
    """
    import pyarrow.parquet as pq

    files = resolve_inputs(paths)
    other = [f for f in files if detect_format(f) != "parquet"]
    if other:
        raise InputError(f"{other[0]}: --engine dask reads Parquet files (a directory or glob of them)",
                         "convert it first: mlsys ingest FILE -o table.parquet")
    schemas, rows = [], []
    for f in files:
        check_parquet(f)
        try:
            meta = pq.ParquetFile(f).metadata
            schemas.append(meta.schema.to_arrow_schema().remove_metadata())
            rows.append(meta.num_rows)
        except Exception as exc:  # pyarrow raises several types for a damaged footer
            raise InputError(f"{f}: cannot read Parquet: {exc}") from None
        refuse_repeated(schemas[-1].names, str(f))
    return Partitions(files=tuple(files), schemas=tuple(schemas), rows=tuple(rows))


def disagreements(files: Sequence[Path], schemas: Sequence[Any], columns: Sequence[str]) -> list[str]:
    """One line per (file, column) that lacks a column or types it differently from the first file having it."""
    problems = []
    for column in columns:
        first = next(((f, s.field(column).type) for f, s in zip(files, schemas) if column in s.names), None)
        if first is None:
            problems.append(f"column {column!r} is in none of the {len(files)} files")
            continue
        for f, s in zip(files, schemas):
            if column not in s.names:
                problems.append(f"{f} has no column {column!r}")
            elif not s.field(column).type.equals(first[1]):
                problems.append(f"{f}: column {column!r} is {s.field(column).type}, {first[0]} has {first[1]}")
    return problems


def read_partition(path: str | os.PathLike, columns: Sequence[str] | None = None) -> Any:
    """One partition as a pandas frame, read as the local engine reads it (runs on a worker)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(columns) if columns is not None else None)
    return table.replace_schema_metadata(None).to_pandas()


def dask_frame(parts: Partitions, columns: Sequence[str] | None = None) -> Any:
    """A ``dask.dataframe`` with one partition per file (nothing is read until computed).

    The columns are checked first (:meth:`Partitions.require`).
    """
    import dask.dataframe as dd

    schema = parts.require(columns)
    names = list(schema.names)
    meta = schema.empty_table().to_pandas()
    import functools

    # The column list is bound here: from_map passes `columns` on only to functions that
    # implement Dask's projection interface, and without it every column would be decoded.
    return dd.from_map(functools.partial(read_partition, columns=names), [str(Path(f).resolve()) for f in parts.files], meta=meta,
                       divisions=[None] * (len(parts.files) + 1), enforce_metadata=False)


def task_error(path: str | os.PathLike, exc: Any) -> dict[str, Any]:
    """A worker task's result for an ``MlsysError`` (exceptions lose their hint when pickled)."""
    return {"error": f"{path}: {exc.message}", "hint": exc.hint, "exit_code": int(exc.exit_code)}


def _reported(task: Callable[..., dict[str, Any]], job: Any, index: int, path: str) -> dict[str, Any]:
    """Run ``task`` on a worker; an ``MlsysError`` it raises comes back as a value (:func:`task_error`)."""
    from mlsys_cli.errors import MlsysError

    try:
        return task(job, index, path)
    except MlsysError as exc:
        return task_error(path, exc)


@contextlib.contextmanager
def part_file(scratch: str, index: int) -> Iterator[tuple[Path, Path]]:
    """``(part, tmp)``: partition ``index``'s output in a job's scratch directory, written at ``tmp``.

    Atomic even there (a task retried after its worker died replaces the half part), and the
    directory is never created: a task still running after its job failed must not bring back
    the scratch directory the client removed.
    """
    from mlsys_cli.fsutil import atomic_path

    part = Path(scratch) / f"part-{index:06d}.parquet"
    with atomic_path(part, suffix=".parquet", create_parent=False) as tmp:
        yield part, tmp


@contextlib.contextmanager
def job_scratch(output: str | os.PathLike) -> Iterator[str]:
    """A job's scratch directory beside ``output``, removed on exit even while tasks still write.

    A failed job's other tasks keep running on their workers (cancelling a future does not stop
    a running task), and one may create a part in the scratch directory while it is being
    removed: a plain ``rmtree`` then fails on the directory it no longer finds empty, leaving
    it behind (or raising instead of the job's own error). So the directory is first renamed:
    every task names it by its old path, so nothing can create an entry in the renamed one,
    which is then removed. A directory published as the output (renamed away) is left alone.
    """
    import shutil

    from mlsys_cli.fsutil import temp_dir

    holder = temp_dir(output)
    try:
        yield holder.name
    finally:
        aside = holder.name + "-removed"
        with contextlib.suppress(FileNotFoundError):
            os.rename(holder.name, aside)
        shutil.rmtree(aside, ignore_errors=True)
        holder.cleanup()  # its own name is gone: this only detaches its finalizer


def _error(result: dict[str, Any]) -> Exception:
    """The error a task reported (:func:`task_error`), as its own class."""
    from mlsys_cli.errors import BusyError, CheckFailed, MlsysError, UsageError

    kinds = {cls.exit_code: cls for cls in (UsageError, InputError, CheckFailed, BusyError)}
    return kinds.get(result["exit_code"], MlsysError)(result["error"], result["hint"])


def run_partitions(client: Any, task: Callable[..., dict[str, Any]], job: Any, files: Sequence[Path],
                   progress: Any = None) -> list[dict[str, Any]]:
    """Run ``task(job, index, path)`` once per file on the cluster; the results in file order.

    An ``MlsysError`` a task raises comes back as a value (``error``, ``hint``, ``exit_code``:
    see :func:`task_error`), raised here as that error; a task result's ``rows`` advance
    ``progress``. A worker lost beyond Dask's retries is a clean InputError (exit 3).
    """
    import functools

    from distributed import as_completed

    from mlsys_cli.data.cluster import worker_failures

    # Absolute paths: a worker's working directory is not the client's.
    futures = client.map(functools.partial(_reported, task), [job] * len(files), range(len(files)),
                         [str(Path(f).resolve()) for f in files], pure=False)
    with worker_failures(client, futures):
        for future in as_completed(futures, loop=client.loop):
            result = future.result()
            if "error" in result:
                raise _error(result)
            if progress is not None:
                progress.advance(result["rows"])
        return [f.result() for f in futures]


def concatenate(parts: Sequence[str], output: str | os.PathLike, lineage: Any, rows: int) -> None:
    """Stream the part files, in order, into ``output`` (atomic, zstd, lineage stamped)."""
    import pyarrow.parquet as pq

    from mlsys_cli.fsutil import atomic_path

    stamp = {LINEAGE_KEY: lineage_metadata(lineage, rows).encode()}
    schema = pq.read_schema(parts[0]).remove_metadata()
    with atomic_path(output, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema.with_metadata(stamp), compression="zstd") as writer:
            for part in parts:
                source = pq.ParquetFile(part)
                for group in range(source.num_row_groups):
                    writer.write_table(source.read_row_group(group).cast(schema))


def read_arrow(path: str, columns: Sequence[str] | None = None) -> Any:
    """One partition as an Arrow table, read as :func:`mlsys_cli.data.io.read_table` reads a file."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(columns) if columns is not None else None)
    index = [n for n in table.column_names if n.startswith("__index_level_")]
    return table.drop_columns(index) if index else table


def gathered(client: Any, futures: Sequence[Any]) -> list[Any]:
    """``client.gather(futures)``; a worker lost beyond Dask's retries is a clean InputError (exit 3)."""
    from mlsys_cli.data.cluster import worker_failures

    with worker_failures(client, futures):
        return client.gather(futures)


def is_directory_output(output: str | os.PathLike) -> bool:
    """``-o DIR/`` (a trailing slash) or an existing directory: one output part per input partition."""
    return str(output).endswith(("/", os.sep)) or Path(output).is_dir()


def publish_directory(scratch: str | os.PathLike, output: str | os.PathLike) -> None:
    """Make the finished ``scratch`` directory the output directory ``output``, all parts at once.

    Anything in ``scratch`` but the parts (the temporary file of a task whose worker died) is
    removed first. A new directory is renamed into place (atomic). An existing one is replaced only when it
    holds nothing but ``part-*.parquet`` files (a previous output): it is renamed aside, the new
    one renamed in, the old one removed; a reader sees the old parts or the new ones, never a mix.

    Raises
    ------
    InputError
        ``output`` holds other files (exit 3; nothing is changed).
    """
    import shutil

    from mlsys_cli.fsutil import temp_prefix

    target = Path(str(output).rstrip("/" + os.sep) or os.sep)
    for entry in os.scandir(scratch):  # a temporary part of a task whose worker was killed (retried elsewhere)
        if not (entry.name.startswith("part-") and entry.name.endswith(".parquet")):
            os.unlink(entry.path)
    if not target.exists():
        os.replace(scratch, target)
        return
    other = sorted(e.name for e in os.scandir(target) if not (e.name.startswith("part-") and e.name.endswith(".parquet")))
    if other:
        raise InputError(f"{target}: the directory holds other files than part-*.parquet ({', '.join(other[:3])})",
                         "give a new or empty directory for the partitioned output")
    aside = target.with_name(temp_prefix(target) + "old")
    os.replace(target, aside)
    os.replace(scratch, target)
    shutil.rmtree(aside, ignore_errors=True)
