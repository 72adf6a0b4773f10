"""The HTTP application: a plain ASGI callable on uvicorn (httptools, uvloop).

Chosen by measurement (benchmarks/results/serve.md): on the same uvicorn, a bare JSON echo
as a plain ASGI callable answered 7,300 requests/s, under Starlette 5,100/s and under FastAPI
3,200/s, so routing here is a dict lookup and a path split; OpenAPI is generated from the
model's input schema (``/openapi.json``, ``/docs``).

Every request: bearer token (when set), method, content type, body (size limit, read
deadline), JSON, validation against the input schema (422 naming the column and the row),
prediction (micro-batched when enabled), response. Then, off the latency path: the shadow's
prediction, metrics, the prediction log and the access log line.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import orjson

from mlsys_cli.deploy.serve import v2
from mlsys_cli.deploy.serve.batching import Batcher
from mlsys_cli.deploy.serve.models import ServedModel, Slot, check_challenger, describe_error
from mlsys_cli.deploy.serve.predlog import Entry
from mlsys_cli.errors import InputError
from mlsys_cli.features.unseen import MIN_ROWS as UNSEEN_MIN_ROWS, unseen_warnings

JSON = b"application/json"


SHADOW_EVENT_SECONDS = 60.0  # a failing shadow is told on stderr at most this often


class HttpError(Exception):
    """An answer other than 200, with its reason."""

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


@dataclass(eq=False)  # hashed by identity: a key of the deadlines
class Request:
    """What the handlers need from the ASGI scope, read in one pass over the headers."""

    method: str
    path: str
    request_id: str
    content_type: bytes = b""
    content_length: int | None = None
    authorization: bytes = b""
    key: str | None = None
    header_length: int | None = None
    encoding: bytes = b""
    route: str = "other"
    rows: int = 0
    model: ServedModel | None = None
    task: Any = None  # the task answering it, cancelled when its time is up (a slow body, a stuck prediction)
    timed_out: bool = False

    def expire(self) -> None:
        self.timed_out = True
        self.task.cancel()


class Inputs(NamedTuple):
    """A request's inputs: parsed (for the shadow) and as JSON (for the prediction log).

    ``records``: ``body`` is the ``/predict`` body as it arrived (no second encoding);
    ``columns`` (V2): encoded on demand, only when the log is on.
    """

    kind: str
    parsed: Any
    body: bytes | None = None

    def json(self) -> tuple[str, bytes]:
        return self.kind, self.body if self.body is not None else orjson.dumps(self.parsed)


class ServeApp:
    """The ASGI application.

    Parameters
    ----------
    slots : dict
        ``primary`` and optionally ``shadow`` / ``canary``: :class:`~.models.Slot` (loaded).
    state : Runtime
        Limits, batching, token, canary share, metrics, prediction log, access log.
    """

    def __init__(self, slots: dict[str, Slot], state: "Runtime"):
        self.slots = slots
        self.state = state
        self.metrics = state.metrics
        self.ready = False
        self._prefix = os.urandom(4).hex()
        self._counter = 0
        self._docs: tuple[bytes, bytes] | None = None
        self._shadow_failures = [0, -SHADOW_EVENT_SECONDS]  # failures not yet told, when the last event was
        self._loop: Any = None  # the serving loop: current_task(loop) skips get_running_loop's per-thread lookup
        for slot in slots.values():
            self._attach(slot.current)
            self.metrics.serving(slot.role, None, slot.current)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self.state.lifespan(self, receive, send)

    def _request(self, scope: dict) -> Request:
        self._counter += 1
        req = Request(scope["method"], scope["path"], f"{self._prefix}-{self._counter:x}")
        for name, value in scope["headers"]:
            if name == b"content-type":
                req.content_type = value
            elif name == b"content-length":
                req.content_length = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                req.authorization = value
            elif name == b"x-request-id" and 0 < len(value) <= 128:
                req.request_id = value.decode("latin-1")
            elif name == b"x-mlsys-key":
                req.key = value.decode("latin-1")
            elif name == b"inference-header-content-length":
                req.header_length = int(value) if value.isdigit() else -1
            elif name == b"content-encoding":
                req.encoding = value
        return req

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        start = time.perf_counter()
        arrival = time.time()
        req = self._request(scope)
        after = None
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        req.task = asyncio.current_task(loop)
        deadlines = self.state.deadlines
        deadlines.add(req, self.state.limits.request_timeout, req.expire)
        try:
            status, body, headers, after = await self._route(req, receive)
        except HttpError as exc:
            status, body, headers = exc.status, orjson.dumps({"error": exc.reason}), exc.headers
        except asyncio.CancelledError:
            if not req.timed_out:
                raise  # the server is going away
            status, headers = 408, [(b"connection", b"close")]
            body = orjson.dumps({"error": f"the request did not complete within {self.state.limits.request_timeout:g} s"})
        except Exception as exc:  # a defect of ours: still a JSON answer, counted in /metrics and logged
            status, headers = 500, []
            body = orjson.dumps({"error": f"internal error ({exc.__class__.__name__}); the server's log has the details"})
            import traceback

            self.state.event({"event": "error", "request_id": req.request_id, "path": req.path,
                              "error": describe_error(exc), "traceback": "".join(traceback.format_exception(exc))[-4000:]})
        finally:
            deadlines.discard(req)
        headers = [(b"content-type", headers.pop(0)[1] if headers and headers[0][0] == b"content-type" else JSON),
                   (b"content-length", str(len(body)).encode()), (b"x-request-id", req.request_id.encode("latin-1")), *headers]
        if req.model is not None:
            headers.append((b"x-mlsys-model", req.model.header))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - start
        self.metrics.request(req.route, status, seconds)
        if after is not None:
            after(arrival, seconds)
        if self.state.access_log:
            self.state.access(req, status, seconds, scope.get("client"))

    # ------------------------------------------------------------------ routing

    async def _route(self, req: Request, receive: Callable) -> tuple[int, bytes, list, Any]:
        path, method = req.path, req.method
        if path == "/v2/health/live":
            req.route = "live"
            return 200, b'{"live":true}', [], None
        if path == "/v2/health/ready":
            req.route = "ready"
            if self.ready:
                return 200, b'{"ready":true}', [], None
            raise HttpError(503, "not ready")
        self._authorize(req)
        if path == "/predict":
            req.route = "predict"
            _method(method, "POST")
            return await self._predict(req, receive)
        if path.startswith("/v2/models/"):
            return await self._v2_model(req, receive)
        if path in ("/metrics", "/v2", "/openapi.json", "/docs", "/"):
            req.route = path.strip("/") or "index"
            _method(method, "GET")
            return self._static(path)
        req.route = "unknown"
        raise HttpError(404, f"no route {path}; see /docs")

    def _authorize(self, req: Request) -> None:
        token = self.state.api_key
        if token is None:
            return
        given = req.authorization
        # The scheme is case-insensitive (RFC 9110 section 11.1); proxies and clients may change its case.
        if given[:7].lower() != b"bearer " or not hmac.compare_digest(given[7:].strip(), token):
            reason = "missing bearer token" if not given else "wrong bearer token"
            raise HttpError(401, reason, [(b"www-authenticate", b"Bearer")])

    def _static(self, path: str) -> tuple[int, bytes, list, Any]:
        from mlsys_cli import __version__

        if path == "/metrics":
            body, ctype = self.metrics.exposition()
            return 200, body, [(b"content-type", ctype.encode())], None
        if path == "/v2":
            return 200, orjson.dumps({"name": "mlsys", "version": __version__, "extensions": ["binary_tensor_data"]}), [], None
        if path in ("/openapi.json", "/docs"):
            from mlsys_cli.deploy.serve.openapi import docs_html, openapi

            if self._docs is None:
                spec = openapi(self.slots["primary"].current, __version__)
                self._docs = (orjson.dumps(spec), docs_html(spec).encode())
            if path == "/docs":
                return 200, self._docs[1], [(b"content-type", b"text/html; charset=utf-8")], None
            return 200, self._docs[0], [], None
        primary = self.slots["primary"].current
        return 200, orjson.dumps({"model": primary.name, "version": primary.version, "docs": "/docs",
                                  "predict": "/predict", "v2": f"/v2/models/{primary.name}"}), [], None

    async def _v2_model(self, req: Request, receive: Callable) -> tuple[int, bytes, list, Any]:
        parts = req.path[len("/v2/models/"):].split("/")
        name, rest = parts[0], parts[1:]
        primary = self.slots["primary"].current
        if name != primary.name:
            req.route = "v2_unknown"
            raise HttpError(404, f"unknown model {name!r}; this server serves {primary.name!r}")
        pinned = len(rest) >= 2 and rest[0] == "versions"
        if pinned:
            if rest[1] != primary.version:
                req.route = "v2_unknown"
                raise HttpError(404, f"model {name!r} has no version {rest[1]!r}; serving {primary.version!r}")
            rest = rest[2:]
        if not rest:
            req.route = "v2_metadata"
            _method(req.method, "GET")
            return 200, orjson.dumps(v2.model_metadata(primary)), [], None
        if rest == ["ready"]:
            req.route = "v2_ready"
            _method(req.method, "GET")
            return 200, orjson.dumps({"name": name, "ready": self.ready}), [], None
        if rest == ["infer"]:
            req.route = "v2_infer"
            _method(req.method, "POST")
            return await self._infer(req, receive, pinned)
        req.route = "unknown"
        raise HttpError(404, f"no route {req.path}; see /docs")

    # ------------------------------------------------------------------ predictions

    async def _body(self, req: Request, receive: Callable, json_only: bool) -> bytes:
        ctype = req.content_type.split(b";", 1)[0].strip().lower()
        # V2 clients (tritonclient) may send no content type, or octet-stream for binary tensors.
        if ctype != JSON and (json_only or ctype not in (b"", b"application/octet-stream")):
            raise HttpError(415, f"content type must be application/json, not {ctype.decode('latin-1') or 'absent'}")
        if req.encoding and req.encoding.strip().lower() != b"identity":
            # Not decoded here: a compressed body would be read as broken JSON ("not valid UTF-8").
            raise HttpError(415, f"Content-Encoding {req.encoding.decode('latin-1')} is not supported; send the body uncompressed",
                            [(b"accept-encoding", b"identity"), (b"connection", b"close")])
        limit = self.state.limits.max_body_bytes
        if req.content_length is not None and (req.content_length < 0 or req.content_length > limit):
            # The body is not read: close the connection, or its bytes would be parsed as the next request.
            raise HttpError(413 if req.content_length > 0 else 400,
                            f"the body is over the limit of {limit} bytes" if req.content_length > 0 else "bad Content-Length",
                            [(b"connection", b"close")])
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
            if len(body) > limit:
                raise HttpError(413, f"the body is over the limit of {limit} bytes", [(b"connection", b"close")])
        if message["type"] == "http.disconnect":
            raise HttpError(400, "the client went away")
        if not body:
            raise HttpError(422, "the body is empty; send a JSON record or a list of records")
        return body

    def _choose(self, req: Request) -> ServedModel:
        canary = self.slots.get("canary")
        if canary is None:
            return self.slots["primary"].current
        share = self.state.canary_share
        if req.key is not None:
            draw = zlib.crc32(req.key.encode()) / 4294967296.0  # sticky: one key, one model
        else:
            draw = (zlib.crc32(req.request_id.encode()) & 0xFFFFFFFF) / 4294967296.0
        return canary.current if draw < share else self.slots["primary"].current

    async def _run(self, model: ServedModel, inputs: Inputs, rows: int) -> dict[str, Any]:
        """Validate and predict (read together with the other queued requests' inputs when batching)."""
        try:
            return await model.batcher.predict(inputs.kind, inputs.parsed, rows)
        except InputError as exc:
            raise HttpError(422, exc.message) from None

    async def _predict(self, req: Request, receive: Callable) -> tuple[int, bytes, list, Any]:
        body = await self._body(req, receive, json_only=True)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(422, f"the body is not valid JSON ({exc}); NaN and Infinity are not JSON, send null") from None
        records = [data] if isinstance(data, dict) else data
        if not isinstance(records, list) or not records:
            raise HttpError(422, "send a JSON object (one record) or a non-empty list of objects")
        if len(records) > self.state.limits.max_rows:
            raise HttpError(413, f"{len(records)} records is over the limit of {self.state.limits.max_rows} per request")
        model = req.model = self._choose(req)
        req.rows = len(records)
        inputs = Inputs("records", records, body)
        outputs = await self._run(model, inputs, req.rows)
        unseen, warnings = _unseen(model, inputs, req.rows)
        answer = {"model": model.name, "version": model.version, "role": model.role, "request_id": req.request_id,
                  "predictions": _records_out(model, outputs)}
        if warnings:
            answer["warnings"] = warnings
        return (200, orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), [],
                self._after(req, model, outputs, inputs, unseen))

    async def _infer(self, req: Request, receive: Callable, pinned: bool = False) -> tuple[int, bytes, list, Any]:
        """V2 inference; ``pinned`` (a request naming the primary's version) is never answered by the canary."""
        body = await self._body(req, receive, json_only=False)
        try:
            request, columns, rows = v2.decode_request(body, req.header_length)
        except InputError as exc:
            raise HttpError(422, exc.message) from None
        if rows > self.state.limits.max_rows:
            raise HttpError(413, f"{rows} rows is over the limit of {self.state.limits.max_rows} per request")
        if rows == 0:
            raise HttpError(422, "the inputs hold no rows")
        model = req.model = self.slots["primary"].current if pinned else self._choose(req)
        req.rows = rows
        inputs = Inputs("columns", columns)
        outputs = await self._run(model, inputs, rows)
        unseen, warnings = _unseen(model, inputs, rows)
        try:
            payload, header_length = v2.encode_response(request, model, outputs, warnings)
        except InputError as exc:
            raise HttpError(422, exc.message) from None
        headers = []
        if header_length is not None:
            headers = [(b"content-type", b"application/octet-stream"),
                       (b"inference-header-content-length", str(header_length).encode())]
        return 200, payload, headers, self._after(req, model, outputs, inputs, unseen)

    def _after(self, req: Request, model: ServedModel, outputs: dict, inputs: Inputs, unseen: dict | None) -> Callable:
        """What happens once the answer is sent: metrics (``unseen``: the counts, when taken before), log, shadow."""

        def after(arrival: float, seconds: float) -> None:
            self.metrics.predicted(model.role, model.task, outputs, req.rows)
            counts = model.unseen(inputs.kind, inputs.parsed) if unseen is None else unseen
            if counts:
                self.metrics.unseen_categories(model.role, counts)
            log = self.state.log
            if log is not None:
                log.append(Entry(arrival, req.request_id, model, seconds * 1000.0, inputs.json(), outputs, req.rows))
            if "shadow" in self.slots:
                self._shadow(req, arrival, inputs)

        return after

    def _shadow(self, req: Request, arrival: float, inputs: Inputs) -> None:
        """The shadow predicts the same rows; only logged and counted, never answered."""
        shadow = self.slots["shadow"].current
        start = time.perf_counter()
        try:
            outputs = shadow.predict(shadow.read(inputs.kind, inputs.parsed))
        except Exception as exc:  # a challenger's failure must never touch the answer; it is counted and told
            self.metrics.errors.labels("shadow").inc()
            self._shadow_failed(shadow, exc)
            return
        self.metrics.predicted("shadow", shadow.task, outputs, req.rows)
        if self.state.log is not None:
            self.state.log.append(Entry(arrival, req.request_id, shadow, (time.perf_counter() - start) * 1000.0,
                                        inputs.json(), outputs, req.rows))

    def _shadow_failed(self, shadow: ServedModel, exc: BaseException) -> None:
        """One event line on stderr for the first failure, then at most one every SHADOW_EVENT_SECONDS (with the count)."""
        self._shadow_failures[0] += 1
        now = time.monotonic()
        if now - self._shadow_failures[1] >= SHADOW_EVENT_SECONDS:
            self.state.event({"event": "shadow_error", "model": shadow.name, "version": shadow.version,
                              "failures": self._shadow_failures[0], "error": describe_error(exc)})
            self._shadow_failures = [0, now]

    # ------------------------------------------------------------------ reload

    def _attach(self, model: ServedModel) -> None:
        model.batcher = Batcher(model, self.state.batching, self.metrics.batch.labels(model.role))

    async def reload(self, force: bool = False) -> int:
        """Load every slot whose source changed (``force``: SIGHUP, reload regardless) and swap it in.

        Returns how many models were swapped in.
        """
        loop = asyncio.get_running_loop()
        prepared = []
        for slot in self.slots.values():
            if not force and not await loop.run_in_executor(None, slot.changed):
                continue
            try:
                prepared.append((slot, *await loop.run_in_executor(None, slot.prepare)))
            except Exception as exc:  # the old model keeps serving
                self._reload_failed(slot, exc)
        # The models that will answer once this pass is done: every challenger must read the primary's inputs.
        after = {role: slot.current for role, slot in self.slots.items()}
        after.update((slot.role, model) for slot, model, _ in prepared)
        swapped = 0
        for slot, model, ref in prepared:  # the primary first (slot order)
            try:
                for role, other in after.items():
                    if role != "primary" and (slot.role == "primary" or role == slot.role):
                        check_challenger(after["primary"], other)
            except InputError as exc:
                after[slot.role] = slot.current
                self._reload_failed(slot, exc)
                continue
            self._attach(model)
            old = slot.current
            slot.install(model, ref)
            self.metrics.serving(slot.role, old, model)
            self.metrics.reloads.labels(slot.role, "ok").inc()
            self._docs = None
            self.state.event({"event": "reload", "role": slot.role, "ok": True, "version": model.version,
                              "previous": old.version})
            old.batcher.close()
            swapped += 1
        return swapped

    def _reload_failed(self, slot: Slot, exc: BaseException) -> None:
        """The old model keeps serving; the failure is counted and logged, and not retried until the source changes."""
        slot.failed = slot.fingerprint()
        self.metrics.reloads.labels(slot.role, "failed").inc()
        self.state.event({"event": "reload", "role": slot.role, "ok": False, "error": describe_error(exc),
                          "serving": slot.current.version})


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, f"method {method} not allowed; use {allowed}", [(b"allow", allowed.encode())])


def _unseen(model: ServedModel, inputs: Inputs, rows: int) -> tuple[dict | None, list[str]]:
    """A request's unseen-category counts and the warnings of its answer, taken only for requests of
    at least UNSEEN_MIN_ROWS rows (fewer cannot warn; their counts are taken after the answer)."""
    if rows < UNSEEN_MIN_ROWS:
        return None, []
    counts = model.unseen(inputs.kind, inputs.parsed)
    return counts, unseen_warnings(counts)


def _records_out(model: ServedModel, outputs: dict[str, Any]) -> list[dict[str, Any]]:
    if model.task == "regression":
        return [{"prediction": v} for v in outputs["prediction"].tolist()]
    names = [str(c) for c in model.classes]
    return [{"label": label, "probabilities": dict(zip(names, row))}
            for label, row in zip(outputs["label"].tolist(), outputs["probabilities"].tolist())]


def write_line(record: dict[str, Any]) -> None:
    """One JSON line on stderr (events)."""
    write_bytes(orjson.dumps(record) + b"\n")


def write_bytes(data: bytes) -> None:
    """Lines on stderr, whole (access log, events)."""
    try:
        fd = sys.stderr.fileno()
        while data:
            data = data[os.write(fd, data):]
    except (OSError, ValueError):
        pass  # a closed stderr must not fail requests
