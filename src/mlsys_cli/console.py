"""Where output goes: results on stdout, everything else on stderr.

Human output is a rich table on a TTY and plain ``key: value`` text otherwise; ``--json``
prints the command's report as one JSON document; ``--report FILE`` also writes it to a file.
Colour follows ``NO_COLOR`` and the TTY; progress bars appear only on a TTY and never with ``-q``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from rich.console import Console


@dataclass
class State:
    """Global options set by the root command."""

    quiet: bool = False
    verbose: int = 0
    traceback: bool = False


state = State(traceback=os.environ.get("MLSYS_TRACEBACK", "") not in ("", "0"))

_out: Console | None = None
_err: Console | None = None


def out() -> Console:
    """The stdout console (results)."""
    global _out
    if _out is None:
        _out = Console(soft_wrap=True, highlight=False, no_color="NO_COLOR" in os.environ)
    return _out


def err() -> Console:
    """The stderr console (logs, progress, errors)."""
    global _err
    if _err is None:
        _err = Console(stderr=True, soft_wrap=True, highlight=False, no_color="NO_COLOR" in os.environ)
    return _err


def reset() -> None:
    """Forget the consoles, so that tests with redirected streams get fresh ones."""
    global _out, _err
    _out = _err = None


def write(text: str) -> None:
    """Write text to stdout; a closed pipe becomes :class:`BrokenPipe` (exit 141, silent)."""
    from mlsys_cli.errors import BrokenPipe

    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise BrokenPipe() from None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def to_json(result: Any) -> str:
    """Serialise a result (a dataclass with ``to_dict`` or plain data) as stable JSON."""
    return json.dumps(_jsonable(result), indent=2, sort_keys=False, allow_nan=False)


def info(message: str) -> None:
    """A log line on stderr, unless ``-q``."""
    if not state.quiet:
        err().print(message, markup=False)


def debug(message: str) -> None:
    """A log line on stderr with ``-v``."""
    if state.verbose and not state.quiet:
        err().print(message, markup=False, style="dim")


def warn(message: str) -> None:
    """A warning on stderr (shown even with ``-q``)."""
    err().print(f"warning: {message}", markup=False, style="yellow")


def emit(
    result: Any,
    *,
    as_json: bool = False,
    report: str | None = None,
    human: Callable[[Any], None] | None = None,
    warnings: Callable[[dict[str, Any]], Iterable[str]] | None = None,
) -> None:
    """Print a command's result and write its report.

    Parameters
    ----------
    result : object
        A result dataclass with ``to_dict()``.
    as_json : bool
        Print the report as one JSON document on stdout instead of the human view.
    report : str, optional
        Also write the JSON report to this file (atomically).
    human : callable, optional
        Renders the human view; the default prints the report as key/value lines.
    warnings : callable, optional
        The ``warning:`` lines of the report (given its ``to_dict()``), printed on stderr after the
        result in both modes: ``--json`` keeps stdout one JSON document, not the user's stderr quiet.
    """
    text = to_json(result)
    if report:
        from mlsys_cli.fsutil import atomic_write_text

        atomic_write_text(report, text + "\n")
    if as_json:
        write(text + "\n")
    else:
        # -q silences logs and progress, never the result a command is run for.
        (human or (lambda r: kv(None, _jsonable(r))))(result)
    for line in warnings(result.to_dict() if hasattr(result, "to_dict") else result) if warnings else ():
        warn(line)


def is_tty() -> bool:
    """Whether stdout is a terminal (tables and colour only then)."""
    return out().is_terminal


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(_jsonable(value), separators=(",", ":"))
    return "" if value is None else str(value)


def kv(title: str | None, mapping: Mapping[str, Any]) -> None:
    """Print a mapping: a two-column table on a TTY, ``key: value`` lines otherwise."""
    if is_tty():
        from rich.table import Table

        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for key, value in mapping.items():
            table.add_row(str(key), _fmt(value))
        out().print(table)
        return
    lines = [f"# {title}"] if title else []
    lines += [f"{key}: {_fmt(value)}" for key, value in mapping.items()]
    write("\n".join(lines) + "\n")


def records(title: str | None, rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None) -> None:
    """Print rows: a table on a TTY, tab-separated text with a header otherwise."""
    rows = list(rows)
    cols = list(columns) if columns is not None else (list(rows[0].keys()) if rows else [])
    if is_tty():
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for c in cols:
            table.add_column(c)
        for row in rows:
            table.add_row(*(_fmt(row.get(c)) for c in cols))
        out().print(table)
        return
    lines = [f"# {title}"] if title else []
    lines.append("\t".join(cols))
    lines += ["\t".join(_fmt(row.get(c)) for c in cols) for row in rows]
    write("\n".join(lines) + "\n")


class Progress:
    """A progress handle passed to domain code: ``advance()``, ``total``, ``description``.

    Domain code receives it as an optional callback-like object and never imports rich.
    """

    def __init__(self, bar: Any = None, task: Any = None):
        self._bar, self._task = bar, task

    def update(self, *, completed: float | None = None, total: float | None = None, description: str | None = None) -> None:
        if self._bar is None:
            return
        kwargs = {k: v for k, v in (("completed", completed), ("total", total), ("description", description)) if v is not None}
        self._bar.update(self._task, **kwargs)

    def advance(self, n: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


@contextlib.contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Progress]:
    """A rich progress bar on stderr, only on a TTY and without ``-q``."""
    if state.quiet or not err().is_terminal:
        yield Progress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

    with RichProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err(), transient=True,
    ) as bar:
        yield Progress(bar, bar.add_task(description, total=total))
