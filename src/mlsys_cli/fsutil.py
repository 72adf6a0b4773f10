"""Atomic file writes and input fingerprints, shared by every stage.

Every file mlsys writes goes to a temporary file in the same directory, is fsynced and then
renamed over the target, so a killed command leaves the previous file or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``.

    The caller writes the file at the yielded path by any means (pyarrow, duckdb, zipfile).
    On an exception or interrupt the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=parent)
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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


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
