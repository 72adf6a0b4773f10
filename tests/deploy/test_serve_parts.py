"""The pieces of serve in process: the V2 wire format, the prediction log's rotation and limits,
micro-batching, and the uvicorn hooks the slow-client 408 relies on."""

from __future__ import annotations

import asyncio
import inspect
import json
import struct
import time
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlsys_cli.deploy.serve import v2
from mlsys_cli.deploy.serve.predlog import Entry, LogOptions, PredictionLog
from mlsys_cli.errors import InputError

SCHEMA = [{"name": "x", "type": "float"}, {"name": "s", "type": "string"}, {"name": "b", "type": "bool"},
          {"name": "t", "type": "datetime"}]


def _model(role="primary"):
    return SimpleNamespace(name="m", version="v1", role=role, task="binary", classes=[False, True], input_schema=SCHEMA,
                           kind="onnx")


def test_v2_binary_and_json_inputs_decode_alike():
    strings = ["a", "bé"]
    raw = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in strings)
    floats = np.array([1.5, 2.5], dtype="<f4").tobytes()
    head = json.dumps({"inputs": [
        {"name": "s", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}},
        {"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": len(floats)}},
        {"name": "t", "shape": [2, 1], "datatype": "INT64", "data": [[0], [86400]]}]}).encode()
    _, columns, rows = v2.decode_request(head + raw + floats, len(head))
    assert rows == 2 and columns == {"s": strings, "x": [1.5, 2.5], "t": [0, 86400]}
    _, same, _ = v2.decode_request(json.dumps({"inputs": [
        {"name": "s", "shape": [2], "datatype": "BYTES", "data": strings},
        {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]},
        {"name": "t", "shape": [2], "datatype": "INT64", "data": [0, 86400]}]}).encode(), None)
    assert same == columns


@pytest.mark.parametrize("body,length,needle", [
    (b'{"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}\x05\x00\x00\x00ab',
     None, "not valid JSON"),
    (b"\x05\x00\x00\x00ab", 0, "not valid JSON"),
    (b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}', None, "is not one column"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}', None, "unknown datatype"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},'
     b' {"name": "y", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}', None, "has 2 rows, the others 1"),
    # "parameters" that are not an object were an AttributeError: a 500 instead of a 422
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": 5}', None,
     "'parameters' must be an object"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": [1]}]}', None,
     "input 'x': 'parameters' must be an object"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "label", '
     b'"parameters": "binary"}]}', None, "output 'label': 'parameters' must be an object"),
    # The protocol's id is a string, echoed in the answer: an object was answered 200.
    (b'{"id": {"a": 1}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', None,
     "'id' must be a string (found dict)"),
    (b'{"id": 7, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', None,
     "'id' must be a string (found int)"),
])
def test_v2_bad_requests_are_named(body, length, needle):
    with pytest.raises(InputError) as info:
        v2.decode_request(body, length)
    assert needle in info.value.message


def test_v2_truncated_binary_bytes():
    head = b'{"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}'
    with pytest.raises(InputError) as info:
        v2.decode_request(head + b"\x09\x00\x00\x00ab", len(head))
    assert "truncated BYTES element" in info.value.message


def test_v2_outputs_binary_on_request():
    request = {"outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}], "id": "r1"}
    out = {"label": np.array([True]), "probabilities": np.array([[0.25, 0.75]])}
    payload, length = v2.encode_response(request, _model(), out)
    head = json.loads(payload[:length])
    assert head["id"] == "r1" and [o["name"] for o in head["outputs"]] == ["probabilities"]
    assert np.frombuffer(payload[length:], dtype="<f8").tolist() == [0.25, 0.75]
    with pytest.raises(InputError):
        v2.encode_response({"outputs": [{"name": "nope"}]}, _model(), out)


def _entry(rows, role="primary"):
    records = [{"x": 1.5, "s": "a", "b": True, "t": 86400}] * (rows - 1) + [{"x": 1.5, "s": None, "b": None, "t": 86400}]
    out = {"label": np.array([True] * rows, dtype=object), "probabilities": np.tile([0.2, 0.8], (rows, 1))}
    return Entry(time.time(), "id", _model(role), 1.0, ("records", json.dumps(records).encode()), out, rows)


def _until(condition):
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "the log writer did not get there"
        time.sleep(0.01)


def test_log_rotates_by_size_and_never_shows_half_files(tmp_path):
    log = PredictionLog(LogOptions(tmp_path, rotate_seconds=3600, rotate_bytes=1, flush_seconds=0.01))
    log.start()
    for i in range(3):
        log.append(_entry(4))
        _until(lambda: len(log.written) == i + 1)  # each write is past 1 byte: a file of its own
    log.append(_entry(2, role="shadow"))
    log.close()
    files = sorted(tmp_path.glob("predictions-*.parquet"))
    assert len(files) == 4 and not list(tmp_path.glob(".*"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == 14
    t = pq.read_table(files[0])
    assert t.column("s").null_count == 1 and t.column("b").null_count == 1
    assert str(t.schema.field("t").type) == "timestamp[us, tz=UTC]" and t.column("t")[0].as_py().year == 1970
    assert pq.read_table(files[-1]).column("_mlsys_role").to_pylist() == ["shadow", "shadow"]


def test_log_rotates_by_time(tmp_path):
    log = PredictionLog(LogOptions(tmp_path, rotate_seconds=0.05, flush_seconds=0.01))
    log.start()
    log.append(_entry(3))
    _until(lambda: len(log.written) == 1)  # renamed into place without a close or a size limit
    assert pq.read_metadata(log.written[0]).num_rows == 3
    log.close()


def test_log_drops_and_counts_beyond_its_queue(tmp_path):
    counts = {"written": 0, "dropped": 0}

    def on_write(written, dropped):
        counts["written"] += written
        counts["dropped"] += dropped

    log = PredictionLog(LogOptions(tmp_path, max_pending=5), on_write)
    log.append(_entry(4))
    log.append(_entry(4))  # over the queue's bound before the writer ran: dropped, counted
    log.start()
    log.close()
    assert counts == {"written": 4, "dropped": 4}


def test_log_dir_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError) as info:
        PredictionLog(LogOptions(blocker / "logs"))
    assert "cannot create it" in info.value.message


def test_queued_requests_share_one_model_run_and_get_their_own_rows():
    from mlsys_cli.deploy.serve.batching import BatchOptions, Batcher, Pending

    runs, reads = [], []

    class Model:
        def read(self, kind, records):
            reads.append(len(records))
            return {"x": np.array([r["x"] for r in records])}

        def predict(self, canon):
            runs.append(len(canon["x"]))
            return {"prediction": canon["x"] * 2.0}

    batcher = Batcher(Model(), BatchOptions(max_rows=4), SimpleNamespace(observe=lambda rows: None))

    async def clients():
        Pending.count += 3  # three requests in flight: each queues instead of running alone
        try:
            return await asyncio.gather(*(batcher.predict("records", [{"x": 10.0 * n + i} for i in range(n)], n) for n in (1, 2, 3)))
        finally:
            Pending.count -= 3

    answers = asyncio.run(clients())
    assert runs == [3, 3]  # 1 + 2 rows together, then 3 (over max_rows=4 with the others)
    assert reads == [3, 3]  # the records of a batch are read in one call
    assert [a["prediction"].tolist() for a in answers] == [[20.0], [40.0, 42.0], [60.0, 62.0, 64.0]]


class _Doubler:
    """A model for the batcher's tests: counts its runs."""

    def __init__(self):
        self.runs = []

    def read(self, kind, records):
        return {"x": np.array([r["x"] for r in records])}

    def predict(self, canon):
        self.runs.append(len(canon["x"]))
        return {"prediction": canon["x"] * 2.0}


def test_a_request_still_on_its_way_joins_the_model_run_instead_of_the_next():
    """In flight but not queued yet (its task runs one loop pass later): the drain waits one pass
    for it, so three requests cost one run (without the wait: a run of 2, then a run of 1)."""
    from mlsys_cli.deploy.serve.batching import BatchOptions, Batcher, Pending

    model = _Doubler()
    batcher = Batcher(model, BatchOptions(max_rows=64), SimpleNamespace(observe=lambda rows: None))

    async def late(x):
        await asyncio.sleep(0)  # its body arrives one pass after the others'
        return await batcher.predict("records", [{"x": x}], 1)

    async def clients():
        Pending.count += 3
        try:
            return await asyncio.gather(batcher.predict("records", [{"x": 1.0}], 1),
                                        batcher.predict("records", [{"x": 2.0}], 1), late(3.0))
        finally:
            Pending.count -= 3

    answers = asyncio.run(clients())
    assert model.runs == [3]
    assert [a["prediction"].tolist() for a in answers] == [[2.0], [4.0], [6.0]]
    assert batcher._answered == 0


def test_the_drain_waits_a_bounded_time_for_requests_that_never_queue():
    """Five in flight (say, three are /metrics scrapes or slow bodies), two queued: the two are
    answered after one extra pass, not held until the others come."""
    from mlsys_cli.deploy.serve.batching import BatchOptions, Batcher, Pending

    model = _Doubler()
    batcher = Batcher(model, BatchOptions(max_rows=64), SimpleNamespace(observe=lambda rows: None))

    async def clients():
        Pending.count += 5
        try:
            return await asyncio.wait_for(asyncio.gather(*(batcher.predict("records", [{"x": float(i)}], 1) for i in range(2))), 5)
        finally:
            Pending.count -= 5

    answers = asyncio.run(clients())
    assert model.runs == [2]
    assert [a["prediction"].tolist() for a in answers] == [[0.0], [2.0]]


def test_a_request_cancelled_after_its_answer_was_set_is_not_counted_as_waiting():
    """The count of answered-but-not-taken requests drives the drain's wait: a deadline that
    cancels a request after its outputs were set must still take it off the count."""
    from mlsys_cli.deploy.serve.batching import BatchOptions, Batcher, Pending

    model = _Doubler()
    batcher = Batcher(model, BatchOptions(max_rows=64), SimpleNamespace(observe=lambda rows: None))

    async def clients():
        Pending.count += 2
        try:
            tasks = [asyncio.ensure_future(batcher.predict("records", [{"x": float(i)}], 1)) for i in range(2)]
            while model.runs == []:
                await asyncio.sleep(0)
            tasks[0].cancel()  # its result is set; the task has not run since
            done = await asyncio.gather(*tasks, return_exceptions=True)
            return done
        finally:
            Pending.count -= 2

    done = asyncio.run(clients())
    assert isinstance(done[0], asyncio.CancelledError)
    assert done[1]["prediction"].tolist() == [2.0]
    assert batcher._answered == 0


def test_uvicorn_still_has_what_the_slow_client_408_overrides():
    """runner._protocol subclasses uvicorn's internal HttpToolsProtocol (pinned in pyproject.toml).
    An upgrade that renames what it overrides or reads must fail here, not silently drop the 408."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from mlsys_cli.deploy.serve.runner import _protocol

    for hook in ("connection_made", "on_message_begin", "on_headers_complete", "on_response_complete", "connection_lost"):
        assert callable(getattr(HttpToolsProtocol, hook, None)), f"uvicorn's HttpToolsProtocol has no {hook}"
    assert "self.loop" in inspect.getsource(HttpToolsProtocol.__init__)
    assert "self.transport" in inspect.getsource(HttpToolsProtocol.connection_made)
    assert issubclass(_protocol(1.0), HttpToolsProtocol)
    # runner._answer_overload replaces the 503 uvicorn gives past --max-connections, and its warning
    from uvicorn.protocols.http import httptools_impl

    assert callable(getattr(httptools_impl, "service_unavailable", None))
    source = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "app = service_unavailable" in source and "Exceeded concurrency limit." in source


def test_an_answer_leaves_in_one_write_and_100_continue_at_once():
    from mlsys_cli.deploy.serve.runner import _Coalesced, _Writes

    writes = []
    transport = SimpleNamespace(write=writes.append, close=lambda: writes.append("closed"), is_closing=lambda: False)
    held = _Coalesced(transport, _Writes())
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it before sending its body
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    held.write(b"{}")
    assert writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    held.flush()  # the answer is complete
    assert writes[1:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    held.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    held.close()  # what uvicorn writes before closing still goes out
    assert writes[2:] == [b"HTTP/1.1 400 Bad Request\r\n\r\n", "closed"]
    assert held.is_closing() is False  # everything else is the transport's


def test_the_answers_of_one_loop_pass_leave_together_in_order_and_none_to_a_closed_client():
    import asyncio

    from mlsys_cli.deploy.serve.runner import _Coalesced, _Writes

    writes, closing = [], {"c": False}

    def conn(name):
        return SimpleNamespace(write=lambda d: writes.append((name, d)), close=lambda: None,
                               is_closing=lambda: closing.get(name, False))

    async def scenario():
        burst = _Writes()
        a, b, c = (_Coalesced(conn(n), burst) for n in "abc")
        for t, n in ((a, b"1"), (b, b"2"), (c, b"3")):
            t.write(b"HTTP/1.1 200 OK\r\n\r\n" + n)
            t.complete()
        a.write(b"HTTP/1.1 200 OK\r\n\r\n4")  # a pipelined second answer on the same connection
        a.complete()
        closing["c"] = True  # c's client went away while its answer waited
        assert writes == []  # nothing leaves while this pass builds answers
        await asyncio.sleep(0)  # the end of the pass
        return list(writes)

    written = asyncio.run(scenario())
    assert written == [("a", b"HTTP/1.1 200 OK\r\n\r\n1HTTP/1.1 200 OK\r\n\r\n4"), ("b", b"HTTP/1.1 200 OK\r\n\r\n2")]


def test_access_lines_are_json_whatever_the_client_sent():
    import orjson

    from mlsys_cli.deploy.serve.runner import access_line

    model = SimpleNamespace(name="churn", version="ab12", role="canary")
    line = access_line(1700000000.1234, 'id "quoted" \\ é', "POST", '/p"x', 200, 0.0012345, 3, ("::1", 5), model)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"time": 1700000000.123, "event": "request", "id": 'id "quoted" \\ é', "method": "POST",
                                  "path": '/p"x', "status": 200, "ms": 1.234, "rows": 3, "client": "::1:5",
                                  "model": "churn", "version": "ab12", "role": "canary"}
    bare = orjson.loads(access_line(1.0, "r", "GET", "/", 404, 0.0, 0, None, None))
    assert bare["client"] is None and "model" not in bare


def test_deadlines_fire_once_when_due_and_never_once_discarded():
    from mlsys_cli.deploy.serve.deadlines import Deadlines

    fired = []

    async def scenario():
        limits = Deadlines(tick=0.01)
        limits.add("slow", 0.03, lambda: fired.append("slow"))
        limits.add("done", 0.03, lambda: fired.append("done"))
        limits.add("again", 5.0, lambda: fired.append("again"))
        limits.add("again", 0.02, lambda: fired.append("again"))  # a new deadline replaces the old one
        limits.discard("done")
        await asyncio.sleep(0.2)
        return limits._handle

    assert asyncio.run(scenario()) is None  # nothing left in flight: the periodic check stopped
    assert sorted(fired) == ["again", "slow"]


def _frames(*messages):
    return b"".join(len(m).to_bytes(4, "little") + m for m in map(lambda m: json.dumps(m).encode(), messages))


def _writer(tmp_path, reports):
    from mlsys_cli.deploy.serve.predlog_writer import Writer

    options = {"directory": str(tmp_path), "rotate_seconds": 3600, "rotate_bytes": 1 << 30, "flush_rows": 4096,
               "flush_seconds": 0.05, "pid": 1}
    return Writer(options, reports.append)


MODEL_FRAME = {"model": 0, "name": "m", "version": "v1", "role": "primary", "task": "binary", "classes": ["False", "True"],
               "input_schema": SCHEMA}


def test_log_writer_reads_v2_columns_and_drops_only_the_row_it_cannot_hold(tmp_path):
    import os

    from mlsys_cli.deploy.serve.predlog_writer import read_frames

    out = {"label": [True], "probabilities": [[0.2, 0.8]]}
    good = [0, 1.0, "a", 1.0, 1, "columns", {"x": [2.5], "s": ["é"], "b": [False], "t": ["1970-01-02T00:00:00Z"]}, out]
    bad = [0, 1.0, "b", 1.0, 1, "columns", {"x": [2.5], "s": ["a"], "b": [False]}, out]  # no 't': cannot be read
    records = [0, 2.0, "c", 1.0, 2, "records", [{"x": 1, "s": "z", "b": True, "t": 0}] * 2,
               {"label": [True, False], "probabilities": [[0.2, 0.8], [0.6, 0.4]]}]
    data = _frames(MODEL_FRAME, good, bad, good, records)
    read, write = os.pipe()
    os.write(write, data + data[:7])  # ...and a frame cut short by the server's death
    os.close(write)
    reports = []
    read_frames(read, _writer(tmp_path, reports))
    os.close(read)
    files = sorted(tmp_path.glob("predictions-*-1-0001.parquet"))
    assert len(files) == 1 and not list(tmp_path.glob(".*"))
    t = pq.read_table(files[0]).to_pydict()
    assert t["_mlsys_request_id"] == ["a", "a", "c", "c"] and t["s"] == ["é", "é", "z", "z"]
    assert t["x"] == [2.5, 2.5, 1.0, 1.0] and t["b"] == [False, False, True, True] and t["t"][0].day == 2
    assert t["_mlsys_label"] == ["True", "True", "True", "False"] and t["_mlsys_proba_True"] == [0.8, 0.8, 0.8, 0.4]
    dropped = [r for r in reports if r.get("dropped")]
    assert len(dropped) == 1 and dropped[0]["dropped"] == 1 and "'t'" in dropped[0]["error"]
    assert sum(r.get("written", 0) for r in reports) == 4


def test_log_writer_logs_a_time_of_day_as_the_time_it_was(tmp_path):
    # Logged as Arrow time64, so drift on the logs reads the column as the reference's type (time).
    import datetime as dt
    import os

    from mlsys_cli.deploy.serve.predlog_writer import read_frames
    from mlsys_cli.monitor.scan import logical_type

    model = {**MODEL_FRAME, "input_schema": [{"name": "at", "type": "time"}]}
    records = [0, 2.0, "c", 1.0, 3, "records", [{"at": "08:30"}, {"at": None}, {"at": 45.5}],
               {"label": [True] * 3, "probabilities": [[0.2, 0.8]] * 3}]
    read, write = os.pipe()
    os.write(write, _frames(model, records))
    os.close(write)
    read_frames(read, _writer(tmp_path, []))
    os.close(read)
    table = pq.read_table(next(tmp_path.glob("predictions-*.parquet")))
    assert logical_type(table.schema.field("at").type) == "time"
    assert table.column("at").to_pylist() == [dt.time(8, 30), None, dt.time(0, 0, 45, 500_000)]


def test_log_writer_process_is_out_of_the_terminals_reach_and_ends_with_its_pipe(tmp_path):
    import os
    import signal

    written = []
    log = PredictionLog(LogOptions(tmp_path, flush_seconds=0.01), lambda w, d: written.append(w))
    log.start()
    assert os.getsid(log._proc.pid) != os.getsid(0)  # Ctrl-C at a terminal goes to the server's group only
    log.append(_entry(3))
    _until(lambda: sum(written) == 3)  # the writer is running and has the rows
    nice = int(open(f"/proc/{log._proc.pid}/stat").read().rsplit(")", 1)[1].split()[16])
    assert nice == os.nice(0) + 10 or nice == 19  # background work: the server's requests go first
    log._proc.send_signal(signal.SIGINT)
    log._proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert log._proc.poll() is None
    log.close()
    assert [pq.read_metadata(f).num_rows for f in log.written] == [3] and log.error is None


def test_a_refused_request_in_a_batch_gets_its_422_and_the_others_their_rows():
    from mlsys_cli.deploy.serve.batching import BatchOptions, Batcher, Pending
    from mlsys_cli.deploy.serve.models import ServedModel

    class Engine:
        session = None  # served as ONNX: predict goes through outputs(run(feeds))

        def feeds_from_canonical(self, canon):
            return canon

        def run(self, feeds):
            return feeds

        def outputs(self, feeds):
            return {"prediction": feeds["x"] * 2.0}

    manifest = {"task": "regression", "input_schema": [{"name": "x", "type": "float"}]}
    model = ServedModel(Engine(), "m", "v1", "primary", manifest, None)
    batcher = Batcher(model, BatchOptions(max_rows=64), SimpleNamespace(observe=lambda rows: None))
    bodies = [[{"x": 1.0}], [{"x": "not a number"}], [{"x": 3.0}, {"x": 4.0}], [{"y": 1.0}]]

    async def clients():
        Pending.count += len(bodies)
        try:
            return await asyncio.gather(*(batcher.predict("records", b, len(b)) for b in bodies), return_exceptions=True)
        finally:
            Pending.count -= len(bodies)

    first, bad, third, missing = asyncio.run(clients())
    assert first["prediction"].tolist() == [2.0] and third["prediction"].tolist() == [6.0, 8.0]
    assert isinstance(bad, InputError) and "'x'" in bad.message
    assert isinstance(missing, InputError) and "missing" in missing.message


def test_a_row_the_log_cannot_encode_is_counted_not_raised(tmp_path):
    counts = []
    log = PredictionLog(LogOptions(tmp_path), lambda written, dropped: counts.append((written, dropped)))
    entry = _entry(2)
    log.append(entry._replace(outputs={"label": object()}))  # no .tolist(): the answer was sent, the log counts it
    assert counts == [(0, 2)] and "AttributeError" in log.error
    log.start()
    log.append(entry)
    log.close()
    assert counts[1:] == [(2, 0)]


def test_metrics_counted_locally_read_as_prometheus_client_would_write_them():
    """The per-request series counted in dicts and exposed at scrape time give the very samples
    prometheus-client's own Counter/Histogram give (workers use those)."""
    from mlsys_cli.deploy.serve.metrics import Metrics

    local, direct = Metrics(local=True), Metrics(local=False)
    outputs = {"label": np.array([True, False, True]), "probabilities": np.zeros((3, 2))}
    for m in (local, direct):
        for route, status, seconds in [("predict", 200, 0.0004), ("predict", 200, 0.002), ("predict", 422, 0.0011),
                                       ("v2_infer", 200, 3.0), ("predict", 200, 0.001)]:
            m.request(route, status, seconds)
        m.predicted("primary", "binary", outputs, 3)
        m.predicted("shadow", "binary", {"label": np.array([False])}, 1)

    def samples(m):
        return sorted(line for line in m.exposition()[0].decode().splitlines() if not line.startswith("#"))

    assert samples(local) == samples(direct)
    assert 'mlsys_request_duration_seconds_bucket{le="0.001",route="predict"} 2.0' in samples(local)
    assert 'mlsys_predictions_total{label="True",role="primary"} 2.0' in samples(local)


def test_a_swapped_out_model_stops_counting_as_serving_with_workers(tmp_path):
    """With --workers the gauge lives in prometheus-client's multiprocess files (set up at import,
    hence a fresh interpreter): the old version must read 0 after a swap, not stay at 1."""
    import os
    import subprocess
    import sys

    code = """
from types import SimpleNamespace as M
from mlsys_cli.deploy.serve.metrics import Metrics
m = Metrics()
m.serving("primary", None, M(name="models", version="v0001"))
m.serving("primary", M(name="models", version="v0001"), M(name="models", version="v0002"))
print(m.exposition()[0].decode())
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    out = proc.stdout
    assert proc.stderr == ""  # prometheus-client's UserWarning broke the JSON lines on stderr at every reload (audit F6)
    info = {line.split("version=")[1].split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in out.splitlines() if line.startswith("mlsys_model_info{")}
    assert info == {"v0001": 0.0, "v0002": 1.0}


def test_log_writer_whose_server_died_writes_its_pending_rows_and_exits_cleanly(tmp_path):
    """SIGKILLed server: its end of the reports pipe is gone while rows still wait in the writer (audit F1).

    The writer's first report then met a broken pipe, reporting that failure raised again, and it
    died with a traceback before renaming its file: every row it held was lost.
    """
    import subprocess
    import sys

    options = {"directory": str(tmp_path), "rotate_seconds": 3600, "rotate_bytes": 1 << 30, "flush_rows": 1 << 20,
               "flush_seconds": 3600, "pid": 7}  # nothing is written (or reported) before the pipe closes
    out = {"label": [True], "probabilities": [[0.2, 0.8]]}
    rows = [[0, 1.0, f"r{i}", 1.0, 1, "records", [{"x": i, "s": "z", "b": True, "t": 0}], out] for i in range(50)]
    proc = subprocess.Popen([sys.executable, "-m", "mlsys_cli.deploy.serve.predlog_writer", json.dumps(options)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the server's reader of the reports: dead
    proc.stdin.write(_frames(MODEL_FRAME, *rows))
    proc.stdin.close()  # ...and its end of the frames pipe
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()
    files = sorted(tmp_path.glob("predictions-*-7-0001.parquet"))
    assert len(files) == 1 and not list(tmp_path.glob(".*"))
    assert pq.read_table(files[0]).column("_mlsys_request_id").to_pylist() == [f"r{i}" for i in range(50)]


def test_a_failing_shadow_is_told_on_stderr_at_once_then_at_most_once_a_minute(monkeypatch):
    """A shadow's failures never touch the answer; they were only counted, so nobody saw why (audit F2)."""
    import types

    from mlsys_cli.deploy.serve import app as app_module

    events = []
    server = object.__new__(app_module.ServeApp)
    server.state = types.SimpleNamespace(event=events.append)
    server._shadow_failures = [0, -app_module.SHADOW_EVENT_SECONDS]
    shadow = types.SimpleNamespace(name="challenger", version="v2")
    clock = [1000.0]
    monkeypatch.setattr(app_module.time, "monotonic", lambda: clock[0])
    for _ in range(3):
        server._shadow_failed(shadow, ValueError("boom"))
    clock[0] += app_module.SHADOW_EVENT_SECONDS
    server._shadow_failed(shadow, ValueError("boom"))
    assert [(e["event"], e["failures"], e["error"]) for e in events] == [("shadow_error", 1, "ValueError: boom"),
                                                                          ("shadow_error", 3, "ValueError: boom")]


@pytest.mark.parametrize("outputs", ["label", [{"nom": "label"}], ["label"]])
def test_v2_outputs_that_are_not_a_list_of_named_objects_are_refused(outputs):
    """They were ignored: every output came back as if none had been asked for (audit F6)."""
    import types

    from mlsys_cli.deploy.serve import v2

    model = types.SimpleNamespace(task="regression", name="m", version="v1", role="primary")
    with pytest.raises(InputError, match="'outputs' must be a list of objects with a 'name'"):
        v2.encode_response({"outputs": outputs}, model, {"prediction": np.array([1.0])})
    body, _ = v2.encode_response({"outputs": [{"name": "prediction"}]}, model, {"prediction": np.array([1.0])})
    assert json.loads(body)["outputs"][0]["data"] == [1.0]


def test_v2_a_header_length_that_is_not_a_number_is_named_as_such():
    from mlsys_cli.deploy.serve import v2

    with pytest.raises(InputError, match="is not a number of bytes"):
        v2.decode_request(b'{"inputs": []}', -1)  # the server's reading of "abc"


def test_logged_labels_are_spelled_as_str_of_each_label_whatever_their_type():
    from mlsys_cli.deploy.serve.predlog_writer import _labels

    for labels in ([0, 1, 2], ["no", "yes"], [True, False], [1.0, 2.5], [2**70, -1], [1, "a"], []):
        assert _labels(labels).to_pylist() == [str(v) for v in labels]
