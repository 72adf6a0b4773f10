"""Per-request time limits on one timer: a client's headers too slow, a request taking too long.

A timer per request (``loop.call_later`` when the request starts, its cancel when it ends; two
per request: the headers' limit and the whole request's) showed in the server's profile under
load (py-spy, 32 connections). The limits are seconds long and need no better than a tenth of
a second, so one periodic check over what is in flight serves them all, and a request costs a
dict insert and a pop. The check runs only while something is in flight.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

TICK_SECONDS = 0.1


class Deadlines:
    """Callbacks to run once their deadline passes, unless discarded first (one event loop)."""

    def __init__(self, tick: float = TICK_SECONDS):
        self.tick = tick
        self._due: dict[Any, tuple[float, Callable[[], None]]] = {}
        self._handle: Any = None

    def add(self, key: Any, seconds: float, expire: Callable[[], None]) -> None:
        """Run ``expire()`` ``seconds`` from now (at most a tick later), unless ``discard(key)`` comes first."""
        self._due[key] = (time.monotonic() + seconds, expire)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.tick, self._check)

    def discard(self, key: Any) -> None:
        self._due.pop(key, None)

    def _check(self) -> None:
        now = time.monotonic()
        for key in [k for k, (at, _) in self._due.items() if at <= now]:
            entry = self._due.pop(key, None)
            if entry is not None:
                entry[1]()
        self._handle = asyncio.get_running_loop().call_later(self.tick, self._check) if self._due else None
