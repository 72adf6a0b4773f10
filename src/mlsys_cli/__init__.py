"""mlsys: the tabular machine-learning lifecycle from a shell."""

__version__ = "0.1.0"
