"""``mlsys info``: describe any file mlsys reads or writes (tables, bundles, ONNX models).

Dispatches on the file's content, so each stage keeps the description of its own artifact.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from mlsys_cli.errors import InputError


def describe(path: str | Path) -> Any:
    """Return the description of ``path`` (a result object with ``to_dict()``)."""
    p = Path(path)
    if p.is_file() and zipfile.is_zipfile(p):
        from mlsys_cli.models.describe import describe_bundle

        return describe_bundle(p)
    if p.is_file() and p.suffix.lower() == ".onnx":
        from mlsys_cli.deploy.describe import describe_onnx

        return describe_onnx(p)
    if not p.exists() and not any(ch in str(path) for ch in "*?["):
        raise InputError(f"{path}: no such file or directory")
    from mlsys_cli.data.info import describe_table

    return describe_table(path)
