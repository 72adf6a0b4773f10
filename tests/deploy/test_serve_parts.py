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
    canon = {"x": np.full(rows, 1.5), "s": np.array(["a"] * (rows - 1) + [""], dtype=object),
             "b": np.array([1.0] * (rows - 1) + [np.nan]), "t": np.array([86400] * rows, dtype=np.int64)}
    out = {"label": np.array([True] * rows, dtype=object), "probabilities": np.tile([0.2, 0.8], (rows, 1))}
    return Entry(time.time(), "id", _model(role), 1.0, canon, out, rows)


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

    runs = []

    class Model:
        def predict(self, canon):
            runs.append(len(canon["x"]))
            return {"prediction": canon["x"] * 2.0}

    batcher = Batcher(Model(), BatchOptions(max_rows=4), SimpleNamespace(observe=lambda rows: None))

    async def clients():
        Pending.count += 3  # three requests in flight: each queues instead of running alone
        try:
            return await asyncio.gather(*(batcher.predict({"x": np.arange(n, dtype=float) + 10 * n}, n) for n in (1, 2, 3)))
        finally:
            Pending.count -= 3

    answers = asyncio.run(clients())
    assert runs == [3, 3]  # 1 + 2 rows together, then 3 (over max_rows=4 with the others)
    assert [a["prediction"].tolist() for a in answers] == [[20.0], [40.0, 42.0], [60.0, 62.0, 64.0]]


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


def test_an_answer_leaves_in_one_write_and_100_continue_at_once():
    from mlsys_cli.deploy.serve.runner import _Coalesced

    writes = []
    transport = SimpleNamespace(write=writes.append, close=lambda: writes.append("closed"), is_closing=lambda: False)
    held = _Coalesced(transport)
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
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    info = {line.split("version=")[1].split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in out.splitlines() if line.startswith("mlsys_model_info{")}
    assert info == {"v0001": 0.0, "v0002": 1.0}
