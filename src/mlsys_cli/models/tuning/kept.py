"""Kept models: the fitted models of a study's best trials, for ``ensemble --from-study``.

With ``--valid``, the fitted model of a trial that enters the ``keep_models`` best of its
family is written as a model bundle (through the one model-bundle writer) into the study's
Optuna artifact store, and the trial records its artifact id and sha256; one that drops out is
deleted (:func:`keep_model`).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Sequence

from mlsys_cli.models.study import FAMILY_PARAM, artifact_store
from mlsys_cli.models.tuning.problem import Problem


def ranked(trials: Sequence[Any], minimize: bool) -> list[Any]:
    """Trials best first (ties: the earlier trial first)."""
    return sorted(trials, key=lambda t: (t.value if minimize else -t.value, t.number))


# Loading a kept model costs about this many times writing it (skops rebuilds every tree).
LOAD_FACTOR = 1.5


def keep_model(trial: Any, problem: Problem, family: Any, est: Any, value: float, fit_s: float,
               deadline: float | None = None) -> None:
    """Keep this trial's fitted model when it is among the ``keep_models`` best of its family.

    The model is written as a normal model bundle (deterministic bytes) into the study's Optuna
    artifact store, and ``model`` in the trial's user attributes records the artifact id and the
    bundle's sha256 (``ensemble --from-study`` verifies it). A kept model that drops out of its
    family's best is deleted, so the store holds at most ``keep_models`` models per family.
    Under a time budget, a family whose models cost more to write and load than to refit
    (``fit_s``: this trial's training time; big forests) is not kept: the ensemble step refits it.
    Nor is a model when less than ``fit_s`` is left before the ``deadline``: writing can take as
    long as fitting (skops stores a forest tree by tree) and would overrun the budget. A trial
    that was not kept for either reason says why in its ``model_not_kept`` user attribute.
    """
    from optuna.artifacts import upload_artifact
    from optuna.trial import TrialState

    from mlsys_cli.bundle import skops_io
    from mlsys_cli.fsutil import sha256_bytes

    k = int(problem.job.keep_models)
    minimize = not problem.higher
    peers = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.params.get(FAMILY_PARAM) == family.name and t.value is not None]
    better = sum((t.value < value) if minimize else (t.value > value) for t in peers)
    if k < 1 or better >= k:
        return
    reason = _not_kept_reason(problem, family, fit_s, deadline)
    if reason:
        trial.set_user_attr("model_not_kept", reason)
        return
    store = artifact_store(problem.job.artifacts)
    # One-time costs (the reference statistics of the training rows, importing skops) stay off
    # the clock: they would make whichever family is written first look expensive for good.
    bundle = trial_bundle(trial, problem, family, est, value)
    skops_io()
    start = time.perf_counter()
    data = bundle.to_writer().to_bytes()
    # Refitting also featurizes the training rows again. Only a time budget makes the cheaper of
    # the two matter; without one the choice stays independent of timings (reproducible).
    refit_s = fit_s + problem.featurize_s.get(problem.key(family, 0), 0.0)
    if problem.job.deadline is not None and LOAD_FACTOR * (time.perf_counter() - start) > refit_s:
        problem.refit_cheaper.add(family.name)
        trial.set_user_attr("model_not_kept", "cheaper to refit than to write and load")
        return
    with tempfile.TemporaryDirectory(prefix="mlsys-model-") as tmp:
        path = os.path.join(tmp, f"trial{trial.number}.mlsys")
        with open(path, "wb") as fh:
            fh.write(data)
        artifact = upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial,
                                   mimetype="application/zip")
    trial.set_user_attr("model", {"artifact": artifact, "sha256": sha256_bytes(data), "bytes": len(data),
                                  "store": problem.job.artifacts})
    # This trial takes a place among the family's best: the model that falls out is deleted.
    _remove_models(store, ranked(peers, minimize)[k - 1:])


def _not_kept_reason(problem: Problem, family: Any, fit_s: float, deadline: float | None) -> str | None:
    """Why a model among its family's best is not written (None: it is)."""
    if problem.sample_rows:
        return f"fitted on a sample of {problem.sample_rows} training rows"
    if family.name in problem.refit_cheaper:
        return "cheaper to refit than to write and load"
    if deadline is not None and time.time() + fit_s >= deadline:
        return "too close to the deadline to write it"
    return None


def _remove_models(store: Any, trials: Sequence[Any]) -> None:
    """Delete the kept models of ``trials`` from the artifact store."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    for t in (t for t in trials if "model" in t.user_attrs):
        try:
            store.remove(t.user_attrs["model"]["artifact"])
        except (ArtifactNotFound, ValueError, OSError):
            pass  # already removed (by another worker)


def trial_bundle(trial: Any, problem: Problem, family: Any, est: Any, value: float) -> Any:
    """The model bundle of a trial's fitted model: what ``train`` with the trial's parameters on
    the same tables writes (featurizer fitted on train, early stopping on valid), except that its
    metrics and prediction reference are on the validation rows (the trial scored those; train
    metrics are not computed)."""
    from mlsys_cli.data.io import invocation
    from mlsys_cli.models import train as tr
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.manifest import Manifest, Recipe
    from mlsys_cli.models.predictors import SinglePredictor
    from mlsys_cli.models.families import resolve_params
    from mlsys_cli.models.metrics import baseline_metrics, compute_metrics, primary_metric

    task, classes, seed = problem.task, problem.classes, int(problem.job.seed)
    fz = problem.featurizer(family, 0)
    _, y, Xv, _, labels = problem.matrices(family, 0)
    resolved = resolve_params(family, task, trial.user_attrs["params"])
    fit_info = dict(getattr(est, "fit_info_", {}) or {})
    spec = {"task": task, "n_classes": problem.n_classes, "params": resolved, "seed": seed,
            "n_features": int(Xv.shape[1]), "fit_info": fit_info}
    predictor = SinglePredictor(fz, family, est, spec)
    scores = predictor.scores_from_features(Xv)
    name, higher = primary_metric(task)
    prior, weights = tr.baseline_inputs(task, y, classes)
    libraries = tr.libraries(family.name)
    recipe = Recipe(family=family.name, task=task, target=problem.target, params=resolved, seed=seed,
                    features=problem.features_spec(family), fit=fit_info, command=invocation(),
                    data=problem.data_records(), study={"name": problem.job.study, "trial": trial.number, problem.metric: value})
    manifest = Manifest(
        mlsys_version=libraries["mlsys"], task=task, target=problem.target, classes=classes,
        input_schema=list(fz.input_schema_), recipe=recipe,
        metrics={"evaluated_on": "valid", "primary": {"name": name, "higher_is_better": higher},
                 "train": None, "valid": compute_metrics(task, labels, scores, classes),
                 "baselines": baseline_metrics(task, prior, labels, classes, seed=seed, sample_weight=weights)},
        reference={"features": problem.reference(fz), "predictions": tr.prediction_reference(task, scores, classes)},
        importance=tr.ranked_importance(family, est, list(fz.get_feature_names_out())), libraries=libraries,
    )
    return ModelBundle(manifest, predictor)
