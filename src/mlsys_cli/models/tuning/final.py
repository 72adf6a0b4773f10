"""The final model of a run (``--save-model``): the ensemble of the best trials where it is
better on the validation rows, else the best trial retrained.

With ``--valid`` and the ensemble step on (the default), the :data:`TOP` best distinct
configurations of the study (the best of each family first) are combined by greedy selection
(:func:`mlsys_cli.models.ensemble.build_ensemble`, ``method="select"``), from the fitted models the
search kept (:mod:`.kept`) or retrained when a model was not kept. The ensemble is the final model
when its cross-fitted score on the validation rows beats its best member (a gain above zero):
decided on validation data only, like every choice of the search. It is still one bundle, which
``predict``, ``export`` and ``serve`` take like any model. Otherwise, and without ``--valid``
(cross-validation has no one fitted model per trial to combine), the best trial is retrained on
the training rows as ``train`` would.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from mlsys_cli.errors import MlsysError
from mlsys_cli.models.tuning.budget import SAVE_S
from mlsys_cli.models.tuning.problem import Problem

TOP = 3


def final_model(study: Any, problem: Problem, doc: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The bundle ``--save-model`` writes and what it is (``{"model": "ensemble"|"single", ...}``).

    ``doc`` is the best-parameters document (family and parameters of the best trial).
    """
    job = problem.job
    why = no_ensemble_reason(study, problem)
    if why is None:
        try:
            bundle, info = _ensemble(problem)
            if info["gain"] is not None and info["gain"] > 0:
                return bundle, {"model": "ensemble", **info}
            why = f"the ensemble's cross-fitted gain on the validation rows ({info['gain']}) is not above 0"
        except MlsysError as exc:
            why = f"ensemble step failed: {exc}"
    from mlsys_cli.models.train import FitRun, TrainSpec, train_model

    # The refit is inside the budget: iterative families stop at the round the deadline falls on.
    run = FitRun(timeout=max(job.deadline - time.time() - SAVE_S, 1.0)) if job.deadline is not None else FitRun()
    bundle, _ = train_model(job.train, TrainSpec(family=doc["family"], target=problem.target, params=doc["params"],
                            features=dict(job.features) or None, seed=int(job.seed)), valid=job.valid, run=run)
    return bundle, {"model": "single", "family": doc["family"], "reason": why}


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
    if job.storage is None:
        return "no storage to combine the trials from"
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return "fewer than two completed trials"
    if job.deadline is not None and job.deadline - time.time() <= 0:
        return "no time left"
    return None


def _ensemble(problem: Problem) -> tuple[Any, dict[str, Any]]:
    """The greedy-selection ensemble of the study's best trials and its summary."""
    from mlsys_cli.models.ensemble import EnsembleSpec, KeptPredictor, StudySource, build_ensemble, study_members

    job = problem.job
    deadline = job.deadline
    source = StudySource(job.storage, job.study, top=TOP, train=job.train, features=dict(job.features) or None)
    members, skipped = study_members(source, seed=int(job.seed), deadline=deadline,
                                     reserve=0.0 if deadline is None else 0.3 * max(deadline - time.time(), 0.0))
    records = [{"study": job.study, "trial": name, "source": "kept" if isinstance(b.predictor, KeptPredictor) else "retrained"}
               for name, b in members]
    bundle, result = build_ensemble(members, [job.valid], EnsembleSpec(method="select", seed=int(job.seed)),
                                    member_records=records, deadline=deadline)
    return bundle, {"gain": result.gain.get("value"), "metric": result.metric, "verdict": result.verdict,
                    "members": [{"model": m["model"], "weight": m.get("weight"), "source": m.get("source")}
                                for m in result.members],
                    "skipped": skipped + list(result.skipped)}
