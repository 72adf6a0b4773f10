"""A real ``dask.distributed`` cluster for the ``--engine dask`` tests, and partitioned tables.

Session fixture ``dask_cluster``: a ``LocalCluster`` of three worker processes (one thread
each), started once; tests pass its ``scheduler_address`` with ``--scheduler``, exactly as a
user points mlsys at a cluster. ``partition(frame, directory, parts)`` writes a frame as many
Parquet files, the input the Dask engine reads.

Worker loss: ``loss_cluster`` is a second LocalCluster of two workers, each under a nanny that
restarts it when it dies, and :func:`kill_a_worker_during` SIGKILLs one worker process while a
job runs, as the OOM killer or a lost host would.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[object]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster:
        yield cluster
        from mlsys_cli.data.cluster import close_shared

        close_shared()  # tune's trials keep a client to the cluster for the process


@pytest.fixture(scope="session")
def loss_cluster() -> Iterator[object]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.CRITICAL) as cluster:
        yield cluster


def kill_a_worker_during(cluster: Any, job: Callable[[], Any], started: Callable[[], bool]) -> dict[str, Any]:
    """Run ``job()`` on a thread, SIGKILL one worker process once ``started()``; ``{"result"}`` or ``{"error"}``."""
    from distributed import Client

    with Client(cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(len(cluster.workers), timeout=60)  # a worker killed by an earlier test is back
        pids = list(client.run(os.getpid).values())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = job()
        except Exception as exc:  # the test asserts which
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)  # a hung job must not hang the test run
    thread.start()
    while thread.is_alive() and not started():
        thread.join(0.02)
    assert thread.is_alive(), f"the job ended before the worker could be killed: {outcome}"
    os.kill(pids[0], signal.SIGKILL)
    thread.join(240)
    assert not thread.is_alive(), "the job hangs after a worker was killed"
    return outcome


def partition(frame, directory: Path, parts: int) -> Path:
    """Write ``frame`` as ``parts`` Parquet files (row order kept) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    n = len(frame)
    for i in range(parts):
        frame.iloc[i * n // parts:(i + 1) * n // parts].to_parquet(directory / f"part-{i:03d}.parquet", index=False)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
