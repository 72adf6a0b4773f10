"""mlsys featurize: fit features on train (a features bundle), or apply them."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import (ConnectTimeoutOpt, EngineOpt, JsonOpt, OutputOpt, ReportOpt, SchedulerOpt, SeedOpt, TargetOpt,
                                   integer)

Cols = Optional[list[str]]
ApplyOpt = Annotated[Optional[Path], typer.Option("--apply", help="Apply this features bundle to the table instead of fitting.", dir_okay=False)]
PresetOpt = Annotated[str, typer.Option("--preset", help="auto | trees | linear | mlp (auto follows --model).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="The model family the features are for (picks the auto preset).")]
TaskOpt = Annotated[Optional[str], typer.Option("--task", help="binary | multiclass | regression (default: from the target).")]
NumericOpt = Annotated[Cols, typer.Option("--numeric", help="Treat these columns as numbers (repeat or comma-separate).")]
CategoricalOpt = Annotated[Cols, typer.Option("--categorical", help="Treat these columns as categories.")]
DatetimeOpt = Annotated[Cols, typer.Option("--datetime", help="Treat these columns as timestamps.")]
DropOpt = Annotated[Cols, typer.Option("--drop", help="Leave these columns out.")]
IdOpt = Annotated[Cols, typer.Option("--id", help="Identifier columns (left out of the features).")]
CrossOpt = Annotated[Cols, typer.Option("--cross", help="Feature cross A,B (two categorical or two numeric columns); repeatable.")]
ImputeOpt = Annotated[str, typer.Option("--impute", help="auto | median | mean | most_frequent | constant | none.")]
ScalingOpt = Annotated[str, typer.Option("--scaling", help="auto | standard | robust | minmax | none.")]
LOG_CHOICES = {"auto": "auto", "skewed": "skewed", "none": False}
LogOpt = Annotated[str, typer.Option("--log", help="log(1+x) of numbers: auto (the preset's: mlp skewed) | skewed | none.")]
BinsOpt = Annotated[Optional[int], typer.Option("--bins", click_type=integer(2, 10_000), help="Quantile-bin numeric columns into N bins.")]
MaxCatOpt = Annotated[int, typer.Option("--max-categories", click_type=integer(2, 1_000_000), help="More distinct values is high cardinality; one-hot keeps this many.")]
MinFreqOpt = Annotated[int, typer.Option("--min-frequency", click_type=integer(1), help="Rarer categories share one infrequent bucket.")]
HighOpt = Annotated[str, typer.Option("--high-cardinality", help="auto | target | hashing | ordinal.")]
HashOpt = Annotated[int, typer.Option("--hash-features", click_type=integer(2, 1 << 20), help="Buckets for --high-cardinality hashing.")]
LeakageOpt = Annotated[str, typer.Option("--leakage", help="drop | warn: what to do with a feature that alone predicts the target.")]
CheckOpt = Annotated[Optional[list[Path]], typer.Option("--check", help="Held-out table to compare with train (missing values); repeatable.", dir_okay=False)]
BatchOpt = Annotated[int, typer.Option("--batch-rows", click_type=integer(1), help="Rows per batch with --apply (bounds memory).")]


def _human(result: Any) -> None:
    d = result.to_dict()
    if d["kind"] == "table":
        console.kv(f"featurized {d['rows']} rows", {k: d[k] for k in ("output", "bundle", "n_features", "target", "batches")})
        return
    console.kv(f"features for {d['target'] or '(no target)'}", {k: d[k] for k in ("output", "task", "preset", "rows", "n_features")})
    console.records("columns", d["columns"], ["name", "type", "role", "reason", "missing"])


def _warnings(d: dict[str, Any]) -> list[str]:
    from mlsys_cli.features.schema import out_of_range_warnings

    if d["kind"] == "table":
        return []
    missing = [f"{d['rows_missing_target']} rows without a target value were left out of the fit"] if d["rows_missing_target"] else []
    return [f["message"] for f in d["leakage"] + d["checks"]] + d["warnings"] + out_of_range_warnings(d["out_of_range"]) + missing


def command(
    table: Annotated[list[str], typer.Argument(help="The train table (or, with --apply, the table to transform).")],
    output: OutputOpt,
    target: TargetOpt = None,
    apply: ApplyOpt = None,
    preset: PresetOpt = "auto",
    model: ModelOpt = None,
    task: TaskOpt = None,
    numeric: NumericOpt = None,
    categorical: CategoricalOpt = None,
    datetime: DatetimeOpt = None,
    drop: DropOpt = None,
    id_: IdOpt = None,
    cross: CrossOpt = None,
    impute: ImputeOpt = "auto",
    scaling: ScalingOpt = "auto",
    log: LogOpt = "auto",
    bins: BinsOpt = None,
    max_categories: MaxCatOpt = 20,
    min_frequency: MinFreqOpt = 5,
    high_cardinality: HighOpt = "auto",
    hash_features: HashOpt = 32,
    leakage: LeakageOpt = "drop",
    check: CheckOpt = None,
    batch_rows: BatchOpt = 65_536,
    seed: SeedOpt = 0,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Fit features on train, or apply a features bundle.

    Fitting infers each column's role (numeric, boolean, categorical,
    high-cardinality, datetime, id, constant, empty), builds the preset's
    transforms (imputation, scaling, one-hot, target encoding, calendar parts,
    crosses), checks for leakage on train only, and writes a features bundle.
    With --apply, writes the feature table (plus the target when present),
    streaming in batches. --engine dask reads the train table's Parquet files
    on a Dask cluster (the same fit), and applies features per partition.

    Examples:

        mlsys featurize data/train.parquet --target churned -o features.mlsys

        mlsys featurize train.parquet --target churned --preset linear --cross plan,region --check valid.parquet -o f.mlsys

        mlsys featurize --apply features.mlsys data/test.parquet -o X_test.parquet

        mlsys featurize --apply features.mlsys 'parts/*.parquet' -o X.parquet --engine dask
    """
    from mlsys_cli.data.cluster import Engine

    where = Engine.from_options(engine, scheduler, connect_timeout)
    if apply is not None:
        from mlsys_cli.features.dask_featurize import apply_dask
        from mlsys_cli.features.featurize import apply as apply_local

        # The same arguments and result, on a Dask cluster or here.
        run = partial(apply_dask, engine=where) if where.is_dask else apply_local
        with console.progress("featurizing") as progress:
            result = run(apply, table, output, target=target, batch_rows=batch_rows, progress=progress)
    else:
        from mlsys_cli.errors import UsageError
        from mlsys_cli.features.featurize import featurize

        if log not in LOG_CHOICES:
            raise UsageError(f"invalid --log {log!r}", f"choose one of: {', '.join(LOG_CHOICES)}")

        read = None
        if where.is_dask:  # the train table's files read on the cluster; the same (local) fit
            from mlsys_cli.features.dask_featurize import read_train

            read = partial(read_train, engine=where)
        with console.progress("featurizing") as progress:
            result = featurize(table, output, target=target, check=check or [], progress=progress, read=read, preset=preset,
                               family=model, task=task, numeric=numeric, categorical=categorical, datetime=datetime,
                               drop=drop, ids=id_, cross=cross or (), impute=impute, scaling=scaling,
                               log=LOG_CHOICES[log], bins=bins,
                               max_categories=max_categories, min_frequency=min_frequency,
                               high_cardinality=high_cardinality, hash_features=hash_features, leakage=leakage, seed=seed)
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
