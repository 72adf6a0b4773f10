"""One trial: the configuration the sampler proposes, fitted on every fold and scored.

Trial 0 of every family is its default configuration, so a study is never worse than the
defaults on the validation data. Intermediate scores (boosting rounds, MLP epochs, CV folds)
go to the pruner; with ``--valid`` the fitted model may be kept (:mod:`.kept`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Mapping, Sequence

from mlsys_cli.models.study import FAMILY_PARAM
from mlsys_cli.models.tuning.budget import check_deadline, fit_seconds
from mlsys_cli.models.tuning.kept import keep_model
from mlsys_cli.models.tuning.problem import Problem
from mlsys_cli.models.tuning.space import Scoped

def jsonable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters with NumPy scalars as Python numbers (for the trial's user attributes)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def objective(trial: Any, problem: Problem, families: Sequence[str], fixed: Mapping[str, Mapping[str, Any]],
              deadline: float | None, fit_deadline: float | None = None) -> float:
    """Fit the trial's configuration on every fold and return its mean validation metric.

    ``deadline`` ends the study; ``fit_deadline`` (earlier) is when this trial's training stops
    and scores the model it has (fewer rounds or epochs)."""
    import optuna

    family, params = trial_params(trial, problem, families, fixed)
    single = len(problem.folds) == 1
    values: list[float] = []
    rounds: list[int] = []
    fit_total = 0.0
    for fold in range(len(problem.folds)):
        value, est, fit_s, fold_rounds = fit_fold(trial, problem, family, params, fold, (deadline, fit_deadline))
        values.append(value)
        rounds += fold_rounds
        fit_total += fit_s
        if not single:
            trial.report(sum(values) / len(values), fold)
            if fold < len(problem.folds) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
    if rounds and family.rounds_param in params and not problem.sample_rows:
        # Early stopping (or the deadline) chose the number of rounds: record it, so the recipe
        # retrains without a validation table (train --params, ensemble --from-study) to the
        # same model size. Not on a row sample: the refit on every row supports more rounds, and
        # its early stopping on the validation rows decides them.
        trial.set_user_attr("params", {**trial.user_attrs["params"], family.rounds_param: int(round(sum(rounds) / len(rounds)))})
    value = sum(values) / len(values)
    # Training seconds of one fit on a fold: what a refit of this configuration costs (budget).
    trial.set_user_attr("fit_s", fit_total / len(values))
    best_epoch = (getattr(est, "fit_info_", None) or {}).get("best_epoch")
    if single and best_epoch is not None:
        # The epochs early stopping chose, for a refit of a model not held (select, refit).
        trial.set_user_attr("best_epoch", int(best_epoch))
    if single:
        problem.hold(trial.number, family.name, est, value, fit_total / len(values))
    if single and problem.job.artifacts:
        keep_model(trial, problem, family, est, value, fit_s, deadline)
    return value


def trial_params(trial: Any, problem: Problem, families: Sequence[str],
                 fixed: Mapping[str, Mapping[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The trial's family and parameters (its defaults, or the sampler's proposal), thread counts
    included; records the learned parameters and the worker in the trial's user attributes."""
    from mlsys_cli.models.families import get_family, resolve_params

    name = trial.suggest_categorical(FAMILY_PARAM, list(families))
    family = get_family(name)
    if trial.user_attrs.get("defaults"):
        params = resolve_params(family, problem.task, {**(trial.user_attrs.get("overrides") or {}), **fixed[name]})
    else:
        scoped = Scoped(trial, name, fixed[name])
        params = {**dict(family.search_space(scoped, problem.task)), **fixed[name]}
    # Thread counts are how a trial runs, not what it learns: they stay out of the recipe.
    threads = {k: v for k, v in family.execution_params(problem.job.workers, len(problem.train_df)).items()
               if k not in fixed[name]}
    trial.set_user_attr("params", jsonable_params({k: v for k, v in params.items() if k not in threads}))
    params = {**params, **threads}
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    # Build it once before its training clock starts: the first build imports the family's
    # library (torch takes seconds on a loaded machine), which a training timeout cannot see.
    family.make(problem.task, problem.n_classes, resolve_params(family, problem.task, params), int(problem.job.seed))
    return family, params


def fit_fold(trial: Any, problem: Problem, family: Any, params: Mapping[str, Any], fold: int,
             deadlines: tuple[float | None, float | None]) -> tuple[float, Any, float, list[int]]:
    """Fit on one fold and score its validation rows.

    ``deadlines`` are the study's and this trial's training deadline. With a single fold the
    intermediate losses go to the pruner. Returns the score, the fitted estimator, the training
    seconds and the number of rounds it kept (early stopping or the deadline; empty if neither).
    """
    import optuna

    from mlsys_cli.models.dask_trials import trial_fitter
    from mlsys_cli.models.train import EstimatorSpec, FitData, FitRun

    deadline, fit_deadline = deadlines
    minimize = not problem.higher
    check_deadline(trial, deadline)
    X, y, Xv, yv, labels = problem.matrices(family, fold)
    # Featurizing (once per family and fold) may have used up the budget.
    check_deadline(trial, deadline)
    kwargs: dict[str, Any] = {}
    if len(problem.folds) == 1:
        def report(step: int, loss: float) -> None:
            # The pruner reads values in the study's direction; in-training losses go down.
            trial.report(loss if minimize else -loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        kwargs["callback"] = report
    fit_start = time.perf_counter()
    est = trial_fitter(problem.job.engine)(family, EstimatorSpec(problem.task, problem.n_classes, params, int(problem.job.seed)),
                        FitData(X, y, eval_set=(Xv, yv)), FitRun(timeout=fit_seconds(deadline, fit_deadline), **kwargs))
    fit_s = time.perf_counter() - fit_start
    scores = est.predict(Xv) if problem.task == "regression" else est.predict_proba(Xv)
    info = getattr(est, "fit_info_", None) or {}
    if info.get("stopped_by") == "timeout":
        trial.set_user_attr("stopped_by", "timeout")
    rounds: list[int] = []
    if info.get("best_iteration") is not None:
        rounds.append(int(info["best_iteration"]) + 1)
    elif info.get("stopped_by") == "timeout" and info.get("n_estimators"):
        # A forest cut by the deadline was scored with the trees it had grown: the recipe
        # says so, and a retrain (--save-model, --from-study) is that model, not a bigger one.
        rounds.append(int(info["n_estimators"]))
    return problem.score(labels, scores), est, fit_s, rounds
