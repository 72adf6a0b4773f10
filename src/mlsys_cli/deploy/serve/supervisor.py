"""``--workers N``: N forked worker processes on one listening socket.

Workers are forked before anything heavy is imported (no threads to inherit) and load their
models themselves; each writes ``ok`` or ``error: <reason>`` to a pipe once, so a model that
fails to load stops the start with exit 3 and the reason. prometheus-client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``, a temporary directory) makes ``/metrics`` on any worker
report for all of them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from mlsys_cli.errors import InputError


@dataclass(frozen=True)
class Runner:
    """What a worker runs, handed in by runner.py (so this module does not import it back):
    ``load(specs) -> slots`` and ``run(specs, options, sock, on_ready, slots=)``."""

    load: Callable[..., Any]
    run: Callable[..., Any]


def _worker(specs: list[Any], options: Any, sock: socket.socket, pipe: int, runner: Runner) -> None:
    """The body of a forked worker; never returns."""
    code = 0
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent()
        try:
            slots = runner.load(specs)
        except Exception as exc:
            message = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            os.write(pipe, f"error: {message}\n".encode())
            code = 3
            return
        models = repr([s.current.describe() for s in slots.values()])
        runner.run(specs, options, sock, lambda: os.write(pipe, f"ok {models}\n".encode()), slots=slots)
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        code = 1
        raise
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the supervisor dies (even by SIGKILL): no orphan keeps the port."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's own SIGTERM handling still stops the workers


def _spawn(specs: list[Any], options: Any, sock: socket.socket, runner: Runner) -> tuple[int, int]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _worker(specs, options, sock, write, runner)
    os.close(write)
    return pid, read


def _status(fd: int) -> str:
    chunks = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
        if data.endswith(b"\n"):
            break
    os.close(fd)
    return b"".join(chunks).decode(errors="replace").strip()


def supervise(specs: list[Any], options: Any, sock: socket.socket, on_ready: Callable[[Any], None], runner: Runner) -> None:
    """Run ``options.workers`` workers until SIGTERM/SIGINT; forward SIGHUP (reload)."""
    import ast

    metrics_dir = tempfile.mkdtemp(prefix="mlsys-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children: dict[int, int] = {}
    stopping = False
    try:
        for _ in range(options.workers):
            pid, fd = _spawn(specs, options, sock, runner)
            children[pid] = fd
        models = None
        for pid, fd in list(children.items()):
            status = _status(fd)
            if not status.startswith("ok"):
                _stop(children)
                reason = status[len("error: "):] if status.startswith("error: ") else "a worker exited during start-up"
                raise InputError(f"cannot serve: {reason}")
            models = ast.literal_eval(status[3:])

        def forward(sig: int, _frame: Any) -> None:
            nonlocal stopping
            if sig in (signal.SIGTERM, signal.SIGINT):
                stopping = True
                # No worker is started again: the listener is theirs to close. Held open here, connections
                # would be queued on it with nobody to accept them, and reset when this process exits.
                sock.close()
            for child in list(children):
                _kill(child, signal.SIGTERM if sig == signal.SIGINT else sig)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        on_ready(models)
        while children:
            try:
                pid, _ = os.wait()
            except ChildProcessError:
                break
            children.pop(pid, None)
            _mark_dead(pid)
            if not stopping:  # a worker died on its own: start another on the same socket
                new, fd = _spawn(specs, options, sock, runner)
                _status(fd)
                children[new] = fd
    finally:
        _stop(children)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop(children: dict[int, int]) -> None:
    for pid in list(children):
        _kill(pid, signal.SIGTERM)
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        children.pop(pid, None)


def _mark_dead(pid: int) -> None:
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
    except Exception:
        pass  # the metrics of a dead worker are only stale gauges
