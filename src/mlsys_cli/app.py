"""The root command: the explicit list of subcommands, global options, and exit codes.

Importing this module loads only the standard library, typer and rich: every heavy
library is imported inside the domain functions, so ``mlsys --help`` starts fast.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from mlsys_cli import __version__, console
from mlsys_cli.errors import BrokenPipe, ExitCode, MlsysError

# Lifecycle order; a command is listed only when it works.
COMMANDS: list[str] = [
    "ingest",
    "split",
    "featurize",
    "tune",
    "train",
    "ensemble",
    "predict",
    "evaluate",
    "compress",
    "export",
    "serve",
    "drift",
    "retrain",
    "registry",
    "info",
]

class _Lifecycle(TyperGroup):
    """The root group: subcommands in ``COMMANDS`` order, each module imported on first use.

    ``mlsys --help`` lists every command from the generated index (``cli/_index.py``: name →
    docstring summary) instead of importing fifteen command modules and their options, which
    is most of start-up; ``mlsys train ...`` imports only ``cli/train.py``.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        from mlsys_cli.cli._index import SUMMARIES

        return [name for name in COMMANDS if name in SUMMARIES]

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in self.commands and name in self.list_commands(ctx):
            loaded = _load(name)
            if loaded is not None:
                self.commands[name] = loaded
        return self.commands.get(name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        from typer._click.utils import make_default_short_help

        from mlsys_cli.cli._index import SUMMARIES

        names = self.list_commands(ctx)
        if names:
            limit = formatter.width - 6 - max(len(n) for n in names)
            with formatter.section("Commands"):
                formatter.write_dl([(n, make_default_short_help(SUMMARIES[n], limit)) for n in names])


app = typer.Typer(
    name="mlsys",
    cls=_Lifecycle,
    help="The tabular ML lifecycle from a shell: data, features, models, ONNX.\n\n"
    "Every subcommand reads and writes files (Parquet tables, .mlsys bundles, JSON reports) "
    "so Make, cron and CI chain them. Reference: commands/<name>.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    # MLSYS_<COMMAND>_<OPTION> sets an option from the environment (MLSYS_TRAIN_SEED=7); the
    # root's own options opt out (MLSYS_VERSION=1 must not turn every command into --version).
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "MLSYS"},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"mlsys {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, allow_from_autoenv=False, help="Print the version and exit.")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", allow_from_autoenv=False, help="Only results and errors; no logs or progress.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, allow_from_autoenv=False, help="More logs on stderr (repeatable).")] = 0,
    traceback: Annotated[bool, typer.Option("--traceback", envvar="MLSYS_TRACEBACK", help="Show the traceback of an internal error.")] = False,
    config: Annotated[Optional[str], typer.Option("--config", envvar="MLSYS_CONFIG", help="TOML file of option defaults, one [command] table each.")] = None,
) -> None:
    """The tabular ML lifecycle from a shell."""
    if config:
        ctx.default_map = _load_config(config)
    console.state.quiet = quiet
    console.state.verbose = verbose
    console.state.traceback = traceback or console.state.traceback


def _load_config(path: str) -> dict:
    """Option defaults from a TOML file: ``[train]`` holds ``seed = 7`` for ``mlsys train``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, from PyPI
        import tomli as tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise MlsysError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MlsysError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(data) - set(COMMANDS))
    if unknown:
        raise MlsysError(f"{path}: unknown command table [{unknown[0]}]", f"tables are command names: {', '.join(COMMANDS)}")
    # Parameters that shadow Python names are spelled with a trailing underscore (json_).
    return {cmd: {name: v for k, v in table.items() for name in (k.replace("-", "_"), k.replace("-", "_") + "_")}
            for cmd, table in data.items()}


class Command(TyperCommand):
    """A subcommand whose usage line names its arguments the usual way: ``TABLE... -o PATH``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
        return pieces


def _load(name: str) -> Any:
    """The click command of ``mlsys_cli.cli.<name>`` (None when the module is not in this build),
    built by typer as it builds every command: usage lines, output guard, reference epilog."""
    import typer.main

    from mlsys_cli.cli._outputs import guard

    try:
        module = importlib.import_module(f"mlsys_cli.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"mlsys_cli.cli.{name}":
            return None
        raise
    holder = typer.Typer(rich_markup_mode=None, add_completion=False)
    holder.callback()(lambda: None)  # a group of one, so typer does not collapse it into the command
    group = getattr(module, "group", None)
    if group is not None:  # a command group (registry list|show|...): `command` is its callback
        for info in group.registered_commands:  # the same usage lines and output guard as a command
            if not getattr(info.callback, "__wrapped__", None):
                info.cls = Command
                info.callback = guard(info.callback)
        holder.add_typer(group, name=name, no_args_is_help=True, epilog=f"Reference: commands/{name}.md")
    else:
        holder.command(
            name=name,
            cls=Command,
            no_args_is_help=getattr(module, "NO_ARGS_IS_HELP", True),
            epilog=f"Reference: commands/{name}.md",
        )(guard(module.command, getattr(module, "OUTPUT_FILES", ())))
    return typer.main.get_command(holder).commands[name]


def commands() -> dict[str, Any]:
    """Every subcommand as a click command, by name, in lifecycle order (completions, tests)."""
    import typer.main

    root = typer.main.get_command(app)
    ctx = root.make_context("mlsys", [], resilient_parsing=True)
    found = {name: root.get_command(ctx, name) for name in root.list_commands(ctx)}
    return {name: cmd for name, cmd in found.items() if cmd is not None}  # modules not in this build


def _fail(message: str, hint: str | None, code: int) -> int:
    err = console.err()
    err.print(f"error: {message}", markup=False, style="bold red", soft_wrap=True)
    if hint:
        err.print(f"hint: {hint}", markup=False, soft_wrap=True)
    return code


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "-vv", "-vvv", "--verbose", "--traceback")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Let ``-q``/``-v``/``--traceback`` stand anywhere (``mlsys split ... -q``): move them first.

    One-letter flags are reserved globally (STYLE.md), so no command gives them another meaning.
    Arguments after ``--`` are left alone.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in argv[:end] if a not in GLOBAL_FLAGS]
    return flags + rest + argv[end:]


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status (DESIGN.md section 3)."""
    from mlsys_cli import set_invocation

    argv = list(sys.argv[1:] if argv is None else argv)
    set_invocation(argv)
    argv = hoist_global_flags(argv)
    try:
        try:
            result = app(args=argv, prog_name="mlsys", standalone_mode=False)
        except typer.Exit as exc:
            result = exc.exit_code
        if _signalled is not None:
            # Typer turns a KeyboardInterrupt into a quiet status 130 of its own (returned, not
            # raised, outside standalone mode); a signal is still reported as one, with its status.
            return _status(KeyboardInterrupt())
        return result if isinstance(result, int) else 0
    except BaseException as exc:  # noqa: B036 - every way out is mapped to a documented status here
        return _status(exc)


def _status(exc: BaseException) -> int:
    """The exit status of a command that raised ``exc``, after one ``error:`` line on stderr."""
    global _deciding
    _deciding = True
    from typer._click.exceptions import ClickException

    if isinstance(exc, (BrokenPipe, BrokenPipeError)):
        raise BrokenPipeError from None
    if _signalled is not None or isinstance(exc, (KeyboardInterrupt, typer.Abort)):
        # Whatever a library made of the signal ("Query interrupted", a wrapped error), it was one.
        _stop_signals()
        return _fail("interrupted", None, 128 + (_signalled or signal.SIGINT))
    if isinstance(exc, SystemExit):
        return int(exc.code or 0) if not isinstance(exc.code, str) else _fail(exc.code, None, ExitCode.INTERNAL)
    if isinstance(exc, MlsysError):
        if console.state.traceback:
            console.err().print_exception()
        return _fail(exc.message, exc.hint, int(exc.exit_code))
    if isinstance(exc, ClickException):  # usage errors from the parser (exit 2)
        return _fail(exc.format_message(), _usage_hint(exc), exc.exit_code)
    if isinstance(exc, OSError) and exc.filename:  # the file system said no: not a bug in mlsys
        return _fail(f"{exc.filename}: {exc.strerror or exc}", None, ExitCode.INPUT)
    if console.state.traceback:  # a bug: say so, and show the traceback when asked
        console.err().print_exception()
        return ExitCode.INTERNAL
    return _fail(
        f"internal error: {type(exc).__name__}: {exc}",
        "this is a bug in mlsys; rerun with --traceback (or MLSYS_TRACEBACK=1) and report it",
        ExitCode.INTERNAL,
    )


def _usage_hint(exc: Any) -> str | None:
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return "see mlsys --help"
    return f"usage: {ctx.get_usage().removeprefix('Usage: ').strip()}; see {ctx.command_path} --help"


# The signal that ended the run, if any: SIGINT (Ctrl-C) exits 130 and SIGTERM 143, after the
# command's partial outputs are removed (atomic writes and the output guard clean up on the way out).
_signalled: int | None = None


_REPEAT_SECONDS = 0.5


_deciding = False  # the exit status is being decided: later signals change nothing


def _on_signal(signum: int, frame: Any) -> None:
    global _signalled
    if _deciding:
        return
    first = _signalled is None
    _signalled = signum
    if first:
        # A library may swallow the KeyboardInterrupt (DuckDB does when it lands as a query starts)
        # and go on for minutes: cancel registered native work (interrupts.py) and, until the
        # status is decided, deliver the signal again now and then.
        import threading

        threading.Thread(target=_repeat, args=(signum,), daemon=True, name="mlsys-signal").start()
    elif isinstance(sys.exc_info()[1], KeyboardInterrupt):
        # The repeat is for a library that swallowed the first one. Code already handling it (a
        # command's cleanup in except/finally/__exit__, the status being decided) must not be cut
        # short: a second KeyboardInterrupt escaping main() ends the process by SIGINT, not 130.
        return
    raise KeyboardInterrupt


def _repeat(signum: int) -> None:
    import time

    from mlsys_cli.interrupts import cancel_all

    while True:
        cancel_all()  # native work (a DuckDB query) registered how to stop it
        time.sleep(_REPEAT_SECONDS)
        if _deciding or signal.getsignal(signum) is not _on_signal:
            return
        os.kill(os.getpid(), signum)


def _stop_signals() -> None:
    """The run is ending: later signals change nothing (and must not cut the last line short)."""
    if _signalled is not None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def install_signal_policy() -> None:
    """Ctrl-C and SIGTERM become a KeyboardInterrupt in the main thread, remembered for the status."""
    global _signalled, _deciding
    _signalled, _deciding = None, False
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def _warning_line(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """A library's warning as one ``warning:`` line on stderr (``warnings.showwarning``).

    Python's default shows the library's file, line number and source line, which reads like a
    piece of a traceback; the message is what the user can act on.
    """
    text = str(message).strip().splitlines()
    console.warn(f"{category.__name__}: {text[0] if text else ''}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    import warnings

    install_signal_policy()
    warnings.showwarning = _warning_line
    try:
        try:
            code = run(argv)
            # The status is decided and its outputs are in place: a signal from now on must not
            # kill the process by the signal (interpreter shutdown restores the default handlers)
            # and leave a non-zero death beside complete outputs. Ignored handlers survive shutdown.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except KeyboardInterrupt:  # a signal in the instant before the status was decided
            code = _fail("interrupted", None, 128 + (_signalled or signal.SIGINT))
        sys.stdout.flush()
    except BrokenPipeError:
        # `mlsys ... | head`: exit quietly; point stdout at devnull so the final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = ExitCode.BROKEN_PIPE
    sys.exit(int(code))
