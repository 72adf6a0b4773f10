"""The one error hierarchy and the exit statuses every command documents."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses, the same on every command (DESIGN.md section 3)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    INPUT = 3
    CHECK_FAILED = 4
    BUSY = 5
    # mlsys retrain's two outcomes besides "retrained and promoted" (0), so cron and CI can branch.
    RETRAIN_NOT_NEEDED = 10
    RETRAIN_REJECTED = 11
    INTERRUPTED = 130
    BROKEN_PIPE = 141


class MlsysError(Exception):
    """An error the user can act on: printed as one ``error:`` line, never a traceback.

    Parameters
    ----------
    message : str
        What went wrong, in one line.
    hint : str, optional
        What to do about it.
    exit_code : ExitCode
        The documented status the process exits with.
    """

    exit_code: ExitCode = ExitCode.INPUT

    def __init__(self, message: str, hint: str | None = None, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(MlsysError):
    """Bad flags or arguments (exit 2)."""

    exit_code = ExitCode.USAGE


class InputError(MlsysError):
    """Missing, unreadable, invalid or mismatched input (exit 3)."""

    exit_code = ExitCode.INPUT


class CheckFailed(MlsysError):
    """A check the user asked for failed: a gate, drift with --fail-on-drift (exit 4)."""

    exit_code = ExitCode.CHECK_FAILED


class BusyError(MlsysError):
    """Another process holds the lock; safe to retry (exit 5)."""

    exit_code = ExitCode.BUSY


class BrokenPipe(MlsysError):
    """The reader of stdout went away (``mlsys ... | head``): exit 141 quietly."""

    exit_code = ExitCode.BROKEN_PIPE

    def __init__(self) -> None:
        super().__init__("broken pipe")
