"""Run ``mlsys`` and SIGKILL it just before its K-th filesystem change inside a registry.

A test helper (not part of mlsys)::

    python -m tests.continual.killer K REGISTRY COUNT_FILE mlsys-args...

Every call that changes the registry directory (opening, writing, syncing, truncating,
renaming, replacing, creating or removing a file or directory under REGISTRY, and the writes
and syncs on descriptors opened there) is counted; the K-th one kills the process with SIGKILL
before it happens, as a power cut or ``kill -9`` would. K = 0 never kills and writes the names
of those calls, in order, to COUNT_FILE (JSON), so a test can then kill at any of them.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import sys


def main() -> None:
    kill_at, registry, count_file, args = int(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3], sys.argv[4:]
    state = {"count": 0, "ops": []}
    fds: set[int] = set()

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fsencode(path).decode()).startswith(registry)
        except TypeError:
            return False

    def point(name: str) -> None:
        state["count"] += 1
        state["ops"].append(name)
        if state["count"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def by_path(fn, *, track=False):
        def wrapped(path, *a, **kw):
            if inside(path):
                point(fn.__name__)
            result = fn(path, *a, **kw)
            if track and inside(path):
                fds.add(result if isinstance(result, int) else result.fileno())
            return result
        return wrapped

    def by_fd(fn):
        def wrapped(fd, *a, **kw):
            if fd in fds:
                point(fn.__name__)
            return fn(fd, *a, **kw)
        return wrapped

    def write_mode(fn):
        opened = by_path(fn, track=True)

        def wrapped(path, mode="r", *a, **kw):
            if isinstance(path, int) or not any(c in mode for c in "wax+"):
                return fn(path, mode, *a, **kw)
            return opened(path, mode, *a, **kw)
        return wrapped

    os.open = by_path(os.open, track=True)
    builtins.open = write_mode(builtins.open)
    for name in ("rename", "replace", "mkdir", "unlink", "chmod", "rmdir"):
        setattr(os, name, by_path(getattr(os, name)))
    shutil.rmtree = by_path(shutil.rmtree)
    for name in ("write", "pwrite", "fsync", "ftruncate"):
        setattr(os, name, by_fd(getattr(os, name)))

    from mlsys_cli.app import run

    code = run(args)
    if kill_at == 0:
        with builtins.open(count_file, "w") as fh:
            json.dump(state["ops"], fh)
    sys.exit(code)


if __name__ == "__main__":
    main()
