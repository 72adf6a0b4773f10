"""The final model chosen by k-fold cross-validation on train + valid, where the budget affords it.

On a small table the validation rows that decide between the search's best trials are few
(206-586 on the benchmark's small tables), and near-equal candidates swap places with the noise:
the validation-best trial or ensemble lost on test to a family's default configuration the
search had tried first (attrition, ames). Where the budget affords it (its cost is estimated
from the trials' measured training seconds, :func:`~.budget.selection_cost`), the top few candidates (the best of
each family first, :func:`~mlsys_cli.models.ensemble.pick_trials`) and every defaults trial are
scored by :data:`CV_FOLDS`-fold cross-validation on train + valid instead (:data:`CV_FOLDS_MIN` folds
where five do not fit, :func:`~.budget.selection_plan`), each configuration with
the rounds early stopping chose, exactly as its refit on train + valid will train it. Their
out-of-fold predictions decide both questions: the best single candidate, and whether the
greedy-selection ensemble of the best few (its score cross-fitted over the same out-of-fold
predictions) beats it. The chosen members are then refitted on train + valid
(:func:`final_bundle`), their refit seconds known from the folds' measured fits.

Under ``--timeout`` the search holds back the cost of the planned candidates' folds
(:func:`~.budget.selection_reserve`, at most :data:`~.budget.CV_SHARE` of the budget) on top of the refit; the folds then run
best candidate first while the time left allows (a candidate that does not fit is left out).
Same seed, same folds: the choice is deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mlsys_cli.models.tuning.budget import (CV_FOLDS, CV_FOLDS_MIN, CV_MIN_CANDIDATES, CV_SHARE, ENSEMBLE_TOP, SAVE_S,
                                             folds_could_apply, post_fit_seconds, selection_applies, selection_candidates, selection_cost,
                                             selection_plan)
from mlsys_cli.models.tuning.problem import Problem

@dataclass(frozen=True)
class Scored:
    """Out-of-fold predictions of the candidates that were cross-validated.

    Attributes
    ----------
    trials : list of FrozenTrial
        The candidates scored, in the order they ran (best on the validation rows first).
    P : ndarray [M, N] or [M, N, C]
        Their out-of-fold scores on train + valid (rows in :attr:`Problem.train_df` then ``valid_df`` order).
    fit_s : list of float
        Each candidate's training and featurizing seconds over its folds.
    estimated_s : list of float
        What the trials' seconds estimated for them (:func:`~.budget.selection_cost`).
    skipped : list of int
        Candidates left out for lack of time.
    """

    trials: list
    P: Any
    fit_s: list
    skipped: list
    seconds: float
    estimated_s: list = field(default_factory=list)
    folds: int = CV_FOLDS


@dataclass(frozen=True)
class Selection:
    """What the folds chose: ``members`` (trial numbers, best first) combined by ``combiner``
    (None: the single best candidate), and the record the report shows under ``final.selection``."""

    members: tuple
    combiner: Any
    scored: Scored
    record: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)


def cross_validate(problem: Problem, trials: Sequence[Any], end: float | None, folds: int = CV_FOLDS) -> Scored:
    """Out-of-fold predictions of ``trials`` on train + valid, in order, each as its refit
    trains it (:func:`~.refit.all_rows_params`).

    ``end`` is when the chosen model's refit must be done too: a candidate is left out when its
    estimated folds (the trials' seconds, rescaled by what the candidates before measured) and
    the refit of the :data:`~.budget.ENSEMBLE_TOP` costliest candidates so far, itself included
    (their folds' measured seconds, :func:`refit_seconds`), would pass it; so is one a fit could
    not finish. Planning the refit from the folds instead of from the trials' estimates left
    4 s of 60 unused on ames."""
    import numpy as np

    start = time.time()
    k = folds
    frame, y, folds = _fold_data(problem, k)
    cache: dict[Any, tuple[Any, Any, float]] = {}
    done, preds, secs, skipped, estimates = [], [], [], [], []
    ratio = 1.0
    for trial in trials:
        raw = selection_cost(problem, [trial], k)
        estimate = ratio * raw
        refits = sorted((_refit_of(problem, s, k) for s in secs + [estimate]), reverse=True)
        stop = None if end is None else end - sum(refits[:ENSEMBLE_TOP])
        if stop is not None and time.time() + estimate > stop:
            skipped.append(trial.number)
            continue
        began = time.time()
        out = _oof(problem, trial, (frame, y, folds), cache, stop)
        if out is None:
            skipped.append(trial.number)
            continue
        took = time.time() - began
        estimates.append(raw)
        if sum(estimates) > 0:
            # The candidates so far measure how far off the trials' seconds are for the folds.
            ratio = min(max(sum(secs + [took]) / sum(estimates), 0.2), 5.0)
        done.append(trial)
        preds.append(out)
        secs.append(took)
    P = np.stack(preds) if preds else np.zeros((0, len(frame)))
    return Scored(done, P, secs, skipped, round(time.time() - start, 3), estimates, k)


def _fold_data(problem: Problem, k: int = CV_FOLDS) -> tuple[Any, Any, list[tuple[Any, Any]]]:
    """Train + valid as one frame, its encoded target and the seeded folds (stratified for classes)."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    from mlsys_cli.models import train as tr

    frame = _frame(problem)
    y = tr.encode_target(problem.task, frame[problem.target], problem.classes, problem.job.train)
    seed = int(problem.job.seed)
    if problem.task != "regression" and np.bincount(np.asarray(y, dtype=int)).min() >= k:
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(frame)), y)
    else:
        splits = KFold(k, shuffle=True, random_state=seed).split(np.zeros(len(frame)))
    return frame, y, list(splits)


def _oof(problem: Problem, trial: Any, data: tuple[Any, Any, list], cache: dict, stop: float | None) -> Any:
    """One candidate's out-of-fold scores (None: a fit was cut by ``stop``)."""
    import numpy as np

    from mlsys_cli.models import train as tr
    from mlsys_cli.models.families import get_family
    from mlsys_cli.models.study import FAMILY_PARAM
    from mlsys_cli.models.train import EstimatorSpec, FitData, FitRun, fit_estimator
    from mlsys_cli.models.tuning.refit import all_rows_params, fitted_model

    frame, y, folds = data
    family = get_family(trial.params[FAMILY_PARAM])
    params = all_rows_params(family.name, trial.user_attrs["params"], fitted_model(problem, trial))
    params.update(family.execution_params(problem.job.workers, len(problem.train_df)))
    spec = EstimatorSpec(problem.task, problem.n_classes, params, int(problem.job.seed))
    out = None
    for i, (fit_idx, held) in enumerate(folds):
        key = (problem.key(family, 0)[0], i)
        if key not in cache:
            began = time.perf_counter()
            fz = tr.make_featurizer(problem.target, family.preset, dict(problem.job.features), int(problem.job.seed))
            X = fz.fit_transform(frame.iloc[fit_idx])
            cache[key] = (X, fz.transform(frame.iloc[held]), time.perf_counter() - began)
        X, Xh, _ = cache[key]
        timeout = None if stop is None else max(stop - time.time(), 0.5)
        est = fit_estimator(family, spec, FitData(X, y[fit_idx]), FitRun(timeout=timeout))
        if (getattr(est, "fit_info_", None) or {}).get("stopped_by") == "timeout":
            return None
        scores = np.asarray(est.predict(Xh) if problem.task == "regression" else est.predict_proba(Xh), dtype=np.float64)
        if out is None:
            out = np.zeros((len(frame),) + scores.shape[1:])
        out[held] = scores
    return out


def decide(problem: Problem, scored: Scored) -> Selection:
    """The best single candidate by its out-of-fold score, or the greedy-selection ensemble of
    the best :data:`~.budget.ENSEMBLE_TOP` (the best of each family first) where its score,
    cross-fitted over the same out-of-fold predictions, beats it."""
    import numpy as np

    from mlsys_cli.models.combiner import Combiner, cross_fit, score
    from mlsys_cli.models.ensemble import FOLDS as COMBINER_FOLDS, pick_trials
    from mlsys_cli.models.study import FAMILY_PARAM
    from mlsys_cli.models import train as tr

    y = tr.encode_target(problem.task, _frame(problem)[problem.target], problem.classes, problem.job.train)
    values = [score(problem.task, problem.metric, y, p) for p in scored.P]
    order = sorted(range(len(values)), key=lambda i: (-values[i] if problem.higher else values[i], i))
    best = order[0]
    seed = int(problem.job.seed)
    proxies = [_Proxy(t, values[i]) for i, t in enumerate(scored.trials)]
    pool = [proxies.index(p) for p in pick_trials(proxies, ENSEMBLE_TOP, bool(problem.higher))]
    pool.sort(key=lambda i: (-values[i] if problem.higher else values[i], i))
    rows = [{"trial": t.number, "family": t.params[FAMILY_PARAM], "defaults": bool(t.user_attrs.get("defaults")),
             "valid": round(float(t.value), 6), "cv": round(values[i], 6), "seconds": round(scored.fit_s[i], 3),
             "estimated_s": round(scored.estimated_s[i], 3) if scored.estimated_s else None}
            for i, t in enumerate(scored.trials)]
    record = {"method": "cv", "folds": scored.folds, "rows": int(scored.P.shape[1]), "metric": problem.metric,
              "candidates": rows, "skipped": list(scored.skipped), "seconds": scored.seconds,
              "best_single": scored.trials[best].number, "ensemble_cv": None, "gain": None}
    if len(pool) >= 2 and problem.job.ensemble:
        P = scored.P[pool]
        oof = cross_fit("select", problem.task, P, y, COMBINER_FOLDS, seed, problem.metric)
        ens = score(problem.task, problem.metric, y, oof)
        gain = (ens - values[best]) if problem.higher else (values[best] - ens)
        record.update(ensemble_cv=round(ens, 6), gain=round(gain, 6))
        if gain > 0:
            combiner = Combiner("select", problem.task, metric=problem.metric, seed=seed).fit(P, y)
            keep = [pool[i] for i, w in enumerate(combiner.weights_) if w > 0]
            if len(keep) >= 2:
                record["chosen"] = "ensemble"
                return Selection(tuple(scored.trials[i].number for i in keep), combiner, scored, record)
    record["chosen"] = "single"
    return Selection((scored.trials[best].number,), None, scored, record)


@dataclass(frozen=True)
class _Proxy:
    """A candidate as :func:`~mlsys_cli.models.ensemble.pick_trials` reads trials, valued by its out-of-fold score."""

    trial: Any
    value: float

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def params(self) -> Mapping[str, Any]:
        return self.trial.params

    @property
    def user_attrs(self) -> Mapping[str, Any]:
        return self.trial.user_attrs


def refit_seconds(problem: Problem, scored: Scored, number: int) -> float:
    """Seconds to refit candidate ``number`` on train + valid: its folds' measured seconds per
    fold, scaled from a fold's rows to all of them, plus the post-fit work."""
    return _refit_of(problem, scored.fit_s[[t.number for t in scored.trials].index(number)], scored.folds)


def _refit_of(problem: Problem, folds_s: float, k: int = CV_FOLDS) -> float:
    """The refit on train + valid of a candidate whose folds took ``folds_s`` seconds: a fold fits
    (k-1)/k of the rows, so the refit costs a fold's seconds times k/(k-1)."""
    return folds_s / (k - 1) + post_fit_seconds(problem)


def choose(study: Any, problem: Problem) -> Selection | None:
    """Cross-validate the candidates (:func:`~.budget.selection_candidates`, in order, while the time
    left before the refit and the saving allows) and decide (:func:`decide`); None when the folds
    do not apply or fewer than two candidates could be scored (the validation rows decide)."""
    folds, planned = selection_plan(study, problem)
    if not planned:
        problem.selection_skipped = _not_planned_reason(study, problem)
        return None
    deadline = problem.job.deadline
    scored = cross_validate(problem, selection_candidates(study, problem), None if deadline is None else deadline - SAVE_S, folds)
    if not _enough(problem, planned, scored):
        best = [t.number for t in planned[:CV_MIN_CANDIDATES]]
        missed = [n for n in best if n not in {t.number for t in scored.trials}]
        problem.selection_skipped = (f"the folds of trial{'s' if len(missed) > 1 else ''} {', '.join(map(str, missed))} (of the "
                                     f"{len(best)} best candidates: trials {', '.join(map(str, best))}) did not fit in the time left "
                                     f"({len(scored.trials)} candidate{'s' if len(scored.trials) != 1 else ''} scored)")
        return None
    return decide(problem, scored)


def _not_planned_reason(study: Any, problem: Problem) -> str | None:
    """Why no candidate's folds were planned (None: the folds do not apply to this run)."""
    if not selection_applies(problem):
        order = getattr(problem, "split_order", None) if folds_could_apply(problem) else None
        # The validation rows stand for other rows (later times, other groups): they decide.
        return f"random folds would mix the validation rows into training: {order}" if order else None
    picked = selection_candidates(study, problem)[:CV_MIN_CANDIDATES]
    if len(picked) < CV_MIN_CANDIDATES:
        return f"fewer than {CV_MIN_CANDIDATES} candidates to compare"
    return (f"{CV_FOLDS_MIN} folds of the {CV_MIN_CANDIDATES} best candidates (~{selection_cost(problem, picked, CV_FOLDS_MIN):.1f}s estimated) "
            f"do not fit in {CV_SHARE:.0%} of the budget ({CV_SHARE * float(problem.job.budget_s):.1f}s)")


def _enough(problem: Problem, planned: Sequence[Any], scored: Scored) -> bool:
    """Whether the folds scored enough to decide: at least :data:`~.budget.CV_MIN_CANDIDATES`, the
    best trials of the two best families on the validation rows among them. On diamonds the folds
    of the best trial ran past their estimate and only a linear defaults trial 2x worse fitted
    after it: an 'ensemble' of the two, chosen over the validation rows' better answer (552 vs
    530 RMSE on test)."""
    # The candidates start with them (selection_candidates), and at least those two are planned.
    return len(scored.trials) >= CV_MIN_CANDIDATES and {t.number for t in planned[:2]} <= {t.number for t in scored.trials}


def final_bundle(study: Any, problem: Problem, selection: Selection) -> tuple[Any, dict[str, Any]]:
    """The chosen model refitted on train + valid: the single candidate, or the ensemble of the
    chosen members with the weights their out-of-fold predictions gave. A member whose refit
    does not fit in the time left is left out (an ensemble then re-weights the others; with
    none left the best held trial is saved as it was fitted on the training rows)."""
    from mlsys_cli.models.tuning.refit import fit_all_rows, worth_trying

    deadline = problem.job.deadline
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    start = time.time()
    fitted, estimated = [], 0.0
    for number in selection.members:
        need = refit_seconds(problem, selection.scored, number)
        if (deadline is not None and time.time() + need + SAVE_S > deadline and fitted
                and not worth_trying(problem, trials[number], need, deadline - SAVE_S - time.time())):
            continue
        estimated += need
        bundle = fit_all_rows(problem, trials[number], None if deadline is None else deadline - SAVE_S - post_fit_seconds(problem))
        if bundle is not None:
            fitted.append((number, bundle))
    done = {"rows": len(problem.train_df) + len(problem.valid_df), "seconds": round(time.time() - start, 3),
            "estimated_s": round(estimated, 3), "refitted": len(fitted), "of": len(selection.members)}
    info = {"selection": selection.to_dict(), "refit": done}
    if not fitted:
        return None, {**info, "refit": {**done, "rows": None, "reason": "no time for it"}}
    if len(fitted) == 1:
        t = trials[fitted[0][0]]
        from mlsys_cli.models.study import FAMILY_PARAM

        return fitted[0][1], {"model": "single", "family": t.params[FAMILY_PARAM], "source": "refitted",
                              "reason": _single_reason(selection, len(fitted)), **info}
    bundle, result = _ensemble_of(problem, selection, fitted)
    return bundle, {"model": "ensemble", "gain": selection.record.get("gain"), "metric": problem.metric,
                    "verdict": result.verdict, "members": [{"model": m["model"], "weight": m.get("weight"), "source": m.get("source")}
                                                           for m in result.members], "skipped": [], **info}


def _single_reason(selection: Selection, refitted: int) -> str:
    if selection.combiner is not None and refitted < len(selection.members):
        return "the ensemble's other members did not fit in the time left"
    gain = selection.record.get("gain")
    if gain is None:
        return "fewer than two candidates cross-validated"
    return f"the ensemble's cross-validated gain over the best candidate ({gain}) is not above 0"


def _ensemble_of(problem: Problem, selection: Selection, fitted: Sequence[tuple[int, Any]]) -> tuple[Any, Any]:
    """The ensemble bundle of the refitted members, weighted on their out-of-fold predictions."""
    from mlsys_cli.models.ensemble import EnsembleSpec, ensemble_from_scores

    numbers = [t.number for t in selection.scored.trials]
    P = selection.scored.P[[numbers.index(n) for n, _ in fitted]]
    named = [(f"{problem.job.study}#trial{n}({b.manifest['recipe']['family']})", b) for n, b in fitted]
    records = [{"study": problem.job.study, "trial": name, "source": "refitted on train + valid"} for name, _ in named]
    frame = _frame(problem)
    data = [r for role in ("train", "valid") for r in (problem.data_records()[role] or [])]
    return ensemble_from_scores(named, P, frame, EnsembleSpec(method="select", seed=int(problem.job.seed)),
                                member_records=records, data_records=data,
                                evaluated_on=f"train + valid ({selection.scored.folds}-fold out-of-fold predictions; ensemble cross-fitted on them)")


def _frame(problem: Problem) -> Any:
    """Train + valid as one frame (the folds' rows, in this order)."""
    import pandas as pd

    return pd.concat([problem.train_df, problem.valid_df], ignore_index=True)
