"""mlsys retrain: decide, retrain from the champion's recipe, promote only a better model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import (DURATION_MAX, SEED_MAX, JsonOpt, ReportOpt, SeedOpt, TargetOpt, TimeoutOpt, integer,
                                   number, parse_duration, parse_kv)


def _human(result: Any) -> None:
    d = result.to_dict()
    console.kv(f"retrain {d['registry']}: {d['decision']} (exit {d['exit_code']})", {
        "reason": d["reason"], "version": d["version"] or "-", "champion": d["champion"] or "-",
        "previous": d["previous"] or "-", "rows": d["data"].get("rows"), "window": f"{d['data'].get('start', '-')} .. "
        f"{d['data'].get('end', '-')}", "stateful": d["training"].get("stateful", "-"), "seconds": d["seconds"]})
    console.records("triggers", d["triggers"], ["trigger", "fired", "reason"])
    if d["comparison"]:
        name = d["primary_metric"]
        console.records(f"on the {d['data']['parts']['holdout']['rows']} newest held-out rows", d["comparison"],
                        ["model", name, f"{name}_ci_low", f"{name}_ci_high"])
    if d["slices"]:
        console.records(f"{d['primary_metric']} by slice", d["slices"], ["column", "slice", "rows", "challenger", "champion"])
    if d["gates"]:
        console.records("gates", d["gates"], ["requirement", "observed", "passed"])


def _warnings(d: dict[str, Any]) -> list[str]:
    # the challenger's training warnings, as train tells them
    return [f"recovered: {r['detail']}" for r in d["recovered"]] + \
        [f"challenger: {line}" for line in d["training"].get("warnings") or []]


def command(
    registry: Annotated[Path, typer.Option("--registry", envvar="MLSYS_REGISTRY", help="The registry directory (created when missing).")],
    data: Annotated[list[str], typer.Option("--data", help="New labelled data: Parquet file, directory or glob, CSV (repeatable).")],
    trigger: Annotated[Optional[list[str]], typer.Option("--trigger", help="always | schedule:7d | drift[:any|:share=X] | performance:'auc<0.80' | volume:N (repeatable: any fires).")] = None,
    drift_exclude: Annotated[Optional[list[str]], typer.Option("--drift-exclude", help="Column the drift trigger leaves out, e.g. one that grows with time (repeatable).")] = None,
    time_col: Annotated[Optional[str], typer.Option("--time-col", help="Orders the rows; the newest are held out.")] = None,
    data_window: Annotated[Optional[str], typer.Option("--data-window", help="Only the newest span of --time-col, e.g. 90d.")] = None,
    ratios: Annotated[str, typer.Option("--ratios", help="Train, valid, held-out shares of the window.")] = "0.7,0.1,0.2",
    stateful: Annotated[bool, typer.Option("--stateful", help="Warm-start from the champion instead of training from scratch.")] = False,
    min_gain: Annotated[float, typer.Option("--min-gain", click_type=number(), help="Promote only when the primary metric improves by this much.")] = 0.0,
    require: Annotated[Optional[list[str]], typer.Option("--require", help="Gate the challenger must pass, as in evaluate (repeatable).")] = None,
    slice_: Annotated[Optional[list[str]], typer.Option("--slice", help="Compare the models per group of this column (repeatable).")] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Recipe for an empty registry (or a new one): a model bundle or tune's params.json.")] = None,
    target: TargetOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Family of the first champion without --recipe (default xgboost).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Parameter of the first champion, name=value (repeatable).")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", click_type=integer(0, 100_000), help="Bootstrap replicates for the confidence intervals.")] = 200,
    wait: Annotated[Optional[float], typer.Option("--wait", click_type=number(0, DURATION_MAX), help="Wait up to SECONDS for the registry lock (default: exit 5 at once).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", envvar="MLSYS_SEED", click_type=integer(0, SEED_MAX), help="Random seed (default: the recipe's).")] = None,
    timeout: TimeoutOpt = None,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> int:
    """Retrain when a trigger fires; promote a better model.

    Reads the champion's recipe from the registry, decides with --trigger
    whether to retrain, trains a challenger on the newest data (from scratch,
    or --stateful from the champion), judges both on the newest held-out
    rows and promotes the challenger only when it passes --require and gains
    --min-gain. Exit 0 promoted, 10 not needed, 11 challenger rejected.

    Examples:

        mlsys retrain --registry models/ --data data/all.parquet --time-col snapshot_date --target churned

        mlsys retrain --registry models/ --data 'new/*.parquet' --time-col day --trigger drift --trigger schedule:30d

        mlsys retrain --registry models/ --data new.parquet --trigger 'performance:auc<0.80' --stateful --min-gain 0.002
    """
    from mlsys_cli.continual.retrain import FirstModel, RetrainOptions, retrain
    from mlsys_cli.continual.window import parse_ratios

    opts = RetrainOptions(
        data=tuple(data), triggers=tuple(trigger or ["always"]), drift_exclude=tuple(drift_exclude or []),
        time_col=time_col, window=data_window,
        ratios=parse_ratios(ratios), stateful=stateful, min_gain=min_gain, require=tuple(require or []),
        slices=tuple(slice_ or []), recipe=str(recipe) if recipe else None,
        first=FirstModel(target=target, model=model, params=parse_kv(param)), seed=seed, bootstrap=bootstrap,
        timeout=parse_duration(timeout), wait=wait)
    with console.progress("retraining") as bar:
        result = retrain(registry, opts, progress=bar)
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
    return result.exit_code
