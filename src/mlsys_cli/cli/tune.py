"""mlsys tune: search hyperparameters with Optuna (one family or several)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._checks import check_storage, require_rows
from mlsys_cli.cli._common import ConnectTimeoutOpt, EngineOpt, JsonOpt, ReportOpt, SchedulerOpt, SeedOpt, TargetOpt, TimeoutOpt, integer, output_dir, output_path, parse_kv


def _human(result: Any) -> None:
    d = result.to_dict()
    best = d["best"]
    console.kv(f"best of study {d['study']}", {
        "family": best["family"], d["metric"]: best["value"], "defaults": best["defaults_value"],
        "trial": best["trial"], "params": best["params"], "validation": d["validation"],
        "trials": d["trials"], "stopped by": d["stopped_by"], "seconds": d["elapsed_s"],
        "trials per second": d["trials_per_s"],
        **{f"wrote {kind}": path for kind, path in d["outputs"].items()},
    })
    console.records("families", d["families"], ["family", "trials", "complete", "pruned", "best", "seconds", "trials_per_s"])
    if d["final"]:
        final = d["final"]
        chosen = final.get("selection")
        console.kv("saved model", {"model": final["model"], **({"ensemble gain": final["gain"], "members": len(final["members"])}
                                                             if final["model"] == "ensemble" else {"why not an ensemble": final["reason"]}),
                                   "chosen by": (f"{chosen['folds']}-fold cross-validation on train + valid, "
                                                 f"{len(chosen['candidates'])} candidates" if chosen else "the validation rows")})
    if d["failures"]:
        console.records("failed trials", d["failures"], ["trial", "family", "error"])


def _warnings(d: dict[str, Any]) -> list[str]:
    return d["warnings"]


def command(
    train: Annotated[Path, typer.Argument(help="Training table (Parquet, CSV...).")],
    valid: Annotated[Optional[Path], typer.Option("--valid", help="Validation table (otherwise --cv folds of TRAIN).")] = None,
    cv: Annotated[Optional[int], typer.Option("--cv", click_type=integer(2, 100), help="K-fold cross-validation on TRAIN (default 5 without --valid).")] = None,
    time_col: Annotated[Optional[str], typer.Option("--time-col", help="Order the --cv folds by this column (no future in train).")] = None,
    target: TargetOpt = None,
    model: Annotated[str, typer.Option("--model", help="Family to search (linear, forest, xgboost, hgb, mlp) or auto for all.")] = "auto",
    metric: Annotated[Optional[str], typer.Option("--metric", help="Metric to optimise (default: the task's primary metric).")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe, random or grid.")] = "tpe",
    pruner: Annotated[str, typer.Option("--pruner", help="median, hyperband or none.")] = "median",
    trials: Annotated[Optional[int], typer.Option("--trials", click_type=integer(1, 1_000_000), help="Total trials of the study (default 30 without --timeout).")] = None,
    timeout: TimeoutOpt = None,
    storage: Annotated[Optional[str], typer.Option("--storage", envvar="MLSYS_STORAGE", help="Shared study storage: an RDB URL or journal:PATH.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name, to resume or share it (default mlsys-tune).")] = None,
    n_jobs: Annotated[int, typer.Option("--n-jobs", click_type=integer(1, 256), help="Worker processes on this machine.")] = 1,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Fix a parameter: name=value or family.name=value (repeatable).")] = None,
    drop: Annotated[Optional[list[str]], typer.Option("--drop", help="Columns not to use as features (comma-separated, repeatable).")] = None,
    seed: SeedOpt = 0,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", parser=output_path, help="Write the best params and recipe (JSON, for train --params).")] = None,
    save_model: Annotated[Optional[Path], typer.Option("--save-model", parser=output_path, help="Retrain the best configuration and write the model bundle.")] = None,
    trials_out: Annotated[Optional[Path], typer.Option("--trials-out", parser=output_path, help="Write every trial (params, metric, time, state) as Parquet.")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", parser=output_path, help="Write an HTML report: history and parameter importances.")] = None,
    keep_models: Annotated[int, typer.Option("--keep-models", click_type=integer(0, 1000), help="With --valid: keep the fitted models of the K best trials per family (0: none).")] = 2,
    artifacts: Annotated[Optional[Path], typer.Option("--artifacts", parser=output_dir, help="Where kept models go (default: beside a journal/SQLite storage).")] = None,
    ensemble: Annotated[bool, typer.Option("--ensemble/--no-ensemble", help="With --save-model and --valid: save the best trials' ensemble when better on valid.")] = True,
    refit_valid: Annotated[bool, typer.Option("--refit-valid/--no-refit-valid", help="With --save-model and --valid: refit the chosen model on train + valid.")] = True,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Search hyperparameters with Optuna, within a budget.

    TPE (or random, grid) with pruning of hopeless trials; --model auto
    spreads the budget over the families where it pays. --storage and
    --study resume a study or share it between processes and machines.
    --engine dask fits each xgboost trial on a Dask cluster.

    Examples:

        mlsys tune train.parquet --valid valid.parquet --model xgboost --timeout 5m -o params.json

        mlsys tune train.parquet --cv 5 --model auto --trials 60 --save-model best.mlsys

        mlsys tune train.parquet --valid valid.parquet --storage journal:study.log --study churn --n-jobs 2

        mlsys tune train.parquet --valid valid.parquet --model xgboost --storage postgresql://db/tune --engine dask --scheduler tcp://10.0.0.5:8786
    """
    from mlsys_cli.data.cluster import Engine
    from mlsys_cli.models.tuning import TuneOutputs, TuneRequest, tune
    from mlsys_cli.models.tuning.budget import process_started

    check_storage(storage)
    if valid is not None:
        require_rows(valid, "--valid")
    request = TuneRequest(
        target=target, valid=str(valid) if valid else None, cv=cv, time_col=time_col, model=model, metric=metric,
        sampler=sampler, pruner=pruner, trials=trials, timeout=timeout, storage=storage, study=study, n_jobs=n_jobs,
        params=parse_kv(param), seed=seed, keep_models=keep_models, artifacts=str(artifacts) if artifacts else None,
        ensemble=ensemble, refit_valid=refit_valid, engine=Engine.from_options(engine, scheduler, connect_timeout),
        features={"drop": [c for item in drop for c in item.split(",") if c]} if drop else None,
    )
    outputs = TuneOutputs(output=str(output) if output else None, save_model=str(save_model) if save_model else None,
                          trials_out=str(trials_out) if trials_out else None, html=str(html) if html else None)
    with console.progress("tuning", total=trials) as bar:
        # --timeout counts from the process start: start-up and imports are in the user's wall time.
        result = tune(str(train), request, outputs, progress=bar, started=process_started())
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
