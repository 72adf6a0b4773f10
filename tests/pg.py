"""A real, throw-away PostgreSQL server for tests (no mocks of a database).

``start_postgres(directory)`` runs ``initdb`` and ``pg_ctl start`` on a free loopback port with
trust authentication and returns a :class:`PostgresServer` (``.url``, ``.stop()``). The
session fixture ``postgres_url`` starts one server for the whole test session and always
stops it. Registered for every test by ``pytest_plugins = ["tests.pg"]`` in tests/conftest.py.

As root (CI containers) the server runs as the ``postgres`` OS user through ``runuser``, since
PostgreSQL refuses to run as root. Without PostgreSQL binaries the fixture fails with the install hint.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import missing_service


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: newest Debian install, then PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    for bindir in reversed(candidates):
        if (Path(bindir) / "initdb").is_file() and (Path(bindir) / "pg_ctl").is_file():
            return Path(bindir)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server; ``url`` connects as the superuser ``postgres`` to database ``postgres``."""

    bindir: Path
    datadir: Path
    port: int
    prefix: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "immediate", "-w"],
                       capture_output=True, timeout=60)


def start_postgres(directory: str | os.PathLike) -> PostgresServer:
    """Initialise a cluster in ``directory`` and start it; raises RuntimeError with the log on failure."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) found")
    base = Path(directory)
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chmod(base, 0o700)
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    datadir, log = base / "data", base / "server.log"

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            detail = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr.strip()} {detail[-2000:]}")

    run(str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
    last_error: Exception | None = None
    for _ in range(3):  # the free port can be taken by someone else before the server binds it
        port = _free_port()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        try:
            run(str(bindir / "pg_ctl"), "start", "-D", str(datadir), "-l", str(log), "-o", options, "-w", "-t", "60")
            return PostgresServer(bindir=bindir, datadir=datadir, port=port, prefix=prefix)
        except RuntimeError as exc:
            last_error = exc
    raise RuntimeError(str(last_error))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, always stopped and removed at the end."""
    if find_bindir() is None:
        missing_service("PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/*/bin or PATH)")
    base = tempfile.mkdtemp(prefix="mlsys-pg-")
    server = None
    try:
        server = start_postgres(base)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of the session's PostgreSQL server (superuser ``postgres``, trust auth, loopback)."""
    return postgres_server.url
