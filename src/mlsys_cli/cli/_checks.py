"""Checks a command makes before its domain call, on what the options name (not their syntax)."""

from __future__ import annotations

import os
from typing import Any


def baseline_warning(metric: str, model: float | None, zero_rule: float | None) -> str | None:
    """A warning when the model does no better than always predicting the prior on its main metric."""
    from mlsys_cli.models.metrics import HIGHER_IS_BETTER

    if model is None or zero_rule is None or metric not in HIGHER_IS_BETTER:
        return None
    worse = model <= zero_rule if HIGHER_IS_BETTER[metric] else model >= zero_rule
    if not worse:
        return None
    return (f"the model is no better than the zero-rule baseline on {metric} ({model:.4g} vs {zero_rule:.4g}): "
            "it has learnt nothing useful")


def require_rows(path: Any, option: str) -> None:
    """Refuse an empty table given to ``option`` before the command starts (exit 3): a model cannot
    be validated, calibrated or stopped early on no rows. Reads the Parquet footers only."""
    from mlsys_cli.data.io import count_rows
    from mlsys_cli.errors import InputError

    if count_rows(path) == 0:
        raise InputError(f"{option} {path}: the table has no rows")


def check_storage(storage: str | None) -> None:
    """A ``journal:PATH`` study store that exists must be an Optuna journal (JSON lines): a garbage
    file is an input error (exit 3) before the study is opened, not a decode error deep inside."""
    import json

    from mlsys_cli.errors import InputError

    if not storage or not storage.startswith("journal:") or not os.path.isfile(storage[len("journal:"):]):
        return
    path = storage[len("journal:"):]
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip() and not isinstance(json.loads(line), dict):
                    raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{path}: not an Optuna journal (line {number if 'number' in locals() else 1} is not a "
                         "JSON record)", "give the journal file tune wrote, or a new path") from None
