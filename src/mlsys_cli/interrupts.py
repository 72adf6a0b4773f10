"""Interrupt hooks: how a signal reaches work that Python cannot interrupt by itself.

The CLI turns Ctrl-C and SIGTERM into a ``KeyboardInterrupt`` in the main thread (app.py). A
library running native code may never see it, or swallow it (DuckDB, when it lands as a query
starts, then runs the query to its end). Code that starts such work registers how to cancel it
for its duration; the signal handler calls every registered canceller, and the interrupted call
raises in the main thread as usual. Standard library only: every layer may use it.

    with cancel_with(con.interrupt):
        con.execute(long_query)
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

_lock = threading.Lock()
_cancellers: list[Callable[[], object]] = []


@contextlib.contextmanager
def cancel_with(cancel: Callable[[], object]) -> Iterator[None]:
    """Register ``cancel`` (thread-safe, non-blocking, e.g. ``duckdb_connection.interrupt``) while the block runs."""
    with _lock:
        _cancellers.append(cancel)
    try:
        yield
    finally:
        with _lock:
            _cancellers.remove(cancel)


def cancel_all() -> None:
    """Cancel every registered piece of work (called on a signal; errors in a canceller are ignored)."""
    with _lock:
        pending = list(_cancellers)
    for cancel in pending:
        with contextlib.suppress(Exception):
            cancel()
