"""The floor for bench_serve.py: a bare echo app on mlsys serve's stack.

A plain ASGI callable answering the request body, run on the same uvicorn settings as
``mlsys serve`` (httptools, uvloop)::

    python serve_load.py echo PORT [WORKERS]

(The fixed-rate client is ``fixed_rate.c``.)
"""

from __future__ import annotations

import sys


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


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        import os

        import uvicorn

        workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        # Several workers need the app by import string (uvicorn's own process manager, one shared socket).
        uvicorn.run("serve_load:echo" if workers > 1 else echo, host="127.0.0.1", port=int(sys.argv[2]), http="httptools",
                    loop="uvloop", log_config=None, access_log=False, server_header=False, date_header=False,
                    workers=workers, app_dir=os.path.dirname(os.path.abspath(__file__)))
