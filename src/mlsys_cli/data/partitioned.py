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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mlsys_cli.data.io import check_parquet, detect_format, refuse_repeated, resolve_inputs
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
        problems = _disagreements(self.files, self.schemas, wanted)
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


def _disagreements(files: Sequence[Path], schemas: Sequence[Any], columns: Sequence[str]) -> list[str]:
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
    return dd.from_map(read_partition, [str(f) for f in parts.files], columns=names, meta=meta,
                       divisions=[None] * (len(parts.files) + 1), enforce_metadata=False)
