"""mlsys: the tabular machine-learning lifecycle from a shell."""

__version__ = "0.1.0"

# The command line of this run, for lineage. It lives here, not in data.io, so that recording it
# costs `mlsys --help` no import.
_invocation: list = []


def set_invocation(argv) -> None:
    """Remember the command line, so that lineage records how a file was made."""
    _invocation[:] = list(argv)


def invocation() -> list:
    """The command line of this run (``sys.argv[1:]`` when not set)."""
    import sys

    return list(_invocation) if _invocation else list(sys.argv[1:])
