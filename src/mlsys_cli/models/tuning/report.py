"""What a tuning run reports and writes: the result, best parameters, trials, model, HTML page."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError
from mlsys_cli.models.study import FAMILY_PARAM, storage_display
from mlsys_cli.models.tuning.job import TuneJob
from mlsys_cli.models.tuning.problem import Problem
from mlsys_cli.models.tuning.space import Plan


@dataclass(frozen=True)
class TuneOutputs:
    """The files a run writes (None: not asked for): best parameters (JSON), the best model
    retrained as a bundle, the trials (Parquet), the HTML page."""

    output: str | None = None
    save_model: str | None = None
    trials_out: str | None = None
    html: str | None = None


@dataclass(frozen=True)
class TuneResult:
    """What ``mlsys tune`` reports."""

    study: str
    storage: str | None
    task: str
    target: str
    metric: str
    direction: str
    validation: str
    best_family: str
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    defaults_value: float | None
    trials: dict[str, int]
    families: list[dict[str, Any]]
    workers: int
    elapsed_s: float
    stopped_by: str
    outputs: dict[str, str] = field(default_factory=dict)
    # Why each failed trial failed: ``{"trial", "family", "error"}``.
    failures: list[dict[str, Any]] = field(default_factory=list)
    trials_per_s: float = 0.0
    # What --save-model wrote: ``{"model": "ensemble"|"single", ...}`` (:mod:`.final`).
    final: dict[str, Any] | None = None
    # Training rows each trial fitted on when they were sampled (None: every row).
    trial_rows: int | None = None
    # Where the time budget went (seconds from its start; :func:`~.command.budget_record`).
    budget: dict[str, Any] = field(default_factory=dict)
    # Columns the featurizer left out (all missing, constant, nested...), one line each.
    warnings: list[str] = field(default_factory=list)

    def replace(self, **changes: Any) -> "TuneResult":
        import dataclasses

        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study, "storage": self.storage, "task": self.task, "target": self.target,
            "metric": self.metric, "direction": self.direction, "validation": self.validation,
            "best": {"family": self.best_family, "value": self.best_value, "params": self.best_params,
                     "trial": self.best_trial, "defaults_value": self.defaults_value},
            "trials": self.trials, "families": self.families, "workers": self.workers,
            "elapsed_s": round(self.elapsed_s, 3), "trials_per_s": round(self.trials_per_s, 3),
            "stopped_by": self.stopped_by, "failures": self.failures, "outputs": self.outputs,
            "final": self.final, "trial_rows": self.trial_rows, "budget": self.budget, "warnings": self.warnings,
        }


def raise_no_trial(trials: Sequence[Any], timeout: float | None) -> None:
    """Explain why no trial finished (exit 3)."""
    errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
    if errors:
        raise InputError(f"no trial finished; the last error: {errors[-1]}")
    if timeout is not None:
        raise InputError(f"the time budget ({timeout:g}s) was too small to finish one trial",
                         "raise --timeout; the data loading and featurizing count against it")
    raise InputError("no trial finished (all were pruned or failed)")


def best_trial(trials: Sequence[Any], higher: bool) -> Any:
    """The trial with the best value."""
    return (max if higher else min)(trials, key=lambda t: t.value)


def summarize(study: Any, problem: Problem, plan: Plan, mine: Mapping[str, Any],
              outcomes: Sequence[Mapping[str, Any]], started: float) -> dict[str, Any]:
    """The result of a run (:class:`TuneResult` fields but ``outputs``) from the study and the workers' outcomes."""
    job = problem.job
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = best_trial(done, problem.higher)
    family = best.params[FAMILY_PARAM]
    defaults = [t for t in done if t.user_attrs.get("defaults") and not t.user_attrs.get("overrides")
                and t.params.get(FAMILY_PARAM) == family]
    counts = {state: sum(t.state == s for t in trials) for state, s in (
        ("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED), ("failed", TrialState.FAIL),
        ("running", TrialState.RUNNING))}
    rows = []
    for f in plan.families:
        mine_f = [t for t in trials if t.params.get(FAMILY_PARAM) == f]
        ok = [t for t in mine_f if t.state == TrialState.COMPLETE]
        rows.append({
            "family": f, "trials": len(mine_f), "complete": len(ok),
            "pruned": sum(t.state == TrialState.PRUNED for t in mine_f),
            "best": best_trial(ok, problem.higher).value if ok else None,
            "seconds": round(sum(t.duration.total_seconds() for t in mine_f if t.duration), 3),
        })
        rows[-1]["trials_per_s"] = round(rows[-1]["trials"] / rows[-1]["seconds"], 3) if rows[-1]["seconds"] else None
    stopped = mine["stopped_by"]
    if any(o.get("stopped_by") == "timeout" for o in outcomes):
        stopped = "timeout"
    return {
        "study": job.study, "storage": None if job.private_storage else storage_display(job.storage),
        "task": problem.task, "target": problem.target, "metric": problem.metric,
        "direction": "maximize" if problem.higher else "minimize", "validation": job.validation.split(":")[0]
        if job.valid else f"cv{job.cv}" + (" by time" if job.time_col else ""),
        "best_family": family, "best_value": float(best.value), "best_params": dict(best.user_attrs["params"]),
        "best_trial": best.number, "defaults_value": float(defaults[0].value) if defaults else None,
        "trials": {"total": len(trials), **counts, "this_run": int(mine["ran"]) + sum(int(o.get("ran", 0)) for o in outcomes)},
        "families": rows, "workers": job.workers, "elapsed_s": time.time() - started, "stopped_by": stopped,
        "trials_per_s": len(trials) / max(time.time() - started, 1e-9), "trial_rows": problem.sample_rows,
        "failures": [{"trial": t.number, "family": t.params.get(FAMILY_PARAM), "error": t.user_attrs.get("error", "unknown")}
                     for t in trials if t.state == TrialState.FAIL],
        "warnings": problem.column_warnings(),
    }


# --------------------------------------------------------------------------- outputs


def best_params_document(result: Mapping[str, Any], job: TuneJob) -> dict[str, Any]:
    """The ``-o params.json`` document: what ``mlsys train --params`` reads, plus provenance."""
    return {
        "family": result["best_family"],
        "params": result["best_params"],
        "recipe": {"family": result["best_family"], "params": result["best_params"], "seed": int(job.seed),
                   "target": result["target"], "task": result["task"], "features": dict(job.features)},
        "metric": result["metric"], "value": result["best_value"], "direction": result["direction"],
        "validation": result["validation"], "study": result["study"], "trial": result["best_trial"],
    }


def trials_frame(study: Any, metric: str) -> Any:
    """One row per trial: number, state, family, the metric, duration, worker and parameters."""
    import pandas as pd
    from optuna.trial import TrialState

    rows = []
    names: list[str] = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        row = {
            "number": t.number, "state": t.state.name.lower(), "family": t.params.get(FAMILY_PARAM),
            metric: t.value, "duration_s": t.duration.total_seconds() if t.duration else None,
            "defaults": bool(t.user_attrs.get("defaults", False)), "worker": t.user_attrs.get("worker"),
            "stopped_by": t.user_attrs.get("stopped_by") or t.user_attrs.get("error"),
            "params": json.dumps(t.user_attrs.get("params", {}), sort_keys=True),
        }
        for k, v in t.params.items():
            if k != FAMILY_PARAM:
                row[f"param.{k}"] = v
                names.append(f"param.{k}") if f"param.{k}" not in names else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in names:  # a categorical parameter mixing None and numbers stays readable
        if frame[col].map(type).nunique() > 2:
            frame[col] = frame[col].map(lambda v: None if v is None else json.dumps(v))
    return frame


def write_outputs(result: Mapping[str, Any], study: Any, problem: Problem, outputs: TuneOutputs,
                  choice: Any = None) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Write the requested files (each atomically); return their paths by kind and what the
    saved model is (None without ``--save-model``; ``choice``: the final model already chosen,
    :func:`~.final.choose`)."""
    from mlsys_cli.fsutil import atomic_write_text

    written: dict[str, str] = {}
    job = problem.job
    output, save_model, trials_out, html = outputs.output, outputs.save_model, outputs.trials_out, outputs.html
    doc = best_params_document(result, job)
    final = None
    # The retrain is the step most likely to fail: do it before writing anything else.
    if save_model:
        from mlsys_cli.models.tuning.final import final_model

        bundle, final = final_model(study, problem, doc, choice)
        bundle.save(save_model)
        written["model"] = str(save_model)
    if output:
        atomic_write_text(output, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        written["params"] = str(output)
    if trials_out:
        from mlsys_cli.data.io import Lineage, input_record, write_table

        inputs = [input_record(job.train)] + ([input_record(job.valid)] if job.valid else [])
        write_table(trials_frame(study, problem.metric), trials_out,
                    Lineage(command="tune", inputs=inputs, seed=int(job.seed), target=problem.target,
                            extra={"study": job.study, "metric": problem.metric}))
        written["trials"] = str(trials_out)
    if html:
        html_report(study, result, problem.metric, problem.higher).write(html)
        written["html"] = str(html)
    return written, final


def param_importances(study: Any, family: str) -> dict[str, float]:
    """fANOVA-style importances (Optuna's default evaluator) of one family's parameters,
    from its completed trials; empty when there are too few to tell."""
    import optuna
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.params.get(FAMILY_PARAM) == family]
    names = sorted({k for t in done for k in t.params if k != FAMILY_PARAM})
    names = [n for n in names if all(n in t.params for t in done)]
    if len(done) < 3 or not names:
        return {}
    view = optuna.create_study(direction=study.direction)
    view.add_trials(done)
    try:
        found = optuna.importance.get_param_importances(view, params=names, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError):
        return {}
    return {k.split(".", 1)[1]: float(v) for k, v in found.items()}


def html_report(study: Any, result: Mapping[str, Any], metric: str, higher: bool) -> Any:
    """The ``--html`` page: optimisation history, time per family, parameter importances."""
    from optuna.trial import TrialState

    from mlsys_cli import __version__
    from mlsys_cli import htmlreport as hr

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    page = hr.Report(f"Tuning study {result['study']}", subtitle=f"{result['task']} target {result['target']}: "
                     f"{result['direction']} {metric} ({result['validation']})", footer=f"mlsys {__version__}")
    page.heading("Best trial")
    page.kv({"family": result["best_family"], metric: result["best_value"], "trial": result["best_trial"],
             "defaults of that family": result["defaults_value"], **{f"param {k}": v for k, v in result["best_params"].items()}})
    page.heading("Optimisation history")
    series = []
    for f in sorted({t.params.get(FAMILY_PARAM) for t in done}):
        ts = [t for t in done if t.params.get(FAMILY_PARAM) == f]
        series.append(hr.Series(f, [t.number for t in ts], [t.value for t in ts], markers=True))
    running, best_so_far = [], None
    for t in done:
        best_so_far = t.value if best_so_far is None else (max if higher else min)(best_so_far, t.value)
        running.append(best_so_far)
    series.append(hr.Series("best so far", [t.number for t in done], running, step=True))
    page.figures(hr.line_plot(series, title="Optimisation history", x_label="trial", y_label=metric, kind="history"),
                 hr.bar_chart([r["family"] for r in result["families"]], [r["seconds"] for r in result["families"]],
                              title="Time spent per family", value_label="seconds"))
    page.table(result["families"], ["family", "trials", "complete", "pruned", "best", "seconds"], caption="Families")
    importances = param_importances(study, result["best_family"])
    page.heading(f"Parameter importances ({result['best_family']})")
    if importances:
        page.figures(hr.bar_chart(list(importances), list(importances.values()), title="Parameter importances",
                                  value_label="share of variance (fANOVA)", kind="importance"))
    else:
        page.text("Too few completed trials of this family to estimate parameter importances.")
    page.heading("Trials")
    page.table([{"trial": t.number, "state": t.state.name.lower(), "family": t.params.get(FAMILY_PARAM), metric: t.value,
                 "seconds": t.duration.total_seconds() if t.duration else None}
                for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING])
    return page
