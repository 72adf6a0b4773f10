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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mlsys_cli.errors import InputError

CHAMPION = "champion.json"
HISTORY = "history.jsonl"
LOCK = ".lock"
VERSIONS = "versions"
MARKER = "registry.json"


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
        raise InputError(f"{pointer}: unreadable champion pointer ({exc.__class__.__name__})") from None
    return Champion(version=version, bundle=bundle, sha256=data.get("sha256"))
