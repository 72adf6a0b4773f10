"""The prediction log's writer process: frames from the server in, Parquet files out.

Started by :class:`~.predlog.PredictionLog` as ``python -m mlsys_cli.deploy.serve.predlog_writer
OPTIONS`` with its stdin a pipe from the server. It reads length-prefixed JSON frames: a model
definition (an object: index, name, version, role, task, classes, input schema) or an answered
request (an array: model index, arrival time, request id, latency, rows, ``records`` or
``columns``, the request's inputs as the client sent them, the outputs). The inputs are read
again with the model's own validated reader (``RecordReader`` / ``canonical_columns``, the
code that read them for the prediction, so the logged values are the ones the model saw), many
requests at once: one pass per column type over thousands of rows, not one per request.

Files are written as before (CONTRACTS.md): under a temporary name starting with '.', renamed
to ``predictions-<UTC yyyymmddTHHMMSS>-<server pid>-<seq>.parquet`` when they reach
``rotate_bytes`` or ``rotate_seconds`` and when the pipe closes. The pipe closes when the server
closes the log (SIGTERM) and also when the server dies, even by SIGKILL, since no other process
holds its write end: the writer then writes what it received whole (a frame cut off by the
death is not written), renames its files and exits, so no process outlives the server and no
half file is left. The writer runs in its own session (the terminal's Ctrl-C reaches the server's
process group, not it) and ignores SIGINT, SIGTERM and SIGHUP: the end of the pipe is the only
way to stop it, so the rows handed over before it are never lost.

What the server learns back, one JSON line each on stdout: ``{"written": n}``, ``{"dropped": n,
"error": ...}`` (rows the log could not hold, or a disk that failed) and ``{"file": path}``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

META = "_mlsys_"
FRAME = struct.Struct("<I")
NICE = 10  # the writer's scheduling priority below the server's
CHUNK_ROWS = 8192  # rows converted together: large enough to amortise, small enough to bound memory


class _Model:
    """A model as the log knows it (from its definition frame), with its compiled record reader."""

    def __init__(self, spec: dict[str, Any]):
        from mlsys_cli.features.schema import RecordReader

        self.name, self.version, self.role = spec["name"], spec["version"], spec["role"]
        self.task: str = spec["task"]
        self.classes: list[str] = spec["classes"]
        self.input_schema: list[dict[str, Any]] = spec["input_schema"]
        self.reader = RecordReader(self.input_schema, strict=True)
        self.key = (self.task, tuple((c["name"], c["type"]) for c in self.input_schema), tuple(self.classes))
        self.schema = _arrow_schema(self)


def _arrow_schema(model: _Model) -> Any:
    import pyarrow as pa

    kinds = {"float": pa.float64(), "bool": pa.bool_(), "string": pa.string(), "datetime": pa.timestamp("us", tz="UTC"),
             "time": pa.time64("us")}
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
    import pyarrow as pa

    from mlsys_cli.features.schema import INT64_MIN

    if kind == "float":
        return pa.array(values, type=pa.float64(), mask=np.isnan(values))
    if kind == "bool":
        return pa.array(values == 1.0, type=pa.bool_(), mask=np.isnan(values))
    if kind == "string":
        return pa.array(values, type=pa.string(), mask=values == "")
    if kind == "time":  # logged as the TIME it was, so drift reads the column as the reference's type
        return pa.array(np.round(np.nan_to_num(values) * 1e6).astype(np.int64), type=pa.int64(),
                        mask=np.isnan(values)).cast(pa.time64("us"))
    missing = values == INT64_MIN
    return pa.array(np.where(missing, 0, values) * 1_000_000, type=pa.int64(), mask=missing).cast(pa.timestamp("us", tz="UTC"))


# An answered request's frame: [model, time, request_id, latency_ms, rows, kind, inputs, outputs]
MODEL, TIME, REQUEST_ID, LATENCY, ROWS, KIND, INPUTS, OUTPUTS = range(8)


def _canonical(model: _Model, kind: str, entries: list[list[Any]]) -> dict[str, Any]:
    """The canonical input arrays of every row of ``entries`` (one kind, one model), read at once."""
    if kind == "records":
        records: list[Any] = []
        for e in entries:
            inputs = e[INPUTS]
            if isinstance(inputs, list):
                records.extend(inputs)
            else:
                records.append(inputs)
        return model.reader(records)
    from mlsys_cli.features.schema import canonical_columns

    names = [c["name"] for c in model.input_schema]
    columns = {name: [v for e in entries for v in e[INPUTS][name]] for name in names}
    return canonical_columns(columns, model.input_schema, strict=True)


def entries_table(model: _Model, kind: str, entries: list[list[Any]]) -> Any:
    """The Arrow table of answered requests of one model and one kind of inputs."""
    import pyarrow as pa

    canon = _canonical(model, kind, entries)
    n = np.fromiter((e[ROWS] for e in entries), dtype=np.int64, count=len(entries))
    total = int(n.sum())
    if any(len(v) != total for v in canon.values()):
        raise ValueError(f"the inputs hold {len(next(iter(canon.values())))} rows, the requests say {total}")
    single = bool((n == 1).all())

    def per_request(values: list[Any], dtype: Any = object) -> Any:
        arr = np.array(values, dtype=dtype)
        return arr if single else np.repeat(arr, n)

    columns = [_input_array(c["type"], canon[c["name"]]) for c in model.input_schema]
    micros = (per_request([e[TIME] for e in entries], np.float64) * 1_000_000).astype(np.int64)
    count = len(entries) if single else total
    columns += [pa.array(micros, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(per_request([e[REQUEST_ID] for e in entries]), type=pa.string()),
                pa.array([model.name] * count, type=pa.string()), pa.array([model.version] * count, type=pa.string()),
                pa.array([model.role] * count, type=pa.string()),
                pa.array(per_request([e[LATENCY] for e in entries], np.float64), type=pa.float64())]
    if model.task == "regression":
        columns.append(pa.array(np.array([v for e in entries for v in e[OUTPUTS]["prediction"]], dtype=np.float64)))
    else:
        columns.append(_labels([v for e in entries for v in e[OUTPUTS]["label"]]))
        proba = np.array([row for e in entries for row in e[OUTPUTS]["probabilities"]], dtype=np.float64)
        proba = proba.reshape(total, len(model.classes))
        columns += [pa.array(proba[:, i], type=pa.float64()) for i in range(proba.shape[1])]
    return pa.Table.from_arrays(columns, schema=model.schema)


def _labels(values: list[Any]) -> Any:
    """Predicted labels as the log's strings, ``str(label)`` of each (the classes' own spelling).

    Integer and string labels (nearly every classifier) are converted by Arrow in one call, a
    few times faster than ``str`` per row; bools and floats keep ``str`` (Arrow would spell
    True and 1.0 as "true" and "1").
    """
    import pyarrow as pa

    kinds = {type(v) for v in values}
    if kinds <= {str}:
        return pa.array(values, type=pa.string())
    if kinds <= {int}:
        with contextlib.suppress(OverflowError, pa.ArrowInvalid):  # beyond int64: str below
            return pa.array(values, type=pa.int64()).cast(pa.string())
    return pa.array([str(v) for v in values], type=pa.string())


class _OpenFile:
    """One Parquet file being written under its temporary name."""

    def __init__(self, directory: Path, schema: Any, name: str):
        import pyarrow.parquet as pq

        from mlsys_cli.fsutil import atomic_path

        self.target = directory / name
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.target))
        self.writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        self.opened = time.monotonic()
        self.bytes = 0  # Arrow bytes written: the file's own size lags its buffered writes

    def write(self, table: Any) -> None:
        self.writer.write_table(table)
        self.bytes += table.nbytes

    def close(self) -> Path:
        self.writer.close()
        self._stack.close()  # fsync + rename into place
        return self.target


class Writer:
    """Turns frames into Parquet files (one open file per model schema).

    Parameters
    ----------
    options : dict
        ``directory``, ``rotate_seconds``, ``rotate_bytes``, ``flush_rows``, ``flush_seconds``,
        ``pid`` (the server's, in the file names).
    report : callable
        ``report(message_dict)``: what the server learns back.
    """

    def __init__(self, options: dict[str, Any], report: Callable[[dict[str, Any]], None]):
        self.options = options
        self.directory = Path(options["directory"])
        self.report = report
        self.models: dict[int, _Model] = {}
        self.pending: list[list[Any]] = []
        self.pending_rows = 0
        self._files: dict[Any, _OpenFile] = {}
        self._seq = 0

    def frame(self, data: bytes) -> None:
        message = orjson.loads(data)
        if isinstance(message, dict):
            self.models[message["model"]] = _Model(message)
        else:
            self.pending.append(message)
            self.pending_rows += message[ROWS]
            if self.pending_rows >= self.options["flush_rows"]:
                self.drain()

    def drain(self) -> None:
        """Convert and write what is pending: runs of one model and one kind, at most CHUNK_ROWS rows each."""
        pending, self.pending, self.pending_rows = self.pending, [], 0
        tables: dict[Any, list[Any]] = {}
        start = 0
        while start < len(pending):
            first = pending[start]
            end, rows = start, 0
            while (end < len(pending) and rows < CHUNK_ROWS and pending[end][MODEL] == first[MODEL]
                   and pending[end][KIND] == first[KIND]):
                rows += pending[end][ROWS]
                end += 1
            self._convert(pending[start:end], tables)
            start = end
        for key, parts in tables.items():
            self._write(key, parts)

    def _convert(self, run: list[list[Any]], tables: dict[Any, list[Any]]) -> None:
        model = self.models[run[0][MODEL]]
        try:
            tables.setdefault(model.key, []).append(entries_table(model, run[0][KIND], run))
        except Exception as exc:  # a request the log cannot hold must not cost the others: one by one
            if len(run) == 1:
                self.report({"dropped": run[0][ROWS], "error": f"{type(exc).__name__}: {exc}"})
                return
            for entry in run:
                self._convert([entry], tables)

    def _write(self, key: Any, parts: list[Any]) -> None:
        import pyarrow as pa

        table = pa.concat_tables(parts)
        try:
            if key not in self._files:
                self._seq += 1
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
                name = f"predictions-{stamp}-{self.options['pid']}-{self._seq:04d}.parquet"
                self._files[key] = _OpenFile(self.directory, table.schema, name)
            self._files[key].write(table)
            self.report({"written": table.num_rows})
        except Exception as exc:  # a full disk must not stop the service: the rows are counted as dropped
            self.report({"dropped": table.num_rows, "error": f"{type(exc).__name__}: {exc}"})

    def rotate(self, now: float) -> None:
        for key, f in list(self._files.items()):
            if now - f.opened >= self.options["rotate_seconds"] or f.bytes >= self.options["rotate_bytes"]:
                self._close(key)

    def close(self) -> None:
        self.drain()
        for key in list(self._files):
            self._close(key)

    def _close(self, key: Any) -> None:
        f = self._files.pop(key)
        try:
            self.report({"file": str(f.close())})
        except Exception as exc:
            self.report({"error": f"{type(exc).__name__}: {exc}"})
        gc.collect()  # whatever cycles the last file's conversions left (main() turns automatic collection off)


def read_frames(fd: int, writer: Writer) -> None:
    """Feed ``writer`` the frames arriving on ``fd`` until it closes; flush and rotate on time."""
    buf = bytearray()
    flush_every = writer.options["flush_seconds"]
    last_flush = time.monotonic()
    while True:
        timeout = max(0.0, min(flush_every, writer.options["rotate_seconds"]) - (time.monotonic() - last_flush))
        ready, _, _ = select.select([fd], [], [], timeout)
        data = os.read(fd, 1 << 20) if ready else None
        if data == b"":
            break  # the server closed the log, or died
        if data:
            buf += data
            pos = 0
            while len(buf) - pos >= FRAME.size:
                (size,) = FRAME.unpack_from(buf, pos)
                if len(buf) - pos - FRAME.size < size:
                    break
                writer.frame(bytes(buf[pos + FRAME.size:pos + FRAME.size + size]))
                pos += FRAME.size + size
            del buf[:pos]
        now = time.monotonic()
        if now - last_flush >= flush_every:
            writer.drain()
            last_flush = now
        writer.rotate(now)
    writer.close()  # a frame cut off by the server's death (left in buf) is not written


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the end of the pipe stops the writer (module docstring)
    # Background work: when it wants the same core as the server's event loop, the requests go
    # first (its conversion comes in bursts once a second, a few ms at 500 requests/s).
    with contextlib.suppress(OSError):
        os.nice(NICE)
    # What the writer holds is acyclic (parsed JSON frames, NumPy and Arrow buffers), yet the
    # collector walked the growing list of pending frames again and again: measured, 10-25% of
    # the writer's CPU per row. Cycles are left to a collection at each file's rotation.
    gc.disable()
    options = orjson.loads(argv[0])
    out = sys.stdout.buffer

    def report(message: dict[str, Any]) -> None:
        if out.closed:
            return
        try:
            out.write(orjson.dumps(message) + b"\n")
            out.flush()
        except OSError:  # the server is gone (SIGKILL): its rows are still written, just not reported
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # the unflushed report goes nowhere
            out.close()

    read_frames(sys.stdin.buffer.fileno(), Writer(options, report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
