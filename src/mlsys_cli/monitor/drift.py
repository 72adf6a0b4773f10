"""Drift detection (DMLS ch. 8): has the data a model sees moved away from what it learned on?

The one entry point, called by ``mlsys drift`` and by ``mlsys retrain --trigger drift``::

    from mlsys_cli.monitor.drift import DriftOptions, detect

    report = detect("logs/", model="model.mlsys")                      # the bundle's statistics
    report = detect("new.parquet", reference="train.parquet")          # a reference table
    report = detect("new/*.parquet", profile="ref.profile",
                    options=DriftOptions(time_col="day", window="7d"))
    report.drift_detected      # bool: a feature, the domain classifier or the predictions drifted
    report.features            # tuple[FeatureDrift, ...], drifted first, then by model importance
    report.to_dict()           # the --json document (stable keys)

``detect(current, *, reference=None, model=None, profile=None, options=DriftOptions()) -> DriftReport``

- ``current``: a path, glob or directory of Parquet files (``serve --log-dir`` output included),
  or a list of them; a single CSV/JSON file also works. Columns named ``_mlsys_*`` are metadata,
  never features; rows with ``_mlsys_role == "shadow"`` are left out unless
  ``options.include_shadow``.
- the reference is exactly one of ``reference`` (a table, as ``current``) or ``profile`` (a file
  written by :func:`save_profile`), or neither when ``model`` is given: then the statistics the
  bundle stores (``manifest.reference``) are the reference, and no training data is needed.
- ``model`` (a ``.mlsys`` bundle, optional) adds prediction drift, label shift and the metric
  change when the current data holds the target, a confidence-based performance estimate when it
  does not, and ranks the features by their importance to the model.

Raises :class:`~mlsys_cli.errors.UsageError` (exit 2) for contradictory arguments and
:class:`~mlsys_cli.errors.InputError` (exit 3) for unreadable or unusable data.

How a feature is judged (defaults in :class:`DriftOptions`, all settable):

- numbers (booleans and datetimes as numbers): two-sample Kolmogorov–Smirnov on the reference's
  quantile sketch (100 bins), effect sizes Wasserstein distance / reference std and PSI (deciles);
- strings: chi-square on the category counts, effect sizes Jensen–Shannon distance (base 2) and
  PSI, plus the share of current values the reference never saw;
- every column: the change of its missing rate (two-proportion test, effect = absolute change).

A test drifts only when its p-value is significant after Benjamini–Hochberg correction across all
tests (false discovery rate ``alpha``) AND its effect size reaches the threshold: on large samples
every p-value is tiny, and the effect-size rule is what keeps an unshifted column quiet.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from mlsys_cli.errors import UsageError
from mlsys_cli.monitor.results import DriftOptions, DriftReport, FeatureDrift, WindowDrift

__all__ = ["DriftOptions", "DriftReport", "FeatureDrift", "WindowDrift", "detect", "save_profile"]

PathLike = str | os.PathLike


def detect(current: PathLike | Sequence[PathLike], *, reference: PathLike | Sequence[PathLike] | None = None,
           model: PathLike | None = None, profile: PathLike | None = None,
           options: DriftOptions = DriftOptions(), engine: Any = None) -> DriftReport:
    """Compare ``current`` data with a reference; see the module docstring.

    Parameters
    ----------
    current : path, glob, directory, or a list of them
        The data to judge (serve logs included).
    reference : path, glob, directory, or a list of them, optional
        A reference table.
    model : path, optional
        A ``.mlsys`` model bundle: its statistics are the reference when neither ``reference`` nor
        ``profile`` is given; its predictions, target and importances add the model checks.
    profile : path, optional
        A reference profile written by :func:`save_profile`.
    options : DriftOptions
    engine : Engine, optional
        ``--engine dask``: the current data's Parquet files are counted on a Dask cluster
        (:mod:`mlsys_cli.monitor.dask_scan`); the report is the local one.

    Returns
    -------
    DriftReport
    """
    from mlsys_cli.monitor._detect import run

    if reference is not None and profile is not None:
        raise UsageError("give one reference: a table or a profile, not both")
    if reference is None and profile is None and model is None:
        raise UsageError("no reference", "give --reference TABLE, --profile FILE or --model BUNDLE")
    return run(current, reference=reference, model=model, profile=profile, options=options, engine=engine)


def save_profile(table: PathLike | Sequence[PathLike], path: PathLike, *,
                 options: DriftOptions = DriftOptions()) -> Any:
    """Write the reference profile of ``table`` to ``path`` (atomically); returns a ``ProfileSummary``.

    The profile holds, per column, the statistics :func:`detect` needs (quantile sketches,
    histograms, category tables, missing counts) and a seeded sample of ``options.domain_rows``
    rows for the domain classifier; ``options.columns``/``exclude``/``time_col`` select columns.
    """
    from mlsys_cli.monitor.reference import write_profile

    return write_profile(table, path, options)
