"""mlsys serve as a real process on a free port: protocols, validation, log, reload, operations."""

from __future__ import annotations

import json
import signal
from pathlib import Path
import socket
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_clean_error, run_cli
from tests.deploy.serving import Server, json_records, metric, set_champion, write_registry


@pytest.fixture(scope="module")
def models(small_tables, tmp_path_factory):
    """Two binary models of the sample churn slice (xgboost, linear), the first also as ONNX."""
    t = small_tables["binary"]
    root = tmp_path_factory.mktemp("serve")
    for family, extra in (("xgboost", ["--param", "n_estimators=20"]), ("linear", [])):
        result = run_cli("train", t["train"], "--valid", t["valid"], "--target", t["target"], "--model", family, *extra,
                         "-o", root / f"{family}.mlsys")
        assert result.code == 0, result.stderr
    assert run_cli("export", root / "xgboost.mlsys", "-o", root / "model.onnx").code == 0
    test = pd.read_parquet(t["test"]).drop(columns=[t["target"]])
    from mlsys_cli.deploy.onnx_model import OnnxModel

    schema = {c["name"]: c["type"] for c in OnnxModel.load(root / "model.onnx").input_schema}
    return {"schema": schema, "root": root, "onnx": root / "model.onnx", "xgboost": root / "xgboost.mlsys", "linear": root / "linear.mlsys",
            "rows": test, "records": json_records(test)}


@pytest.fixture(scope="module")
def server(models):
    with Server(models["onnx"], "--max-rows", "50", "--max-body-mb", "0.05", "--request-timeout", "2s",
                cwd=models["root"]) as s:
        yield s


def test_predict_records_match_the_model(server, models):
    from mlsys_cli.deploy.onnx_model import OnnxModel

    expected = OnnxModel.load(models["onnx"]).predict(models["rows"].iloc[:20])
    status, one = server.predict(models["records"][0])
    assert status == 200, one
    assert one["model"] == "model" and one["role"] == "primary" and len(one["version"]) == 12
    assert len(one["predictions"]) == 1
    status, many = server.predict(models["records"][:20])
    assert status == 200 and len(many["predictions"]) == 20
    labels = [p["label"] for p in many["predictions"]]
    assert labels == expected["label"].tolist()
    proba = np.array([[p["probabilities"][str(c)] for c in (False, True)] for p in many["predictions"]])
    np.testing.assert_allclose(proba, expected["probabilities"], atol=1e-6)
    assert many["predictions"][0] == one["predictions"][0]


def test_open_inference_protocol_with_tritonclient(server, models):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url.split("//", 1)[1])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("model")
    meta = client.get_model_metadata("model")
    assert meta["name"] == "model" and meta["versions"] == [server.info["models"][0]["version"]]
    schema = {i["name"]: i["datatype"] for i in meta["inputs"]}
    floats = [name for name, dtype in schema.items() if dtype == "FP32"]
    complete = models["rows"].dropna(subset=[n for n in schema if n not in floats])
    holes = complete[complete[floats].isna().any(axis=1)]
    assert len(holes) >= 3
    for binary in (True, False):
        # A binary FP32 tensor marks a missing number with NaN (it has no null: audit F4); JSON
        # tensors cannot hold NaN (tritonclient would write the literal, which is not JSON).
        rows = pd.concat([holes.iloc[:3], complete.dropna().iloc[:4]]) if binary else complete.dropna().iloc[:7]
        _, expected = server.predict(json_records(rows))
        inputs = []
        for name, dtype in schema.items():
            values = rows[name]
            if dtype == "BYTES":
                arr = values.astype(str).to_numpy(dtype=object).reshape(-1, 1)
            elif dtype == "INT64":
                arr = np.array([int(t.timestamp()) for t in pd.to_datetime(values, utc=True)], dtype=np.int64).reshape(-1, 1)
            elif dtype == "BOOL":
                arr = values.astype(bool).to_numpy().reshape(-1, 1)
            else:
                arr = values.astype(np.float32).to_numpy().reshape(-1, 1)
            inp = httpclient.InferInput(name, list(arr.shape), dtype)
            inp.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(inp)
        outputs = [httpclient.InferRequestedOutput("label", binary_data=binary),
                   httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
        result = client.infer("model", inputs, outputs=outputs)
        proba = result.as_numpy("probabilities")
        assert proba.shape == (7, 2)
        assert result.as_numpy("label").tolist() == [p["label"] for p in expected["predictions"]]
        np.testing.assert_allclose(proba[:, 1], [p["probabilities"]["True"] for p in expected["predictions"]], atol=1e-6)
        assert result.get_response()["model_version"] == meta["versions"][0]
    with pytest.raises(Exception) as info:
        client.get_model_metadata("nope")
    assert "unknown model 'nope'" in str(info.value)
    client.close()


def _bad(models):
    good = models["records"][0]
    numeric = next(k for k, kind in models["schema"].items() if kind == "float" and good[k] is not None)
    column = next(iter(models["schema"]))
    json_headers = {"Content-Type": "application/json"}
    return [
        ("malformed JSON", "/predict", b'{"a": 1', json_headers, 422, "not valid JSON"),
        ("gzip body", "/predict", __import__("gzip").compress(json.dumps(good).encode()),
         {**json_headers, "Content-Encoding": "gzip"}, 415, "Content-Encoding gzip is not supported"),
        ("wrong content type", "/predict", json.dumps(good).encode(), {"Content-Type": "text/plain"}, 415, "content type"),
        ("no content type", "/predict", json.dumps(good).encode(), {}, 415, "content type"),
        ("empty body", "/predict", b"", json_headers, 422, "empty"),
        ("empty list", "/predict", b"[]", json_headers, 422, "non-empty list"),
        ("not records", "/predict", b"[1, 2]", json_headers, 422, "record 0 is not an object"),
        ("body over the limit", "/predict", json.dumps([good] * 200).encode(), json_headers, 413, "over the limit"),
        ("batch over the limit", "/predict", json.dumps([{k: good[k] for k in list(good)[:3]}] * 51).encode(),
         json_headers, 413, "51 records"),
        ("NaN", "/predict", json.dumps(good).replace(json.dumps(good[numeric]), "NaN", 1).encode(), json_headers, 422,
         "NaN and Infinity are not JSON"),
        ("Infinity", "/predict", json.dumps({**good, numeric: 1e400}).encode(), json_headers, 422, "not valid JSON"),
        ("beyond float32", "/predict", json.dumps({**good, numeric: 1e39}).encode(), json_headers, 422,
         f"column {numeric!r}: 1e+39 (row 0) is beyond float32's range"),
        ("string for a number", "/predict", json.dumps({**good, numeric: "lots"}).encode(), json_headers, 422,
         f"column {numeric!r}: expected numeric values, found 'lots' (row 0)"),
        ("'NaN' as a string", "/predict", json.dumps({**good, numeric: "NaN"}).encode(), json_headers, 422,
         f"column {numeric!r}: expected numeric values, found 'NaN'"),
        ("a boolean for a number", "/predict", json.dumps({**good, numeric: True}).encode(), json_headers, 422,
         f"column {numeric!r}: expected numeric values, found True"),
        *[(f"a date beyond range ({value})", "/predict", json.dumps({**good, when: value}).encode(), json_headers, 422,
           f"column {when!r}: {value!r} (row 0) is beyond the datetimes")
          for when in [k for k, kind in models["schema"].items() if kind == "datetime"][:1] for value in (1e20, "9999-12-31")],
        ("missing column", "/predict", json.dumps({k: v for k, v in good.items() if k != column}).encode(), json_headers,
         422, f"column {column!r} is missing"),
        ("unknown model", "/v2/models/nope/infer", b"{}", json_headers, 404, "unknown model 'nope'"),
        ("unknown version", "/v2/models/model/versions/v9/infer", b"{}", json_headers, 404, "no version 'v9'"),
        ("V2 without inputs", "/v2/models/model/infer", b'{"inputs": []}', json_headers, 422, "non-empty 'inputs'"),
        ("V2 bad shape", "/v2/models/model/infer",
         json.dumps({"inputs": [{"name": column, "shape": [2, 1], "datatype": "FP32", "data": [1]}]}).encode(),
         json_headers, 422, "says 2 values, found 1"),
        ("V2 input given twice", "/v2/models/model/infer",
         json.dumps({"inputs": [{"name": column, "shape": [1], "datatype": "FP32", "data": [1]}] * 2}).encode(),
         json_headers, 422, f"input {column!r} is given twice"),
        ("V2 id not a string", "/v2/models/model/infer",
         json.dumps({"id": {"a": 1}, "inputs": [{"name": column, "shape": [1], "datatype": "FP32", "data": [1]}]}).encode(),
         json_headers, 422, "'id' must be a string"),
        ("V2 parameters not an object", "/v2/models/model/infer",
         json.dumps({"inputs": [{"name": column, "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": 5}).encode(),
         json_headers, 422, "'parameters' must be an object"),
        ("wrong method", "/predict?x", None, {}, 405, "use POST"),
        ("unknown route", "/nowhere", None, {}, 404, "no route"),
    ]


def test_every_bad_input_is_a_4xx_with_its_reason(server, models):
    for what, path, body, headers, status, needle in _bad(models):
        method = "GET" if body is None else "POST"
        got, _, answer = server.request(method, path.split("?")[0], body, headers)
        assert got == status, (what, got, answer)
        assert needle in json.loads(answer)["error"], (what, answer)
    unseen = {**models["records"][0], **{k: "never-seen-before" for k, v in models["records"][0].items() if isinstance(v, str)
                                         and not v[:4].isdigit()}}
    status, answer = server.predict(unseen)
    assert status == 200, answer  # an unseen category is predicted, not refused
    assert server.request("GET", "/v2/health/ready")[0] == 200
    text = server.metrics()
    assert metric(text, "mlsys_requests_total", status="422") >= 10
    assert not any(f'status="5' in line for line in text.splitlines())


def test_a_column_given_as_integer_codes_is_answered_with_a_warning_and_counted(server, models):
    """Numbers can be categories, so not refused; but every value unseen is told, not silent."""
    assert models["schema"]["plan"] == "string"
    coded = [{**r, "plan": i % 3 + 1} for i, r in enumerate(models["records"][:6])]
    status, answer = server.predict(coded)
    assert status == 200 and len(answer["predictions"]) == 6
    assert answer["warnings"] == ["column 'plan': every value (6 rows) is a category unseen in training "
                                  "(fitted on text, given integers); the model reads each as an unknown category"]
    status, plain = server.predict(models["records"][:6])
    assert status == 200 and "warnings" not in plain
    columns = {k: [r[k] for r in coded] for k in coded[0]}
    inputs = [{"name": k, "shape": [6], "datatype": {"float": "FP32", "string": "BYTES", "bool": "BOOL"}.get(kind, "BYTES"),
               "data": columns[k]} for k, kind in models["schema"].items()]
    status, _, body = server.request("POST", "/v2/models/model/infer", {"id": "r7", "inputs": inputs})
    assert status == 200, body
    assert json.loads(body)["parameters"]["warnings"] == answer["warnings"]
    assert server.predict({**models["records"][0], "plan": 4})[0] == 200  # one row: counted, no warning
    assert metric(server.metrics(), "mlsys_unseen_categories_total", column="plan", role="primary") >= 13


def test_slow_clients_get_408_and_others_are_served(server, models):
    body = json.dumps(models["records"][0]).encode()
    slow_headers = socket.create_connection(("127.0.0.1", server.port))
    slow_headers.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    slow_body = socket.create_connection(("127.0.0.1", server.port))
    slow_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10]))
    for _ in range(5):  # meanwhile, everybody else is answered
        assert server.predict(models["records"][0])[0] == 200
    for sock in (slow_headers, slow_body):
        sock.settimeout(30)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"within 2 s" in answer
    assert server.predict(models["records"][0])[0] == 200


def test_docs_and_openapi(server, models):
    status, headers, body = server.request("GET", "/openapi.json")
    spec = json.loads(body)
    assert status == 200 and spec["openapi"].startswith("3.")
    record = spec["components"]["schemas"]["Record"]
    assert record["required"] == list(models["schema"])
    status, headers, body = server.request("GET", "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"/predict" in body and b"<script" not in body


def test_token_log_shadow_canary_and_graceful_stop(models, tmp_path):
    """Bearer token; shadow and canary logged with their roles; SIGTERM finishes in-flight requests and flushes."""
    logs = tmp_path / "logs"
    env = {"SERVE_TOKEN": "s3cret"}
    with Server(models["onnx"], "--api-key-env", "SERVE_TOKEN", "--log-dir", logs, "--shadow", models["linear"],
                "--canary", f"{models['xgboost']}:0.3", env=env, cwd=tmp_path) as s:
        auth = {"Authorization": "Bearer s3cret"}
        assert s.predict(models["records"][0])[0] == 401
        status, answer = s.predict(models["records"][0], {"Authorization": "Bearer wrong"})
        assert status == 401 and answer["error"] == "wrong bearer token"
        assert s.request("GET", "/v2/models/model", None, {})[0] == 401
        assert s.request("GET", "/v2/models/model", None, {"Authorization": "bearer s3cret"})[0] == 200  # any case
        assert s.request("GET", "/v2/health/live")[0] == 200  # probes need no token
        roles = []
        for i in range(40):
            status, answer = s.predict(models["records"][i % 20: i % 20 + 2], {**auth, "X-Mlsys-Key": f"user{i}"})
            assert status == 200, answer
            roles.append(answer["role"])
            assert answer["model"] == ("xgboost" if answer["role"] == "canary" else "model")
        assert 0 < roles.count("canary") < 40
        sticky = {s.predict(models["records"][0], {**auth, "X-Mlsys-Key": "user7"})[1]["role"] for _ in range(5)}
        assert sticky == {roles[7]}
        # A request in flight when SIGTERM arrives is answered before the process exits.
        body = json.dumps(models["records"][:3]).encode()
        conn = socket.create_connection(("127.0.0.1", s.port))
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer s3cret\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:20]))
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        conn.sendall(body[20:])
        conn.settimeout(30)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert s.stop() == 0
    files = sorted(logs.glob("predictions-*.parquet"))
    assert files and not list(logs.glob(".*"))
    table = pd.concat([pq.read_table(f).to_pandas() for f in files])
    counts = table["_mlsys_role"].value_counts().to_dict()
    canary_rows = 2 * roles.count("canary") + 5 * (roles[7] == "canary")
    assert counts["primary"] + counts["canary"] == 2 * 40 + 5 + 3
    assert counts["canary"] - canary_rows in (0, 3)  # the request in flight at SIGTERM had no key
    assert counts["shadow"] == sum(counts.values()) - counts["shadow"]  # the shadow saw every row
    assert set(table.loc[table["_mlsys_role"] == "shadow", "_mlsys_model"]) == {"linear"}
    schema = pq.read_schema(files[0])
    for column in models["records"][0]:
        if column in schema.names:
            assert not column.startswith("_mlsys_")
    assert str(schema.field("_mlsys_time").type) == "timestamp[us, tz=UTC]"
    assert {"_mlsys_request_id", "_mlsys_version", "_mlsys_latency_ms", "_mlsys_label", "_mlsys_proba_True"} <= set(schema.names)


def test_log_survives_a_killed_server_whole_and_leaves_no_process(models, tmp_path):
    """SIGKILL gives the server no chance to flush: the log's writer process sees its pipe close,
    writes every row it was handed, renames its file into place and exits."""
    logs = tmp_path / "logs"
    with Server(models["onnx"], "--log-dir", logs, "--no-access-log", cwd=tmp_path) as s:
        for i in range(12):
            assert s.predict(models["records"][i:i + 2])[0] == 200
        deadline = time.monotonic() + 60
        while metric(s.metrics(), "mlsys_log_rows_total", result="written") < 24:  # in the writer's hands
            assert time.monotonic() < deadline, "the log writer never got the rows"
            time.sleep(0.05)
        writers = _children(s.proc.pid)
        assert len(writers) == 1
        s.proc.kill()
        s.proc.wait()
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in writers):
            assert time.monotonic() < deadline, "the log writer outlived the server"
            time.sleep(0.05)
    files = sorted(logs.glob("predictions-*.parquet"))
    assert files and not list(logs.glob(".*"))
    table = pd.concat([pq.read_table(f).to_pandas() for f in files])
    assert len(table) == 24 and set(table["_mlsys_role"]) == {"primary"}
    sent = pd.DataFrame([r for i in range(12) for r in models["records"][i:i + 2]])
    floats = [name for name, kind in models["schema"].items() if kind == "float"]
    np.testing.assert_allclose(table[floats].to_numpy(float), sent[floats].to_numpy(float), rtol=1e-6)  # float32, as the model saw them


def _load(server, stop, results, records):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = json.dumps(records)
    while not stop.is_set():
        try:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            results.append((resp.status, json.loads(answer).get("version") if resp.status == 200 else answer))
        except Exception as exc:  # a dropped request is what this test looks for
            results.append(("error", repr(exc)))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.close()


@pytest.mark.slow
def test_five_hot_reloads_under_load_lose_nothing(models, tmp_path):
    registry = tmp_path / "registry"
    versions = {f"v{i:04d}": models["xgboost" if i % 2 else "linear"] for i in range(1, 7)}
    write_registry(registry, versions, "v0001")
    (registry / "versions" / "v0099").mkdir()
    (registry / "versions" / "v0099" / "model.mlsys").write_bytes(b"not a bundle")
    with Server("--registry", registry, "--poll", "0.1s", "--no-access-log", cwd=tmp_path) as s:
        assert s.info["models"][0]["version"] == "v0001" and s.info["models"][0]["engine"] == "onnx"
        stop, results = threading.Event(), []
        threads = [threading.Thread(target=_load, args=(s, stop, results, models["records"][i:i + 1 + i])) for i in range(3)]
        for t in threads:
            t.start()
        for version in ["v0002", "v0003", "v0099", "v0004", "v0005", "v0006"]:
            set_champion(registry, version)
            deadline = time.monotonic() + 60
            expect = "v0003" if version == "v0099" else version  # a broken champion: the old model keeps serving
            while time.monotonic() < deadline:
                if version == "v0099" and s.events("reload") and not s.events("reload")[-1]["ok"]:
                    break
                if version != "v0099" and any(r[1] == version for r in results[-20:]):
                    break
                time.sleep(0.05)
            assert s.request("GET", "/v2/models/registry")[0] == 200
            assert json.loads(s.request("GET", "/v2/models/registry")[2])["versions"] == [expect]
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        text = s.metrics()
        assert s.stop() == 0
        failure = [e for e in s.events("reload") if not e["ok"]][0]
    statuses = {r[0] for r in results}
    assert statuses == {200}, [r for r in results if r[0] != 200][:5]
    assert {r[1] for r in results} >= {"v0001", "v0002", "v0003", "v0004", "v0005", "v0006"}
    assert metric(text, "mlsys_reloads_total", result="ok") == 5
    assert metric(text, "mlsys_reloads_total", result="failed") == 1
    assert "v0099" in failure["error"] and failure["serving"] == "v0003"


def test_sighup_reloads_a_changed_file(models, tmp_path):
    import shutil

    path = tmp_path / "m.mlsys"
    shutil.copyfile(models["linear"], path)
    with Server(path, "--poll", "1h", cwd=tmp_path) as s:
        first = s.info["models"][0]["version"]
        shutil.copyfile(models["xgboost"], path)
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not s.events("reload"):
            time.sleep(0.05)
        assert s.events("reload")[0]["ok"] and s.events("reload")[0]["previous"] == first
        status, answer = s.predict(models["records"][0])
        assert status == 200 and answer["version"] != first
        assert s.stop() == 0


def test_a_registry_bundle_replaced_after_registration_is_not_served(models, tmp_path):
    """The champion pointer's sha256 was not checked: a bundle swapped in place was served as its version."""
    import shutil

    registry = tmp_path / "reg"
    write_registry(registry, {"v0001": models["linear"]}, "v0001")
    with Server("--registry", registry, "--poll", "1h", cwd=tmp_path) as s:
        shutil.copyfile(models["xgboost"], registry / "versions" / "v0001" / "model.mlsys")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not s.events("reload"):
            time.sleep(0.05)
        (event,) = s.events("reload")
        assert not event["ok"] and "the bundle of v0001 fails its sha256 check" in event["error"]
        assert s.predict(models["records"][0])[0] == 200  # the model loaded before keeps answering
        assert s.stop() == 0
    result = run_cli("serve", "--registry", registry, "--port", "0")
    assert_clean_error(result, 3)
    assert "fails its sha256 check" in result.stderr


def test_workers_share_the_port_and_metrics(models, tmp_path):
    with Server(models["onnx"], "--workers", "2", "--no-access-log", cwd=tmp_path) as s:
        assert s.info["workers"] == 2
        for i in range(20):
            assert s.predict(models["records"][i])[0] == 200
        # A worker counts a request just after sending its answer: the last one may land a moment later.
        deadline = time.monotonic() + 30
        while metric(s.metrics(), "mlsys_requests_total", route="predict", status="200") < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metric(s.metrics(), "mlsys_requests_total", route="predict", status="200") == 20
        workers = _children(s.proc.pid)
        assert len(workers) == 2
        s.proc.kill()  # the supervisor dies without a word: its workers must not outlive it
        s.proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.05)
    with Server(models["onnx"], "--workers", "2", "--no-access-log", cwd=tmp_path) as s:
        assert s.predict(models["records"][0])[0] == 200
        assert s.stop() == 0  # SIGTERM: every worker finishes and exits


def _children(pid):
    from pathlib import Path

    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid):
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"


def test_micro_batching_answers_each_request_its_rows(models, tmp_path):
    with Server(models["onnx"], "--max-batch", "64", "--max-wait-ms", "2", "--no-access-log", cwd=tmp_path) as s:
        results = {}

        def one(i):
            results[i] = s.predict(models["records"][i:i + 1 + i % 3])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _, alone = s.predict(models["records"][:20])
        for i, (status, answer) in results.items():
            assert status == 200
            assert answer["predictions"] == alone["predictions"][i:i + 1 + i % 3]
        text = s.metrics()
        assert metric(text, "mlsys_batch_rows_count") >= 1
        assert s.stop() == 0


def test_a_defect_of_ours_is_a_json_500_counted_and_logged(models, capfd):
    """No request should get a 500; if a defect ever causes one, the client gets JSON, /metrics
    counts it (an alert can fire) and stderr has the reason (uvicorn's bare 500 had none of these)."""
    import asyncio

    from mlsys_cli.deploy.serve.app import ServeApp
    from mlsys_cli.deploy.serve.metrics import Metrics
    from mlsys_cli.deploy.serve.models import file_source
    from mlsys_cli.deploy.serve.runner import ModelSpec, Runtime, ServeOptions, load_slots

    slots = load_slots([ModelSpec("primary", "model", file_source(models["onnx"]))])
    served = slots["primary"].current

    def broken(canon):
        raise RuntimeError("a defect")

    served.predict = broken
    metrics = Metrics()
    app = ServeApp(slots, Runtime(ServeOptions(), metrics, None))
    body = json.dumps(models["records"][0]).encode()
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 500
    assert "internal error (RuntimeError)" in json.loads(sent[1]["body"])["error"]
    assert metric(metrics.exposition()[0].decode(), "mlsys_requests_total", status="500") == 1
    assert '"event": "error"' in capfd.readouterr().err.replace('":"', '": "')


def test_the_access_log_has_one_json_line_per_request_in_order_with_who_answered(models, capfd):
    """Lines are encoded when the buffer is written, not per request: each still has the request's
    own values (its id as the client sent it, quotes and all), in order, and nothing is held back
    once flushed."""
    import asyncio

    from mlsys_cli.deploy.serve.app import ServeApp
    from mlsys_cli.deploy.serve.metrics import Metrics
    from mlsys_cli.deploy.serve.models import file_source
    from mlsys_cli.deploy.serve.runner import ModelSpec, Runtime, ServeOptions, load_slots

    slots = load_slots([ModelSpec("primary", "model", file_source(models["onnx"]))])
    runtime = Runtime(ServeOptions(), Metrics(), None)
    app = ServeApp(slots, runtime)
    good = json.dumps(models["records"][:2]).encode()
    requests = [("POST", "/predict", good, b'id "1"'), ("GET", "/nowhere", b"", b"id-2"), ("POST", "/predict", b"{", b"id-3")]

    async def scenario():
        for method, path, body, rid in requests:
            async def receive(body=body):
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message):
                pass

            scope = {"type": "http", "method": method, "path": path, "client": ("127.0.0.1", 4321),
                     "headers": [(b"content-type", b"application/json"), (b"x-request-id", rid)]}
            await app(scope, receive, send)
        held = capfd.readouterr().err  # buffered until the timer, a full buffer or an event
        runtime.flush_access()
        return held

    before = time.time()
    held = asyncio.run(scenario())
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert held == ""
    assert [(r["id"], r["method"], r["path"], r["status"], r["rows"]) for r in lines] == [
        ('id "1"', "POST", "/predict", 200, 2), ("id-2", "GET", "/nowhere", 404, 0), ("id-3", "POST", "/predict", 422, 0)]
    served = slots["primary"].current
    assert list(lines[0]) == ["time", "event", "id", "method", "path", "status", "ms", "rows", "client", "model", "version",
                              "role"]
    assert (lines[0]["model"], lines[0]["version"], lines[0]["role"]) == (served.name, served.version, "primary")
    assert "model" not in lines[1] and all(r["event"] == "request" and r["client"] == "127.0.0.1:4321" for r in lines)
    assert all(before - 1 <= r["time"] <= time.time() + 1 and r["ms"] >= 0 for r in lines)


@pytest.fixture(scope="module")
def narrow(models, small_tables):
    """A linear model trained without one column the others read ('plan' or the first string column)."""
    t = small_tables["binary"]
    df = pd.read_parquet(t["train"])
    column = next(name for name, kind in models["schema"].items() if kind == "string")
    path = models["root"] / "narrow_train.parquet"
    df.drop(columns=[column]).to_parquet(path, index=False)
    out = models["root"] / "narrow.mlsys"
    result = run_cli("train", path, "--target", t["target"], "--model", "linear", "-o", out)
    assert result.code == 0, result.stderr
    return {"model": out, "column": column}


@pytest.mark.parametrize("role", ["--canary", "--shadow"])
def test_a_challenger_reading_columns_the_primary_does_not_is_refused_at_start(models, narrow, tmp_path, role):
    """Its share of the traffic would all be 422s (canary) or failures nobody sees (shadow): audit F2."""
    from tests.conftest import assert_clean_error, run_proc

    spec = f"{models['xgboost']}:0.5" if role == "--canary" else str(models["xgboost"])
    result = run_proc("serve", narrow["model"], role, spec, "--port", "0", cwd=tmp_path, timeout=120)
    assert_clean_error(result, 3)
    assert f"reads columns the primary's requests need not carry: {narrow['column']}" in result.stderr


def test_a_reload_that_would_leave_a_challenger_unable_to_answer_keeps_the_old_model(models, narrow, tmp_path):
    import shutil

    path = tmp_path / "m.mlsys"
    shutil.copyfile(models["linear"], path)
    with Server(path, "--shadow", models["xgboost"], "--poll", "1h", cwd=tmp_path) as s:
        first = s.info["models"][0]["version"]
        shutil.copyfile(narrow["model"], path)  # the new primary lacks a column the shadow reads
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not s.events("reload"):
            time.sleep(0.05)
        (event,) = [e for e in s.events("reload") if e["role"] == "primary"]
        assert not event["ok"] and event["serving"] == first and narrow["column"] in event["error"]
        status, answer = s.predict(models["records"][0])
        assert status == 200 and answer["version"] == first
        assert metric(s.metrics(), "mlsys_reloads_total", role="primary", result="failed") == 1
        assert s.stop() == 0


def test_a_v2_request_naming_the_primarys_version_is_never_answered_by_the_canary(models, tmp_path):
    """Audit F5: /v2/models/NAME/versions/V/infer was answered by the canary in its share of the traffic."""
    with Server(models["onnx"], "--canary", f"{models['xgboost']}:0.99", cwd=tmp_path) as s:
        version = s.info["models"][0]["version"]
        meta = json.loads(s.request("GET", "/v2/models/model")[2])
        x = models["rows"].dropna().iloc[0]
        convert = {"FP32": float, "BYTES": str, "BOOL": bool, "INT64": lambda v: int(pd.Timestamp(v).timestamp())}
        body = {"inputs": [{"name": i["name"], "datatype": i["datatype"], "shape": [1, 1],
                            "data": [convert[i["datatype"]](x[i["name"]])]} for i in meta["inputs"]]}
        pinned = [json.loads(s.request("POST", f"/v2/models/model/versions/{version}/infer", body)[2]) for _ in range(8)]
        assert {a["model_name"] for a in pinned} == {"model"}
        unpinned = [json.loads(s.request("POST", "/v2/models/model/infer", body)[2]) for _ in range(8)]
        assert "xgboost" in {a["model_name"] for a in unpinned}  # 99%: the canary answers what is not pinned


def test_a_latin1_request_id_is_echoed_byte_for_byte(server, models):
    """HTTP header bytes are latin-1: the id came back re-encoded as UTF-8 (audit F6)."""
    status, headers, body = server.request("POST", "/predict", json.dumps(models["records"][0]),
                                           {"Content-Type": "application/json", "X-Request-Id": b"\xe9t\xe9"})
    assert status == 200 and headers["x-request-id"] == "\xe9t\xe9" and json.loads(body)["request_id"] == "\xe9t\xe9"


@pytest.mark.parametrize("where", ["one header", "keep-alive, second request"])
def test_headers_over_64_kib_get_a_json_431_and_others_are_served(server, models, where):
    """httptools buffers a request's headers without a bound: a 20 MB header was answered 200 (audit F6)."""
    big = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(30)
    if where != "one header":  # a first, normal request on the same connection is answered
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    try:
        sock.sendall(big)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before the last bytes
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "the request line and headers are over 65536 bytes"
    assert server.predict(models["records"][0])[0] == 200


def test_past_max_connections_a_json_503_with_retry_after_counted_and_no_plain_text_on_stderr(models):
    """uvicorn answers past the limit before the application sees the request: that answer is JSON
    with its reason, counted in /metrics, and stderr keeps only JSON lines."""
    with Server(models["onnx"], "--max-connections", "3", cwd=models["root"]) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            time.sleep(0.5)  # the server has accepted them
            status, headers, body = server.request("POST", "/predict", models["records"][0])
            assert status == 503
            assert headers["content-type"] == "application/json" and headers["retry-after"] == "1"
            assert "--max-connections" in json.loads(body)["error"]
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.5)
        assert server.predict(models["records"][0])[0] == 200  # and it serves again once they are gone
        assert metric(server.metrics(), "mlsys_requests_total", route="overloaded", status="503") == 1
        assert server.stop() == 0
        lines = [line for line in server.stderr().splitlines() if line.strip() and not line.startswith("stopped after")]
        assert lines and all(line.startswith("{") for line in lines), lines


def _until(condition, what, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_answers_a_request_sent_on_an_idle_keep_alive_connection(models, tmp_path, workers):
    """uvicorn alone closed idle keep-alive connections at once on SIGTERM: a request a client had
    just written on one was reset. Draining, it is answered with ``connection: close`` (and
    readiness already says 503), then the connection is closed and the server exits 0."""
    import http.client

    with Server(models["onnx"], "--workers", workers, "--drain", "60s", "--no-access-log", cwd=tmp_path) as s:
        conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=60) for _ in range(2 * int(workers))]
        for conn in conns:  # each idle and kept alive after one answer (with two workers, most likely both have some)
            conn.request("GET", "/v2/health/ready")
            resp = conn.getresponse()
            assert (resp.status, resp.read(), resp.will_close) == (200, b'{"ready":true}', False)
        s.proc.send_signal(signal.SIGTERM)
        _until(lambda: len(s.events("drain")) == int(workers), "the workers did not start draining")
        assert sum(e["connections"] for e in s.events("drain")) == len(conns)
        for i, conn in enumerate(conns):
            if i % 2:
                conn.request("POST", "/predict", body=json.dumps(models["records"][:2]), headers={"Content-Type": "application/json"})
            else:
                conn.request("GET", "/v2/health/ready")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.getheader("connection") == "close", resp.getheaders()
            assert (resp.status, len(json.loads(body)["predictions"])) == (200, 2) if i % 2 else resp.status == 503
            assert conn.sock is None or conn.sock.recv(1) == b""  # the server closed it after the answer
        assert s.stop() == 0


def test_a_request_half_sent_when_the_drain_window_ends_is_still_answered(models, tmp_path):
    """At the end of the window idle connections are closed; one whose request has begun to arrive
    keeps it until the request is whole (or 408 at --request-timeout)."""
    with Server(models["onnx"], "--drain", "0.1s", "--no-access-log", cwd=tmp_path) as s:
        body = json.dumps(models["records"][:2]).encode()
        idle = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        half = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        half.sendall(head[:20])
        _until(lambda: metric(s.metrics(), "mlsys_requests_total", route="metrics") >= 1, "no answer")  # both accepted by now
        s.proc.send_signal(signal.SIGTERM)
        assert idle.recv(1) == b""  # the window is over: the idle connection is closed
        half.sendall(head[20:] + body)
        answer = b""
        while chunk := half.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"\r\nconnection: close\r\n" in answer, answer[:300]
        assert s.stop() == 0


def test_requests_pipelined_during_the_drain_are_all_answered_the_last_closing(models, tmp_path):
    """Two requests written at once on a connection idle at SIGTERM: the first answer keeps the
    connection open for the second, whose answer closes it (closing after the first dropped it)."""
    with Server(models["onnx"], "--drain", "60s", "--no-access-log", cwd=tmp_path) as s:
        conn = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        get = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        conn.sendall(get)
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        s.proc.send_signal(signal.SIGTERM)
        _until(lambda: s.events("drain"), "the server did not start draining")
        conn.sendall(get + get)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        first, second = answer.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200") and b"connection: close" not in first, answer
        assert second.startswith(b"200") and b"\r\nconnection: close\r\n" in second, answer
        assert s.stop() == 0


def _keep_sending(port, body, outcomes, answered):
    """A client on a keep-alive connection sending requests back to back, a new connection after each
    ``connection: close``, until one is refused. Each request's fate goes to ``outcomes``."""
    import http.client

    conn = None
    while True:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.connect()
            except ConnectionRefusedError:
                outcomes.append("refused")  # nothing was sent
                return
        try:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:  # written, then reset or closed unanswered
            outcomes.append(f"lost: {exc!r}")
            conn.close()
            return
        outcomes.append((resp.status, resp.getheader("connection")))
        answered.set()
        if resp.will_close:
            conn.close()
            conn = None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_keep_alive_load_loses_no_request(models, tmp_path, workers):
    """Eight clients sending back to back on keep-alive connections, SIGTERM mid-load: every request
    written is answered 200, the last on each connection with ``connection: close``; the client's
    next connection is refused before it sends anything. Before the drain one stop reset 0-3
    requests of eight such clients, and 10-20 with two workers (their reconnections queued on a
    listener nobody accepted from any more, reset when it closed)."""
    body = json.dumps(models["records"][:3])
    with Server(models["onnx"], "--workers", workers, "--drain", "60s", "--no-access-log", cwd=tmp_path) as s:
        outcomes = [[] for _ in range(8)]
        answered = [threading.Event() for _ in outcomes]
        threads = [threading.Thread(target=_keep_sending, args=(s.port, body, o, a), daemon=True)
                   for o, a in zip(outcomes, answered)]
        for t in threads:
            t.start()
        assert all(a.wait(60) for a in answered)  # every client is connected and sending
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert s.stop() == 0
    for o in outcomes:
        assert o[-1] == "refused" and o[-2] == (200, "close"), o[-3:]
        assert set(o[:-2]) <= {(200, None)}, [r for r in o if r != (200, None)][:3]
