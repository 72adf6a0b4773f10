"""mlsys evaluate: metrics with intervals, baselines, slices, calibration, behaviour, gates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._checks import baseline_warning
from mlsys_cli.cli._common import JsonOpt, ReportOpt, SeedOpt, TargetOpt, integer, number, output_path

_METRIC_COLUMNS = ["metric", "value", "ci_low", "ci_high", "zero_rule"]


def _human(result: Any) -> None:
    d = result.to_dict()
    console.kv(f"evaluate {d['model']} on {d['data']}", {
        "task": d["task"], "target": d["target"], "rows": d["rows"],
        "dropped_missing_target": d["dropped_missing_target"], "threshold": d["threshold"],
    })
    base = d["baseline"]["metrics"]
    console.records(f"metrics ({d['bootstrap']['confidence']:.0%} bootstrap CI; zero rule from the {d['baseline']['prior_from']})",
                    [{"metric": k, "value": v, "ci_low": d["ci"][k][0], "ci_high": d["ci"][k][1], "zero_rule": base.get(k)}
                     for k, v in d["metrics"].items()], _METRIC_COLUMNS)
    if d["best_threshold"]:
        console.kv("threshold maximising F1", d["best_threshold"])
    if d["slices"]:
        console.records(f"slices by {d['primary_metric']} (flagged: interval entirely worse than the column's row-weighted "
                        "mean)", d["slices"],
                        ["column", "slice", "rows", "value", "ci_low", "ci_high", "flagged"])
    if d["behaviour"]:
        console.records("behavioural tests", d["behaviour"], ["test", "column", "rate", "mean_abs_delta", "tolerance", "passed"])
    if d["gates"]:
        console.records("gates", d["gates"], ["requirement", "observed", "passed"])


def _warnings(d: dict[str, Any]) -> list[str]:
    from mlsys_cli.features.unseen import input_warnings

    metric = d["primary_metric"]
    flag = baseline_warning(metric, d["metrics"].get(metric), d["baseline"]["metrics"].get(metric))
    return ([flag] if flag else []) + input_warnings(d)


def command(
    model: Annotated[Path, typer.Argument(help="The model: a .mlsys bundle (or an exported .onnx file).")],
    data: Annotated[str, typer.Argument(help="Labelled table: Parquet file, directory or glob, or CSV/JSON.")],
    target: TargetOpt = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", click_type=number(0, 1), help="Binary decision threshold on P(positive) [default: the model's].")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", click_type=integer(0, 100_000), help="Bootstrap replicates for confidence intervals (0: none).")] = 200,
    confidence: Annotated[float, typer.Option("--confidence", click_type=number(0, 1, low_open=True), help="Coverage of the confidence intervals.")] = 0.95,
    slice_: Annotated[Optional[list[str]], typer.Option("--slice", help="Report metrics per group of this column (repeatable).")] = None,
    slice_bins: Annotated[int, typer.Option("--slice-bins", click_type=integer(2, 1000), help="Quantile bins for numeric slice columns.")] = 4,
    min_slice_rows: Annotated[int, typer.Option("--min-slice-rows", click_type=integer(1), help="Fewest rows for a slice to be flagged.")] = 30,
    perturb: Annotated[Optional[float], typer.Option("--perturb", click_type=number(0, 100, low_open=True), help="Perturbation test: noise of this share of each numeric column's std.")] = None,
    invariant: Annotated[Optional[list[str]], typer.Option("--invariant", help="Invariance test: permuting COL should not change predictions (repeatable).")] = None,
    expect: Annotated[Optional[list[str]], typer.Option("--expect", help="Directional test COL:+ or COL:- (COL:+:CLASS for multiclass; repeatable).")] = None,
    require: Annotated[Optional[list[str]], typer.Option("--require", help="Gate like 'auc>=0.8', 'ci_low:auc>=0.75', 'slice_min:auc>=0.7' (exit 4 if unmet).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", parser=output_path, help="Write a self-contained HTML report with plots.")] = None,
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Evaluate a model: metrics, slices, calibration, gates.

    Metrics with bootstrap confidence intervals beside the zero-rule
    baseline, metrics per slice with the worst slices flagged, calibration
    (ECE and a reliability table), behavioural tests (perturbation,
    invariance, directional expectation) and --require gates (exit 4).

    Examples:

        mlsys evaluate model.mlsys data/test.parquet --slice plan

        mlsys evaluate model.mlsys test.parquet --require "auc>=0.8" --require "ece<=0.05"

        mlsys evaluate model.mlsys test.parquet --perturb 0.05 --invariant region --expect support_calls:+ --html eval.html
    """
    from mlsys_cli.data.io import read_frame
    from mlsys_cli.deploy.predict import load_model
    from mlsys_cli.errors import CheckFailed
    from mlsys_cli.models.evaluate import (BehaviourSpec, EvaluateOptions, evaluate, parse_expectation, parse_requirement,
                                           write_html)

    requirements = [parse_requirement(r) for r in require or []]
    for e in expect or []:
        parse_expectation(e)
    loaded = load_model(model)
    frame = read_frame(data)
    with console.progress("evaluating") as progress:
        options = EvaluateOptions(
            target=target, threshold=threshold, bootstrap=bootstrap, confidence=confidence, slices=slice_ or [],
            slice_bins=slice_bins, min_slice_rows=min_slice_rows,
            behaviour=BehaviourSpec(perturb=perturb, invariant=invariant or [], expect=expect or []),
            requirements=requirements, seed=seed,
        )
        result = evaluate(loaded, frame, options, model_name=str(model), data_name=str(data), progress=progress)
    if html:
        write_html(result, html)
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
    failed = result.failed_gates
    if failed:
        listed = "; ".join(f"{g['requirement']} (observed {_fmt(g['observed'])})" for g in failed)
        raise CheckFailed(f"{len(failed)} of {len(result.gates)} requirements not met: {listed}")


def _fmt(value: Any) -> str:
    return "undefined" if value is None else f"{value:.4g}"
