"""Atomic file writes and input fingerprints, shared by every stage.

Every file mlsys writes goes to a temporary file in the same directory, is fsynced and then
renamed over the target, so a killed command leaves the previous file or nothing.

Temporary names are ``.<name>.mlsys-tmp-<pid>-<random><suffix>`` (files and scratch
directories alike). An interrupted command removes its own; a command killed outright
(``kill -9``, power loss) cannot, so every later write into the same directory removes the
temporaries whose process is gone (:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import IO, Iterator

TEMP_MARK = ".mlsys-tmp-"
# Bytes a temporary name adds to its target's: "." + mark + host + pid + 8 random + suffix, rounded up.
TEMP_OVERHEAD = 64
_STALE = re.compile(re.escape(TEMP_MARK) + r"(?P<host>[A-Za-z0-9_]{0,16})-(?P<pid>\d+)-")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", *, create_parent: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``.

    The caller writes the file at the yielded path by any means (pyarrow, duckdb, zipfile).
    On an exception or interrupt the temporary file is removed and ``target`` is untouched.
    ``create_parent=False``: the directory must exist (a job's scratch directory, which a task
    still running after its job failed must not bring back once the job removed it).
    """
    target = Path(target)
    refuse_special(target)
    parent = make_parent(target) if create_parent else (target.parent if str(target.parent) else Path("."))
    import tempfile  # here, not at import time: fsutil is on the start-up path (cli/_outputs)

    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=suffix + ".tmp", dir=parent)
    except OSError as exc:
        raise _write_error(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files; give the result the mode a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
        _fsync_dir(parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRORS:
            raise _write_error(target, exc) from None
        raise


def refuse_special(target: Path) -> None:
    """Refuse an output that exists but is not a regular file (a device, FIFO, socket, or a link to one).

    The atomic rename would replace the node itself: ``-o /dev/null`` or ``-o /dev/stdout`` run
    as root swapped the device (or the link) for a Parquet file, breaking every later user of it.
    A link to a regular file is replaced as before (the file it pointed to is left as it was).
    """
    import stat

    try:
        mode = os.stat(target).st_mode
    except OSError:
        return  # absent, or a dangling link: a new file
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a directory fails as before (EISDIR), with its message
        from mlsys_cli.errors import InputError

        raise InputError(f"{target}: is not a regular file (a device, FIFO or socket); the output would replace it",
                         "write to a file path (results can be read back with mlsys info FILE)")


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                 errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EINVAL, errno.EXDEV}


def _write_error(target: Path, exc: OSError) -> Exception:
    from mlsys_cli.errors import InputError

    return InputError(f"{target}: cannot write ({exc.strerror or exc})", "choose another output path")


def temp_prefix(target: str | os.PathLike) -> str:
    """The start of a temporary name beside ``target``: ``.<name>.mlsys-tmp-<host>-<pid>-``.

    The host and process id let a later run tell a dead process's leftovers from a live one's.
    """
    name = Path(target).name
    return f".{name}{TEMP_MARK}{_host()}-{os.getpid()}-"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "", os.uname().nodename)[:16]


def make_parent(target: str | os.PathLike) -> Path:
    """Create the directory ``target`` goes into and sweep dead temporaries out of it."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from None
    sweep_stale(parent)
    return parent


def temp_dir(target: str | os.PathLike) -> tempfile.TemporaryDirectory:
    """A scratch directory beside ``target`` (same file system), named like a temporary file."""
    import tempfile

    parent = make_parent(target)
    try:
        return tempfile.TemporaryDirectory(prefix=temp_prefix(target), dir=parent)
    except OSError as exc:
        raise _write_error(Path(target), exc) from None


def sweep_stale(directory: str | os.PathLike) -> list[str]:
    """Remove temporaries left in ``directory`` by mlsys processes of this host that no longer run."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = _STALE.search(entry.name)
            if not entry.name.startswith(".") or not match or match["host"] != _host() or _alive(int(match["pid"])):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OverflowError:
        return False
    return True


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``target`` for writing; rename it over ``target`` on success."""
    with atomic_path(target) as tmp:
        with open(tmp, mode) as fh:
            yield fh


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write text to ``target`` atomically."""
    with atomic_open(target, "w") as fh:
        fh.write(text)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``target`` atomically."""
    with atomic_open(target, "wb") as fh:
        fh.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The sha256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()
