"""mlsys predict: batch predictions from a model and a table."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import ConnectTimeoutOpt, EngineOpt, JsonOpt, ReportOpt, SchedulerOpt, check_creatable, integer, output_path


def _human(result: Any) -> None:
    d = result.to_dict()
    console.kv(f"{d['output']}: {d['rows']} predictions ({d['task']})", {
        "model": d["model"], "columns": ", ".join(d["columns"]), "batches": d["batches"], "seconds": d["seconds"],
        **({"label_counts": d["summary"]["label_counts"]} if "label_counts" in d["summary"] else d["summary"]),
    })


def _warnings(d: dict[str, Any]) -> list[str]:
    from mlsys_cli.features.unseen import input_warnings

    return input_warnings(d)


def _output(value: str) -> str:
    """A file (as every ``-o``), or ``DIR/`` / an existing directory: a partitioned output (--engine dask)."""
    if value.endswith(("/", os.sep)) or Path(value).is_dir():
        check_creatable(Path(value))
        return value
    return str(output_path(value))


_output.mlsys_output = True  # an output the guard checks against the inputs and removes on failure


def command(
    model: Annotated[Path, typer.Argument(help="A model: .mlsys bundle (mlsys train/ensemble) or .onnx (mlsys export).")],
    data: Annotated[list[Path], typer.Argument(help="Rows to predict: Parquet file(s), a directory or glob, CSV/JSON.")],
    output: Annotated[str, typer.Option("-o", "--output", parser=_output, help="Where to write: a Parquet file, or DIR/ (one part per input file; --engine dask).")],
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="Input columns to copy to the output, e.g. ids (comma-separated, repeatable).")] = None,
    batch_rows: Annotated[int, typer.Option("--batch-rows", click_type=integer(1), help="Rows per batch; bounds memory on big inputs.")] = 65_536,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Predict a table with a model; write predictions to Parquet.

    Writes `label` and `proba_<class>` (classification) or `prediction`
    (regression), after the --keep columns. Streams the input in batches;
    extra input columns are ignored; unseen categories are predicted.
    With --engine dask, each Parquet file is a partition predicted on a
    Dask worker that loads the model once; the output is the same file,
    or with -o DIR/ one Parquet part per input file.

    Examples:

        mlsys predict model.mlsys data/test.parquet -o preds.parquet --keep customer_id

        mlsys predict model.onnx 'logs/*.parquet' -o preds.parquet --json

        mlsys predict model.mlsys 'parts/*.parquet' -o preds.parquet --engine dask --scheduler tcp://10.0.0.5:8786

        mlsys predict model.mlsys 'parts/*.parquet' -o preds/ --engine dask
    """
    from mlsys_cli.data.cluster import Engine
    from mlsys_cli.deploy.predict import predict_file
    from mlsys_cli.errors import MlsysError

    columns = [c for item in keep or [] for c in item.split(",") if c]
    where = Engine.from_options(engine, scheduler, connect_timeout)
    run = predict_file
    if not where.is_dask and (output.endswith(("/", os.sep)) or Path(output).is_dir()):
        try:
            output_path(output)  # refused as every -o FILE refuses a directory
        except MlsysError as exc:
            hint = "; ".join(h for h in (exc.hint, "or --engine dask for one part per input file") if h)
            raise type(exc)(exc.message, hint) from None
    if where.is_dask:  # the same arguments and result, on a Dask cluster
        from mlsys_cli.deploy.dask_predict import predict_dask

        run = partial(predict_dask, engine=where)
    with console.progress("predicting", total=None) as bar:
        result = run(model, [str(p) for p in data], output, keep=columns, batch_rows=batch_rows, progress=bar)
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
