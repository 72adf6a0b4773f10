"""The Dask engine: where ``--engine dask`` work runs.

``--scheduler ADDRESS`` (or ``MLSYS_DASK_SCHEDULER``) names a running ``dask scheduler``
(``tcp://host:8786``); the command connects to it as a client, submits its tasks and leaves the
cluster running. Without an address the command starts a ``LocalCluster`` on this machine (one
worker process per core, one thread each, memory split evenly, the scheduler's HTTP endpoint on
a free port: ``dashboard_address=None`` still binds 8787, and warns when another cluster has it) and stops it at the
end: what a user trying ``--engine dask`` on a laptop expects, and the same code path as a cluster.

Workers run mlsys's own functions, so every worker needs the same mlsys version and the ``dask``
extra installed, and reads input, model and output paths itself: on several hosts those paths
must be on a shared file system (the same path on every host).

dask is an optional extra: :func:`require_dask` turns its absence into a usage error (exit 2)
with the install command, and nothing here imports it at module level.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from mlsys_cli.errors import InputError, UsageError

ENGINES = ("local", "dask")
SCHEDULER_ENV = "MLSYS_DASK_SCHEDULER"
INSTALL = "pip install 'mlsys[dask]'"
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Engine:
    """Where a command runs: ``local`` (this process) or ``dask`` (a scheduler, or a LocalCluster).

    Parameters
    ----------
    name : {"local", "dask"}
    scheduler : str, optional
        The address of a running scheduler; None starts a LocalCluster (dask only).
    connect_timeout : float
        Seconds to wait for the scheduler before giving up (exit 3).
    """

    name: str = "local"
    scheduler: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise UsageError(f"unknown engine {self.name!r}", "use --engine local or --engine dask")
        if self.scheduler and self.name != "dask":
            raise UsageError("--scheduler needs --engine dask")

    @classmethod
    def from_options(cls, name: str, scheduler: str | None = None, connect_timeout: float = CONNECT_TIMEOUT) -> "Engine":
        """The engine of ``--engine``/``--scheduler``; dask without an address reads ``MLSYS_DASK_SCHEDULER``."""
        if name == "dask" and not scheduler:
            scheduler = os.environ.get(SCHEDULER_ENV) or None
        return cls(name=name, scheduler=scheduler, connect_timeout=connect_timeout)

    @property
    def is_dask(self) -> bool:
        return self.name == "dask"

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.name, "scheduler": self.scheduler or ("local-cluster" if self.is_dask else None)}


def require_dask() -> None:
    """Refuse ``--engine dask`` when the extra is not installed (exit 2, with the install command)."""
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--engine dask needs the dask extra ({exc.name or 'dask'} is not installed)",
                         f"install it: {INSTALL}") from None


@contextlib.contextmanager
def connect(engine: Engine) -> Iterator[Any]:
    """A ``distributed.Client`` for the engine; closed (and a LocalCluster stopped) on exit.

    Raises
    ------
    UsageError
        The dask extra is missing (exit 2).
    InputError
        The scheduler does not answer within ``engine.connect_timeout`` seconds, or the address
        is not one (exit 3, naming the address and the reason).
    """
    require_dask()
    from distributed import Client

    if engine.scheduler:
        client = _client(engine.scheduler, engine.connect_timeout)
        try:
            yield client
        finally:
            client.close()
        return
    from distributed import LocalCluster

    # Worker processes, not threads: featurizing and predicting hold the GIL in places, and a
    # worker process is what a real cluster has, so the local run tests the same code path.
    with LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        with Client(cluster, set_as_default=False) as client:
            yield client


_SHARED: dict[Engine, tuple[Any, contextlib.ExitStack]] = {}
_SHARED_LOCK = threading.Lock()


def shared_client(engine: Engine) -> Any:
    """The process's client for ``engine``, connected on first use and kept until :func:`close_shared`.

    For work that submits many small jobs (tune's trials): one connection (or one LocalCluster)
    per process instead of one per job; closed when the process exits. Raises as :func:`connect`.
    """
    with _SHARED_LOCK:
        if engine not in _SHARED:
            stack = contextlib.ExitStack()
            client = stack.enter_context(connect(engine))
            if not _SHARED:
                import atexit

                atexit.register(close_shared)
            _SHARED[engine] = (client, stack)
        return _SHARED[engine][0]


def close_shared() -> None:
    """Close the clients :func:`shared_client` opened (and stop their LocalClusters)."""
    with _SHARED_LOCK:
        stacks = [stack for _, stack in _SHARED.values()]
        _SHARED.clear()
    for stack in stacks:
        stack.close()


def _client(address: str, timeout: float) -> Any:
    """Connect within ``timeout`` seconds, whatever listens at ``address``.

    ``Client(timeout=)`` bounds the TCP connect only: a server that accepts the connection but
    does not speak Dask's protocol (an HTTP server, a proxy) left the handshake waiting for ever,
    or fed its frame decoder garbage (a 3 EiB allocation). So the connect runs in a daemon thread
    that is abandoned at the deadline, and any failure of it is the address's fault (exit 3).
    """
    from distributed import Client

    box: dict[str, Any] = {}

    def attempt() -> None:
        try:
            box["client"] = Client(address, timeout=timeout, set_as_default=False)
        except BaseException as exc:  # noqa: BLE001 - reported below, whatever it is
            _abandon(exc)
            box["error"] = exc

    thread = threading.Thread(target=attempt, name="mlsys-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    hint = (f"start one with `dask scheduler` and workers with `dask worker ADDRESS`, or check --scheduler / "
            f"{SCHEDULER_ENV}")
    if thread.is_alive():
        raise InputError(f"the Dask scheduler at {address} did not answer within {timeout:g} s "
                         "(something listens there, but it does not speak Dask's protocol)", hint)
    exc = box.get("error")
    if exc is None:
        return box["client"]
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not isinstance(exc, (OSError, TimeoutError, ValueError)):
        reason = f"it does not answer as a Dask scheduler ({type(exc).__name__})"
    raise InputError(f"cannot reach the Dask scheduler at {address}: {reason}", hint)


def _abandon(exc: BaseException) -> None:
    """Close the Client a failed constructor left half-made, quietly: its ``__del__`` would try
    again at exit, time out and print a traceback. (It is the ``self`` of a frame of the error.)"""
    from distributed import Client

    tb = exc.__traceback__
    while tb is not None:
        half = tb.tb_frame.f_locals.get("self")
        if isinstance(half, Client):
            with contextlib.suppress(BaseException):
                half.close(timeout=1)
            half.status = "closed"  # distributed's own marker: __del__ and close() then do nothing
            with contextlib.suppress(BaseException):
                half._loop_runner.stop()
        tb = tb.tb_next


_CACHE: dict[tuple[str, str], Any] = {}
_CACHE_LOCK = threading.Lock()
CACHED = 4  # artifacts kept per worker process (models, featurizers)


def cached_artifact(path: str, sha256: str, load: Callable[[str], Any]) -> Any:
    """``load(path)`` once per worker process, for the file whose sha256 the client computed.

    Runs on a worker. Keyed by path and sha256, so a file replaced on disk is never served from
    the cache, and a worker whose copy differs from the client's refuses it (exit 3).
    """
    from mlsys_cli.fsutil import sha256_file

    key = (os.path.abspath(path), sha256)
    with _CACHE_LOCK:  # `dask worker` runs several task threads per process by default
        if key in _CACHE:
            _CACHE[key] = _CACHE.pop(key)  # most recently used last
            return _CACHE[key]
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file on a Dask worker", "workers read it by path: use a shared file system")
        if sha256_file(path) != sha256:
            raise InputError(f"{path}: the file on a Dask worker differs from the client's (sha256)",
                             "every host must see the same file: use a shared file system")
        artifact = _CACHE[key] = load(path)
        while len(_CACHE) > CACHED:
            del _CACHE[next(iter(_CACHE))]
        return artifact


class WorkerLost(InputError):
    """A Dask job failed because a worker died (beyond Dask's retries) or the cluster went away."""


@contextlib.contextmanager
def worker_failures(client: Any = None, futures: Sequence[Any] = ()) -> Iterator[None]:
    """Raise a lost worker or cluster as :class:`WorkerLost` (exit 3); cancel ``futures`` on the way out."""
    try:
        yield
    except Exception as exc:
        clean = worker_failure(exc)
        if clean is None:
            raise
        raise clean from None
    finally:
        if futures:
            client.cancel(futures)


def worker_failure(exc: BaseException) -> WorkerLost | None:
    """The clean error for a job whose worker died or whose cluster went away (None: not one)."""
    names = {type(exc).__name__}
    # FuturesCancelledError: a result's inputs were lost with a worker ("lost dependencies").
    if names & {"KilledWorker", "CommClosedError", "FutureCancelledError", "FuturesCancelledError", "CancelledError"}:
        return WorkerLost(f"the Dask job failed: a worker was lost ({exc})",
                          "nothing was written; check the workers' memory limits and logs, then rerun")
    return None
