"""mlsys drift: has the data moved away from the reference? Per feature, jointly, through the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._common import ConnectTimeoutOpt, EngineOpt, JsonOpt, ReportOpt, SchedulerOpt, SeedOpt, TargetOpt, integer, number, output_path

_COLUMNS = ["feature", "drifted", "test", "statistic", "q_value", "effect", "missing", "importance", "why"]


def _row(f: dict[str, Any]) -> dict[str, Any]:
    effect = ", ".join(f"{k} {v:.3g}" for k, v in f["effect"].items() if v is not None)
    missing = None if f["missing_reference"] is None else f"{f['missing_reference']:.3f}->{f['missing_current']:.3f}"
    from mlsys_cli.monitor.results import verdict

    return {"feature": f["name"], "drifted": verdict(f), "test": f["test"],
            "statistic": f["statistic"], "q_value": f["q_value"], "effect": effect, "missing": missing,
            "importance": f["importance"], "why": "; ".join(f["reasons"]) or f["note"]}


def _served(current: dict[str, Any]) -> dict[str, str]:
    """A serve log's answering models, e.g. ``primary m v1 (700 rows), canary m2 v2 (300 rows)``."""
    served = current.get("served_by")
    if not served:
        return {}
    return {"served by": ", ".join(" ".join(str(s[k]) for k in ("role", "model", "version") if s[k] is not None)
                                   + f" ({s['rows']:,} rows)" for s in served)}


def _human(result: Any) -> None:
    d = result.to_dict()
    if "profile" in d:
        console.kv(f"profile {d['profile']}", d)
        return
    console.kv(f"drift: {'DETECTED' if d['drift_detected'] else 'none'} ({len(d['drifted'])} of {len(d['features'])} drifted)", {
        "reference": f"{d['reference']['kind']} {d['reference']['source']} ({d['reference']['rows']:,} rows)",
        "current": f"{d['current']['source']} ({d['current']['rows']:,} rows)", **_served(d["current"]), "seconds": d["seconds"]})
    console.records("features (drifted first, then by model importance)", [_row(f) for f in d["features"]], _COLUMNS)
    mv = d["multivariate"]
    if mv:
        console.kv("domain classifier", {k: mv[k] for k in ("auc", "p_value", "drifted", "note") if k in mv}
                   | {"separating": ", ".join(s["feature"] for s in mv.get("separating_features", []))})
    if d["model"]:
        m = d["model"]
        if "metrics" in m and "change" in m["metrics"]:
            console.kv(f"metrics on the current labels (vs the bundle's {m['metrics']['reference_on']})", m["metrics"]["change"])
        if "estimate" in m:
            console.kv("estimated performance (no labels needed)", {**m["estimate"]["estimated"], "reliable": m["estimate"]["reliable"],
                                                                   "calibration": m["estimate"]["calibration"]})
    if d["windows"]:
        console.records("windows", [{**w, "drifted": ", ".join(w["drifted"])} for w in d["windows"]],
                        ["start", "end", "rows", "drift_detected", "drifted", "note"])


def _warnings(d: dict[str, Any]) -> list[str]:
    if "profile" in d:
        return []
    return [f"{change['column']}: {change.get('change') or change.get('reason')}"
            + (f" ({change.get('reference')} -> {change.get('current')})" if change.get("change") == "type changed" else "")
            for change in d["schema_changes"] + d["skipped"]]


def command(
    current: Annotated[str, typer.Argument(help="Current data: Parquet file, glob or directory (serve logs), or CSV/JSON.")],
    reference: Annotated[Optional[str], typer.Option("--reference", help="Reference table (file, glob or directory).")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", dir_okay=False, help="Model bundle: its stored statistics, predictions, labels, importances.")] = None,
    profile: Annotated[Optional[Path], typer.Option("--profile", dir_okay=False, help="Reference profile written by --save-profile.")] = None,
    save_profile: Annotated[Optional[Path], typer.Option("--save-profile", parser=output_path, help="Write the profile of CURRENT to this file and stop.")] = None,
    time_col: Annotated[Optional[str], typer.Option("--time-col", help="Time column for --window (serve logs: _mlsys_time).")] = None,
    window: Annotated[Optional[str], typer.Option("--window", help="One verdict per window: 1h, 1d, 7d, ...")] = None,
    column: Annotated[Optional[list[str]], typer.Option("--column", help="Only this feature (repeatable).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Leave this column out (repeatable).")] = None,
    target: TargetOpt = None,
    alpha: Annotated[float, typer.Option("--alpha", click_type=number(0, 1, low_open=True), help="False discovery rate (Benjamini-Hochberg).")] = 0.05,
    wasserstein: Annotated[float, typer.Option("--wasserstein", click_type=number(0), help="Numeric effect threshold: Wasserstein / reference std.")] = 0.1,
    psi: Annotated[float, typer.Option("--psi", click_type=number(0), help="PSI threshold (numbers and categories).")] = 0.2,
    js: Annotated[float, typer.Option("--js", click_type=number(0, 1), help="Categorical effect threshold: Jensen-Shannon distance.")] = 0.1,
    missing_rate: Annotated[float, typer.Option("--missing-rate", click_type=number(0, 1), help="Missing-rate change threshold (absolute).")] = 0.05,
    unseen_share: Annotated[float, typer.Option("--unseen-share", click_type=number(0, 1), help="Share of unseen categories that counts as drift.")] = 0.05,
    min_rows: Annotated[int, typer.Option("--min-rows", click_type=integer(1), help="Fewest rows on each side to decide.")] = 50,
    domain: Annotated[bool, typer.Option("--domain/--no-domain", help="Run the domain-classifier test.")] = True,
    domain_rows: Annotated[int, typer.Option("--domain-rows", click_type=integer(0), help="Rows per side for the domain classifier (and kept in a saved profile).")] = 2000,
    permutations: Annotated[int, typer.Option("--permutations", click_type=integer(19, 1_000_000), help="Permutations of the domain-classifier test.")] = 200,
    include_shadow: Annotated[bool, typer.Option("--include-shadow", help="Keep rows served by a shadow model.")] = False,
    backend: Annotated[str, typer.Option("--backend", help="native (numpy/scipy) or alibi (alibi-detect).")] = "native",
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit 4 when drift is detected (cron, CI).")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", parser=output_path, help="Write a self-contained HTML report.")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", parser=output_path, help="Write the per-feature results as Parquet.")] = None,
    seed: SeedOpt = 0,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Detect drift between current data and a reference.

    Per feature: Kolmogorov-Smirnov or chi-square, corrected with
    Benjamini-Hochberg, AND an effect size over its threshold
    (Wasserstein, Jensen-Shannon, PSI, unseen categories, missing
    rate). Jointly: a domain classifier. With --model: prediction
    drift, label shift, metric change or its estimate. --engine dask
    counts the current Parquet files on a Dask cluster.

    Examples:

        mlsys drift new.parquet --reference train.parquet

        mlsys drift logs/ --model model.mlsys --time-col _mlsys_time --window 1d --fail-on-drift

        mlsys drift --save-profile ref.profile train.parquet

        mlsys drift 'new/*.parquet' --profile ref.profile --html drift.html -o drift.parquet

        mlsys drift 'events/*.parquet' --profile ref.profile --engine dask --scheduler tcp://10.0.0.5:8786
    """
    from mlsys_cli.data.cluster import Engine
    from mlsys_cli.errors import CheckFailed, UsageError
    from mlsys_cli.monitor._detect import check_backend
    from mlsys_cli.monitor.drift import DriftOptions, detect
    from mlsys_cli.monitor.drift import save_profile as write_profile
    from mlsys_cli.monitor.report import write_html, write_results

    options = DriftOptions(
        alpha=alpha, wasserstein=wasserstein, psi=psi, jensen_shannon=js, missing_rate=missing_rate,
        unseen_share=unseen_share, min_rows=min_rows, domain_classifier=domain, domain_rows=domain_rows,
        permutations=permutations, time_col=time_col, window=window, columns=tuple(column) if column else None,
        exclude=tuple(exclude or ()), target=target, include_shadow=include_shadow, backend=backend, seed=seed)
    where = Engine.from_options(engine, scheduler, connect_timeout)
    if save_profile is not None:
        if where.is_dask:
            raise UsageError("--save-profile profiles on this machine: leave out --engine dask",
                             "the profile is streamed in bounded memory; --engine dask counts the current data of a comparison")
        console.emit(write_profile(current, save_profile, options=options), as_json=json_,
                     report=str(report) if report else None, human=_human, warnings=_warnings)
        return
    check_backend(options)
    with console.progress("measuring drift"):
        result = detect(current, reference=reference, model=model, profile=profile, options=options, engine=where)
    if html:
        write_html(result, html)
    if output:
        write_results(result, output)
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
    if fail_on_drift and result.drift_detected:
        raise CheckFailed(f"drift detected: {', '.join(result.drifted) or 'the domain classifier separates the data'}")

