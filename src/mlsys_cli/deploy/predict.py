"""Batch prediction: a model and a table in, a Parquet file of predictions out.

A model is anything with ``predict(df)`` (returning ``ModelBundle.predict``'s dict),
``task``, ``classes`` and ``input_schema``; :func:`load_model` picks the loader from the file
(``.mlsys`` bundle or ``.onnx`` graph). Input is streamed in record batches (pyarrow for
Parquet, DuckDB for CSV/JSON) and written batch by batch with a ``ParquetWriter`` into the
atomic temporary file, so memory is bounded by the batch size, not the table size.
"""

from __future__ import annotations

import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from mlsys_cli.errors import InputError, UsageError

BATCH_ROWS = 65_536


def load_model(path: str | os.PathLike) -> Any:
    """Open a model file: a ``.mlsys`` model bundle or an ``.onnx`` graph from ``mlsys export``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    if p.suffix.lower() == ".onnx":
        from mlsys_cli.deploy.onnx_model import OnnxModel

        return OnnxModel.load(p)
    if not zipfile.is_zipfile(p):
        raise InputError(f"{path}: not a model (expected a .mlsys bundle or an .onnx file)",
                         "the file may be truncated; rebuild it")
    from mlsys_cli.models.bundle import ModelBundle

    return ModelBundle.load(p)


@dataclass(frozen=True)
class PredictResult:
    """What ``mlsys predict`` reports (``--json``)."""

    output: str
    model: str
    task: str
    rows: int
    columns: list[str]
    batches: int
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    out_of_range: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "model": self.model, "task": self.task, "rows": self.rows,
                "columns": self.columns, "batches": self.batches, "seconds": self.seconds, "summary": self.summary,
                "out_of_range": self.out_of_range, "unseen_categories": self.unseen_categories}


def output_columns(model: Any) -> list[str]:
    """The prediction columns a model writes: ``label`` + ``proba_<class>``, or ``prediction``."""
    if model.task == "regression":
        return ["prediction"]
    return ["label"] + [f"proba_{c}" for c in model.classes]


def read_columns(model: Any, names: Sequence[str], keep: Sequence[str]) -> list[str]:
    """The input columns a prediction reads (``keep`` first), refusing a missing or clashing one."""
    clash = [c for c in keep if c in output_columns(model)]
    if clash:
        raise UsageError(f"--keep {clash[0]!r} clashes with a prediction column", "rename it in the input first")
    needed = [c["name"] for c in model.input_schema]
    for column in [*needed, *keep]:
        if column not in names:
            what = "--keep column" if column in keep and column not in needed else "column"
            raise InputError(f"{what} {column!r} is missing from the input",
                             "the model reads: " + ", ".join(needed))
    return list(dict.fromkeys([*keep, *needed]))


def _input_columns(paths: Sequence[Any]) -> tuple[Any, int, Any]:
    """The input's Arrow schema, its row count, and a function yielding record batches."""
    import pyarrow.parquet as pq

    from mlsys_cli.data.io import (detect_format, parquet_schema, quote_ident, refuse_repeated, relation_rows,
                                   resolve_inputs, scan_table)

    files = resolve_inputs(paths)
    if all(detect_format(f) == "parquet" for f in files):
        # Every footer first, as every reader of a table in several files does: a column of two
        # types across files (categories in one, numbers in another) is refused here, not predicted.
        # Files may differ in the columns the model does not read (serve logs of several models).
        schema = parquet_schema(files, missing_ok=True)

        def batches(columns: list[str], size: int) -> Iterator[Any]:
            opened = [pq.ParquetFile(f) for f in files]
            for f, pf in zip(files, opened):  # before the first prediction, not when its file comes
                missing = [c for c in columns if c not in pf.schema_arrow.names]
                if missing:
                    raise InputError(f"{f}: column {missing[0]!r} is missing from the input")
            for pf in opened:
                yield from pf.iter_batches(batch_size=size, columns=columns)

        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        return schema, rows, batches
    relation = scan_table(files)
    refuse_repeated(relation.columns, str(files[0]))

    def batches(columns: list[str], size: int) -> Iterator[Any]:
        reader = relation.select(*[quote_ident(c) for c in columns]).to_arrow_reader(size)
        yield from reader

    rows = relation_rows(relation)
    return relation.limit(0).to_arrow_table().schema, rows, batches


def summary_update(acc: dict[str, Any], out: dict[str, Any], task: str) -> None:
    import numpy as np

    if task == "regression":
        pred = out["prediction"]
        finite = pred[np.isfinite(pred)]
        acc["sum"] = acc.get("sum", 0.0) + float(finite.sum())
        acc["n"] = acc.get("n", 0) + int(finite.size)
        if finite.size:
            acc["min"] = min(acc.get("min", np.inf), float(finite.min()))
            acc["max"] = max(acc.get("max", -np.inf), float(finite.max()))
        return
    labels = np.asarray(out["label"])
    # Count the labels as they are (a few classes) and name them after; objects may not sort.
    labels, counts = np.unique(labels.astype(str) if labels.dtype.kind == "O" else labels, return_counts=True)
    for label, count in zip(labels, counts):
        acc[str(label)] = acc.get(str(label), 0) + int(count)


def summarize(acc: dict[str, Any], task: str) -> dict[str, Any]:
    if task == "regression":
        n = acc.get("n", 0)
        return {"mean": acc["sum"] / n if n else None, "min": acc.get("min"), "max": acc.get("max")}
    return {"label_counts": dict(sorted(acc.items()))}


def prediction_table(model: Any, batch: Any, keep: Sequence[str]) -> Any:
    """The predictions of one record batch as an Arrow table, and the model's outputs.

    The outputs carry ``out_of_range``: per float column, the values read as missing (inf,
    beyond float32), which the caller adds up and reports, as ``featurize`` and ``train`` do;
    and ``unseen_categories`` (:mod:`mlsys_cli.features.unseen`), added up the same way.
    """
    import numpy as np
    import pyarrow as pa

    from mlsys_cli.features.unseen import input_counts

    frame = batch.to_pandas()
    out = {**model.predict(frame), **input_counts(frame, model.input_schema)}
    arrays = [batch.column(c) for c in keep]
    names = list(keep)
    if model.task == "regression":
        arrays.append(pa.array(np.asarray(out["prediction"], dtype=np.float64)))
    else:
        labels = np.asarray(out["label"])
        # Numbers, booleans and strings go to Arrow straight from NumPy; only other objects need Python values.
        arrays.append(pa.array(labels if labels.dtype.kind in "biufU" else labels.tolist()))
        proba = np.asarray(out["probabilities"], dtype=np.float64)
        arrays.extend(pa.array(proba[:, i]) for i in range(proba.shape[1]))
    names += output_columns(model)
    return pa.Table.from_arrays(arrays, names=names), out


def predict_file(model_path: str | os.PathLike, data: Sequence[Any] | str | os.PathLike, output: str | os.PathLike,
                 keep: Sequence[str] = (), batch_rows: int = BATCH_ROWS, progress: Any = None) -> PredictResult:
    """Predict every row of ``data`` and write the predictions to ``output`` (Parquet).

    Parameters
    ----------
    model_path : path
        A ``.mlsys`` model bundle or an ``.onnx`` model.
    data : path, glob, directory, or a list of them
    output : path of the Parquet file to write (atomically, with lineage)
    keep : sequence of str
        Input columns copied to the output first (ids, keys).
    batch_rows : int
        Rows per batch; bounds memory.
    progress : object, optional

    Raises
    ------
    InputError
        A column the model needs is missing or holds values of the wrong type (named), or a
        ``--keep`` column does not exist (exit 3).
    """
    import pyarrow.parquet as pq

    from mlsys_cli.data.io import LINEAGE_KEY, lineage_metadata
    from mlsys_cli.features.schema import add_counts
    from mlsys_cli.features.unseen import add_unseen
    from mlsys_cli.fsutil import atomic_path

    start = time.perf_counter()
    if batch_rows < 1:
        raise UsageError("batch size must be at least 1")
    model = load_model(model_path)
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    schema, total, batches = _input_columns(paths)
    names = list(schema.names)
    keep = list(dict.fromkeys(keep))
    columns = read_columns(model, names, keep)
    lineage = prediction_lineage(model, model_path, _files(paths), keep)
    # The lineage goes into the schema metadata, which is written before the rows, so its row
    # count is the input's (every input row gets exactly one prediction).
    stamp = {LINEAGE_KEY: lineage_metadata(lineage, total).encode()}
    if progress is not None:
        progress.update(total=total)
    rows = n_batches = 0
    acc: dict[str, Any] = {}
    ranges: dict[str, int] = {}
    unseen: dict[str, dict[str, Any]] = {}
    writer = None

    def finish(pending: tuple[Any, Any]) -> None:
        nonlocal writer, rows, n_batches, ranges, unseen
        future, batch = pending
        try:
            table, out = future.result()
        except InputError as exc:
            raise InputError(f"{exc.message} in input rows {rows}..{rows + batch.num_rows - 1}", exc.hint) from None
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema.with_metadata(stamp), compression="zstd")
        writer.write_table(table)
        summary_update(acc, out, model.task)
        ranges = add_counts(ranges, out["out_of_range"])
        unseen = add_unseen(unseen, out["unseen_categories"])
        rows += batch.num_rows
        n_batches += 1
        if progress is not None:
            progress.advance(batch.num_rows)

    from concurrent.futures import ThreadPoolExecutor

    with atomic_path(output, suffix=".parquet") as tmp:
        # A pipeline of one batch: while one worker featurizes and predicts batch k (XGBoost,
        # onnxruntime and torch release the GIL), this thread reads batch k+1 and writes batch k-1.
        # Batches are predicted one at a time, in order, so the output is the same as a plain loop.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlsys-predict")
        try:
            pending = None
            for batch in batches(columns, batch_rows):
                submitted = (pool.submit(prediction_table, model, batch, keep), batch)
                if pending is not None:
                    finish(pending)
                pending = submitted
            if pending is not None:
                finish(pending)
            if writer is None:
                writer = pq.ParquetWriter(tmp, empty_schema(model, schema, keep).with_metadata(stamp), compression="zstd")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if writer is not None:
                writer.close()
    return PredictResult(output=str(output), model=str(model_path), task=model.task, rows=rows,
                         columns=[*keep, *output_columns(model)], batches=n_batches,
                         seconds=round(time.perf_counter() - start, 3), summary=summarize(acc, model.task),
                         out_of_range=ranges, unseen_categories=unseen)


def prediction_lineage(model: Any, model_path: str | os.PathLike, files: Sequence[Path], keep: Sequence[str]) -> Any:
    """The lineage of a predictions table: the model and every input file, fingerprinted."""
    from mlsys_cli.data.io import Lineage, input_record

    return Lineage(command="predict", inputs=[input_record(model_path, with_parent=False)] + [input_record(p) for p in files],
                   target=getattr(model, "target", None), extra={"task": model.task, "keep": list(keep)})


def _files(paths: Sequence[Any]) -> list[Path]:
    from mlsys_cli.data.io import resolve_inputs

    return resolve_inputs(paths)


def empty_schema(model: Any, schema: Any, keep: Sequence[str]) -> Any:
    """The output schema of an input with no rows."""
    import pyarrow as pa

    fields = [schema.field(c) for c in keep]
    if model.task == "regression":
        fields.append(pa.field("prediction", pa.float64()))
    else:
        fields.append(pa.field("label", pa.array(list(model.classes)).type))
        fields.extend(pa.field(name, pa.float64()) for name in output_columns(model)[1:])
    return pa.schema(fields)
