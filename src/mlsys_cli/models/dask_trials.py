"""``tune --engine dask``: every trial's fit runs on a Dask cluster, through ``xgboost.dask``.

The study itself is unchanged (:mod:`mlsys_cli.models.tuning`): the tune process reads the
tables, featurizes each fold once and scores each trial's model on the validation rows; only
the fit, the costly part of a trial, moves to the cluster, with the distributed trainer
``train --engine dask`` uses (:func:`~mlsys_cli.models.distributed.fit_on_cluster`). A fold's
matrices are sent to the workers once (persisted, split into one block per worker) and every
trial of that fold trains on them there, so a trial ships its parameters, not its data.

Several ``tune`` processes, on one host (``--n-jobs``) or several (the same command against one
``--storage``), share the study as they do locally and their trials share the cluster: each
process holds one client (:func:`~mlsys_cli.data.cluster.shared_client`). Each trial records
itself in the scheduler's event log (topic :data:`EVENT_TOPIC`: host, process, rows, rounds),
which ``Client.get_events`` reads back.

What differs from a local trial: the pruner is given the per-round validation losses after the
fit rather than during it (XGBoost's callbacks run on the workers; the pruning decision is the
same, the rounds of a pruned trial are not saved), and the time limit of a trial stops at the
first round after it on every worker at once (:class:`~mlsys_cli.models.distributed.DeadlineStop`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from mlsys_cli.errors import UsageError

EVENT_TOPIC = "mlsys-tune"
_ON_CLUSTER: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
_ON_CLUSTER_LOCK = threading.Lock()


def job_engine(engine: Any, families: Sequence[str], n_jobs: int) -> dict[str, Any] | None:
    """The engine a tune job records (JSON, for its worker processes), checked; None for local.

    Connects here (the process's client is kept for its trials), so an unreachable scheduler
    fails before the first trial.

    Raises
    ------
    UsageError
        A family without a distributed trainer (naming the ones with one), ``--n-jobs`` above
        1 without ``--scheduler`` (each process would start its own LocalCluster), or the dask
        extra missing (exit 2).
    InputError
        The scheduler does not answer (exit 3).
    """
    if engine is None or not engine.is_dask:
        return None
    from mlsys_cli.data.cluster import shared_client
    from mlsys_cli.models.distributed import DASK_FAMILIES

    other = [f for f in families if f not in DASK_FAMILIES]
    if other:
        raise UsageError(f"--model {', '.join(other) if len(families) == 1 else 'auto'} has no distributed trainer "
                         "for --engine dask", f"--engine dask tunes: --model {' or '.join(DASK_FAMILIES)}; or use --engine local")
    if n_jobs > 1 and not engine.scheduler:
        raise UsageError("--n-jobs with --engine dask needs --scheduler (or MLSYS_DASK_SCHEDULER)",
                         "the tune processes share one running cluster; start it with `dask scheduler` and `dask worker`")
    shared_client(engine)
    return {"name": engine.name, "scheduler": engine.scheduler, "connect_timeout": engine.connect_timeout}


def trial_fitter(engine: Mapping[str, Any] | None) -> Callable[..., Any]:
    """The function a trial fits with: :func:`~mlsys_cli.models.train.fit_estimator`'s signature."""
    if not engine:
        from mlsys_cli.models.train import fit_estimator

        return fit_estimator
    from mlsys_cli.data.cluster import Engine

    where = Engine(engine["name"], engine.get("scheduler"), engine.get("connect_timeout") or 10.0)
    return lambda family, spec, data, run: fit_trial(family, spec, data, run, where)


def refit_on_cluster(job: Any, spec: Any, run: Any) -> Any | None:
    """The final refit of a ``tune --engine dask`` run, as ``train --engine dask`` trains it.

    None (the refit is local) for a local run, a family without a distributed trainer, or a
    train table that is not Parquet (the Dask trainer reads Parquet partitions).
    """
    if not job.engine:
        return None
    from mlsys_cli.data.cluster import Engine
    from mlsys_cli.data.io import detect_format, resolve_inputs
    from mlsys_cli.models.distributed import DASK_FAMILIES, train_dask

    files = resolve_inputs([job.train])
    if spec.family not in DASK_FAMILIES or any(detect_format(f) != "parquet" for f in files):
        return None
    where = Engine(job.engine["name"], job.engine.get("scheduler"), job.engine.get("connect_timeout") or 10.0)
    bundle, _ = train_dask([job.train], spec, valid=job.valid, run=run, engine=where)
    return bundle


def fit_trial(family: Any, spec: Any, data: Any, run: Any, engine: Any) -> Any:
    """Fit one trial's estimator on the cluster (``fit_estimator``'s arguments, and the engine).

    ``run.timeout`` stops training at the next round on every worker; ``run.callback`` (the
    pruner) is given each round's validation loss after the fit, in order, and may raise.
    """
    from mlsys_cli.data.cluster import WorkerLost, shared_client
    from mlsys_cli.models.distributed import check_family

    check_family(family.name)
    client = shared_client(engine)
    stop_at = time.time() + run.timeout if run.timeout is not None else None
    for attempt in (1, 2):
        try:
            est, losses = _fit_once(client, family, spec, data, stop_at)
            break
        except Exception as exc:
            # The fold's matrices were scattered to the workers, and a block held by a lost one
            # is gone with it (scattered data cannot be recomputed): whatever failed, the next fit
            # sends them again. A lost worker gets the trial one more fit, on the workers there
            # are now; a second failure fails the trial, and leaves no broken data to later trials.
            _forget(client)
            if attempt == 2 or not isinstance(exc, WorkerLost):
                raise
    client.log_event(EVENT_TOPIC, {"host": socket.gethostname(), "pid": os.getpid(), "rows": int(len(data.y)),
                                   "rounds": len(losses) or est.fit_info_["n_estimators"]})
    if run.callback is not None:
        for step, loss in enumerate(losses):
            run.callback(step, loss)
    return est


def _fit_once(client: Any, family: Any, spec: Any, data: Any, stop_at: float | None) -> tuple[Any, list[float]]:
    """One fit of a trial on the cluster: the estimator and its per-round validation losses."""
    from mlsys_cli.models.distributed import fit_on_cluster
    from mlsys_cli.models.families import resolve_params

    est = family.make(spec.task, spec.n_classes, resolve_params(family, spec.task, spec.params), spec.seed)
    train = _on_cluster(client, data.X, data.y)
    held_out = _on_cluster(client, *data.eval_set[:2]) if data.eval_set is not None else None
    return fit_on_cluster(client, est, train, held_out, stop_at)


def _forget(client: Any) -> None:
    """Drop every matrix :func:`_on_cluster` sent through ``client`` (the next trial sends them again)."""
    with _ON_CLUSTER_LOCK:
        for key in [k for k, (held, _, _) in _ON_CLUSTER.items() if held is client]:
            del _ON_CLUSTER[key]


def _on_cluster(client: Any, X: Any, y: Any) -> tuple[Any, Any]:
    """``(X, y)`` as dask arrays held by the workers, one row block on each; sent once per matrix.

    Each block is scattered to its own worker (a persisted array may put every block on one
    worker, which then trains alone while the others hold an empty matrix). Keyed by the
    client and the matrix object: the study caches each fold's matrices for its whole run, and
    the entry keeps both alive, so their ids are not reused.
    """
    import dask.array as da
    import numpy as np

    with _ON_CLUSTER_LOCK:
        key = (id(client), id(X))
        hit = _ON_CLUSTER.get(key)
        if hit is not None and hit[0] is client and hit[1] is X:
            return hit[2]
        X_np, y_np = np.asarray(X), np.asarray(y)
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        bounds = np.linspace(0, len(X_np), min(len(workers), len(X_np)) + 1).round().astype(int)
        xs, ys = [], []
        for worker, lo, hi in zip(workers, bounds[:-1], bounds[1:]):
            fx, fy = client.scatter([X_np[lo:hi], y_np[lo:hi]], workers=[worker], hash=False)
            xs.append(da.from_delayed(fx, shape=(hi - lo, X_np.shape[1]), dtype=X_np.dtype))
            ys.append(da.from_delayed(fy, shape=(hi - lo,), dtype=y_np.dtype))
        arrays = (da.concatenate(xs), da.concatenate(ys))
        _ON_CLUSTER[key] = (client, X, arrays)
        return arrays
