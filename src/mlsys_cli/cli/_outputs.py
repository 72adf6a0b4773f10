"""One guard around every command: outputs never overwrite inputs, failures leave no new files.

:func:`guard` wraps each command function when ``app`` registers it. Before the command runs
(so before anything is read) it compares every output path (options parsed by
``_common.output_path``/``output_dir``) with every input path the command was given (any other
path-like value: files, globs, directories, ``journal:``/``sqlite:///`` stores) after resolving
links, and refuses an overlap (exit 2). It then notes what exists where the outputs go; when
the command fails (an error or an interrupt, not a failed ``--require`` gate), whatever it
created there is removed: the output, its temporaries, a study journal or artifact store it
started, directories it made.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from mlsys_cli.cli._common import output_dir, output_path
from mlsys_cli.errors import ExitCode, MlsysError, UsageError

_STORES = ("journal:", "sqlite:///")


@dataclass
class _Spot:
    """One place a command may create files: a path, and what was beside it before."""

    path: Path
    existed: bool
    before: set[str] = field(default_factory=set)
    made_from: Path | None = None  # the deepest directory that existed: created ones below it go too

    @classmethod
    def note(cls, path: Path) -> "_Spot":
        path = Path(os.path.abspath(path))
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        before = set()
        if path.parent.is_dir():
            with contextlib.suppress(OSError):
                before = {e for e in os.listdir(path.parent) if _ours(e, path.name)}
        return cls(path, path.exists() or path.is_symlink(), before, ancestor)

    def undo(self) -> None:
        parent = self.path.parent
        if parent.is_dir():
            with contextlib.suppress(OSError):
                for name in set(os.listdir(parent)) - self.before:
                    if _ours(name, self.path.name) and not (name == self.path.name and self.existed):
                        _remove(parent / name)
        # Directories this command created on the way to the output, deepest first, if now empty.
        d = parent
        while self.made_from is not None and d != self.made_from and len(d.parts) > len(self.made_from.parts):
            with contextlib.suppress(OSError):
                d.rmdir()
            d = d.parent


def _ours(entry: str, name: str) -> bool:
    """The output itself, its temporaries (``.name...``) and companions (``name.lock``, ``name.models``)."""
    return entry == name or entry.startswith((f".{name}", f"{name}."))


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _is_output(param: Any) -> bool:
    # A command's own -o parser (predict's FILE or DIR/) declares itself with ``mlsys_output``.
    func = getattr(param.type, "func", None)
    return func in (output_path, output_dir) or getattr(func, "mlsys_output", False)


def _values(value: Any) -> Iterable[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if isinstance(v, (str, os.PathLike))]
    return [str(value)] if isinstance(value, (str, os.PathLike)) else []


def _store_path(text: str) -> Path | None:
    for scheme in _STORES:
        if text.startswith(scheme) and len(text) > len(scheme):
            return Path(text[len(scheme):])
    return None


def _input_files(text: str) -> list[Path]:
    """The files a path-like argument reads: a file, a glob's matches, a directory's files."""
    store = _store_path(text)
    if store is not None:
        return [store]
    if "://" in text or text == "-":
        return []
    if any(ch in text for ch in "*?["):
        return [Path(p) for p in glob.glob(text, recursive=True) if os.path.isfile(p)]
    path = Path(text)
    if path.is_dir():
        return [p for p in path.rglob("*") if p.is_file()]
    return [path] if path.is_file() else []


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)  # hard links
    return False


@dataclass
class Plan:
    """The outputs and inputs of one invocation, from the parsed command line."""

    outputs: list[tuple[str, Path]]  # (option, file)
    inputs: list[tuple[str, Path]]
    spots: list[Path]

    @classmethod
    def of(cls, ctx: Any, writes: Iterable[str] = ()) -> "Plan":
        outputs, inputs, spots = [], [], []
        for param in ctx.command.params:
            name = (getattr(param, "opts", None) or [param.name])[-1] if param.param_type_name == "option" else param.name.upper()
            for text in _values(ctx.params.get(param.name)):
                if _is_output(param):
                    if getattr(param.type, "func", None) is output_dir:
                        files = [Path(text) / f for f in writes]
                        outputs += [(name, f) for f in files]
                        spots += files or [Path(text)]
                    else:
                        outputs.append((name, Path(text)))
                        spots.append(Path(text))
                    continue
                inputs += [(name, p) for p in _input_files(text)]
                store = _store_path(text)
                if store is not None:
                    spots.append(store)
        return cls(outputs, inputs, spots)

    def refuse_overlaps(self) -> None:
        for i, (opt, out) in enumerate(self.outputs):
            for in_opt, src in self.inputs:
                if _same(out, src):
                    raise UsageError(f"{opt} {out}: is also the input {in_opt} ({os.path.realpath(src)}); "
                                     "it would be overwritten", "write the result to another path")
            for other_opt, other in self.outputs[i + 1:]:
                if os.path.realpath(out) == os.path.realpath(other):
                    raise UsageError(f"{opt} and {other_opt} name the same file ({os.path.realpath(out)})")


def _cleans(exc: BaseException) -> bool:
    """Failures whose new files go: errors and interrupts; not a failed gate (its report is wanted),
    not a busy lock (the files may be the other process's), not a closed pipe (the work is done)."""
    if isinstance(exc, MlsysError):
        return exc.exit_code in (ExitCode.USAGE, ExitCode.INPUT, ExitCode.INTERNAL)
    return isinstance(exc, (Exception, KeyboardInterrupt))


def guard(func: Callable[..., Any], writes: Iterable[str] = ()) -> Callable[..., Any]:
    """Wrap a command function (see the module docstring); ``writes``: file names an output directory gets."""
    from typer._click.globals import get_current_context

    writes = tuple(writes)

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        plan = Plan.of(get_current_context(), writes)
        plan.refuse_overlaps()
        spots = [_Spot.note(p) for p in plan.spots]
        try:
            return func(**kwargs)
        except BaseException as exc:
            if _cleans(exc):
                with _signals_held():
                    for spot in spots:
                        spot.undo()
            raise

    return command


@contextlib.contextmanager
def _signals_held() -> Any:
    """A second Ctrl-C must not cut the clean-up short: hold signals until it is done."""
    held = {signal.SIGINT, signal.SIGTERM}
    blocked = sys.platform != "win32" and hasattr(signal, "pthread_sigmask")
    if blocked:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
