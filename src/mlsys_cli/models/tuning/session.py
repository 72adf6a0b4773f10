"""Opening a study for a job: the data, the plan, and the Optuna study (created or resumed).

A resumed study must be the same problem (target, task, metric, validation, model, training
data, features); only the worker that creates a study seeds it with the starting trials.
"""

from __future__ import annotations

from typing import Any

from mlsys_cli.errors import InputError, MlsysError
from mlsys_cli.models.study import open_storage, storage_display
from mlsys_cli.models.tuning.job import TuneJob
from mlsys_cli.models.tuning.problem import Problem
from mlsys_cli.models.tuning.scheduler import CHEAP_SHARE, make_pruner, make_sampler
from mlsys_cli.models.tuning.space import Plan, make_plan


def open_study(job: TuneJob, problem: Problem, plan: Plan) -> Any:
    """Create or load the study, refusing one made for another problem."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(job.storage)
    minimize = not problem.higher
    identity = {"target": problem.target, "task": problem.task, "metric": problem.metric,
                "validation": job.validation, "model": job.model, "train_sha256": job.train_sha256,
                "features": dict(job.features)}
    sampler = make_sampler(job.sampler, int(job.seed), plan.families, minimize, plan.grid)
    cheap_s = CHEAP_SHARE * job.budget_s if job.budget_s else None
    pruner = make_pruner(job.pruner, by_family=len(plan.families) > 1, cheap_s=cheap_s)
    direction = "minimize" if minimize else "maximize"
    try:
        try:
            study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=job.study,
                                        direction=direction)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=job.study, storage=storage, sampler=sampler, pruner=pruner)
            created = False
        if created:
            # Only the worker that made the study seeds it, so parallel starts add no duplicates.
            study.set_user_attr("mlsys", identity)
            for params, overrides in plan.enqueue:
                attrs = {"defaults": True, **({"overrides": overrides} if overrides else {})}
                study.enqueue_trial(params, user_attrs=attrs)
        stored = study.user_attrs.get("mlsys") or identity
    except MlsysError:
        raise
    except Exception as exc:  # the storage failed after it opened (lost connection, locked file)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise InputError(f"storage {storage_display(job.storage)}: {reason}") from None
    if study.direction.name.lower() != direction:
        raise InputError(f"study {job.study!r} was made to {study.direction.name.lower()}, not to {direction}",
                         "use another --study name for a different problem")
    if not created:
        diff = [k for k in identity if stored.get(k) != identity[k]]
        if diff:
            k = diff[0]
            raise InputError(f"study {job.study!r} was made for {k}={stored.get(k)!r}, not {identity[k]!r}",
                             "use another --study name for a different problem")
    return study


def load_session(job: TuneJob) -> tuple[Problem, Plan, Any]:
    """The data, the plan and the opened study of a job (what the parent and each worker do first)."""
    import time

    start = time.perf_counter()
    problem = Problem(job)
    # A refit loads the data again: the search holds that time back (budget.search_deadline).
    problem.load_s = time.perf_counter() - start
    plan = make_plan(job, problem)
    study = open_study(job, problem, plan)
    return problem, plan, study
