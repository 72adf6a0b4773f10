"""The model registry: a plain directory any tool can read.

Layout (format version 1)::

    REGISTRY/
      registry.json            {"format": "mlsys-registry", "version": 1}
      versions/v0001/model.mlsys
      versions/v0001/meta.json  version record: created, parent, status, metrics, data window, reason
      champion.json            {"version": "v0001", "bundle": "versions/v0001/model.mlsys", "sha256": ...}
                               replaced atomically (temp file + os.replace); absent = no champion yet
      history.jsonl            append-only decisions, one JSON object a line
      .lock                    fcntl lock held by writers

Readers (``serve --registry``, ``registry show``) only need :func:`read_champion`: it reads the
pointer without taking the lock, so serving never waits on a retrain.

How a writer stays crash-safe (any process may be killed at any instruction):

- A version is built in ``versions/.vNNNN.<pid>.tmp/`` (bundle and ``meta.json`` fsynced) and
  renamed to ``versions/vNNNN`` in one step, so a version directory is complete or absent.
  ``meta.json`` is never rewritten: its ``status`` is the decision made when the version was
  created (``promoted`` or ``rejected``); which version serves is ``champion.json`` alone.
- ``champion.json`` is replaced atomically; ``history.jsonl`` gets one ``write`` per event on
  an ``O_APPEND`` descriptor, then fsync. Every event records the champion after it.
- Writers hold an ``fcntl.flock`` on ``.lock``. The kernel drops it when its process dies,
  however it dies, so a killed writer never blocks the next one. The holder writes its pid and
  command into the file; a clean release empties it. A writer that finds the file non-empty
  knows the previous holder was killed (a *stale* lock) and runs :meth:`Writer.recover`:
  temporary files are removed, a truncated last history line is cut off (and logged), and a
  version or champion change the history misses is logged (a promotion that was decided,
  ``meta.json`` written, but not yet pointed to is completed). Recovery runs on every
  acquisition, so it is also what repairs a history truncated by a full disk.
- The lock file is never deleted (a deleted lock file would let two writers lock two
  different files); if someone deletes or replaces it anyway, the writer notices that its
  descriptor no longer names the file and locks again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from mlsys_cli.continual.lock import Lock, write_error
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.fsutil import atomic_write_text, sha256_file

CHAMPION = "champion.json"
HISTORY = "history.jsonl"
LOCK = ".lock"
VERSIONS = "versions"
MARKER = "registry.json"
BUNDLE = "model.mlsys"
META = "meta.json"
FORMAT = {"format": "mlsys-registry", "version": 1}
STATUSES = ("promoted", "rejected")
_VERSION = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class Champion:
    """What ``champion.json`` points at."""

    version: str
    bundle: Path
    sha256: str | None = None

    def to_dict(self) -> dict:
        return {"version": self.version, "bundle": str(self.bundle), "sha256": self.sha256}


def read_champion(registry: str | Path) -> Champion:
    """Read the champion pointer of ``registry``.

    Raises
    ------
    InputError
        The directory is not a registry, it has no champion yet, or the pointer is unreadable.
    """
    root = Path(registry)
    if not root.is_dir():
        raise InputError(f"{root}: no such registry directory", "create one with 'mlsys retrain --registry DIR ...'")
    pointer = root / CHAMPION
    try:
        data = json.loads(pointer.read_text())
        version, bundle = str(data["version"]), root / str(data["bundle"])
    except FileNotFoundError:
        raise InputError(f"{root}: the registry has no champion yet",
                         "train one with 'mlsys retrain --registry DIR --recipe FILE --data ...'") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{pointer}: unreadable champion pointer ({exc.__class__.__name__})",
                         "the next writer restores it from the history (mlsys registry promote DIR VERSION, "
                         "rollback or retrain)") from None
    return Champion(version=version, bundle=bundle, sha256=data.get("sha256"))


def now_utc() -> datetime:
    """The current time in UTC (one place, so callers can be given another ``now``)."""
    return datetime.now(timezone.utc)


def stamp(when: datetime | None = None) -> str:
    """An ISO 8601 UTC timestamp, to the second: ``2025-01-31T02:30:00Z``."""
    return (when or now_utc()).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime:
    """The datetime of a :func:`stamp` string."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def who() -> dict[str, Any]:
    """Who is writing: user, host, pid and the command line (for the history)."""
    from mlsys_cli.data.io import invocation

    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        import pwd

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:  # a uid without a passwd entry (containers)
            user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid(),
            "command": ["mlsys", *invocation()] if invocation() else sys.argv}


def version_number(version: str) -> int:
    """``v0012`` -> 12; anything else is a usage error (exit 2)."""
    m = _VERSION.match(version or "")
    if not m:
        raise UsageError(f"invalid version {version!r}", "versions are named v0001, v0002, ... (see 'mlsys registry list')")
    return int(m.group(1))


def version_name(number: int) -> str:
    return f"v{number:04d}"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Version:
    """One registered model: ``versions/vNNNN/meta.json`` plus where its bundle is.

    ``status`` is the decision made when the version was created (``promoted`` or
    ``rejected``, with ``reason``); it never changes. Whether it serves now is
    ``champion.json``'s business (see :meth:`Registry.champion`).
    """

    version: str
    created: str
    status: str
    reason: str
    sha256: str
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    who: dict[str, Any] = field(default_factory=dict)
    path: Path = Path(".")

    @property
    def bundle(self) -> Path:
        return self.path / BUNDLE

    def meta(self) -> dict[str, Any]:
        """The ``meta.json`` document."""
        return {"version": self.version, "created": self.created, "status": self.status, "reason": self.reason,
                "sha256": self.sha256, "parent": self.parent, "metrics": self.metrics, "data": self.data,
                "trigger": self.trigger, "recipe": self.recipe, "who": self.who}

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta(), "bundle": str(self.bundle)}

    @classmethod
    def read(cls, path: Path) -> "Version":
        try:
            doc = json.loads((path / META).read_text())
            keys = {k: doc[k] for k in ("version", "created", "status", "reason", "sha256")}
        except FileNotFoundError:
            raise InputError(f"{path}: version without {META}", "the registry was changed by hand") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path / META}: unreadable version record ({type(exc).__name__}: {exc})") from None
        return cls(**keys, parent=doc.get("parent"), metrics=doc.get("metrics") or {}, data=doc.get("data") or {},
                   trigger=doc.get("trigger"), recipe=doc.get("recipe") or {}, who=doc.get("who") or {}, path=path)


@dataclass(frozen=True)
class History:
    """The decoded ``history.jsonl``: its events, and the bytes of a partial last line (a crash)."""

    events: list[dict[str, Any]]
    partial_bytes: int = 0

    def last_champion(self) -> str | None:
        """The champion the newest event recorded (None when no event did)."""
        for event in reversed(self.events):
            if "champion" in event:
                return event["champion"]
        return None

    def versions(self) -> set[str]:
        return {e["version"] for e in self.events if e.get("version") and e.get("event") in ("retrain", "recover")}


def _read_history(path: Path) -> History:
    """Every complete line; a last line without its newline (a killed writer) is set aside."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return History([])
    except OSError as exc:
        raise InputError(f"{path}: unreadable history ({exc.strerror})") from None
    complete, _, partial = data.rpartition(b"\n")
    if not complete and not data.endswith(b"\n"):
        complete, partial = b"", data
    events = []
    for number, line in enumerate(complete.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            raise InputError(f"{path}: line {number} is not JSON", "history lines are only ever appended; "
                             "the file was edited by hand") from None
    return History(events, len(partial))


# --------------------------------------------------------------------------- the registry


class Registry:
    """A registry directory, read without any lock (what ``list``, ``show`` and ``serve`` need).

    Parameters
    ----------
    root : path
        The registry directory. :meth:`open` checks that it is one.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Registry":
        """An existing registry; a missing directory or marker, or a newer format, is exit 3."""
        reg = cls(root)
        reg.refuse_file()
        if not reg.root.is_dir():
            raise InputError(f"{reg.root}: no such registry directory",
                             "create one with 'mlsys retrain --registry DIR --recipe FILE --data ...'")
        reg.check_marker(missing_ok=False)
        return reg

    def refuse_file(self) -> None:
        """Refuse (exit 3) a root that exists and is not a directory: a model or table given by mistake."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"{self.root}: not a registry (a file, not a directory)",
                             "give the registry's directory: --registry DIR")

    def check_marker(self, missing_ok: bool) -> bool:
        """Whether ``registry.json`` exists; refuse a directory that is something else."""
        marker = self.root / MARKER
        try:
            doc = json.loads(marker.read_text())
        except FileNotFoundError:
            if missing_ok and self._only_a_first_writers_leftovers():
                return False
            raise InputError(f"{self.root}: not an mlsys registry (no {MARKER})",
                             "give an empty or new directory to start a registry") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{marker}: unreadable registry marker ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT["format"]:
            raise InputError(f"{self.root}: not an mlsys registry ({MARKER} has no format {FORMAT['format']!r})")
        if doc.get("version") != FORMAT["version"]:
            raise InputError(f"{self.root}: registry format version {doc.get('version')!r} is not supported "
                             f"(this mlsys reads version {FORMAT['version']})", "upgrade mlsys")
        return True

    def _only_a_first_writers_leftovers(self) -> bool:
        """Whether the directory holds nothing, or only what a first writer killed before its
        marker was in place can have left: the lock file, its temporary marker, an empty
        ``versions/`` (older mlsys created it before the marker)."""
        for path in self.root.iterdir():
            if path.name == LOCK or (path.name.startswith(f".{MARKER}.") and path.name.endswith(".tmp")):
                continue
            if path.name == VERSIONS and path.is_dir() and not any(path.iterdir()):
                continue
            return False
        return True

    def versions(self) -> list[Version]:
        """Every complete version, oldest first (temporary directories are not versions)."""
        return [Version.read(p) for p in self._version_dirs()]

    def readable_versions(self) -> tuple[list[Version], list[str]]:
        """Every version that can be read, and the error of each that cannot (a diagnostic such as
        ``registry list`` shows the others and names the broken one instead of failing on it)."""
        readable, errors = [], []
        for path in self._version_dirs():
            try:
                readable.append(Version.read(path))
            except InputError as exc:
                errors.append(f"{path.name}: left out: {exc.message}")
        return readable, errors

    def _version_dirs(self) -> list[Path]:
        base = self.root / VERSIONS
        if not base.is_dir():
            return []
        found = sorted((int(m.group(1)), p) for p in base.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir())
        return [p for _, p in found]

    def get(self, version: str) -> Version:
        """The version called ``version``; an unknown one is exit 3, naming the known ones."""
        version_number(version)
        path = self.root / VERSIONS / version
        if not (path / META).is_file():
            known = [v.version for v in self.versions()]
            raise InputError(f"{self.root}: no version {version}",
                             f"versions: {', '.join(known[-10:])}" if known else "the registry has no versions yet")
        return Version.read(path)

    def champion(self) -> Champion | None:
        """The champion pointer, or None when there is none yet."""
        if not (self.root / CHAMPION).exists():
            return None
        return read_champion(self.root)

    def history(self) -> History:
        return _read_history(self.root / HISTORY)

    def verify(self, version: Version) -> None:
        """Refuse (exit 3) a version whose bundle is missing or differs from its recorded sha256."""
        if not version.bundle.is_file():
            raise InputError(f"{version.bundle}: the bundle of {version.version} is missing",
                             "restore it, or promote another version: mlsys registry rollback DIR")
        actual = sha256_file(version.bundle)
        if actual != version.sha256:
            raise InputError(f"{version.bundle}: the bundle of {version.version} fails its sha256 check "
                             f"(recorded {version.sha256[:12]}, found {actual[:12]})",
                             "it was changed after it was registered; promote another version: mlsys registry rollback DIR")

    def champion_version(self) -> Version | None:
        """The champion's version record, verified; None when there is no champion yet."""
        pointer = self.champion()
        if pointer is None:
            return None
        record = self.get(pointer.version)
        self.verify(record)
        return record

    def next_version(self) -> str:
        """The next free name (numbers are never reused, even after a prune)."""
        numbers = [version_number(v.version) for v in self.versions()]
        numbers += [int(m.group(1)) for e in self.history().events if (m := _VERSION.match(str(e.get("version") or "")))]
        return version_name(max(numbers, default=0) + 1)

    @contextlib.contextmanager
    def writer(self, wait: float | None = None, create: bool = False) -> Iterator["Writer"]:
        """Hold the writer lock; recover from a killed writer first. See :class:`Writer`."""
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(self.root, exc) from None
        elif not self.root.is_dir():
            Registry.open(self.root)
        lock = Lock(self.root / LOCK)
        me = who()
        stale = lock.acquire(wait, {"pid": me["pid"], "host": me["host"], "since": stamp(), "command": me["command"]})
        try:
            writer = Writer(self, stale)
            writer.start(create)
            yield writer
        finally:
            lock.release()


# --------------------------------------------------------------------------- writing


class Writer:
    """Changes to a registry, made while holding its lock (:meth:`Registry.writer`).

    Attributes
    ----------
    registry : Registry
    stale : dict or None
        The previous holder's record when it was killed while holding the lock.
    recovered : list of dict
        What :meth:`recover` repaired (also written to the history).
    """

    def __init__(self, registry: Registry, stale: dict[str, Any] | None):
        self.registry = registry
        self.root = registry.root
        self.stale = stale
        self.recovered: list[dict[str, Any]] = []

    def start(self, create: bool) -> None:
        try:
            if not self.registry.check_marker(missing_ok=create):
                # The marker first: until it is in place the directory holds nothing a next
                # writer would not recognise as a first writer's leftovers.
                atomic_write_text(self.root / MARKER, json.dumps(FORMAT) + "\n")
            (self.root / VERSIONS).mkdir(exist_ok=True)
            self.recover()
        except OSError as exc:
            raise write_error(self.root, exc) from None

    # -- recovery ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Undo or finish what a killed writer left; log each repair in the history."""
        self._remove_temporaries()
        self._repair_pointer()
        history = self.registry.history()
        if history.partial_bytes:
            path = self.root / HISTORY
            with open(path, "rb+") as fh:
                fh.truncate(path.stat().st_size - history.partial_bytes)
                os.fsync(fh.fileno())
            self._log_repair({"repair": "history", "detail": f"dropped a truncated last line of {history.partial_bytes} "
                                                               "bytes (a writer was killed while appending)"})
        logged = history.versions()
        pointer = self.registry.champion()
        for version in self.registry.versions():
            if version.version in logged:
                continue
            detail = f"{version.version} ({version.status}) was registered but not logged"
            if version.status == "promoted" and (pointer is None or version_number(version.version) > version_number(pointer.version)):
                self._point(version)  # the promotion was decided and recorded in meta.json: finish it
                pointer = self.registry.champion()
                detail += "; its promotion is completed"
            self._log_repair({"repair": "version", "version": version.version, "detail": detail})
        self._log_unlogged_removals(history, logged)
        current = pointer.version if pointer else None
        if current != self.registry.history().last_champion():
            self._log_repair({"repair": "champion", "detail": f"the champion is {current}; the history's last event "
                                                              f"said {history.last_champion()}"})
        if self.stale and not self.recovered:
            self._log_repair({"repair": "lock", "detail": "a writer was killed while holding the lock; nothing to repair"})

    def _repair_pointer(self) -> None:
        """A ``champion.json`` that no longer parses (edited by hand, a disk fault) would make every
        command refuse the registry for ever: point it again at the champion the history last
        recorded when that version verifies, else set the broken file aside (no champion)."""
        path = self.root / CHAMPION
        try:
            self.registry.champion()
            return
        except InputError:
            pass
        last = self.registry.history().last_champion()
        try:
            version = self.registry.get(last) if last else None
            if version is not None:
                self.registry.verify(version)
        except (InputError, UsageError):
            version = None
        if version is not None:
            self._point(version)
            self._log_repair({"repair": "pointer", "detail": f"champion.json was unreadable; pointed again at "
                                                             f"{version.version}, the history's last champion"})
            return
        aside = path.with_name(f"{CHAMPION}.unreadable-{now_utc():%Y%m%dT%H%M%SZ}")
        os.replace(path, aside)
        self._log_repair({"repair": "pointer", "detail": f"champion.json was unreadable and the history names no "
                                                         f"valid champion; set aside as {aside.name}"})

    def _log_unlogged_removals(self, history: History, logged: set[str]) -> None:
        """A prune logs its removals after making them: one killed in between leaves versions the
        history knows but the disk no longer has."""
        on_disk = {v.version for v in self.registry.versions()}
        removed = {v for e in history.events for v in e.get("removed") or []}
        gone = sorted((v for v in logged - on_disk - removed if _VERSION.match(v)), key=version_number)
        if gone:
            self._log_repair({"repair": "prune", "removed": gone, "detail": f"{', '.join(gone)} removed without "
                              "a history event (a prune was killed before logging it)"})

    def _remove_temporaries(self) -> None:
        for path in [*self.root.glob(".*.tmp"), *(self.root / VERSIONS).glob(".*")]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _log_repair(self, detail: dict[str, Any]) -> None:
        if self.stale:
            detail = {**detail, "stale_lock": self.stale}
        self.recovered.append(detail)
        pointer = self.registry.champion()
        self.append({"event": "recover", **detail, "champion": pointer.version if pointer else None})

    # -- changes ----------------------------------------------------------------------------

    def add_version(self, write_bundle: Callable[[Path], Any], record: dict[str, Any]) -> Version:
        """Register a new version atomically.

        Parameters
        ----------
        write_bundle : callable
            ``write_bundle(path)`` writes the bundle file at ``path``.
        record : dict
            The ``meta.json`` fields except ``version``, ``created`` and ``sha256``.
        """
        name = self.registry.next_version()
        base = self.root / VERSIONS
        staging = base / f".{name}.{os.getpid()}.tmp"
        try:
            staging.mkdir()
            write_bundle(staging / BUNDLE)
            version = Version(version=name, created=stamp(), sha256=sha256_file(staging / BUNDLE),
                              path=base / name, **record)
            atomic_write_text(staging / META, json.dumps(version.meta(), indent=2) + "\n")
            _fsync_dir(staging)
            os.rename(staging, base / name)
            _fsync_dir(base)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise write_error(self.root, exc) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    def promote(self, version: Version) -> None:
        """Point ``champion.json`` at ``version`` (verified first)."""
        self.registry.verify(version)
        self._point(version)

    def _point(self, version: Version) -> None:
        doc = {"version": version.version, "bundle": f"{VERSIONS}/{version.version}/{BUNDLE}", "sha256": version.sha256}
        try:
            atomic_write_text(self.root / CHAMPION, json.dumps(doc) + "\n")
        except OSError as exc:
            raise write_error(self.root, exc) from None

    def remove(self, version: Version) -> None:
        """Delete a version: renamed out of sight first, so a killed prune leaves no half version."""
        doomed = self.root / VERSIONS / f".{version.version}.{os.getpid()}.deleted"
        try:
            os.rename(version.path, doomed)
            _fsync_dir(self.root / VERSIONS)
        except OSError as exc:
            raise write_error(self.root, exc) from None
        shutil.rmtree(doomed, ignore_errors=True)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event (time and who added) as one line, with one write, then fsync."""
        full = {"time": stamp(), **event, "who": who()}
        line = (json.dumps(full, separators=(",", ":"), default=str) + "\n").encode()
        try:
            fd = os.open(self.root / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_error(self.root, exc) from None
        return full


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- what `mlsys registry` does


@dataclass(frozen=True)
class Listing:
    """``registry list``: every version, the champion marked."""

    registry: str
    champion: str | None
    versions: list[dict[str, Any]]
    events: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "champion": self.champion, "versions": self.versions,
                "events": self.events, "warnings": self.warnings}


@dataclass(frozen=True)
class Shown:
    """``registry show``: one version's record, whether it serves, and its history."""

    version: dict[str, Any]
    champion: bool
    events: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "champion": self.champion, "events": self.events, "warnings": self.warnings}


@dataclass(frozen=True)
class Change:
    """What ``promote``, ``rollback`` and ``prune`` changed (the history event they wrote)."""

    action: str
    registry: str
    previous: str | None
    champion: str | None
    removed: list[str] = field(default_factory=list)
    dry_run: bool = False
    event: dict[str, Any] | None = None
    recovered: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "registry": self.registry, "previous": self.previous, "champion": self.champion,
                "removed": self.removed, "dry_run": self.dry_run, "event": self.event, "recovered": self.recovered}


def summary(version: Version, champion: str | None) -> dict[str, Any]:
    """One row of ``registry list``."""
    primary = (version.metrics.get("primary") or {})
    return {"version": version.version, "champion": version.version == champion, "status": version.status,
            "created": version.created, "parent": version.parent, "family": version.recipe.get("family"),
            "stateful": version.recipe.get("stateful"), "metric": primary.get("name"),
            "challenger": (version.metrics.get("challenger") or {}).get(primary.get("name")),
            "champion_value": (version.metrics.get("champion") or {}).get(primary.get("name")),
            "rows": ((version.data.get("parts") or {}).get("train") or {}).get("rows"), "reason": version.reason}


def missing_bundles(versions: list[Version], champion: str | None) -> list[str]:
    """A warning per version whose bundle file is gone (a champion's cannot be served nor retrained from)."""
    return [f"{v.version}: its bundle {v.bundle} is missing"
            + ("; serve and retrain refuse the champion: restore it, or mlsys registry rollback DIR" if v.version == champion else "")
            for v in versions if not v.bundle.is_file()]


def list_versions(root: str | os.PathLike) -> Listing:
    """Every version of the registry at ``root`` (read-only: no lock, nothing written)."""
    reg = Registry.open(root)
    pointer = reg.champion()
    champion = pointer.version if pointer else None
    history = reg.history()
    warnings = [f"history.jsonl ends with a truncated line ({history.partial_bytes} bytes); the next writer repairs it"] \
        if history.partial_bytes else []
    versions, unreadable = reg.readable_versions()
    warnings += unreadable + missing_bundles(versions, champion)
    return Listing(str(reg.root), champion, [summary(v, champion) for v in versions], len(history.events), warnings)


def show_version(root: str | os.PathLike, version: str | None = None) -> Shown:
    """One version (default: the champion) with the history events that name it."""
    reg = Registry.open(root)
    pointer = reg.champion()
    if version is None:
        if pointer is None:
            raise InputError(f"{reg.root}: the registry has no champion yet", "name a version: mlsys registry list DIR")
        version = pointer.version
    record = reg.get(version)
    events = [e for e in reg.history().events if version in (e.get("version"), e.get("champion"), e.get("previous"))
              or version in (e.get("removed") or [])]
    return Shown(record.to_dict(), pointer is not None and pointer.version == version, events,
                 missing_bundles([record], pointer.version if pointer else None))


def champion_stack(events: list[dict[str, Any]]) -> list[str]:
    """The champions in the order they took over, rollbacks popped: the last is serving,
    the one before it is where ``rollback`` goes."""
    stack: list[str] = []
    for event in events:
        new = event.get("champion")
        if not new or (stack and stack[-1] == new):
            continue
        if event.get("event") == "rollback" and new in stack:
            del stack[stack.index(new) + 1:]
        else:
            stack.append(new)
    return stack


def promote(root: str | os.PathLike, version: str, *, reason: str | None = None, wait: float | None = None) -> Change:
    """Make ``version`` the champion (its bundle verified first), logging who and why."""
    reg = Registry.open(root)
    with reg.writer(wait) as w:
        target = reg.get(version)
        pointer = reg.champion()
        previous = pointer.version if pointer else None
        if previous == target.version:
            raise UsageError(f"{target.version} is already the champion")
        w.promote(target)
        event = w.append({"event": "promote", "version": target.version, "previous": previous,
                          "champion": target.version, "reason": reason or "promoted by hand"})
    return Change("promote", str(reg.root), previous, target.version, event=event, recovered=w.recovered)


def rollback(root: str | os.PathLike, to: str | None = None, *, reason: str | None = None,
             wait: float | None = None) -> Change:
    """Put back the champion before the current one (or ``to``)."""
    reg = Registry.open(root)
    with reg.writer(wait) as w:
        pointer = reg.champion()
        if pointer is None:
            raise InputError(f"{reg.root}: the registry has no champion to roll back")
        if to is None:
            stack = champion_stack(reg.history().events)
            if len(stack) < 2 or stack[-1] != pointer.version:
                raise InputError(f"{reg.root}: no earlier champion to roll back to",
                                 "name a version: mlsys registry rollback DIR --to VERSION")
            to = stack[-2]
        target = reg.get(to)
        if target.version == pointer.version:
            raise UsageError(f"{target.version} is already the champion")
        w.promote(target)
        event = w.append({"event": "rollback", "version": target.version, "previous": pointer.version,
                          "champion": target.version, "reason": reason or f"rolled back from {pointer.version}"})
    return Change("rollback", str(reg.root), pointer.version, target.version, event=event, recovered=w.recovered)


def prune(root: str | os.PathLike, keep: int, *, dry_run: bool = False, wait: float | None = None) -> Change:
    """Delete all but the newest ``keep`` versions; the champion and the rollback target stay."""
    if keep < 1:
        raise UsageError("--keep must be at least 1")
    reg = Registry.open(root)
    with reg.writer(wait) as w:
        pointer = reg.champion()
        champion = pointer.version if pointer else None
        protected = set(champion_stack(reg.history().events)[-2:]) | {champion}
        versions = reg.versions()
        doomed = [v for v in versions[:-keep] if v.version not in protected]
        event = None
        if doomed and not dry_run:
            for v in doomed:
                w.remove(v)
            event = w.append({"event": "prune", "removed": [v.version for v in doomed], "keep": keep,
                              "champion": champion})
    return Change("prune", str(reg.root), champion, champion, removed=[v.version for v in doomed], dry_run=dry_run,
                  event=event, recovered=w.recovered)
