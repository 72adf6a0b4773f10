"""Where tuning studies live: Optuna storages and the artifact store of kept models.

``tune`` writes a study (its trials, and with ``--valid`` the fitted models of the best trials
per family) and ``ensemble --from-study`` reads it back; both open storages and artifact stores
here. A trial records the family it tried under the :data:`FAMILY_PARAM` parameter.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

from mlsys_cli.errors import InputError, UsageError

FAMILY_PARAM = "family"


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str | None) -> Any:
    """Open an Optuna storage: None (in memory), ``journal:PATH`` or an RDB URL.

    Raises
    ------
    InputError
        When the storage cannot be reached or created, with the reason.
    """
    if url is None:
        return None
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        if not str(path):
            raise UsageError("empty journal path", "use --storage journal:PATH")
        if not path.parent.is_dir():
            raise InputError(f"cannot open storage {url}: directory {path.parent} does not exist")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise InputError(f"cannot open storage {url}: {exc.strerror or exc}") from None
    if "://" not in url:
        raise UsageError(f"unknown storage {url!r}", "use an RDB URL (postgresql+psycopg://..., sqlite:///study.db) or journal:PATH")
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # Fail fast on an unreachable server instead of waiting for the OS TCP timeout.
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(3):
        try:
            # Heartbeats let a resumed or parallel run mark trials of a killed worker as failed.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120)
        except (IntegrityError, ProgrammingError):
            # Workers started together race to create Optuna's tables in a new database; the
            # loser finds them made on the next attempt.
            if attempt == 2:
                raise
            time.sleep(0.5 + attempt)
        except Exception as exc:  # sqlalchemy raises many types (driver missing, refused, bad URL)
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise InputError(f"cannot open storage {_safe_url(url)}: {reason}", "check the URL, the server and its credentials") from None
    raise AssertionError("unreachable")


def storage_display(url: str | None) -> str | None:
    """The storage URL without its password, for reports."""
    return None if url is None else _safe_url(url)


def artifact_dir(storage: str | None) -> str | None:
    """Where a study keeps its best trials' fitted models by default: beside its journal file or
    SQLite database (``PATH.models``); None for other storages (give ``--artifacts DIR``)."""
    if storage is None:
        return None
    for scheme in ("journal:", "sqlite:///"):
        if storage.startswith(scheme) and storage[len(scheme):] not in ("", ":memory:"):
            return os.path.abspath(storage[len(scheme):]) + ".models"
    return None


def artifact_store(path: str) -> Any:
    """An Optuna file-system artifact store (shared disk serves distributed workers)."""
    from optuna.artifacts import FileSystemArtifactStore

    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the model store {path}: {exc.strerror or exc}") from None
    return FileSystemArtifactStore(path)
