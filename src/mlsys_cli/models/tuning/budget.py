"""Time budgets: when a trial must stop training, and when the study must stop.

``timeout`` is a wall-clock deadline. A trial that is running when the deadline passes gets the
remaining time as its own training timeout, so the budget holds to within a few seconds. Once
one trial has finished, a trial trains for at most :data:`TRIAL_SHARE` of the time left (then
it is scored as it stands), so one slow configuration cannot eat the budget.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

# Under a timeout, once a trial has finished no trial trains longer than this share of the time
# left (it is scored with the rounds/epochs it reached), so one slow configuration (an MLP on a
# loaded machine) cannot eat the budget the other families would have used.
TRIAL_SHARE = 0.5
MIN_FIT_S = 1.0
# Seconds held back for writing the refitted bundle (a few hundred ms measured; see search_deadline).
SAVE_S = 0.5
# At most this share of --timeout is held back for refitting on every row after trials on a sample.
REFIT_SHARE = 0.3
# Share of a --timeout the search leaves to the final step's ensemble (scoring the held models on
# the validation rows, cross-fitting the selection, writing the bundle: tuning/final), at least
# ENSEMBLE_MIN_S. With the trials' models held in memory this took 1-2 s on the benchmark's
# tables (12% of 60 s left the budget 5-6 s short, 5% still 1-2 s); the step is skipped when it cannot fit.
ENSEMBLE_SHARE = 0.035
ENSEMBLE_MIN_S = 2.0
# ... and at most this much: the step's cost grows with the members and the validation rows, not
# with the budget (5% of 300 s held back 15 s for a step of 1-2 s).
ENSEMBLE_MAX_S = 6.0


def ensemble_reserve(budget_s: float) -> float:
    """Seconds of a ``budget_s`` budget held back for the ensemble step."""
    return min(max(ENSEMBLE_MIN_S, ENSEMBLE_SHARE * budget_s), ENSEMBLE_MAX_S)


# The interpreter's teardown after the report is printed (threads joined, native libraries
# unloaded: 0.3-0.7 s measured with torch and XGBoost loaded) is inside the budget: the run's
# own deadline is this much before the end of --timeout.
EXIT_S = 0.7


def process_started() -> float | None:
    """When this process started (epoch seconds, from ``/proc``; None where there is none).

    ``--timeout`` counts from here: the interpreter's start-up and the imports before the
    command runs (1-2 s, more on a loaded machine) are part of the wall time a user measures.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # Both clocks count from boot: the process is (uptime - its start) seconds old.
    age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age if 0 <= age < 600 else None


class Deadline(Exception):
    """The time budget ran out before the trial could be scored."""


def check_deadline(trial: Any, deadline: float | None) -> None:
    """Stop the trial (:class:`Deadline`, recorded as ``stopped_by: timeout``) once the deadline passed."""
    if deadline is not None and time.time() >= deadline:
        trial.set_user_attr("stopped_by", "timeout")
        raise Deadline()


def fit_deadline(deadline: float | None, any_complete: bool) -> float | None:
    """When a trial's training stops: a share of the time left once one trial has finished."""
    if deadline is None or not any_complete:
        return None
    return time.time() + TRIAL_SHARE * (deadline - time.time())


def fit_seconds(deadline: float | None, trial_deadline: float | None) -> float | None:
    """The training timeout of one fit (at least :data:`MIN_FIT_S` while the study has time)."""
    if deadline is None:
        return None
    return max(min(trial_deadline or deadline, deadline) - time.time(), min(MIN_FIT_S, deadline - time.time()))


def search_deadline(study: Any, problem: Any) -> float | None:
    """When the search must stop so that the run, final model and saving included, ends by the deadline.

    With ``--save-model`` the search holds back the final step it plans: the ensemble step's
    share (:func:`ensemble_reserve`) while an ensemble may be saved, and then either, for models
    held in memory (:attr:`Problem.holds_models`), refitting the planned members on train + valid
    (:func:`reserve`: the ensemble's candidates, or the best trial once the final model is decided
    to be a single one, ``problem.final_plan == "single"``) and writing the best (:data:`SAVE_S`, a
    forest's nodes), or, for trials on a row sample or cross-validation, the best configuration's
    refit: the measured cost of loading the data (``problem.load_s``), featurizing for the best
    family and fitting it (the best trial's ``fit_s``, scaled by the rows on a sample), plus :data:`SAVE_S`.
    """
    deadline = problem.job.deadline
    if deadline is None or not problem.job.refit:
        return deadline
    folds = _selection_reserve(study, problem)
    if folds:
        # The final model is chosen by k-fold on train + valid (tuning/select): its folds,
        # ensemble decision included, replace the ensemble step.
        deadline -= folds
    elif ensemble_planned(problem):
        # The ensemble step's share, on top of saving the best trial (its fallback).
        deadline -= ensemble_reserve(problem.job.budget_s)
    if getattr(problem, "holds_models", False):
        held = sorted((h for kept in getattr(problem, "held", {}).values() for h in kept), key=lambda h: (h[0], h[1]))
        return deadline - reserve(problem, study) - SAVE_S - (write_seconds(held[0][2]) if held else 0.0)
    return deadline - refit_cost(study, problem) - SAVE_S


def _selection_reserve(study: Any, problem: Any) -> float:
    """Seconds held back for choosing the final model by k-fold (:func:`selection_reserve`; 0: not planned)."""
    if not getattr(problem, "holds_models", False) or getattr(problem, "final_plan", None) is not None:
        return 0.0
    return selection_reserve(study, problem)


def ensemble_planned(problem: Any) -> bool:
    """Whether the final step may still combine the best trials (an ensemble, decided on the
    validation rows): not once the final model is decided, nor for trials on a row sample."""
    job = problem.job
    return bool(getattr(job, "ensemble", False) and job.budget_s and job.valid and getattr(problem, "final_plan", None) is None
                and not getattr(problem, "sample_rows", None))


def refit_cost(study: Any, problem: Any) -> float:
    """Seconds to load the data, featurize and fit the study's best configuration again."""
    from optuna.trial import TrialState

    from mlsys_cli.models.families import get_family
    from mlsys_cli.models.study import FAMILY_PARAM

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return 0.0
    best = (min if study.direction.name == "MINIMIZE" else max)(done, key=lambda t: t.value)
    family = best.params.get(FAMILY_PARAM)
    featurize = max((s for k, s in problem.featurize_s.items() if k[0] == problem.key(get_family(family), 0)[0]), default=0.0) if family else 0.0
    cost = float(best.user_attrs.get("fit_s", best.duration.total_seconds() if best.duration else 0.0))
    refit = featurize + REFIT_RATE * cost
    factor = getattr(problem, "row_factor", 1.0)
    if factor > 1:
        # Trials on a row sample: the refit on every row costs up to that many times more (less:
        # a trial's time includes fixed costs), but never more than REFIT_SHARE of the budget.
        refit = min(factor * refit, REFIT_SHARE * (problem.job.budget_s or 0.0))
    return getattr(problem, "load_s", 0.0) + refit


# Tree nodes a forest member is written at per second (skops and deflate; see write_seconds):
# 20 trees on diamonds' 32k rows, 725k nodes, 9 MB, in 7.2 s at load 2.3.
WRITE_NODES_PER_S = 100_000.0


def write_seconds(est: Any) -> float:
    """Seconds writing a fitted model costs beyond :data:`SAVE_S`: a forest's trees, whose nodes
    grow with the rows (skops, then deflate: :data:`WRITE_NODES_PER_S`); 0 for other models."""
    inner = getattr(est, "estimator", None)
    nodes = sum(getattr(getattr(t, "tree_", None), "node_count", 0) for t in getattr(inner, "estimators_", None) or [])
    return nodes / WRITE_NODES_PER_S


# At most this share of --timeout is held back for the refit; a member whose refit would pass it is not refitted.
SHARE = 0.2
# A trial's fit also scores the validation rows at every round or epoch (early stopping); a refit
# does not. Refits on train + valid took 0.3-0.97 of their trials' scaled seconds (median ~0.6,
# 60 s runs of session 9), so the estimates count this share of them.
REFIT_RATE = 0.7
# Per model: reading the tables, reference statistics and train metrics (measured 0.1-0.3 s;
# a whole refit of a 1,220-row table took 0.18 s).
OVERHEAD_S = 0.2
# ... and per row of train + valid: after its fit, a refit computes the reference statistics and
# the train metrics of every row (predicting them). On 25k-43k rows this took seconds: diamonds'
# first member's refit ran past its estimate until the deadline cut it, and its post-fit work
# and the saving ended 3.8 s past the run's deadline (64.7 s for 60).
OVERHEAD_ROW_S = 5e-5
# The ensemble step starts from this many trials (final.TOP): the refit of each is planned.
ENSEMBLE_TOP = 3


def enabled(problem: Any) -> bool:
    """Whether the final model is refitted on train + valid: models held from the trials."""
    return bool(getattr(problem.job, "refit_valid", False) and problem.holds_models)


def cost(problem: Any, numbers: Sequence[int]) -> float:
    """Seconds to fit trials ``numbers`` again on train + valid (their training seconds for the
    rounds they kept, times :data:`REFIT_RATE`, and featurizing seconds, scaled by the rows, plus
    :func:`post_fit_seconds` each)."""
    from mlsys_cli.models.families import get_family

    n_train = len(problem.train_df)
    factor = (n_train + len(problem.valid_df)) / max(n_train, 1)
    total = 0.0
    for number in numbers:
        family = problem.held_family(number)
        featurize = problem.featurize_s.get(problem.key(get_family(family), 0), 0.0) if family else 0.0
        fit = problem.fit_s.get(number, 0.0) * kept_share(problem.held_model(number))
        total += factor * (REFIT_RATE * fit + featurize) + post_fit_seconds(problem)
    return total


def post_fit_seconds(problem: Any) -> float:
    """Seconds a refit on train + valid spends besides featurizing and fitting (:data:`OVERHEAD_S`
    and :data:`OVERHEAD_ROW_S` per row)."""
    return OVERHEAD_S + OVERHEAD_ROW_S * (len(problem.train_df) + len(problem.valid_df))


def kept_share(est: Any) -> float:
    """The share of a trial's rounds or epochs its model kept: early stopping trained past the
    best one (XGBoost 50 rounds, the MLP its patience), which the refit does not repeat."""
    info = getattr(est, "fit_info_", None) or {}
    done, kept = info.get("n_epochs") or info.get("n_estimators"), info.get("best_epoch")
    if kept is None and info.get("best_iteration") is not None:
        kept = int(info["best_iteration"]) + 1
    if not done or kept is None:
        return 1.0
    return min(max(float(kept) / float(done), 0.1), 1.0)


def within_share(problem: Any, numbers: Sequence[int], budget_s: float) -> list[int]:
    """The trials of ``numbers`` (best first) refitted in ``budget_s`` seconds: each in turn
    whose refit :func:`cost` still fits what the ones before it left (a costly member is passed
    over, a cheaper one after it may still fit)."""
    chosen, left = [], budget_s
    for number in numbers:
        need = cost(problem, [number])
        if need <= left:
            chosen.append(number)
            left -= need
    return chosen


def planned(problem: Any, study: Any = None) -> list[int]:
    """The held trials the final step is planned to refit, best first: the ensemble's members once
    it is chosen (``problem.final_plan``, a tuple of trial numbers), its candidates
    (:func:`~mlsys_cli.models.ensemble.pick_trials` of the held trials, :data:`ENSEMBLE_TOP`) while
    an ensemble may be saved, else the best held trial."""
    held = sorted((h[0], h[1]) for kept in problem.held.values() for h in kept)
    decided = getattr(problem, "final_plan", None)
    if isinstance(decided, tuple):
        return list(decided)  # the ensemble's members
    if not held:
        return []
    if study is None or not ensemble_planned(problem):
        return [held[0][1]]
    from optuna.trial import TrialState

    from mlsys_cli.models.ensemble import pick_trials

    numbers = {n for _, n in held}
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number in numbers]
    picked = pick_trials(done, ENSEMBLE_TOP, bool(problem.higher))
    return [t.number for t in picked] or [held[0][1]]


def reserve(problem: Any, study: Any = None) -> float:
    """Seconds the search holds back for the refit: the refit of the planned members
    (:func:`planned`) that fit in :data:`SHARE` of the budget (:func:`within_share`). Planning only
    the best trial's refit left 5-8 s of 60 unused whenever the ensemble won (its three members'
    refit did not fit in what was left, and was not done); planning the candidates' and handing
    what a single final model does not use back to the search (``tune``'s resume) spends it."""
    if not enabled(problem) or not problem.job.budget_s:
        return 0.0
    return cost(problem, within_share(problem, planned(problem, study), SHARE * problem.job.budget_s))


# The final model chosen by k-fold on train + valid (tuning/select): what the search plans for it.

CV_FOLDS = 5
# ... or this many, where the folds of CV_MIN_CANDIDATES candidates do not fit at CV_FOLDS: each
# fold fits (k-1)/k of the rows k times, so 3 folds cost half of 5 (2.7 vs 5.3 fits of the
# training rows) and still score every row of train + valid (on attrition, 1,176 rows against
# 294 validation rows, where two forests' 5 folds were estimated at 22.7 s of a 15 s share).
CV_FOLDS_MIN = 3
# The search's best distinct configurations cross-validated (best of each family first), before the defaults trials.
CV_TOP = 4
# At most this share of --timeout goes to the folds; a table whose planned candidates cost more is chosen on the validation rows.
CV_SHARE = 0.25
# At least this many candidates must fit in the share for the folds to be worth running.
CV_MIN_CANDIDATES = 2


def selection_applies(problem: Any) -> bool:
    """Whether the final model may be chosen by cross-validation: models held from trials on
    every training row (``--save-model``, ``--valid``, no row sample) refitted on train + valid,
    in one process, under a time budget, and no time order (random folds would train on the
    future of a time-ordered split: ``--time-col``, or :attr:`~.problem.Problem.split_order`)."""
    return folds_could_apply(problem) and not getattr(problem, "split_order", None)


def folds_could_apply(problem: Any) -> bool:
    """:func:`selection_applies` but for the split's order (which the report then names)."""
    job = problem.job
    return bool(job.deadline is not None and getattr(job, "budget_s", None) and getattr(job, "refit_valid", False) and problem.holds_models
                and getattr(job, "workers", None) == 1 and getattr(job, "engine", None) is None and not getattr(job, "time_col", None))


def selection_candidates(study: Any, problem: Any) -> list[Any]:
    """The trials the folds score, in order: the best trials of the two best families, each
    family's first defaults trial (the safety net: the folds run while time is left, and the
    defaults are cheap), the rest of the :data:`CV_TOP` best distinct configurations (the best
    of each family first), then the other defaults trials (the library defaults ``auto`` adds);
    best on the validation rows first within each group."""
    from optuna.trial import TrialState

    from mlsys_cli.models.ensemble import pick_trials
    from mlsys_cli.models.study import FAMILY_PARAM

    # An MLP whose early-stopped epochs are unknown (not held, not recorded) would train all its
    # epochs on the folds.
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None
            and (t.params.get(FAMILY_PARAM) != "mlp" or "best_epoch" in t.user_attrs or problem.held_model(t.number) is not None)]

    def ranked(trials: Any) -> list[Any]:
        return sorted(trials, key=lambda t: (-t.value if problem.higher else t.value, t.number))

    top = ranked(pick_trials(done, CV_TOP, bool(problem.higher)))
    defaults = [t for t in sorted(done, key=lambda t: t.number) if t.user_attrs.get("defaults")]
    firsts: dict[Any, Any] = {}
    for t in defaults:
        if not t.user_attrs.get("overrides"):
            firsts.setdefault(t.params.get(FAMILY_PARAM), t)
    order, seen = [], set()
    for t in top[:2] + ranked(firsts.values()) + top[2:] + ranked(defaults):
        if t.number not in seen:
            seen.add(t.number)
            order.append(t)
    return order


def fold_scale(problem: Any, folds: int = CV_FOLDS) -> float:
    """A fold's training rows over a trial's: (k-1)/k of train + valid, over train."""
    n_train = max(len(problem.train_df), 1)
    return (len(problem.train_df) + len(problem.valid_df)) * (folds - 1) / folds / n_train


def selection_cost(problem: Any, trials: Sequence[Any], folds: int = CV_FOLDS) -> float:
    """Estimated seconds to cross-validate ``trials`` with ``folds`` folds: each fold's fit (the
    trial's measured training seconds, :data:`REFIT_RATE` of them, scaled by the rows) and each
    featurizer recipe's fit per fold."""
    from mlsys_cli.models.families import get_family
    from mlsys_cli.models.study import FAMILY_PARAM

    if not trials:
        return 0.0
    scale = fold_scale(problem, folds)
    fits = sum(folds * scale * REFIT_RATE * float(t.user_attrs.get("fit_s") or 0.0) for t in trials)
    presets = {problem.key(get_family(t.params[FAMILY_PARAM]), 0) for t in trials}
    return fits + sum(folds * scale * problem.featurize_s.get(k, 0.0) for k in presets)


def selection_plan(study: Any, problem: Any) -> tuple[int, list[Any]]:
    """The folds and the candidates whose folds the search holds back time for: the longest
    prefix of :func:`selection_candidates` that costs at most :data:`CV_SHARE` of the budget with
    :data:`CV_FOLDS` folds, else with :data:`CV_FOLDS_MIN` (no candidates when fewer than
    :data:`CV_MIN_CANDIDATES` fit either way, or the folds do not apply)."""
    if not selection_applies(problem):
        return CV_FOLDS, []
    picked = selection_candidates(study, problem)
    limit = CV_SHARE * float(problem.job.budget_s)
    for folds in (CV_FOLDS, CV_FOLDS_MIN):
        n = 0
        while n < len(picked) and selection_cost(problem, picked[:n + 1], folds) <= limit:
            n += 1
        if n >= CV_MIN_CANDIDATES:
            return folds, picked[:n]
    return CV_FOLDS, []


def selection_planned(study: Any, problem: Any) -> list[Any]:
    """The candidates of :func:`selection_plan`."""
    return selection_plan(study, problem)[1]


def selection_reserve(study: Any, problem: Any) -> float:
    """Seconds the search holds back for the folds (:func:`selection_plan`)."""
    folds, planned = selection_plan(study, problem)
    return selection_cost(problem, planned, folds)
