"""mlsys ensemble: combine model bundles into one ensemble bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mlsys_cli import console
from mlsys_cli.cli._checks import check_storage
from mlsys_cli.cli._common import JsonOpt, ReportOpt, SeedOpt, TimeoutOpt, integer, output_path


def _human(result: Any) -> None:
    d = result.to_dict()
    metric = d["metric"]
    rows = [{"model": m["model"], "family": m["family"], "source": m["source"], "weight": m["weight"],
             metric: m[metric], "ms/1k rows": m["ms_per_1k_rows"]} for m in d["members"]]
    rows.append({"model": f"ensemble ({d['method']}, cross-fitted)", "family": "ensemble", "source": None, "weight": None,
                 metric: d["ensemble"][metric], "ms/1k rows": d["ensemble"]["ms_per_1k_rows"]})
    console.records(f"held-out {metric} on {d['rows']} rows", rows, ["model", "family", "source", "weight", metric, "ms/1k rows"])
    console.kv(None, {"gain": d["gain"]["value"], "gain 95% CI": d["gain"]["ci95"], "verdict": d["verdict"],
                      "dropped (no weight)": ", ".join(d["dropped"]) or "-",
                      "skipped (timeout)": ", ".join(s["model"] for s in d["skipped"]) or "-", "output": d["output"]})


def _warnings(d: dict[str, Any]) -> list[str]:
    from mlsys_cli.features.unseen import input_warnings

    return input_warnings(d)


def command(
    models: Annotated[Optional[list[Path]], typer.Argument(help="Member model bundles (.mlsys), two or more.")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="Held-out rows with the target (not a member's training data).")] = None,
    method: Annotated[str, typer.Option("--method", help="average, weighted, stack or select.")] = "average",
    metric: Annotated[Optional[str], typer.Option("--metric", help="Metric for select and the report (default: primary).")] = None,
    folds: Annotated[int, typer.Option("--folds", click_type=integer(2, 1000), help="Cross-fitting folds inside --data for the honest estimate.")] = 5,
    from_study: Annotated[bool, typer.Option("--from-study", help="Add the --top best trials of --study (kept models, else trained on --train).")] = False,
    storage: Annotated[Optional[str], typer.Option("--storage", envvar="MLSYS_STORAGE", help="Study storage (RDB URL or journal:PATH).")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Tuning study name (with --from-study).")] = None,
    top: Annotated[int, typer.Option("--top", click_type=integer(1, 1000), help="How many of the study's best trials to add.")] = 5,
    train: Annotated[Optional[Path], typer.Option("--train", help="Training table to retrain trials tune kept no model of.")] = None,
    timeout: TimeoutOpt = None,
    seed: SeedOpt = 0,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", parser=output_path, help="Where to write the ensemble bundle.")] = None,
    json_: JsonOpt = False,
    report: ReportOpt = None,
) -> None:
    """Combine models: average, weighted, stack or select.

    The combiner is fit on held-out rows only, and the report compares
    the ensemble (cross-fitted) with each member and says whether it is
    worth its cost. The result is a normal model bundle. --from-study
    reuses the models tune kept; --timeout bounds the whole step.

    Examples:

        mlsys ensemble a.mlsys b.mlsys c.mlsys --data valid.parquet --method select -o ens.mlsys

        mlsys ensemble --from-study --storage journal:study.log --study churn --top 5 --train train.parquet --data valid.parquet --timeout 20s -o ens.mlsys
    """
    from mlsys_cli.errors import UsageError
    from mlsys_cli.models.ensemble import EnsembleSpec, StudySource, ensemble

    if not data:
        raise UsageError("--data is required: held-out rows with the target")
    if from_study and not study:
        raise UsageError("--from-study needs --study NAME (and --storage)")
    if study and not from_study:
        raise UsageError("--study is used with --from-study")
    check_storage(storage)
    with console.progress("ensembling") as bar:
        source = StudySource(storage, study, top, str(train) if train else None) if from_study else None
        result = ensemble(
            [str(m) for m in models or []], [str(d) for d in data], EnsembleSpec(method, metric, folds, seed),
            study=source, output=str(output) if output else None, timeout=timeout, progress=bar,
        )
    console.emit(result, as_json=json_, report=str(report) if report else None, human=_human, warnings=_warnings)
