"""``tune``: search hyperparameters for one model family or several, within budgets.

The command's options become a frozen :class:`~.job.TuneJob`; :func:`run_job` loads the data
and the study (:mod:`.session`), runs trials here and in worker processes (:mod:`.workers`),
then summarizes and writes the outputs (:mod:`.report`).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Mapping

from mlsys_cli.errors import MlsysError, UsageError
from mlsys_cli.models.tuning.job import DEFAULT_TRIALS, KEEP_MODELS, TuneJob, artifacts_for, check_options, fingerprint
from mlsys_cli.models.tuning.report import TuneOutputs, TuneResult, raise_no_trial, summarize, write_outputs
from mlsys_cli.models.tuning.session import load_session
from mlsys_cli.models.tuning.space import resolve_families
from mlsys_cli.models.tuning.workers import complete, join_workers, release_workers, run_trials, start_workers, stop_workers


def tune(
    train: str,
    *,
    target: str | None = None,
    valid: str | None = None,
    cv: int | None = None,
    time_col: str | None = None,
    model: str = "auto",
    metric: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    n_jobs: int = 1,
    params: Mapping[str, Any] | None = None,
    features: Mapping[str, Any] | None = None,
    seed: int = 0,
    output: str | None = None,
    save_model: str | None = None,
    trials_out: str | None = None,
    html: str | None = None,
    keep_models: int = KEEP_MODELS,
    artifacts: str | None = None,
    progress: Any = None,
) -> TuneResult:
    """Search hyperparameters for one model family or several (``model="auto"``).

    Parameters
    ----------
    train : path
        Training table.
    target : str, optional
        Target column (inferred from the table's lineage when omitted).
    valid : path, optional
        Validation table; without it ``cv`` folds of ``train`` are used (5 by default).
    cv : int, optional
        Number of folds: stratified for classification, time-ordered with ``time_col``.
    model : str
        A family name or ``auto``.
    metric : str, optional
        Metric to optimise; the task's primary metric by default.
    sampler, pruner : str
        ``tpe|random|grid`` and ``median|hyperband|none``.
    trials : int, optional
        Total trials of the study (all workers, earlier runs included); 30 without a timeout.
    timeout : float, optional
        Seconds of wall time for this run, counted from the call.
    storage, study : str, optional
        Optuna storage (RDB URL or ``journal:PATH``) and study name, to resume or share a study.
    n_jobs : int
        Worker processes on this machine (a temporary journal is used without ``storage``).
    params : dict, optional
        Fixed parameters (``name`` or ``family.name``) that are not searched.
    features : dict, optional
        Featurizer options (the same recipe ``train`` uses).
    seed : int
    output, save_model, trials_out, html : path, optional
        Best parameters as JSON (for ``train --params``), the best model retrained as a bundle,
        the trials as Parquet, and an HTML report.
    keep_models : int
        With ``valid`` and a storage: keep the fitted models of this many best trials per family
        in the study's artifact store (0: none), for ``ensemble --from-study``.
    artifacts : path, optional
        The artifact store directory (default: beside a journal file or SQLite database).
    progress : object, optional
        ``update(completed=, total=, description=)`` after every trial.

    Returns
    -------
    TuneResult
    """
    started = time.time()
    check_options(valid, cv, time_col, sampler, pruner, trials, n_jobs)
    if keep_models < 0:
        raise UsageError(f"--keep-models {keep_models}: must be 0 or more")
    if artifacts is not None and (valid is None or keep_models == 0):
        raise UsageError("--artifacts keeps fitted models, which needs --valid and --keep-models 1 or more")
    if cv is None and valid is None:
        cv = 5
    if trials is None and timeout is None:
        trials = DEFAULT_TRIALS
    job = TuneJob(
        train=str(train), valid=str(valid) if valid else None, cv=cv, time_col=time_col, target=target, model=model,
        model_families=tuple(resolve_families(model)), metric=metric, sampler=sampler, pruner=pruner, trials=trials,
        deadline=None if timeout is None else started + timeout, storage=storage, study=study or "mlsys-tune",
        seed=seed, params=dict(params or {}), workers=n_jobs, features=dict(features or {}),
        validation=f"valid:{fingerprint([valid])}" if valid else f"cv:{cv}" + (f":{time_col}" if time_col else ""),
        train_sha256=fingerprint([train]), keep_models=keep_models,
        artifacts=artifacts_for(valid, keep_models, artifacts, storage), refit=bool(save_model),
    )
    outputs = TuneOutputs(output=output, save_model=save_model, trials_out=trials_out, html=html)
    result = run_job(job, outputs, timeout, progress)
    # The whole call, the refit and the files written included (what the budget covers).
    return result.replace(elapsed_s=time.time() - started)


def run_job(job: TuneJob, outputs: TuneOutputs, timeout: float | None = None, progress: Any = None) -> TuneResult:
    """Run a checked job: this process and ``job.workers - 1`` worker processes, then the outputs."""
    started = time.time()
    tmpdir = tempfile.mkdtemp(prefix="mlsys-tune-")
    try:
        if job.workers > 1 and job.storage is None:
            # Processes share a study only through a storage; a private journal serves.
            job = job.replace(storage=f"journal:{os.path.join(tmpdir, 'study.journal')}", private_storage=True)
        problem, plan, opened = load_session(job)
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
        result = summarize(opened, problem, plan, mine, outcomes, started)
        written = write_outputs(result, opened, problem, outputs)
        if job.artifacts and os.path.isdir(job.artifacts):
            written["models"] = job.artifacts
    finally:
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)
    return TuneResult(**{**result, "outputs": written})
