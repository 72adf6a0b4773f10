"""``tune``: search hyperparameters for one model family or several, within budgets.

The command's options (a :class:`~.job.TuneRequest` and :class:`~.report.TuneOutputs`) become
a frozen :class:`~.job.TuneJob`; :func:`run_job` loads the data
and the study (:mod:`.session`), runs trials here and in worker processes (:mod:`.workers`),
then summarizes and writes the outputs (:mod:`.report`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any, Mapping

from mlsys_cli.errors import MlsysError
from mlsys_cli.models.dask_trials import job_engine
from mlsys_cli.models.study import FAMILY_PARAM
from mlsys_cli.models.tuning.budget import EXIT_S
from mlsys_cli.models.tuning.job import DEFAULT_TRIALS, TuneJob, TuneRequest, artifacts_for, fingerprint
from mlsys_cli.models.tuning.report import TuneOutputs, TuneResult, raise_no_trial, summarize, write_outputs
from mlsys_cli.models.tuning.session import load_session
from mlsys_cli.models.tuning.space import resolve_families
from mlsys_cli.models.tuning.workers import complete, join_workers, release_workers, run_trials, start_workers, stop_workers


def tune(train: str, request: TuneRequest | None = None, outputs: TuneOutputs | None = None, progress: Any = None,
         started: float | None = None, **options: Any) -> TuneResult:
    """Search hyperparameters for one model family or several (``model="auto"``).

    Parameters
    ----------
    train : path
        Training table.
    request : TuneRequest, optional
        What to search and how (validation, family, sampler, budgets, storage, seed...).
    outputs : TuneOutputs, optional
        Best parameters as JSON (for ``train --params``), the best model retrained as a bundle,
        the trials as Parquet, and an HTML report.
    progress : object, optional
        ``update(completed=, total=, description=)`` after every trial.
    started : float, optional
        When the ``timeout`` started (epoch seconds; default: now). The CLI passes its process
        start (:func:`~.budget.process_started`): interpreter start-up and imports count.
    **options
        Fields of :class:`TuneRequest` or :class:`TuneOutputs` by name (``valid=``, ``model=``,
        ``timeout=``, ``save_model=``...), instead of or on top of ``request`` and ``outputs``.

    Returns
    -------
    TuneResult
    """
    called = time.time()
    started = min(started or called, called)
    request, outputs = _merge_options(request or TuneRequest(), outputs or TuneOutputs(), options)
    job = make_job(str(train), request, started, refit=bool(outputs.save_model))
    result = run_job(job, outputs, request.timeout, progress)
    # The whole run, start-up, the final model and the files written included (what the budget covers).
    return result.replace(elapsed_s=time.time() - started, budget={**result.budget, "startup_s": round(called - started, 3)})


def make_job(train: str, request: TuneRequest, started: float, refit: bool) -> TuneJob:
    """The checked job, defaults filled in: 5 folds without ``valid``, 30 trials without a
    timeout, the deadline ``timeout`` seconds after ``started`` less the process exit (:data:`~.budget.EXIT_S`)."""
    request.check()
    valid, time_col = request.valid, request.time_col
    cv = 5 if request.cv is None and valid is None else request.cv
    return TuneJob(
        train=train, valid=str(valid) if valid else None, cv=cv, time_col=time_col, target=request.target,
        model=request.model, model_families=tuple(resolve_families(request.model)), metric=request.metric,
        sampler=request.sampler, pruner=request.pruner,
        trials=DEFAULT_TRIALS if request.trials is None and request.timeout is None else request.trials,
        deadline=None if request.timeout is None else started + request.timeout - EXIT_S, storage=request.storage,
        study=request.study or "mlsys-tune", seed=request.seed, params=dict(request.params or {}),
        workers=request.n_jobs, features=dict(request.features or {}),
        validation=f"valid:{fingerprint([valid])}" if valid else f"cv:{cv}" + (f":{time_col}" if time_col else ""),
        train_sha256=fingerprint([train]), keep_models=request.keep_models,
        artifacts=artifacts_for(valid, request.keep_models, request.artifacts, request.storage), refit=refit,
        ensemble=request.ensemble and refit and valid is not None,
        refit_valid=request.refit_valid and refit and valid is not None, budget_s=request.timeout, started=started,
        engine=job_engine(request.engine, resolve_families(request.model), request.n_jobs),
    )


def _merge_options(request: TuneRequest, outputs: TuneOutputs, options: Mapping[str, Any]) -> tuple[TuneRequest, TuneOutputs]:
    """``request`` and ``outputs`` with the named ``options`` applied (an unknown name is a caller's bug)."""
    import dataclasses

    fields = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (TuneRequest, TuneOutputs)}
    unknown = set(options) - fields[TuneRequest] - fields[TuneOutputs]
    if unknown:
        raise TypeError(f"tune() got unexpected options: {', '.join(sorted(unknown))}")
    request = dataclasses.replace(request, **{k: v for k, v in options.items() if k in fields[TuneRequest]})
    outputs = dataclasses.replace(outputs, **{k: v for k, v in options.items() if k in fields[TuneOutputs]})
    return request, outputs


def run_job(job: TuneJob, outputs: TuneOutputs, timeout: float | None = None, progress: Any = None) -> TuneResult:
    """Run a checked job: this process and ``job.workers - 1`` worker processes, then the outputs."""
    started = time.time()
    tmpdir = tempfile.mkdtemp(prefix="mlsys-tune-")
    try:
        if job.storage is None and job.workers > 1:
            # Processes share a study only through a storage: a private journal serves, and the
            # ensemble step combines the workers' models kept in its artifact store. (One process
            # holds its best models in memory for the final model: nothing to store.)
            job = job.replace(storage=f"journal:{os.path.join(tmpdir, 'study.journal')}", private_storage=True,
                              artifacts=os.path.join(tmpdir, "models") if job.ensemble and job.keep_models else job.artifacts)
        problem, plan, opened = load_session(job)
        with _threads(problem):
            result, written, final = _search_and_save(job, (problem, plan, opened), outputs, (timeout, progress, tmpdir), started)
        if job.artifacts and os.path.isdir(job.artifacts) and not job.private_storage:
            written["models"] = job.artifacts
    finally:
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)
    return TuneResult(**{**result, "outputs": written, "final": final})


def _threads(problem: Any) -> Any:
    """Every fit, prediction and refit of the run on the OpenMP threads a trial gets: one on a
    small table. HistGradientBoosting predicts on every core by default, and on a busy machine
    oversubscribed OpenMP threads spin: a 206-row prediction took 270 ms instead of 17 ms, a
    2,600-row default fit minutes. threadpoolctl limits only the OpenMP runtimes already loaded,
    so the ones the families bring (scikit-learn's, torch's) are loaded first."""
    import importlib

    from threadpoolctl import threadpool_limits

    from mlsys_cli.models.families import get_family

    modules = ["sklearn.ensemble._hist_gradient_boosting.gradient_boosting"]
    if "mlp" in problem.job.model_families:
        modules.append("torch")  # imported by the mlp trials anyway
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a family whose library is missing is refused before this
    n = get_family("hgb").execution_params(problem.job.workers, len(problem.train_df))["n_threads"]
    limits = threadpool_limits(limits=int(n), user_api="openmp")
    if "torch" in sys.modules and "mlp" in problem.job.model_families and problem.job.deadline is not None:
        from mlsys_cli.models.mlp import warm_up

        warm_up()  # under a budget: measured trial times are what the search plans with
    return limits


def _search_and_save(job: TuneJob, session: tuple[Any, Any, Any], outputs: TuneOutputs, how: tuple[Any, Any, str],
                     started: float) -> tuple[dict[str, Any], dict[str, str], Any]:
    """Trials here and in the workers, then the summary and the files; the budget's accounting."""
    problem, plan, opened = session
    timeout, progress, tmpdir = how
    workers = start_workers(job, job.workers - 1, tmpdir) if job.workers > 1 else []
    try:
        if workers:
            release_workers(workers, tmpdir, job.deadline)
        mine = run_trials(opened, problem, plan, progress)
    except BaseException:
        stop_workers(workers)
        raise
    outcomes = join_workers(workers, job.deadline) if workers else []
    if not complete(opened):
        failed = [o for o in outcomes if "error" in o]
        if failed:
            o = failed[0]
            raise MlsysError(f"worker failed: {o['error']}", o.get("hint"), o.get("exit_code", 1))
        raise_no_trial(opened.get_trials(deepcopy=False), timeout)
    choice, mine = choose_and_hand_back(opened, (problem, plan), mine, progress) if outputs.save_model else (None, mine)
    searched = time.time()
    result = summarize(opened, problem, plan, mine, outcomes, started)
    written, final = write_outputs(result, opened, problem, outputs, choice)
    result["budget"] = budget_record(job, mine, searched, time.time())
    return result, written, final


def choose_and_hand_back(study: Any, session: tuple[Any, Any], mine: dict[str, Any], progress: Any = None) -> tuple[Any, dict[str, Any]]:
    """The final model chosen as the search ends (:func:`~.final.choose`), then the time held back
    for what it does not need handed back to the search: the ensemble step's share, and the
    refit of the candidates it did not take (all but the best when it is a single trial).

    The resumed search plans only the chosen members' refit (``problem.final_plan``). A single
    final model is then the best trial again; an ensemble stays unless a resumed trial beats
    its cross-fitted score on the validation rows (its best member's plus its gain). Returns the
    choice (None: chosen later, nothing held in memory here) and ``mine`` with the resumed
    trials (``resumed``: trials and seconds) added."""
    from mlsys_cli.models.tuning.final import Choice, choose, single
    from mlsys_cli.models.tuning.select import choose as cross_validated

    problem, plan = session
    job = problem.job
    if not (problem.holds_models and job.deadline is not None and job.workers == 1 and job.engine is None):
        return None, mine
    before = study.best_trial
    chosen = cross_validated(study, problem)
    if chosen is not None:
        # Chosen on every row by k-fold: a resumed trial's validation score could not overturn it.
        return Choice(None, [], {"model": chosen.record["chosen"]}, chosen), mine
    choice = choose(study, problem, before.params[FAMILY_PARAM])
    if problem.selection_skipped:
        # Why the validation rows decided instead of k-fold on train + valid (final.selection).
        choice.info["selection"] = {"skipped": problem.selection_skipped}
    if choice.bundle is None:
        return choice, mine
    ensemble = choice.info["model"] == "ensemble"
    problem.final_plan = tuple(int(b.manifest["recipe"]["study"]["trial"]) for _, b in choice.held
                               if id(b.predictor) in {id(p) for p in choice.bundle.predictor.members}) if ensemble else "single"
    start = time.time()
    more = run_trials(study, problem, plan, progress)
    best = study.best_trial
    gain = float(choice.info.get("gain") or 0.0) if ensemble else 0.0
    if more["ran"] and best.number != before.number and abs(best.value - before.value) > gain:
        # Better than the final model chosen (a better trial than the best: always, for a single one).
        why = choice.info.get("reason") or f"trial {best.number}, found after the ensemble step, beats the ensemble on the validation rows"
        choice = single(study, problem, best.params[FAMILY_PARAM], why)
    return choice, {**mine, "ran": mine["ran"] + more["ran"], "stopped_by": more["stopped_by"],
                    "search_deadline": more["search_deadline"] or mine.get("search_deadline"),
                    "resumed": {"trials": more["ran"], "seconds": round(time.time() - start, 3)}}


def budget_record(job: TuneJob, mine: dict[str, Any], searched: float, done: float) -> dict[str, Any]:
    """Where the budget went, in seconds from its start: the deadline the run kept (``--timeout``
    less the process exit), the search deadline its last check used, when the search and the
    outputs (final model included) ended."""
    origin = job.started or searched

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - origin, 3)

    return {"timeout_s": job.budget_s, "exit_s": EXIT_S if job.deadline is not None else None,
            "deadline_s": rel(job.deadline), "search_deadline_s": rel(mine.get("search_deadline")),
            "search_end_s": rel(searched), "outputs_end_s": rel(done), "resumed": mine.get("resumed")}
