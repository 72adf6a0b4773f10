"""Running the server: load, bind, serve; workers, signals, hot reload, graceful shutdown.

One worker serves in this process. ``workers > 1``: the socket is bound here, then N worker
processes are forked *before* anything heavy is imported (no threads to inherit); each loads
the models and serves the shared socket, and reports "ready" or its load error through a
pipe, so a model that fails to load is still exit 3 with the reason. This process forwards
SIGTERM/SIGINT (graceful stop) and SIGHUP (reload) to the workers and starts a new worker
when one dies.

Signals in a worker: SIGTERM drains (:func:`_server`): no new connection is established,
every request already sent is answered (``connection: close``), idle keep-alive connections
get ``drain_seconds`` for one, requests in flight finish (at most the request timeout); then it
flushes the prediction log and exits 0. SIGHUP reloads every model from its source; with a
registry, ``champion.json`` is also polled every ``poll_seconds``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from mlsys_cli.deploy.serve.batching import BatchOptions
from mlsys_cli.deploy.serve.deadlines import Deadlines
from mlsys_cli.deploy.serve.models import Slot, Source, check_challenger, describe_error
from mlsys_cli.deploy.serve.predlog import LogOptions
from mlsys_cli.errors import InputError, UsageError


@dataclass(frozen=True)
class ModelSpec:
    """A model to serve in a role: its source and the name it answers under."""

    role: str
    name: str
    source: Source


@dataclass(frozen=True)
class Limits:
    """What one request may cost: body bytes, rows, and seconds (headers, body and answer)."""

    max_body_bytes: int = 4 << 20
    max_rows: int = 10_000
    request_timeout: float = 10.0


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``mlsys serve`` can be told, except the models."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    batching: BatchOptions = field(default_factory=BatchOptions)
    log: LogOptions | None = None
    api_key: str | None = None
    access_log: bool = True
    poll_seconds: float = 2.0
    canary_share: float = 0.0
    max_connections: int = 1000
    drain_seconds: float = 2.0


@dataclass(frozen=True)
class ServeResult:
    """What ``mlsys serve`` reports when it has stopped."""

    url: str
    workers: int
    seconds: float
    log_files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "workers": self.workers, "seconds": self.seconds, "log_files": self.log_files}


@dataclass
class Runtime:
    """The per-worker state the application reads: options, metrics, the prediction log."""

    options: ServeOptions
    metrics: Any
    log: Any
    on_ready: Callable[[], None] | None = None
    deadlines: Deadlines = field(default_factory=Deadlines)  # the headers' and the requests' time limits
    _poller: Any = None
    _lines: list = field(default_factory=list)  # access-log lines not written yet
    _flush: Any = None  # the timer that writes them

    @property
    def limits(self) -> Any:
        return self.options.limits

    @property
    def batching(self) -> BatchOptions:
        return self.options.batching

    @property
    def api_key(self) -> bytes | None:
        return self.options.api_key.encode() if self.options.api_key else None

    @property
    def canary_share(self) -> float:
        return self.options.canary_share

    @property
    def access_log(self) -> bool:
        return self.options.access_log

    def access(self, req: Any, status: int, seconds: float, client: Any) -> None:
        """One access-log line, buffered: written with the others at most ``ACCESS_FLUSH_SECONDS`` later
        (a write to stderr per request cost more than the rest of the logging; a slow reader of
        stderr would block the event loop on every request). The request's values are kept as
        they are and the lines encoded together when written: one tight loop over a few hundred
        lines instead of a dict and an encoder call between every two answers."""
        self._lines.append((time.time(), req.request_id, req.method, req.path, status, seconds, req.rows, client, req.model))
        if len(self._lines) >= ACCESS_FLUSH_LINES:
            self.flush_access()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(ACCESS_FLUSH_SECONDS, self.flush_access)

    def flush_access(self) -> None:
        """Write the buffered access-log lines (timer, a full buffer, an event, shutdown)."""
        from mlsys_cli.deploy.serve.app import write_bytes

        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._lines:
            lines, self._lines = self._lines, []
            write_bytes(b"".join([access_line(*line) for line in lines]))

    def event(self, record: dict[str, Any]) -> None:
        from mlsys_cli.deploy.serve.app import write_line

        self.flush_access()  # keep the lines in order
        write_line({"time": round(time.time(), 3), "pid": os.getpid(), **record})

    async def lifespan(self, app: Any, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start(app)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop(app)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start(self, app: Any) -> None:
        loop = asyncio.get_running_loop()
        if self.log is not None:
            self.log.start()
        settle()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._reload(app, True)))
        self._poller = loop.create_task(self._poll(app))
        app.ready = True
        if self.on_ready is not None:
            self.on_ready()

    async def _stop(self, app: Any) -> None:
        app.ready = False
        if self._poller is not None:
            self._poller.cancel()
        self.flush_access()
        if self.log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.log.close)

    async def _poll(self, app: Any) -> None:
        while True:
            await asyncio.sleep(self.options.poll_seconds)
            await self._reload(app, False)

    async def _reload(self, app: Any, force: bool) -> None:
        try:
            swapped = await app.reload(force=force)
        except Exception as exc:  # reloading must never take the server down
            self.event({"event": "reload", "ok": False, "error": describe_error(exc)})
            return
        if swapped:
            settle()


ACCESS_FLUSH_SECONDS = 0.2
ACCESS_FLUSH_LINES = 256


def access_line(when: float, request_id: str, method: str, path: str, status: int, seconds: float, rows: int,
                client: Any, model: Any) -> bytes:
    """The access log's JSON line for one answered request (``model``: the ServedModel that answered, or None).

    Formatted into a bytes template rather than built as a dict and encoded: every answered
    request has one, and the dict cost ~2.6 µs a line against ~1 µs. The texts a client chose
    (request id, method, path) go through orjson, so they are escaped like any JSON string.
    """
    if model is None:
        tail = b"}\n"
    else:
        key = (model.name, model.version, model.role)
        tail = _MODEL_TAILS.get(key)
        if tail is None:
            tail = _MODEL_TAILS[key] = b"," + orjson.dumps(dict(zip(("model", "version", "role"), key)))[1:] + b"\n"
    return _ACCESS % (when, _dumps(request_id), _dumps(method), _dumps(path), status, seconds * 1000.0, rows,
                      _dumps(f"{client[0]}:{client[1]}") if client else b"null", tail)


_ACCESS = b'{"time":%.3f,"event":"request","id":%s,"method":%s,"path":%s,"status":%d,"ms":%.3f,"rows":%d,"client":%s%s'
_dumps = orjson.dumps
_MODEL_TAILS: dict[tuple[str, str, str], bytes] = {}  # one per model served since start (a few, even with reloads)


def settle() -> None:
    """Freeze what start-up built out of the garbage collector's reach, before serving.

    The models, the libraries and their caches are tens of thousands of long-lived objects
    that every full collection walked again: measured in process, one full collection paused a
    request for 50-100 ms. Frozen, a collection only walks what requests create (a few objects
    each). Called again after a reload, once the old model is unreferenced: unfreeze, collect it,
    freeze the new one.
    """
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


# ---------------------------------------------------------------------- one worker


def load_slots(specs: list[ModelSpec]) -> dict[str, Slot]:
    """Load every model (a failure is an InputError naming the model: exit 3)."""
    slots = {}
    for spec in specs:
        slot = Slot(spec.role, spec.name, spec.source)
        try:
            slot.load()
        except Exception as exc:  # whatever stops a model from loading is the reason to give (exit 3)
            raise InputError(f"cannot serve the {spec.role} model: {describe_error(exc)}",
                             getattr(exc, "hint", None)) from None
        slots[spec.role] = slot
    for role, slot in slots.items():
        if role != "primary":
            check_challenger(slots["primary"].current, slot.current)
    return slots


class _Coalesced:
    """A connection's transport that holds an answer's writes until the answer is complete.

    uvicorn writes the status line and headers, then the body: two writes, two TCP segments,
    and the client woken twice. Profiled on the shared 2-core machine (py-spy, one connection),
    the first write was where the server lost the CPU most often: it woke the client, which
    preempted the server mid-answer. One write per answer ends that. Informational answers
    (``100 Continue``) go out at once: the client waits for them before sending its body.

    A complete answer is not written at once either: it waits for the end of the event loop's
    pass (:class:`_Writes`), so the answers of one micro-batch leave in one burst of writes
    instead of one write between every two answers' Python work.
    """

    __slots__ = ("_transport", "_held", "_writes")

    def __init__(self, transport: Any, writes: "_Writes"):
        self._transport = transport
        self._held: list[bytes] = []
        self._writes = writes

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 1") and not self._held:
            self._transport.write(data)
        else:
            self._held.append(data)

    def complete(self) -> None:
        """The answer is whole: write it at the end of this pass of the loop (with the others)."""
        if self._held:
            self._writes.add(self)

    def flush(self) -> None:
        if self._held:
            data, self._held = b"".join(self._held), []
            if not self._transport.is_closing():  # the client went away while the answer waited
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Writes:
    """Complete answers waiting for the end of the loop's pass, written together (one event loop).

    Measured at 32 connections (benchmarks/results/serve.md, session 10): a write right after
    each answer woke the load generator once per answer, and the wake-ups made each write cost
    ~3x an echo's; written in one burst after the batch's answers are built, the client is woken
    once and finds them all.
    """

    __slots__ = ("_pending", "_scheduled")

    def __init__(self) -> None:
        self._pending: list[_Coalesced] = []
        self._scheduled = False

    def add(self, transport: _Coalesced) -> None:
        self._pending.append(transport)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for transport in pending:
            transport.flush()


MAX_HEAD_BYTES = 64 * 1024  # the request line and headers of one request (nginx: 4 x 8 KiB; Node.js: 16 KiB)


def _protocol(header_timeout: float, deadlines: Deadlines | None = None) -> type:
    """uvicorn's httptools protocol, answering 408 to a client that sends its headers too slowly."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from mlsys_cli.deploy.serve.batching import Pending

    limits = deadlines or Deadlines()
    writes = _Writes()

    class Protocol(HttpToolsProtocol):
        """Also counts requests between their headers and their answer (adaptive batching), and
        sends each answer in one write (:class:`_Coalesced`)."""

        _counted = False
        _head = 0  # bytes received since the last request's headers were complete (None: reading a body)
        draining = False  # the worker is stopping (set on the class by :func:`_server`): answers close their connection
        _closes = None  # the request whose answer the drain made close the connection

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.transport = _Coalesced(transport, writes)
            limits.add(self, header_timeout, self._slow)

        _tail = b""  # the last bytes of the head so far (its blank line may straddle two reads)

        def data_received(self, data: bytes) -> None:
            if self._head is not None:  # httptools would buffer the headers without a bound
                seen = self._tail + data
                end = seen.find(b"\r\n\r\n")
                self._head += len(data) if end < 0 else max(0, end + 4 - len(self._tail))  # not the body after it
                self._tail = seen[-3:]
                if self._head > MAX_HEAD_BYTES:
                    self._refuse(431, "Request Header Fields Too Large",
                                 b"the request line and headers are over %d bytes" % MAX_HEAD_BYTES)
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            limits.add(self, header_timeout, self._slow)

        def on_headers_complete(self) -> None:
            self._head = None
            limits.discard(self)
            if not self._counted:
                self._counted = True
                Pending.count += 1
            previous = self.cycle
            super().on_headers_complete()
            if self.draining and self.cycle is not previous:
                if previous is not None and previous is self._closes and not previous.response_started:
                    previous.keep_alive = True  # pipelined behind it: closing after it would drop this one
                self._close_after(self.cycle)

        def on_response_complete(self) -> None:
            self._head, self._tail = 0, b""
            if Pending.count > 1:  # other answers are being built: leave with them at the end of the pass
                self.transport.complete()
            else:
                self.transport.flush()
            self._uncount()
            super().on_response_complete()

        def drain(self) -> None:
            """The worker stops: the last request received (uvicorn's ``cycle``, also when others are
            pipelined before it) is answered with ``connection: close``, which closes the connection;
            an idle one stays open (the next request on its way is answered the same way)."""
            if self.cycle is not None and not self.cycle.response_complete:
                self._close_after(self.cycle)

        def _close_after(self, cycle: Any) -> None:
            cycle.keep_alive = False
            self._closes = cycle

        def shutdown(self) -> None:
            """uvicorn's end of the drain: a connection whose next request has begun to arrive keeps it (it is
            answered with ``connection: close``, or 408 at the header deadline); uvicorn closes the idle ones."""
            if not self._head:
                super().shutdown()

        def connection_lost(self, exc: Exception | None) -> None:
            limits.discard(self)
            self._uncount()
            super().connection_lost(exc)

        def _uncount(self) -> None:
            if self._counted:
                self._counted = False
                Pending.count -= 1

        def _slow(self) -> None:
            self._refuse(408, "Request Timeout", b"the request headers did not arrive within %g s" % header_timeout)

        def _refuse(self, status: int, phrase: str, reason: bytes) -> None:
            """Answer before the application sees the request (a JSON error), and close the connection."""
            if self.transport.is_closing():
                return
            body = b'{"error":"%s"}' % reason
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (status, phrase.encode(), len(body), body))
            self.transport.close()

    return Protocol


def _server(config: Any, app: Any, drain_seconds: float) -> Any:
    """uvicorn's server, with a drain before its graceful stop (what SIGTERM starts)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await self._drain(sockets or [])
            await super().shutdown(sockets)

        async def _drain(self, listeners: list[socket.socket]) -> None:
            """Readiness fails, no new connection is established, every request already sent is
            answered with ``connection: close`` (as Envoy discourages HTTP/1 requests during its
            drain time), and idle keep-alive connections are kept up to ``drain_seconds`` for a
            request on its way. uvicorn alone closes idle connections at once: a request the client
            had just written on one was reset. Ends early once no connection is open and none is
            queued; uvicorn's stop then closes the listener and what is left."""
            app.ready = False
            self.config.http_protocol_class.draining = True
            app.state.event({"event": "drain", "connections": len(self.server_state.connections), "seconds": drain_seconds})
            if not listeners or not all([refuse_connections(sock) for sock in listeners]):
                for server in self.servers:  # no filter: stop listening now, as uvicorn does (the queue is reset)
                    server.close()  # uvloop closes the socket's descriptor and detaches it from ``sock``
            for connection in list(self.server_state.connections):
                connection.drain()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + drain_seconds
            while ((self.server_state.connections or any(queued(sock) for sock in listeners))
                   and loop.time() < deadline and not self.force_exit):
                await asyncio.sleep(DRAIN_POLL_SECONDS)

    return Server(config)


DRAIN_POLL_SECONDS = 0.02
SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>
# A classic BPF program run on each TCP segment reaching the listener (from its TCP header):
# drop a segment with SYN set and ACK clear, a new connection; pass the rest.
_DROP_SYN = ((0x30, 0, 0, 13),  # ldb [13]: the flags byte
             (0x54, 0, 0, 0x12),  # and #(SYN|ACK)
             (0x15, 0, 1, 0x02),  # jeq #SYN: drop, else pass
             (0x06, 0, 0, 0),  # drop: ret #0
             (0x06, 0, 0, 0xFFFFFFFF))  # pass: ret #-1


def refuse_connections(sock: socket.socket) -> bool:
    """Establish no new connection on a listening socket, keeping those already queued (False: cannot here).

    Closing a listener resets every connection the kernel established that the server has not
    accepted yet: a client that connected and wrote its request a moment earlier got ``Connection
    reset``. Dropping new SYNs instead leaves that queue to be accepted and answered; a client that
    connects now hears nothing, retries its SYN a second later and gets ``connection refused`` once
    the listener is closed, before it sent anything. The filter is on the socket, so with
    ``--workers`` it holds for every worker. Linux only (SO_ATTACH_FILTER).
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_SYN))
    try:  # the kernel copies the program: the buffer may go when this returns
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", len(_DROP_SYN), ctypes.addressof(program)))
    except OSError:
        return False
    return True


def queued(sock: socket.socket) -> int:
    """Connections established on a listening socket that no worker has accepted yet (0 where unknown)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return 0
    return struct.unpack_from("I", info, 24)[0]  # Linux: a listener's tcpi_unacked is its accept queue


def run_worker(specs: list[ModelSpec], options: ServeOptions, sock: socket.socket, on_ready: Callable[[], None],
               slots: dict[str, Slot] | None = None) -> list[str]:
    """Serve on ``sock`` in this process until SIGTERM/SIGINT; returns the log files written."""
    import uvicorn

    from mlsys_cli.deploy.serve.app import ServeApp
    from mlsys_cli.deploy.serve.metrics import Metrics
    from mlsys_cli.deploy.serve.predlog import PredictionLog

    slots = slots or load_slots(specs)
    metrics = Metrics()

    def counted(written: int, dropped: int) -> None:
        if written:
            metrics.log_rows.labels("written").inc(written)
        if dropped:
            metrics.log_rows.labels("dropped").inc(dropped)

    log = PredictionLog(options.log, counted) if options.log is not None else None
    runtime = Runtime(options, metrics, log, on_ready)
    app = ServeApp(slots, runtime)
    _answer_overload(options.max_connections, metrics)
    timeout = options.limits.request_timeout
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, http=_protocol(timeout, runtime.deadlines),
                            loop="uvloop", ws="none",
                            limit_concurrency=options.max_connections, timeout_keep_alive=5,
                            timeout_graceful_shutdown=int(timeout) + 5, server_header=False, date_header=False)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises it after the graceful stop
    try:
        _server(config, app, options.drain_seconds).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return [str(p) for p in log.written] if log is not None else []


def _answer_overload(limit: int, metrics: Any) -> None:
    """Past ``--max-connections`` uvicorn answers before the application sees the request, with
    its own plain-text 503 and a warning through the logging module (a plain-text line between
    the JSON lines on stderr). Its protocol looks both up by name when a request arrives: make
    the answer JSON with ``Retry-After``, counted in ``/metrics`` (route ``overloaded``), and keep
    the warning off stderr (the count is the signal; one line per refused request would be a
    flood exactly when the server is overloaded). ``test_uvicorn_still_has_what_...`` pins both names.
    """
    import logging

    from uvicorn.protocols.http import httptools_impl

    body = orjson.dumps({"error": f"the server has {limit} open connections, its limit (--max-connections); retry later"})
    start = {"type": "http.response.start", "status": 503,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"retry-after", b"1"), (b"connection", b"close")]}

    async def overloaded(scope: dict, receive: Callable, send: Callable) -> None:
        metrics.request("overloaded", 503, 0.0)
        await send(start)
        await send({"type": "http.response.body", "body": body})

    httptools_impl.service_unavailable = overloaded
    logging.getLogger("uvicorn.error").addFilter(lambda record: record.getMessage() != "Exceeded concurrency limit.")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (exit 3 when the address is taken or not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror})",
                         "pick another --port, or stop what is listening there") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(specs: list[ModelSpec], options: ServeOptions, on_ready: Callable[[dict[str, Any]], None]) -> ServeResult:
    """Serve ``specs`` until stopped.

    Parameters
    ----------
    specs : list of ModelSpec
        ``primary`` first; optionally ``shadow`` and ``canary``.
    options : ServeOptions
    on_ready : callable
        Called once with ``{"url", "pid", "workers", "models"}`` when the server accepts requests.

    Raises
    ------
    InputError
        A model cannot be loaded, the log directory cannot be written, the address is taken (exit 3).
    UsageError
        Inconsistent options (exit 2).
    """
    if options.workers < 1:
        raise UsageError("--workers must be at least 1")
    start = time.monotonic()
    if options.workers == 1:
        slots = load_slots(specs)
        if options.log is not None:
            options.log.directory.mkdir(parents=True, exist_ok=True)
        sock = bind(options.host, options.port)
        url = url_of(sock, options.host)
        info = {"url": url, "pid": os.getpid(), "workers": 1,
                "models": [s.current.describe() for s in slots.values()]}
        files = run_worker(specs, options, sock, lambda: on_ready(info), slots=slots)
        return ServeResult(url, 1, round(time.monotonic() - start, 3), files)
    from mlsys_cli.deploy.serve.supervisor import Runner, supervise

    sock = bind(options.host, options.port)
    url = url_of(sock, options.host)
    supervise(specs, options, sock, lambda models: on_ready({"url": url, "pid": os.getpid(), "workers": options.workers,
                                                             "models": models}),
              Runner(load=load_slots, run=run_worker))
    return ServeResult(url, options.workers, round(time.monotonic() - start, 3), [])
