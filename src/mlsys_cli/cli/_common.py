"""Options shared by every command, so one name means one thing everywhere.

Every value given to an option is validated here, once, by its type, before any command runs:
numbers (:func:`integer`, :func:`number`) are finite and within their range, durations and
memory sizes are positive and finite, ``--seed`` fits the generators, ``--param`` values are
finite, and output paths (:func:`output_path`, :func:`output_dir`) can be created. A bad value
is a usage error (exit 2) that names the option. ``tests/test_contract.py`` checks that no
command declares a number option any other way.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer._click.types import ParamType

SEED_MAX = 2**32 - 1  # numpy's legacy generators and scikit-learn's random_state take 32-bit seeds
DURATION_MAX = 366 * 24 * 3600.0
INT_MAX = 2**63 - 1
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?i?b)\s*", re.IGNORECASE)


def _option_name(param: Any) -> str:
    opts = list(getattr(param, "opts", None) or [])
    longs = [o for o in opts if o.startswith("--")]
    return (longs or opts or [str(getattr(param, "name", "value")).upper()])[0]


def _usage(param: Any, value: Any, why: str, hint: str | None = None, what: str = "value") -> Exception:
    from mlsys_cli.errors import UsageError

    name = _option_name(param) if param is not None else f"invalid {what}"
    return UsageError(f"{name} {value!r}: {why}", hint)


class Number(ParamType):
    """An integer or a real number, finite and within ``[low, high]`` (``low_open``: ``> low``).

    ``nan``, ``inf``, ``1e999`` and integers beyond ``high`` are refused by name, never passed on.
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.name = "integer" if kind is int else "number"

    def _range(self) -> str:
        low = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        high = "" if self.high is None else f"<= {self.high:g}" if self.kind is float else f"<= {int(self.high)}"
        return " and ".join(x for x in (low, high) if x)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, bool):
            raise _usage(param, value, f"must be {'an integer' if self.kind is int else 'a number'}")
        try:
            if self.kind is int:
                number = value if isinstance(value, int) else int(str(value).strip(), 10)
            else:
                number = float(value)
        except (TypeError, ValueError):
            raise _usage(param, value, f"not {'an integer' if self.kind is int else 'a number'}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise _usage(param, value, "must be a finite number")
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = number > (self.high if self.high is not None else (INT_MAX if self.kind is int else math.inf))
        if too_low or too_high:
            raise _usage(param, value, f"must be {self._range() or f'<= {INT_MAX}'}")
        return number


def integer(low: int | None = None, high: int | None = INT_MAX) -> Number:
    """An integer option type: ``typer.Option("--top", click_type=integer(1))``."""
    return Number(int, low, high)


def number(low: float | None = None, high: float | None = None, low_open: bool = False) -> Number:
    """A finite real-number option type: ``typer.Option("--perturb", click_type=number(0, low_open=True))``."""
    return Number(float, low, high, low_open)


class Duration(ParamType):
    """``90``, ``90s``, ``5m``, ``1h`` -> seconds (a finite, positive float)."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, float):
            return value
        seconds = _seconds(str(value))
        if seconds is None:
            raise _usage(param, value, "not a duration", "use seconds or a unit: 90s, 5m, 1h", "duration")
        if not math.isfinite(seconds) or seconds <= 0 or seconds > DURATION_MAX:
            raise _usage(param, value, "must be a positive, finite duration of at most a year", what="duration")
        return seconds


def _seconds(text: str) -> float | None:
    t = text.strip().lower()
    if not t:
        return None
    factor = {"s": 1, "m": 60, "h": 3600}.get(t[-1])
    try:
        return float(t[:-1] if factor else t) * (factor or 1)
    except ValueError:
        return None


class ByteSize(ParamType):
    """A memory size like ``500MB``, ``2GiB`` (positive, finite), kept as the text given."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        match = _SIZE.fullmatch(str(value))
        if not match or float(match.group(1)) <= 0 or not math.isfinite(float(match.group(1))):
            raise _usage(param, value, "not a positive memory size", "e.g. 500MB, 2GB, 1.5GiB")
        return f"{match.group(1)}{match.group(2).upper()}"


def output_path(value: str) -> Path:
    """An output file path that can be created.

    Refused (exit 2, before anything is read): a trailing slash (``-o out/`` would otherwise
    write a file named ``out``), a path under an existing file, a name longer than the file
    system allows. An existing directory is an input error (exit 3).
    """
    from mlsys_cli.errors import InputError, UsageError

    check_creatable(Path(value))
    if value.endswith(("/", os.sep)) and not Path(value).is_dir():
        raise UsageError(f"{value}: names a directory; give a file name", f"e.g. {value.rstrip('/' + os.sep)}/result")
    if Path(value).is_dir():
        raise InputError(f"{value}: is a directory; give a file name")
    return Path(value)


def output_dir(value: str) -> Path:
    """An output directory (it may exist; the command writes its files inside)."""
    from mlsys_cli.errors import InputError

    path = Path(value)
    check_creatable(path)
    if path.exists() and not path.is_dir():  # like an existing directory given for a file: exit 3
        raise InputError(f"{value}: is a file; give a directory to write into")
    return path


def check_creatable(path: Path) -> None:
    """Refuse a path that can never be created: under a file, or with an over-long name (exit 2)."""
    from mlsys_cli.errors import UsageError

    parts = Path(os.path.abspath(path)).parts
    limit = _name_max(path)
    long = [p for p in parts[1:] if len(os.fsencode(p)) > limit]
    if long:
        raise UsageError(f"{str(path)[:40]}...: the name {long[0][:20]}... is longer than {limit} bytes")
    if len(os.fsencode(os.path.abspath(path))) >= 4000:
        raise UsageError(f"{str(path)[:40]}...: the path is longer than the system allows")
    for i in range(1, len(parts)):
        ancestor = Path(*parts[:i])
        if ancestor.exists() and not ancestor.is_dir():
            raise UsageError(f"{path}: {ancestor} is a file, not a directory")
        if not ancestor.exists():
            break


def _name_max(path: Path) -> int:
    from mlsys_cli.fsutil import TEMP_OVERHEAD

    existing = Path(os.path.abspath(path)).parent
    while existing != existing.parent and not _exists(existing):
        existing = existing.parent
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    return limit - TEMP_OVERHEAD  # the temporary name beside it must fit too


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up
        return False


def parse_duration(text: str | float | None) -> float | None:
    """Parse ``90``, ``90s``, ``5m``, ``1h`` into seconds (None stays None); options use :class:`Duration`."""
    if text is None or text == "":
        return None
    return Duration().convert(text, None, None)


def parse_kv(items: list[str] | None, what: str = "--param") -> dict[str, object]:
    """Parse ``k=v`` pairs; values are JSON when they parse as JSON, strings otherwise.

    Numbers must be finite: ``lr=nan``, ``lr=Infinity`` and ``lr=1e999`` are usage errors.
    """
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
        if not _finite(result[key]) or raw.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
            raise UsageError(f"{what} {item!r}: the value must be a finite number")
    return result


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def epilog(name: str) -> str:
    """The pointer every ``--help`` ends with."""
    return f"Reference: commands/{name}.md"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as one JSON document on stdout.")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", parser=output_path, help="Also write the JSON report to this file.")]
OutputOpt = Annotated[Path, typer.Option("-o", "--output", parser=output_path, help="Where to write the result.")]
# Commands that write a directory of files (split).
OutputDirOpt = Annotated[Path, typer.Option("-o", "--output", parser=output_dir, help="The directory to write into.")]
SeedOpt = Annotated[int, typer.Option("--seed", envvar="MLSYS_SEED", click_type=integer(0, SEED_MAX),
                                      help="Random seed; the same seed gives the same output.")]
TargetOpt = Annotated[Optional[str], typer.Option("--target", envvar="MLSYS_TARGET", help="The column to predict.")]
ForceOpt = Annotated[bool, typer.Option("-f", "--force", help="Overwrite existing outputs.")]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout", click_type=Duration(), help="Time budget, e.g. 90s, 5m, 1h.")]
# --engine dask (data/cluster.py); MLSYS_DASK_SCHEDULER is read there, for --engine dask only.
EngineOpt = Annotated[str, typer.Option("--engine", envvar="MLSYS_ENGINE", help="local | dask: run here, or on a Dask cluster (the dask extra).")]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="Dask scheduler, e.g. tcp://host:8786 (default: $MLSYS_DASK_SCHEDULER, else a LocalCluster here).")]
ConnectTimeoutOpt = Annotated[float, typer.Option("--connect-timeout", click_type=Duration(), help="Give up on an unreachable --scheduler after this long (exit 3).")]
