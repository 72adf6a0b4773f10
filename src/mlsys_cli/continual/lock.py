"""The registry's writer lock: an exclusive ``flock`` on a file that names its holder.

The kernel drops an ``flock`` when its process dies, however it dies, so a killed writer never
blocks the next one. The holder writes its pid, host, start time and command into the file and
empties it on a clean release: a writer that finds the file non-empty once it holds the lock knows
the previous holder was killed (a *stale* lock) and says so. The file is never deleted (a deleted
lock file would let two writers lock two different files); if it is deleted or replaced anyway
while a writer waits, the writer notices that its descriptor no longer names the file and locks
again. Its content is never trusted for locking: garbage in it is only reported as unreadable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from mlsys_cli.errors import BusyError, InputError

_POLL = 0.05


def write_error(path: Path, exc: OSError) -> InputError:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return InputError(f"{path}: the registry is read-only ({exc.strerror})",
                          "run on a writable copy, or only read it: mlsys registry list/show")
    if exc.errno == errno.ENOSPC:
        return InputError(f"{path}: no space left on the device; nothing was changed")
    return InputError(f"{path}: cannot write ({exc.strerror or exc})")


class Lock:
    """An exclusive ``flock`` on the registry's ``.lock`` file, with the holder named inside.

    ``acquire`` returns what a previous holder left in the file when it did not release
    cleanly (it was killed): the stale lock, for the history.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self, wait: float | None = None, holder: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Lock, waiting up to ``wait`` seconds (None: not at all); write ``holder`` into the file.

        Returns what a previous holder left in the file (it was killed), or None.

        Raises
        ------
        BusyError
            Another process holds the lock (its record in the message).
        InputError
            The lock file cannot be opened for writing (a read-only registry) or is a directory.
        """
        deadline = None if wait is None else time.monotonic() + max(0.0, wait)
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                if deadline is None or time.monotonic() >= deadline:
                    raise BusyError(f"{self.path.parent}: another writer holds the registry lock{_describe(holder)}",
                                    "retry later, or wait for it: --wait SECONDS") from None
                time.sleep(_POLL)
                continue
            if self._same_file(fd):
                break
            os.close(fd)  # the file was deleted or replaced while we waited: lock the one that is there
        self.fd = fd
        previous = self._holder(fd)
        mine = json.dumps(holder or {"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, mine, 0)
        return previous

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # a clean release leaves the file empty: nothing stale
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def _open(self) -> int:
        try:
            # O_CLOEXEC (Python's default): no child process inherits, and so keeps, the lock.
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except IsADirectoryError:
            raise InputError(f"{self.path}: the lock file is a directory", "remove it; mlsys creates the file") from None
        except OSError as exc:
            raise write_error(self.path.parent, exc) from None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _holder(fd: int) -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            data = os.pread(fd, 65536, 0)
            if data.strip():
                doc = json.loads(data)
                return doc if isinstance(doc, dict) else {"unreadable": True}
            return None
        return {"unreadable": True}


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder or "pid" not in holder:
        return ""
    command = " ".join(map(str, holder.get("command") or []))[:80]
    return f" (pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}: {command})"

