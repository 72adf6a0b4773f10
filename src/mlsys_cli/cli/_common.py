"""Options shared by every command, so one name means one thing everywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer


def output_path(value: str) -> Path:
    """An output file path: ``-o out/`` is a usage error (exit 2), an existing directory an input error (exit 3).

    Parsed from the raw text: ``pathlib`` would drop the trailing slash and write a file named ``out``.
    """
    from mlsys_cli.errors import InputError, UsageError

    if Path(value).is_dir():
        raise InputError(f"-o {value}: is a directory; give a file name")
    if value.endswith(("/", os.sep)):
        raise UsageError(f"-o {value}: names a directory; give a file name", f"e.g. -o {value.rstrip('/' + os.sep)}/result")
    return Path(value)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as one JSON document on stdout.")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Also write the JSON report to this file.", dir_okay=False)]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", parser=output_path, help="Where to write the result.")]
# Commands that write a directory of files (split).
OutputDirOpt = Annotated[Path, typer.Option("-o", "--output", help="The directory to write into.")]
SeedOpt = Annotated[int, typer.Option("--seed", envvar="MLSYS_SEED", help="Random seed; the same seed gives the same output.")]
TargetOpt = Annotated[Optional[str], typer.Option("--target", envvar="MLSYS_TARGET", help="The column to predict.")]
ForceOpt = Annotated[bool, typer.Option("-f", "--force", help="Overwrite existing outputs.")]
TimeoutOpt = Annotated[Optional[str], typer.Option("--timeout", help="Time budget, e.g. 90s, 5m, 1h.")]


def epilog(name: str) -> str:
    """The pointer every ``--help`` ends with."""
    return f"Reference: commands/{name}.md"


def parse_duration(text: str | None) -> float | None:
    """Parse ``90``, ``90s``, ``5m``, ``1h`` into seconds (None stays None)."""
    from mlsys_cli.errors import UsageError

    if text is None or text == "":
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    factor = units.get(t[-1], None)
    number = t[:-1] if factor else t
    try:
        value = float(number) * (factor or 1)
    except ValueError:
        raise UsageError(f"invalid duration {text!r}", "use seconds or a unit: 90s, 5m, 1h") from None
    if value <= 0:
        raise UsageError(f"invalid duration {text!r}: must be positive")
    return value


def parse_kv(items: list[str] | None, what: str = "--param") -> dict[str, object]:
    """Parse ``k=v`` pairs; values are JSON when they parse as JSON, strings otherwise."""
    import json

    from mlsys_cli.errors import UsageError

    result: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid {what} {item!r}", f"use {what} name=value")
        try:
            result[key] = json.loads(raw)
        except ValueError:
            result[key] = raw
    return result
