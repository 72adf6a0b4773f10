"""The prediction log: every answered row to Parquet, written off the request path.

The request path only appends a small tuple (the canonical input arrays it already built, the
outputs, who answered, when, how long) to a queue. A writer thread turns them into Arrow row
groups and writes them into an open file under a temporary name starting with '.'; the file is
renamed to ``predictions-<UTC yyyymmddTHHMMSS>-<pid>-<seq>.parquet`` when it reaches
``rotate_bytes`` or ``rotate_seconds``, and on close (SIGTERM), so a reader (``mlsys drift``)
never sees half a file. Columns are fixed by CONTRACTS.md: the model's raw input columns with
their schema types, ``_mlsys_*`` metadata and the outputs.

When the disk cannot keep up, rows beyond ``max_pending`` are dropped and counted rather than
holding memory without bound or slowing answers.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlsys_cli.errors import InputError

META = "_mlsys_"


@dataclass(frozen=True)
class LogOptions:
    """Where and how often the prediction log is written."""

    directory: Path
    rotate_seconds: float = 60.0
    rotate_bytes: int = 64 << 20
    flush_rows: int = 4096
    flush_seconds: float = 1.0
    max_pending: int = 1_000_000


@dataclass(frozen=True)
class Entry:
    """One answered request (all its rows) as the request path hands it over."""

    time: float
    request_id: str
    model: Any  # ServedModel
    latency_ms: float
    canon: dict[str, Any]
    outputs: dict[str, Any]
    rows: int


def _arrow_schema(model: Any) -> Any:
    import pyarrow as pa

    kinds = {"float": pa.float64(), "bool": pa.bool_(), "string": pa.string(), "datetime": pa.timestamp("us", tz="UTC")}
    fields = [pa.field(c["name"], kinds[c["type"]]) for c in model.input_schema]
    ts = pa.timestamp("us", tz="UTC")
    fields += [pa.field(f"{META}time", ts), pa.field(f"{META}request_id", pa.string()), pa.field(f"{META}model", pa.string()),
               pa.field(f"{META}version", pa.string()), pa.field(f"{META}role", pa.string()),
               pa.field(f"{META}latency_ms", pa.float64())]
    if model.task == "regression":
        fields.append(pa.field(f"{META}prediction", pa.float64()))
    else:
        fields.append(pa.field(f"{META}label", pa.string()))
        fields += [pa.field(f"{META}proba_{c}", pa.float64()) for c in model.classes]
    return pa.schema(fields)


def _input_array(kind: str, values: Any) -> Any:
    """A canonical column as its logged Arrow type; canonical 'missing' becomes null."""
    import numpy as np
    import pyarrow as pa

    from mlsys_cli.features.schema import INT64_MIN

    if kind == "float":
        return pa.array(values, type=pa.float64(), mask=np.isnan(values))
    if kind == "bool":
        return pa.array(values == 1.0, type=pa.bool_(), mask=np.isnan(values))
    if kind == "string":
        return pa.array(values, type=pa.string(), mask=values == "")
    missing = values == INT64_MIN
    return pa.array(np.where(missing, 0, values) * 1_000_000, type=pa.int64(), mask=missing).cast(pa.timestamp("us", tz="UTC"))


def entries_table(entries: list[Entry]) -> Any:
    """The Arrow table of a list of entries answered by models of one schema."""
    import numpy as np
    import pyarrow as pa

    model = entries[0].model
    schema = _arrow_schema(model)
    n = [e.rows for e in entries]
    columns = [_input_array(c["type"], np.concatenate([e.canon[c["name"]] for e in entries])) for c in model.input_schema]
    repeat = lambda values: np.repeat(np.asarray(values, dtype=object), n)  # noqa: E731 - one value per request
    micros = np.repeat(np.array([int(e.time * 1_000_000) for e in entries], dtype=np.int64), n)
    columns += [pa.array(micros, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(repeat([e.request_id for e in entries]), type=pa.string()),
                pa.array(repeat([e.model.name for e in entries]), type=pa.string()),
                pa.array(repeat([e.model.version for e in entries]), type=pa.string()),
                pa.array(repeat([e.model.role for e in entries]), type=pa.string()),
                pa.array(np.repeat(np.array([e.latency_ms for e in entries]), n), type=pa.float64())]
    if model.task == "regression":
        columns.append(pa.array(np.concatenate([e.outputs["prediction"] for e in entries]), type=pa.float64()))
    else:
        labels = np.concatenate([np.asarray(e.outputs["label"], dtype=object) for e in entries])
        columns.append(pa.array([str(v) for v in labels.tolist()], type=pa.string()))
        proba = np.concatenate([e.outputs["probabilities"] for e in entries])
        columns += [pa.array(proba[:, i], type=pa.float64()) for i in range(proba.shape[1])]
    return pa.Table.from_arrays(columns, schema=schema)


class _OpenFile:
    """One Parquet file being written under its temporary name."""

    def __init__(self, directory: Path, schema: Any, seq: int):
        import pyarrow.parquet as pq

        from mlsys_cli.fsutil import atomic_path

        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.target = directory / f"predictions-{stamp}-{os.getpid()}-{seq:04d}.parquet"
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.target))
        self.writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        self.opened = time.monotonic()
        self.rows = 0
        self.bytes = 0
        self.tmp = tmp

    def write(self, table: Any) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.bytes += table.nbytes

    def size(self) -> int:
        """Bytes of data written (Arrow, uncompressed): the file's own size lags its buffered writes."""
        return self.bytes

    def close(self) -> Path:
        self.writer.close()
        self._stack.close()  # fsync + rename into place
        return self.target


class PredictionLog:
    """A background writer of the prediction log.

    Parameters
    ----------
    options : LogOptions
    on_write : callable, optional
        ``on_write(rows_written, rows_dropped)``, called from the writer thread (metrics).
    """

    def __init__(self, options: LogOptions, on_write: Callable[[int, int], None] | None = None):
        self.options = options
        self._queue: collections.deque = collections.deque()
        self._pending = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._on_write = on_write or (lambda written, dropped: None)
        self._files: dict[Any, _OpenFile] = {}
        self._seq = 0
        self._thread: threading.Thread | None = None
        self.written: list[Path] = []
        self.error: str | None = None
        try:
            options.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--log-dir {options.directory}: cannot create it ({exc.strerror})") from None
        if not os.access(options.directory, os.W_OK):
            raise InputError(f"--log-dir {options.directory}: not writable")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlsys-predlog", daemon=True)
        self._thread.start()

    def append(self, entry: Entry) -> None:
        """Queue an answered request (called on the request path: no I/O, no conversion, no wake-up)."""
        with self._lock:
            if self._pending + entry.rows > self.options.max_pending:
                dropped = True
            else:
                self._pending += entry.rows
                dropped = False
        if dropped:
            self._on_write(0, entry.rows)
            return
        self._queue.append(entry)

    def close(self) -> None:
        """Write everything queued and rename the open files into place (SIGTERM, shutdown)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        # The thread sleeps between flushes and takes what queued up in one go: waking it on every
        # request would make it compete for the GIL with the event loop on every request.
        while not self._stop.wait(self.options.flush_seconds):
            self._drain()
            self._rotate(time.monotonic())
        self._drain()
        for key in list(self._files):
            self._close(key)

    def _drain(self) -> None:
        batch, rows = [], 0
        while self._queue:
            batch.append(self._queue.popleft())
            rows += batch[-1].rows
            if rows >= self.options.flush_rows:  # one row group at most this big
                self._write(batch)
                batch, rows = [], 0
        if batch:
            self._write(batch)

    def _write(self, batch: list[Entry]) -> None:
        groups: dict[Any, list[Entry]] = {}
        for e in batch:
            groups.setdefault(_schema_key(e.model), []).append(e)
        rows = sum(e.rows for e in batch)
        try:
            for key, entries in groups.items():
                table = entries_table(entries)
                if key not in self._files:
                    self._seq += 1
                    self._files[key] = _OpenFile(self.options.directory, table.schema, self._seq)
                self._files[key].write(table)
            self._on_write(rows, 0)
        except Exception as exc:  # a full disk must not stop the service: count the rows as dropped
            self.error = f"{type(exc).__name__}: {exc}"
            self._on_write(0, rows)
        with self._lock:
            self._pending -= rows

    def _rotate(self, now: float) -> None:
        for key, f in list(self._files.items()):
            if now - f.opened >= self.options.rotate_seconds or f.size() >= self.options.rotate_bytes:
                self._close(key)

    def _close(self, key: Any) -> None:
        f = self._files.pop(key)
        try:
            self.written.append(f.close())
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"


def _schema_key(model: Any) -> tuple:
    """Models whose rows share a file: same input columns and types, same outputs."""
    return (model.task, tuple((c["name"], c["type"]) for c in model.input_schema), tuple(str(c) for c in model.classes))
