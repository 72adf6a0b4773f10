"""Running trials: the budgeted trial loop, and the worker processes that share a study.

Workers share the study through Optuna's storage: an RDB URL (PostgreSQL, SQLite) or a journal
file (``journal:PATH``). ``n_jobs`` starts extra worker processes on this machine; each is a
fresh interpreter given its :class:`~.job.TuneJob` as JSON (no pickle crosses the boundary),
and all start their trials together once every one has loaded the data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from mlsys_cli.errors import InputError, MlsysError
from mlsys_cli.models.study import FAMILY_PARAM
from mlsys_cli.models.tuning.budget import MIN_FIT_S, Deadline, fit_deadline, search_deadline
from mlsys_cli.models.tuning.job import TuneJob
from mlsys_cli.models.tuning.objective import objective
from mlsys_cli.models.tuning.problem import Problem
from mlsys_cli.models.tuning.session import load_session
from mlsys_cli.models.tuning.space import Plan


@dataclass(frozen=True)
class WorkerFiles:
    """A worker's handshake files: ``ready`` (it loaded), ``go`` (start, shared), ``result`` (its outcome)."""

    ready: str
    go: str
    result: str


class Failed(Exception):
    """A configuration the estimator rejected; the trial is recorded as failed and the search goes on."""


def run_trials(study: Any, problem: Problem, plan: Plan, progress: Any = None) -> dict[str, Any]:
    """Run trials until the study has ``trials`` trials, the grid is done or the deadline passes.

    Returns what this worker did: ``{"ran": n, "stopped_by": "trials"|"timeout"|"grid",
    "search_deadline": epoch seconds}`` (the search deadline of the last check; None without one).
    """
    import optuna
    from optuna.trial import TrialState

    deadline, n_trials = problem.job.deadline, problem.job.trials
    families, fixed = plan.families, plan.fixed
    grid = optuna.samplers.GridSampler(dict(plan.grid)) if plan.grid else None
    ran, stopped_by = 0, "trials"
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)

    def run(trial: Any) -> float:
        # With --save-model the search stops early enough for the winner's refit and saving.
        end = search_deadline(study, problem)
        try:
            return objective(trial, problem, families, fixed, end, fit_deadline(end, bool(complete(study))))
        except Deadline:
            # The budget ran out before the trial could be scored (featurizing a new family, a
            # CV fold): not the configuration's fault, so not a failure. Recorded as pruned with
            # stopped_by=timeout (every auto run used to end with one such "failed" trial).
            raise optuna.TrialPruned() from None
        except (optuna.TrialPruned, MlsysError):
            raise
        except Exception as exc:  # noqa: BLE001 - recorded on the trial, raised again below if nothing works
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise Failed() from exc

    failures, end = 0, None
    while True:
        end = search_deadline(study, problem)
        if end is not None and time.time() + start_cost(study, problem, families) >= end:
            stopped_by = "timeout"
            break
        if n_trials is not None and len(study.get_trials(deepcopy=False, states=counted)) >= n_trials:
            break
        if grid is not None and grid.is_exhausted(study):
            stopped_by = "grid"
            break
        try:
            # One trial per call: Optuna runs the ask/tell protocol (pruning, failed trials, the
            # grid sampler's stop) and this loop keeps the budgets.
            study.optimize(run, n_trials=1, catch=(Failed,))
        except Deadline:
            stopped_by = "timeout"
            break
        ran += 1
        last = study.get_trials(deepcopy=False)[-1]
        if last.state == TrialState.PRUNED and last.user_attrs.get("stopped_by") == "timeout" and last.value is None:
            stopped_by = "timeout"
            break
        failures = failures + 1 if "error" in last.user_attrs and last.state == TrialState.FAIL else 0
        if failures >= 5 and not complete(study):
            raise InputError(f"the first trials all failed; the last error: {last.user_attrs['error']}")
        if progress is not None:
            show_progress(progress, study, problem, n_trials)
    return {"ran": ran, "stopped_by": stopped_by, "search_deadline": end}


def start_cost(study: Any, problem: Problem, families: Any) -> float:
    """Seconds a trial needs before it can be scored: one short fit, and the featurizing of a
    family that has not run yet (the slowest featurizing seen stands in for it). A trial started
    with less time left than this overran the deadline (the MLP's first trial by 4 s of 20)."""
    started = {t.params.get(FAMILY_PARAM) for t in study.get_trials(deepcopy=False)}
    pending = any(f not in started for f in families)
    return MIN_FIT_S + (max(problem.featurize_s.values(), default=0.0) if pending else 0.0)


def complete(study: Any) -> list[Any]:
    """The study's completed trials."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def show_progress(progress: Any, study: Any, problem: Problem, n_trials: int | None) -> None:
    """Report the finished trials and the best value so far to a progress object."""
    from optuna.trial import TrialState

    done = complete(study)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    text = "tuning"
    if done:
        best = max(done, key=lambda t: t.value) if problem.higher else min(done, key=lambda t: t.value)
        text = f"tuning: best {problem.metric}={best.value:.4f} ({best.params.get(FAMILY_PARAM)})"
    progress.update(completed=len(finished), total=n_trials, description=text)


# --------------------------------------------------------------------------- the study


def worker_main(job_path: str) -> int:
    """Entry point of a worker process started by ``n_jobs``: the job is a JSON file, the
    outcome is written as JSON to the job's ``result`` path (exit status 0 or the error's)."""
    from mlsys_cli.fsutil import atomic_write_text

    with open(job_path, encoding="utf-8") as fh:
        doc = json.load(fh)
    files = WorkerFiles(**doc["files"])
    try:
        problem, plan, study = load_session(TuneJob.from_dict(doc["job"]))
        barrier(files, problem.job.deadline)
        outcome: dict[str, Any] = run_trials(study, problem, plan)
        code = 0
    except MlsysError as exc:
        outcome, code = {"error": exc.message, "hint": exc.hint, "exit_code": int(exc.exit_code)}, int(exc.exit_code)
    except KeyboardInterrupt:
        outcome, code = {"error": "interrupted", "exit_code": 130}, 130
    atomic_write_text(files.result, json.dumps(outcome))
    return code


# How long workers wait for each other to load the data before they start anyway.
BARRIER_S = 120.0


def barrier(files: WorkerFiles, deadline: float | None) -> None:
    """Tell the parent this worker is loaded, then wait for its go: workers that start their
    trials together share the study, instead of the first one loaded running all of it."""
    from mlsys_cli.fsutil import atomic_write_text

    atomic_write_text(files.ready, "")
    give_up = time.time() + BARRIER_S
    while not os.path.exists(files.go) and time.time() < give_up:
        if deadline is not None and time.time() >= deadline:
            return
        time.sleep(0.02)


def release_workers(workers: list[tuple[Any, str]], tmpdir: str, deadline: float | None) -> None:
    """Wait until every worker has loaded (or died), then let them all start."""
    from mlsys_cli.fsutil import atomic_write_text

    give_up = time.time() + BARRIER_S if deadline is None else min(deadline, time.time() + BARRIER_S)
    pending = list(workers)
    while pending and time.time() < give_up:
        pending = [(proc, base) for proc, base in pending if proc.poll() is None and not os.path.exists(f"{base}.ready")]
        if pending:
            time.sleep(0.02)
    atomic_write_text(os.path.join(tmpdir, "go"), "")


def start_workers(job: TuneJob, n: int, tmpdir: str) -> list[tuple[Any, str]]:
    """Start ``n`` worker processes; each is (process, base path of its job files)."""
    workers = []
    for i in range(1, n + 1):
        base = os.path.join(tmpdir, f"worker-{i}")
        files = WorkerFiles(result=f"{base}.result.json", ready=f"{base}.ready", go=os.path.join(tmpdir, "go"))
        with open(f"{base}.job.json", "w", encoding="utf-8") as fh:
            json.dump({"job": job.to_dict(), "files": dataclasses.asdict(files)}, fh)
        # stderr goes to a file: a pipe nobody reads while we work could fill up and block the worker.
        with open(f"{base}.stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from mlsys_cli.models.tuning.workers import worker_main; "
                 "raise SystemExit(worker_main(sys.argv[1]))", f"{base}.job.json"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                # Their own session: a terminal's Ctrl-C reaches only the parent, which stops the
                # workers in order (stop_workers) instead of every process unwinding native
                # threads at once (that race aborted with a double free).
                start_new_session=True,
            )
        workers.append((proc, base))
    return workers


def stop_workers(workers: list[tuple[Any, str]], grace: float = 5.0) -> None:
    """Stop the workers after the parent was interrupted or failed: SIGTERM each, wait up to
    ``grace`` seconds for all, then SIGKILL what is left; every process is reaped."""
    for proc, _ in workers:
        if proc.poll() is None:
            proc.terminate()
    give_up = time.time() + grace
    for proc, _ in workers:
        try:
            proc.wait(timeout=max(give_up - time.time(), 0.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def join_workers(workers: list[tuple[Any, str]], deadline: float | None) -> list[dict[str, Any]]:
    """Wait for the workers (killing one that overruns the deadline) and collect their outcomes."""
    outcomes = []
    for proc, base in workers:
        result, stderr = f"{base}.result.json", f"{base}.stderr"
        # A worker stops within a few seconds of the deadline; give it that much, then stop it.
        wait = None if deadline is None else max(deadline - time.time(), 0) + 30
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.exists(result):
            with open(result, encoding="utf-8") as fh:
                outcomes.append(json.load(fh))
            continue
        with open(stderr, "rb") as fh:
            last = fh.read().decode(errors="replace").strip().splitlines()
        outcomes.append({"error": f"worker exited with status {proc.returncode}" + (f": {last[-1]}" if last else ""),
                         "exit_code": 1})
    return outcomes


# --------------------------------------------------------------------------- the command
