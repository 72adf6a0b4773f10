"""mlsys train: fit a model family and write a model bundle."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._checks import baseline_warning, require_rows
from mlsys_cli.cli._common import (ConnectTimeoutOpt, EngineOpt, JsonOpt, OutputOpt, ReportOpt, SchedulerOpt, SeedOpt, TargetOpt,
                                   TimeoutOpt, parse_kv)

from mlsys_cli.features.presets import FAMILIES


def _human(result: Any) -> None:
    d = result.to_dict()
    console.kv(f"{d['output']}: {d['model']} ({d['task']}, target {d['target']})", {
        "rows": f"train {d['rows']['train']}, valid {d['rows']['valid']}",
        "features": d["n_features"], "fit": d["fit"] or "-", "calibrate": d["calibrate"] or "-",
        "seconds": d["seconds"],
    })
    evaluated = d["metrics"][d["evaluated_on"]] or {}
    rows = [{"model": d["model"], **evaluated}]
    rows += [{"model": name, **values} for name, values in d["baselines"].items()]
    console.records(f"metrics on {d['evaluated_on']} (primary: {d['primary_metric']})", rows, ["model", *evaluated])
    if d["top_features"]:
        console.records("top features", d["top_features"], ["feature", "importance"])


def _warnings(d: dict[str, Any]) -> list[str]:
    evaluated, metric = d["metrics"][d["evaluated_on"]] or {}, d["primary_metric"]
    flag = baseline_warning(metric, evaluated.get(metric), (d["baselines"].get("zero_rule") or {}).get(metric))
    return d["warnings"] + ([flag] if flag else [])


def command(
    train: Annotated[list[Path], typer.Argument(help="Training table(s): Parquet, a directory or glob, CSV/JSON.")],
    output: OutputOpt,
    target: TargetOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help=f"Model family: {', '.join(FAMILIES)} (default xgboost, or the family in --params).")] = None,
    valid: Annotated[Optional[Path], typer.Option("--valid", help="Validation table: early stopping, calibration, reported metrics.")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="binary, multiclass or regression (inferred from the target).")] = None,
    features: Annotated[Optional[Path], typer.Option("--features", help="A features bundle from mlsys featurize (default: the family's preset).")] = None,
    params: Annotated[Optional[Path], typer.Option("--params", help="JSON file of family parameters (or tune's params.json).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="One parameter, name=value (repeatable; overrides --params).")] = None,
    drop: Annotated[Optional[list[str]], typer.Option("--drop", help="Columns not to use as features (comma-separated, repeatable).")] = None,
    class_weight: Annotated[Optional[str], typer.Option("--class-weight", help="'balanced': weight classes inversely to their frequency.")] = None,
    sample_weight: Annotated[Optional[str], typer.Option("--sample-weight", help="Column of per-row weights (not used as a feature).")] = None,
    calibrate: Annotated[Optional[str], typer.Option("--calibrate", help="Calibrate probabilities on --valid: isotonic or sigmoid.")] = None,
    seed: SeedOpt = 0,
    timeout: TimeoutOpt = None,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Train a model and write a model bundle.

    Fits the featurizer (or uses --features) and the model family on the
    training rows only; reports metrics beside the zero-rule and random
    baselines, on --valid when given (else on train, with a warning).

    Examples:

        mlsys train data/train.parquet --target churned -o model.mlsys

        mlsys train data/train.parquet --valid data/valid.parquet --model forest --param kind=extra -o m.mlsys

        mlsys train data/train.parquet --valid data/valid.parquet --params params.json --calibrate isotonic -o m.mlsys

        mlsys train 'parts/*.parquet' --target churned --features f.mlsys --engine dask --scheduler tcp://10.0.0.5:8786 -o m.mlsys
    """
    from mlsys_cli.errors import UsageError
    from mlsys_cli.models.train import FitRun, TrainSpec, load_params, train_model

    chosen: dict[str, Any] = {}
    family = model
    if params is not None:
        chosen, from_file = load_params(params)
        if family and from_file and from_file != family:
            raise UsageError(f"--params {params} is for --model {from_file}, not {family}")
        family = family or from_file
    chosen.update(parse_kv(param))
    spec = {"drop": [c for item in drop for c in item.split(",") if c]} if drop else None
    if features is not None and spec:
        raise UsageError("--drop cannot be combined with --features", "drop the columns in mlsys featurize")
    if valid is not None:
        require_rows(valid, "--valid")
    # One call either way: the Dask trainer takes train_model's arguments (models/distributed.py).
    from mlsys_cli.data.cluster import Engine

    where = Engine.from_options(engine, scheduler, connect_timeout)
    trainer = train_model
    if where.is_dask:
        from mlsys_cli.models.distributed import train_dask

        trainer = partial(train_dask, engine=where)
    with console.progress("training", total=None) as bar:
        bundle, result = trainer(
            [str(p) for p in train],
            TrainSpec(family=family or "xgboost", target=target, task=task, features=str(features) if features else spec,
                      params=chosen, class_weight=class_weight, sample_weight=sample_weight, calibrate=calibrate, seed=seed),
            valid=str(valid) if valid else None, run=FitRun(timeout=timeout, progress=bar),
        )
    bundle.save(output)
    console.emit(replace(result, output=str(output)), as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
