"""A real ``dask.distributed`` cluster for the ``--engine dask`` tests, and partitioned tables.

Session fixture ``dask_cluster``: a ``LocalCluster`` of three worker processes (one thread
each), started once; tests pass its ``scheduler_address`` with ``--scheduler``, exactly as a
user points mlsys at a cluster. ``partition(frame, directory, parts)`` writes a frame as many
Parquet files, the input the Dask engine reads.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[object]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        yield cluster
        from mlsys_cli.data.cluster import close_shared

        close_shared()  # tune's trials keep a client to the cluster for the process


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
