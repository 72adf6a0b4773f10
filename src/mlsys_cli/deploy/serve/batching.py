"""Adaptive micro-batching: concurrent requests share one model run.

A request answered alone runs the model inline on the event loop: fastest for one request at a
time (no thread hop). When other requests are waiting (their headers arrived and they are not
answered yet: :class:`Pending`, counted by the HTTP protocol), a request's rows join a queue
instead; one drain task takes what is queued (up to ``max_rows``), runs the model once in a
worker thread (onnxruntime releases the GIL, so the event loop keeps reading and answering
meanwhile, on another core) and hands each request its slice. Nothing waits when the server is
quiet: a batch is whatever arrived while the previous one ran, plus at most ``max_wait_ms``
when that is set. ``max_rows`` <= 1 turns batching off.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


class Pending:
    """Requests whose headers arrived and whose answer is not complete (one event loop)."""

    count = 0


@dataclass(frozen=True)
class BatchOptions:
    """``max_rows`` rows per model run (<= 1: no batching); ``max_wait_ms`` extra wait to fill one."""

    max_rows: int = 64
    max_wait_ms: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_rows > 1


class Batcher:
    """Runs a model's predictions, alone or in micro-batches (see the module docstring)."""

    def __init__(self, model: Any, options: BatchOptions, histogram: Any):
        self.model = model
        self.options = options
        self.histogram = histogram
        self._queue: list[tuple[dict[str, Any], int, asyncio.Future]] = []
        self._draining = False
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlsys-batch") if options.enabled else None

    async def predict(self, canon: dict[str, Any], rows: int) -> dict[str, Any]:
        if self._pool is None or (Pending.count <= 1 and not self._queue and not self._draining):
            self.histogram.observe(rows)
            return self.model.predict(canon)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((canon, rows, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[dict[str, Any], int, asyncio.Future]]:
        taken, rows = [], 0
        while self._queue and (not taken or rows + self._queue[0][1] <= self.options.max_rows):
            item = self._queue.pop(0)
            taken.append(item)
            rows += item[1]
        return taken

    async def _drain(self) -> None:
        import numpy as np

        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self.options.max_wait_ms > 0 and sum(q[1] for q in self._queue) < self.options.max_rows:
                    await asyncio.sleep(self.options.max_wait_ms / 1000.0)
                batch = self._take()
                merged = {k: np.concatenate([c[k] for c, _, _ in batch]) if len(batch) > 1 else batch[0][0][k]
                          for k in batch[0][0]}
                total = sum(n for _, n, _ in batch)
                self.histogram.observe(total)
                try:
                    out = await loop.run_in_executor(self._pool, self.model.predict, merged)
                except Exception as exc:  # every waiting request gets the model's error
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for _, n, future in batch:
                    if not future.done():  # a request whose deadline passed is no longer waiting
                        future.set_result({k: v[start:start + n] for k, v in out.items()})
                    start += n
        finally:
            self._draining = False
            if self._closed:
                self._pool.shutdown(wait=False)

    def close(self) -> None:
        """Stop the worker thread once the queued runs are done (the model was swapped out)."""
        self._closed = True
        if self._pool is not None and not self._draining:
            self._pool.shutdown(wait=False)
