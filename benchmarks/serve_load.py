"""Load helpers for bench_serve.py: a bare echo app on mlsys serve's stack, and a fixed-rate client.

``echo``: the floor, a plain ASGI callable answering the request body, run on the same uvicorn
settings as ``mlsys serve`` (httptools, uvloop)::

    python serve_load.py echo PORT [WORKERS]

``rate``: wrk keeps a fixed number of connections busy (closed loop), so its latencies hide
queueing. This client sends at a fixed rate (open loop, like wrk2): request i is due at
start + i/rate, latency counts from when it was due, so a slow server shows in the tail instead
of lowering the rate. Keep-alive connections from a pool; prints one JSON line::

    python serve_load.py rate URL BODY_FILE RATE SECONDS [CONNECTIONS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def echo(scope, receive, send):  # noqa: D103 - the bare ASGI echo
    if scope["type"] != "http":
        while scope["type"] == "lifespan":
            if (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _one(reader, writer, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def rate(url: str, body: bytes, per_second: float, seconds: float, connections: int) -> dict:
    parts = urlsplit(url)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    total = int(per_second * seconds)
    queue: asyncio.Queue = asyncio.Queue()
    latencies, statuses, errors = [], {}, 0

    async def worker():
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while True:
            due = await queue.get()
            if due is None:
                break
            try:
                status = await _one(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                continue
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / per_second
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)
    sent = time.perf_counter()
    for _ in workers:
        queue.put_nowait(None)
    # Bounded: a server that cannot keep up gets as long again to catch up; the rest is unfinished.
    done, pending = await asyncio.wait(workers, timeout=max(seconds, 5.0))
    for task in pending:
        task.cancel()
    elapsed = time.perf_counter() - start
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3) if latencies else None  # noqa: E731
    return {"target_rate": per_second, "sent_seconds": round(sent - start, 3), "achieved_rate": round(len(latencies) / elapsed, 1),
            "requests": len(latencies), "unfinished": total - len(latencies) - errors, "errors": errors, "statuses": statuses,
            "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        import os

        import uvicorn

        workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        # Several workers need the app by import string (uvicorn's own process manager, one shared socket).
        uvicorn.run("serve_load:echo" if workers > 1 else echo, host="127.0.0.1", port=int(sys.argv[2]), http="httptools",
                    loop="uvloop", log_config=None, access_log=False, server_header=False, date_header=False,
                    workers=workers, app_dir=os.path.dirname(os.path.abspath(__file__)))
    else:
        url, body_file, per_second, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
        conns = int(sys.argv[6]) if len(sys.argv) > 6 else 32
        print(json.dumps(asyncio.run(rate(url, open(body_file, "rb").read(), per_second, seconds, conns))))
