"""The final model of a run (``--save-model``): the ensemble of the best trials where it is
better on the validation rows, else the best trial.

With ``--valid`` and the ensemble step on (the default), the :data:`TOP` best distinct
configurations of the study (the best of each family first) are combined by greedy selection
(:func:`mlsys_cli.models.ensemble.build_ensemble`, ``method="select"``): the fitted models this
process holds in memory (:meth:`.problem.Problem.hold`) when the best trial's is among them,
else the models the search kept in the study's artifact store (:mod:`.kept`), retrained when a
model was not kept. The ensemble is the final model when its cross-fitted score on the
validation rows beats its best member (a gain above zero): decided on validation data only,
like every choice of the search. It is still one bundle, which ``predict``, ``export`` and
``serve`` take like any model. Otherwise the best trial's held model is saved as it is (a refit
would fit the same model again); without one (trials on a row sample, cross-validation, the
best trial run by another worker) the best configuration is retrained as ``train`` would: on
train + valid with the rounds its trial chose (on the training rows with ``--no-refit-valid``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from mlsys_cli.errors import MlsysError
from mlsys_cli.models.tuning.budget import ENSEMBLE_TOP, SAVE_S, WRITE_NODES_PER_S, write_seconds  # noqa: F401
from mlsys_cli.models.tuning.problem import Problem

TOP = ENSEMBLE_TOP
# The ensemble step costs about this many times building its members' bundles (see _no_time_reason).
ENSEMBLE_COST = 3.0


@dataclass(frozen=True)
class Choice:
    """What the final model is, before its refit on train + valid: ``bundle`` built from the
    ``held`` members (None: the best configuration is retrained, nothing was held) and ``info``
    (``{"model": "ensemble"|"single", ...}``)."""

    bundle: Any
    held: list
    info: dict
    # Chosen by cross-validation on train + valid (:mod:`.select`): refitted from it, not from ``bundle``.
    selection: Any = None


def choose(study: Any, problem: Problem, family: str) -> Choice:
    """The final model of the study as it stands: the ensemble of the best held trials where its
    cross-fitted gain on the validation rows is above zero, else the best trial (of ``family``)."""
    start = time.time()
    why = no_ensemble_reason(study, problem)
    held = _held_members(study, problem, TOP if why is None else 1)
    why = why or _no_time_reason(problem, held, time.time() - start)
    if why is None:
        try:
            bundle, info = _ensemble(study, problem, held)
            if info["gain"] is not None and info["gain"] > 0:
                return Choice(bundle, held, {"model": "ensemble", **info, "verdict": saved_verdict(info)})
            why = f"the ensemble's cross-fitted gain on the validation rows ({info['gain']}) is not above 0"
        except MlsysError as exc:
            why = f"ensemble step failed: {exc}"
    return single(study, problem, family, why, held[:1])


def saved_verdict(info: dict[str, Any]) -> str:
    """The ensemble step's verdict as tune reports it once the ensemble is saved: tune keeps an
    ensemble whose cross-fitted gain on the validation rows is above 0, so the stricter advice of
    ``mlsys ensemble`` (a 95% interval clear of 0, else "use the best member alone") would
    contradict the saved model; its reason and interval are kept."""
    verdict = str(info.get("verdict") or "")
    if not verdict.startswith("not worth it: "):
        return verdict
    reason = verdict[len("not worth it: "):].split("; use ", 1)[0]
    return f"saved: gain {info['gain']:+.4f} in {info['metric']} above 0 on the validation rows (tune's rule), though {reason}"


def single(study: Any, problem: Problem, family: str, why: str | None, held: list | None = None) -> Choice:
    """The best trial as the final model (``why`` not an ensemble): its fitted model held in
    memory (``held``, else looked up again), or None to retrain it."""
    held = held if held is not None else _held_members(study, problem, 1)
    if held:
        return Choice(held[0][1], held[:1], {"model": "single", "family": family, "reason": why, "source": "held"})
    return Choice(None, [], {"model": "single", "family": family, "reason": why, "source": "retrained"})


def final_model(study: Any, problem: Problem, doc: Mapping[str, Any], choice: Choice | None = None) -> tuple[Any, dict[str, Any]]:
    """The bundle ``--save-model`` writes and what it is (``{"model": "ensemble"|"single", ...}``).

    ``doc`` is the best-parameters document (family and parameters of the best trial); ``choice``
    the final model already chosen (:func:`choose`; chosen here when None), refitted on train +
    valid here.
    """
    choice = choice or choose(study, problem, doc["family"])
    if choice.selection is not None:
        from mlsys_cli.models.tuning.select import final_bundle

        bundle, info = final_bundle(study, problem, choice.selection)
        if bundle is not None:
            return bundle, info
        # No refit fitted: the best held trial as it was fitted on the training rows.
        choice = single(study, problem, doc["family"], "no time to refit the cross-validated choice")
        return choice.bundle, {**choice.info, "selection": info["selection"], "refit": info["refit"]}
    if choice.bundle is None:
        bundle, rows = _refit(study, problem, doc)
        return bundle, {**choice.info, "refit": {"rows": rows}}
    # The best trial's own fitted model or the ensemble of held ones, refitted on train + valid.
    return _with_valid_rows(study, problem, choice.bundle, choice.held, choice.info)


def _with_valid_rows(study: Any, problem: Problem, bundle: Any, held: list[tuple[str, Any]],
                     info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``bundle`` (built from ``held`` models) refitted on train + valid where it can be
    (:func:`.refit.refit_final`); ``info`` gains ``refit``, saying what was done or why not."""
    from mlsys_cli.models.tuning.refit import refit_final

    members = [(int(b.manifest["recipe"]["study"]["trial"]), b.predictor) for _, b in held]
    if info["model"] == "ensemble":
        kept = {id(p) for p in bundle.predictor.members}
        members = [(n, p) for n, p in members if id(p) in kept]
        if len(members) != len(kept):
            return bundle, {**info, "refit": {"rows": None, "reason": "ensemble members not held in memory"}}
    bundle, done = refit_final(study, problem, bundle, members)
    return bundle, {**info, "refit": done}


def _no_time_reason(problem: Problem, held: list[tuple[str, Any]], built_s: float) -> str | None:
    """Why the ensemble step is skipped for lack of time (None: it runs). Combining held models
    scores each on the validation rows again, cross-fits the selection and writes every member:
    about :data:`ENSEMBLE_COST` times what building their bundles took (measured ~1.5x), plus
    writing their forests (:func:`write_seconds`: a 32k-row forest member took 30 s)."""
    deadline = problem.job.deadline
    if deadline is None or len(held) < 2:
        return None
    need = ENSEMBLE_COST * built_s + SAVE_S + sum(write_seconds(getattr(getattr(b, "predictor", None), "estimator", None)) for _, b in held)
    if deadline - time.time() < need:
        return f"no time left for the ensemble step (~{need:.1f}s needed)"
    return None


def _refit(study: Any, problem: Problem, doc: Mapping[str, Any]) -> tuple[Any, int | None]:
    """The best configuration retrained as ``train`` would, and the rows it was fitted on (None:
    where the trials trained, on a cluster).

    With ``job.refit_valid`` (``--valid``, not ``--no-refit-valid``) it is fitted on train + valid
    with the rounds or epochs its trial chose (:func:`.refit.all_rows_params`), as every held model
    is refitted (:mod:`.refit`): on flights (trials on a 30k-row sample of 196k, a time-ordered
    split) the HistGradientBoosting defaults fitted on the training rows alone scored 0.6109 test
    AUC, on train + valid 0.6160. Otherwise on the training rows, early stopping on ``--valid``.
    """
    from mlsys_cli.models.dask_trials import refit_on_cluster
    from mlsys_cli.models.train import FitRun, TrainSpec, train_model
    from mlsys_cli.models.tuning.refit import all_rows_params, fitted_model

    job = problem.job
    # The refit is inside the budget: iterative families stop at the round the deadline falls on.
    run = FitRun(timeout=max(job.deadline - time.time() - SAVE_S, 1.0)) if job.deadline is not None else FitRun()
    spec = TrainSpec(family=doc["family"], target=problem.target, params=doc["params"],
                     features=dict(job.features) or None, seed=int(job.seed))
    bundle = refit_on_cluster(job, spec, run)  # where the trials trained, when the family can
    if bundle is not None:
        return bundle, None
    if job.refit_valid and job.valid is not None:
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == doc["trial"])
        params = all_rows_params(doc["family"], doc["params"], fitted_model(problem, trial))
        bundle, _ = train_model([job.train, job.valid], spec.replace(params=params), run=run)
        return bundle, len(problem.train_df) + len(problem.valid_df)
    bundle, _ = train_model(job.train, spec, valid=job.valid, run=run)
    return bundle, len(problem.train_df)


def _held_members(study: Any, problem: Problem, top: int) -> list[tuple[str, Any]]:
    """Bundles of the ``top`` trials an ensemble starts from (:func:`~mlsys_cli.models.ensemble.pick_trials`)
    among those whose fitted models are held in memory, best first; empty when the study's best
    trial is not held (run by another worker, or trials on a row sample)."""
    from optuna.trial import TrialState

    from mlsys_cli.models.ensemble import pick_trials
    from mlsys_cli.models.families import get_family
    from mlsys_cli.models.tuning.kept import trial_bundle
    from mlsys_cli.models.study import FAMILY_PARAM

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    held = [t for t in done if problem.held_model(t.number) is not None]
    best = (max if problem.higher else min)(done, key=lambda t: t.value) if done else None
    if best is None or best.number not in {t.number for t in held}:
        return []
    picked = pick_trials(_writable(held, best.number, problem), top, problem.higher)
    picked.sort(key=lambda t: (-t.value if problem.higher else t.value, t.number))
    return [(f"{problem.job.study}#trial{t.number}({t.params[FAMILY_PARAM]})",
             trial_bundle(t, problem, get_family(t.params[FAMILY_PARAM]), problem.held_model(t.number), t.value))
            for t in picked]


def _writable(trials: list[Any], best: int, problem: Problem) -> list[Any]:
    """The held ``trials`` an ensemble may take: the best (trial number ``best``) and each other
    whose model can be written in a :data:`TOP`-th of the time left.

    A forest's trees grow with the rows and skops writes them node by node (:func:`write_seconds`):
    on a 32k-row table one forest member needed ~7 s of the ~6 s left, and counting it skipped the
    whole ensemble step, although the next best trial of another family fitted easily."""
    deadline = problem.job.deadline
    if deadline is None:
        return list(trials)
    allowance = max(deadline - time.time() - SAVE_S, 0.0) / TOP
    return [t for t in trials if t.number == best or write_seconds(problem.held_model(t.number)) <= allowance]


def no_ensemble_reason(study: Any, problem: Problem) -> str | None:
    """Why the final model is not an ensemble candidate (None: it is)."""
    from optuna.trial import TrialState

    job = problem.job
    if job.valid is None:
        return "cross-validation: no validation rows to decide on"
    if not job.ensemble:
        return "--no-ensemble"
    if problem.sample_rows:
        return (f"trials fitted on a sample of {problem.sample_rows} of {len(problem.train_df)} training rows: "
                "the best configuration is retrained on every row")
    if job.storage is None and not problem.holds_models:
        return "no storage to combine the trials from"
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return "fewer than two completed trials"
    if job.deadline is not None and job.deadline - time.time() <= 0:
        return "no time left"
    return None


def _ensemble(study: Any, problem: Problem, held: list[tuple[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The greedy-selection ensemble of the study's best trials and its summary: from the models
    held in memory when the best trial's is, else from the study's kept models (retraining those
    not kept)."""
    from mlsys_cli.models.ensemble import EnsembleSpec, KeptPredictor, StudySource, build_ensemble, study_members

    job = problem.job
    deadline = job.deadline
    members, skipped = held, []
    sources = ["held"] * len(members)
    if len(members) < 2 and job.storage is not None:
        source = StudySource(job.storage, job.study, top=TOP, train=job.train, features=dict(job.features) or None)
        members, skipped = study_members(source, seed=int(job.seed), deadline=deadline,
                                         reserve=0.0 if deadline is None else 0.3 * max(deadline - time.time(), 0.0))
        sources = ["kept" if isinstance(b.predictor, KeptPredictor) else "retrained" for _, b in members]
    if len(members) < 2:
        raise MlsysError("fewer than two fitted models to combine")
    records = [{"study": job.study, "trial": name, "source": src} for (name, _), src in zip(members, sources)]
    bundle, result = build_ensemble(members, [job.valid], EnsembleSpec(method="select", seed=int(job.seed)),
                                    member_records=records, deadline=deadline)
    return bundle, {"gain": result.gain.get("value"), "metric": result.metric, "verdict": result.verdict,
                    "members": [{"model": m["model"], "weight": m.get("weight"), "source": m.get("source")}
                                for m in result.members],
                    "skipped": skipped + list(result.skipped)}
