"""Adaptive micro-batching: concurrent requests share one model run.

A request answered alone runs the model at once (nothing to wait for). When other requests are
waiting too (their headers arrived and they are not answered yet: :class:`Pending`, counted by
the HTTP protocol), a request's rows join a queue instead, and one drain, scheduled on the event
loop behind the requests already ready to run, takes what is queued (up to ``max_rows``), runs
the model once and hands each request its slice. onnxruntime's cost for a few rows is mostly
per graph node, not per row, so eight queued single rows cost little more than one.

The drain runs on the event loop itself, not on a worker thread. Measured on the 2-core
benchmark machine (benchmarks/results/serve.md) with the 93-node churn graph: the thread's
hand-offs (a wake-up each way and the GIL taken back after every run) cost more than running
the batch inline, and since the load generator holds the other core, the thread found no idle
core to overlap with. Nothing waits when the server is quiet: a batch is whatever queued while
the loop was busy, plus at most ``max_wait_ms`` when that is set. ``max_rows`` <= 1 turns
batching off. When more requests are in flight than queued or just answered (their headers
arrived, their bodies are being read or their tasks have not run yet), the drain waits one more
pass of the loop (:data:`DEFER_PASSES`): those requests join this model run instead of the next.
Under load each model run costs ~200 µs whatever its size up to a few dozen rows (cold caches),
so fewer, fuller runs are most of what batching saves.

A request hands over its inputs as they arrived (``records`` from ``/predict``, ``columns``
from V2), not yet read into arrays: the drain reads the records of every queued request in one
call of the model's record reader. Reading one record costs ~20 µs, thirty-two at once ~2.5 µs
each (the churn model's 16 columns), and the merged arrays need no concatenation. When one
request's inputs are refused, the batch is read again request by request, so each gets its own
answer (its 422, or its prediction).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


# Passes of the event loop a drain waits for requests whose headers are in but whose inputs are
# not queued yet. Measured at 32 connections (benchmarks/results/serve.md, session 9): one pass
# 12.7-13.1k requests/s against 10.5-11.0k for none, interleaved runs; two or four passes were
# no better and less steady (a pass with nothing new to read only delays the batch).
DEFER_PASSES = 1


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
        self._scheduled = False
        self._answered = 0  # requests whose outputs are set and whose task has not taken them yet
        self._deferred = 0  # loop passes the drain waited for requests still on their way

    async def predict(self, kind: str, data: Any, rows: int) -> dict[str, Any]:
        """Outputs for one request's inputs (``kind`` is ``records`` or ``columns``: ``ServedModel.read``)."""
        if not self.options.enabled or (Pending.count <= 1 and not self._queue):
            canon = self.model.read(kind, data)
            self.histogram.observe(rows)
            return self.model.predict(canon)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((kind, data, rows, future))
        if not self._scheduled:
            self._scheduled = True
            if self.options.max_wait_ms > 0:
                loop.call_later(self.options.max_wait_ms / 1000.0, self._drain)
            else:
                loop.call_soon(self._drain)  # after the requests already ready have queued their inputs
        try:
            return await future
        finally:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._answered -= 1

    def _take(self) -> list[tuple[str, Any, int, asyncio.Future]]:
        taken, rows = [], 0
        while self._queue and (not taken or rows + self._queue[0][2] <= self.options.max_rows):
            item = self._queue.pop(0)
            taken.append(item)
            rows += item[2]
        return taken

    def _drain(self) -> None:
        if (self._deferred < DEFER_PASSES and Pending.count > len(self._queue) + self._answered
                and sum(item[2] for item in self._queue) < self.options.max_rows):
            # Requests on their way (headers in, inputs not queued yet): one more pass of the loop
            # reads them, and one model run serves them all.
            self._deferred += 1
            asyncio.get_running_loop().call_soon(self._drain)
            return
        self._drain_now()

    def _drain_now(self) -> None:
        self._deferred = 0
        self._scheduled = False
        while self._queue:
            self._run(self._take())

    def _read(self, batch: list[tuple[str, Any, int, asyncio.Future]]) -> tuple[dict[str, Any] | None, list]:
        """The batch's inputs as one set of arrays, and the requests in it (a refused one is answered here)."""
        import numpy as np

        if len(batch) > 1 and all(item[0] == "records" for item in batch):
            try:
                return self.model.read("records", [r for item in batch for r in item[1]]), batch
            except Exception:  # someone's inputs are refused: read them one by one to answer each its own
                pass
        kept, canons = [], []
        for item in batch:
            try:
                canons.append(self.model.read(item[0], item[1]))
                kept.append(item)
            except Exception as exc:
                if not item[3].done():
                    item[3].set_exception(exc)
        if len(canons) <= 1:
            return (canons[0] if canons else None), kept
        return {k: np.concatenate([c[k] for c in canons]) for k in canons[0]}, kept

    def _run(self, batch: list[tuple[str, Any, int, asyncio.Future]]) -> None:
        merged, batch = self._read(batch)
        if not batch:
            return
        self.histogram.observe(sum(item[2] for item in batch))
        try:
            out = self.model.predict(merged)
        except Exception as exc:  # every waiting request gets the model's error
            for item in batch:
                if not item[3].done():
                    item[3].set_exception(exc)
            return
        start = 0
        for _, _, n, future in batch:
            if not future.done():  # a request whose deadline passed is no longer waiting
                future.set_result({k: v[start:start + n] for k, v in out.items()})
                self._answered += 1
            start += n

    def close(self) -> None:
        """The model was swapped out: answer what is still queued with it now."""
        if self._queue:
            self._drain_now()
