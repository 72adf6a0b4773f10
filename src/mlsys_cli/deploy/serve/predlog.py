"""The prediction log: every answered row to Parquet, converted and written in another process.

The request path encodes each answered request as one small frame (``orjson``: the request's
inputs embedded as the client sent them, the outputs as lists, who answered, when, how long)
and appends it to a deque: no lock, no wake-up, a few microseconds. A sender thread hands what
queued up to a writer process (:mod:`.predlog_writer`) through a pipe every ``flush_seconds``,
in one write with Python's lock released while it waits. The writer process reads the inputs
again with the model's own reader, builds the Arrow columns and writes Parquet.

Why a process: the Arrow conversion used to run on a thread of the server, holding the GIL the
event loop needs (measured in process at 32 concurrent requests: 129 µs of CPU a request with
the log, 81 µs without; a request arriving during a conversion waited for the GIL, which was
the tail at a fixed 500 requests/s). Now it runs on the other core and never takes the server's
lock, and reading thousands of records at once costs far less per row than one request at a time.

Files (CONTRACTS.md) are written under a temporary name starting with '.' and renamed to
``predictions-<UTC yyyymmddTHHMMSS>-<pid>-<seq>.parquet`` when they reach ``rotate_bytes`` or
``rotate_seconds``, and on close (SIGTERM), so a reader (``mlsys drift``) never sees half a
file. The writer stops when its pipe closes, which also happens when the server dies by
SIGKILL: it writes what it received, renames its files and exits (no orphan process, no half
file). When the writer cannot keep up, rows beyond ``max_pending`` are dropped and counted
rather than holding memory without bound or slowing answers.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import orjson

from mlsys_cli.errors import InputError

CLOSE_SECONDS = 120.0  # how long close() waits for the writer to write what it has (then it is killed)


@dataclass(frozen=True)
class LogOptions:
    """Where and how often the prediction log is written."""

    directory: Path
    rotate_seconds: float = 60.0
    rotate_bytes: int = 64 << 20
    flush_rows: int = 4096
    flush_seconds: float = 1.0
    max_pending: int = 1_000_000


class Entry(NamedTuple):
    """One answered request (all its rows) as the request path hands it over.

    ``inputs`` is ``("records", json)`` (a JSON object or list of objects, the ``/predict`` body
    as it arrived) or ``("columns", json)`` (an object of column -> values, V2 inputs): JSON the
    request's own reader already accepted.
    """

    time: float
    request_id: str
    model: Any  # ServedModel
    latency_ms: float
    inputs: tuple[str, bytes]
    outputs: dict[str, Any]
    rows: int


class PredictionLog:
    """The server's side of the prediction log.

    Parameters
    ----------
    options : LogOptions
    on_write : callable, optional
        ``on_write(rows_written, rows_dropped)`` (metrics); called from the event loop (a full
        queue) and from a reader thread (what the writer process reports).
    """

    def __init__(self, options: LogOptions, on_write: Callable[[int, int], None] | None = None):
        self.options = options
        self._queue: collections.deque = collections.deque()  # (frame, rows)
        # Rows queued and rows sent: each counter has one writer (the event loop, the sender
        # thread), so neither needs a lock; their difference is what waits.
        self._queued = 0
        self._taken = 0
        self._models: dict[tuple, int] = {}  # (role, name, version) -> index in the frames
        self._stop = threading.Event()
        self._on_write = on_write or (lambda written, dropped: None)
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._dead: str | None = None  # why the writer process is gone, once it is
        self.written: list[Path] = []
        self.error: str | None = None
        try:
            options.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--log-dir {options.directory}: cannot create it ({exc.strerror})") from None
        if not os.access(options.directory, os.W_OK):
            raise InputError(f"--log-dir {options.directory}: not writable")

    def start(self) -> None:
        o = self.options
        settings = {"directory": str(o.directory.resolve()), "rotate_seconds": o.rotate_seconds, "rotate_bytes": o.rotate_bytes,
                    "flush_rows": o.flush_rows, "flush_seconds": o.flush_seconds, "pid": os.getpid()}
        # The pipes are close-on-exec and the server forks no other child after this, so the
        # writer's stdin closes when the server exits, however it exits. Its own session: the
        # terminal's Ctrl-C and hang-up go to the server's process group, and the server decides.
        self._proc = subprocess.Popen([sys.executable, "-m", "mlsys_cli.deploy.serve.predlog_writer", orjson.dumps(settings).decode()],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, start_new_session=True)
        self._threads = [threading.Thread(target=self._send, name="mlsys-predlog-send", daemon=True),
                         threading.Thread(target=self._listen, name="mlsys-predlog-listen", daemon=True)]
        for t in self._threads:
            t.start()

    def append(self, entry: Entry) -> None:
        """Queue an answered request (from the event loop only: no lock, no I/O, no wake-up)."""
        if self._queued - self._taken + entry.rows > self.options.max_pending:
            self._on_write(0, entry.rows)
            return
        model = entry.model
        index = self._models.get((model.role, model.name, model.version))
        if index is None:
            index = self._define(model)
        try:
            outputs = {k: v.tolist() for k, v in entry.outputs.items()}
            frame = orjson.dumps([index, entry.time, entry.request_id, entry.latency_ms, entry.rows, entry.inputs[0],
                                  orjson.Fragment(entry.inputs[1]), outputs])
        except Exception as exc:  # a row the log cannot hold must not touch the answer (already sent): counted
            self.error = f"{type(exc).__name__}: {exc}"
            self._on_write(0, entry.rows)
            return
        self._queued += entry.rows
        self._queue.append((frame, entry.rows))

    def _define(self, model: Any) -> int:
        """Tell the writer about a model the first time one of its rows is logged."""
        index = len(self._models)
        self._models[(model.role, model.name, model.version)] = index
        spec = {"model": index, "name": model.name, "version": model.version, "role": model.role, "task": model.task,
                "classes": [str(c) for c in model.classes], "input_schema": model.input_schema}
        self._queue.append((orjson.dumps(spec, default=str), 0))
        return index

    def close(self) -> None:
        """Write everything queued and rename the files into place (SIGTERM, shutdown)."""
        if self._proc is None:
            return
        self._stop.set()
        self._threads[0].join()  # sends the rest, then closes the pipe: the writer finishes
        try:
            self._proc.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            self.error = f"the log writer did not finish within {CLOSE_SECONDS:g} s"
        self._threads[1].join()
        self._proc = None

    def _send(self) -> None:
        # Sleeps between hand-overs and sends what queued up in one write: waking on every request
        # would compete with the event loop for the GIL on every request.
        pipe = self._proc.stdin
        while not self._stop.wait(self.options.flush_seconds):
            self._hand_over(pipe)
        self._hand_over(pipe)
        try:
            pipe.close()
        except OSError:
            pass

    def _hand_over(self, pipe: Any) -> None:
        frames, rows = [], 0
        queue = self._queue
        while queue:
            frame, n = queue.popleft()
            frames.append(len(frame).to_bytes(4, "little"))
            frames.append(frame)
            rows += n
        if not frames:
            return
        if self._dead is None:
            try:
                pipe.write(b"".join(frames))
                pipe.flush()
            except (OSError, ValueError) as exc:  # the writer died: what it will never see is counted
                self._dead = self.error = f"the log writer stopped ({exc})"
        if self._dead is not None:
            self._on_write(0, rows)
        self._taken += rows

    def _listen(self) -> None:
        for line in self._proc.stdout:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if "file" in message:
                self.written.append(Path(message["file"]))
            if message.get("written") or message.get("dropped"):
                self._on_write(message.get("written", 0), message.get("dropped", 0))
            if "error" in message:
                self.error = message["error"]
