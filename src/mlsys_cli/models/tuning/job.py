"""The frozen description of one tuning run (:class:`TuneJob`), passed to every part of it.

A job is what the command line asked for, with its defaults filled in and checked; it is the
same object in the parent and (through :meth:`TuneJob.to_dict` as JSON, never pickle) in every
worker process.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import UsageError

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
DEFAULT_TRIALS = 30
# Under --timeout with --valid, trials on a big table fit on a seeded sample of the training
# rows (FLAML's cost-frugal start): this many rows per second of budget, at least MIN_SAMPLE.
# The saved model is the best configuration retrained on every row.
SAMPLE_ROWS_PER_S = 500
MIN_SAMPLE = 10_000
SAMPLE_FACTOR = 2
# With --valid, the fitted models of this many best trials per family are kept in the study's
# artifact store, so ``ensemble --from-study`` combines them without retraining.
KEEP_MODELS = 2


@dataclass(frozen=True)
class TuneJob:
    """One tuning run.

    Attributes
    ----------
    train, valid : str
        Training table; validation table (None: ``cv`` folds of ``train``).
    cv : int, optional
        Number of folds (None with ``valid``).
    time_col, target, metric : str, optional
    model : str
        A family name or ``auto``; ``model_families`` are the families it names.
    sampler, pruner : str
    trials : int, optional
        Total trials of the study (every worker and earlier run included).
    deadline : float, optional
        Wall-clock time (``time.time()``) when the run stops.
    storage, study : str
        Optuna storage URL (None: in memory) and study name; ``private_storage`` when the
        storage is a temporary journal made for the workers.
    seed, workers : int
    params, features : mapping
        Fixed ``--param`` values; Featurizer options.
    validation, train_sha256 : str
        What identifies the study's problem (a resumed study must match).
    keep_models : int
    artifacts : str, optional
        The artifact store of kept models (None: models are not kept).
    refit : bool
        The best trial is retrained and saved after the search (``--save-model``): the search
        holds that time back from the deadline (:func:`~.budget.search_deadline`).
    ensemble : bool
        With ``refit`` and ``valid``: the saved model is the ensemble of the best trials when it
        is better on the validation rows (:mod:`.final`); the search holds its share back.
    refit_valid : bool
        With ``refit`` and ``valid``: the saved model (each ensemble member) is fitted again on
        train + valid once chosen (:mod:`.refit`); the search holds its measured cost back.
    budget_s : float, optional
        The ``--timeout`` in seconds (the ensemble step's share is a fraction of it).
    engine : mapping, optional
        Where trials fit: None here, or the Dask engine (:mod:`mlsys_cli.models.dask_trials`).
    started : float, optional
        When the budget started (epoch seconds): the process start for the CLI.
    """

    train: str
    model_families: tuple[str, ...] = ()
    validation: str = ""
    train_sha256: str = ""
    valid: str | None = None
    cv: int | None = None
    time_col: str | None = None
    target: str | None = None
    model: str = "auto"
    metric: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int | None = None
    deadline: float | None = None
    storage: str | None = None
    study: str = "mlsys-tune"
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 1
    features: Mapping[str, Any] = field(default_factory=dict)
    keep_models: int = KEEP_MODELS
    artifacts: str | None = None
    private_storage: bool = False
    refit: bool = False
    ensemble: bool = False
    refit_valid: bool = False
    budget_s: float | None = None
    engine: Mapping[str, Any] | None = None
    started: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the job file of a worker process)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else
                         dict(v) if isinstance(v, Mapping) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "TuneJob":
        return cls(**{**doc, "model_families": tuple(doc["model_families"])})

    def replace(self, **changes: Any) -> "TuneJob":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TuneRequest:
    """What a caller asks :func:`~.command.tune` for, before defaults are filled in and checked.

    Attributes
    ----------
    target : str, optional
        Target column (inferred from the table's lineage when omitted).
    valid : path, optional
        Validation table; without it ``cv`` folds of the training table are used (5 by default).
    cv : int, optional
        Number of folds: stratified for classification, time-ordered with ``time_col``.
    model : str
        A family name or ``auto``.
    metric : str, optional
        Metric to optimise; the task's primary metric by default.
    sampler, pruner : str
        ``tpe|random|grid`` and ``median|hyperband|none``.
    trials : int, optional
        Total trials of the study (all workers, earlier runs included); 30 without a timeout.
    timeout : float, optional
        Seconds of wall time for this run, counted from the call (refit and outputs included).
    storage, study : str, optional
        Optuna storage (RDB URL or ``journal:PATH``) and study name, to resume or share a study.
    n_jobs : int
        Worker processes on this machine (a temporary journal is used without ``storage``).
    params : dict, optional
        Fixed parameters (``name`` or ``family.name``) that are not searched.
    features : dict, optional
        Featurizer options (the same recipe ``train`` uses).
    seed : int
    keep_models : int
        With ``valid`` and a storage: keep the fitted models of this many best trials per family
        in the study's artifact store (0: none), for ``ensemble --from-study``.
    artifacts : path, optional
        The artifact store directory (default: beside a journal file or SQLite database).
    ensemble : bool
        With ``--save-model`` and ``valid``: save the ensemble of the best trials when it is
        better on the validation rows (cross-fitted), else the best trial (``--no-ensemble``: always that).
    refit_valid : bool
        With ``--save-model`` and ``valid``: fit the chosen model again on train + valid
        (``--no-refit-valid``: the model fitted on the training rows, as scored on valid).
    engine : Engine, optional
        ``--engine dask``: each trial fits on a Dask cluster (:mod:`mlsys_cli.models.dask_trials`).
    """

    target: str | None = None
    valid: str | None = None
    cv: int | None = None
    time_col: str | None = None
    model: str = "auto"
    metric: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    trials: int | None = None
    timeout: float | None = None
    storage: str | None = None
    study: str | None = None
    n_jobs: int = 1
    params: Mapping[str, Any] | None = None
    features: Mapping[str, Any] | None = None
    seed: int = 0
    keep_models: int = KEEP_MODELS
    artifacts: str | None = None
    ensemble: bool = True
    refit_valid: bool = True
    engine: Any = None

    def check(self) -> None:
        """Refuse option combinations that cannot run (usage errors, exit 2)."""
        check_options(self.valid, self.cv, self.time_col, self.sampler, self.pruner, self.trials, self.n_jobs)
        if self.keep_models < 0:
            raise UsageError(f"--keep-models {self.keep_models}: must be 0 or more")
        if self.artifacts is not None and (self.valid is None or self.keep_models == 0):
            raise UsageError("--artifacts keeps fitted models, which needs --valid and --keep-models 1 or more")


def trial_rows(job: TuneJob, n: int) -> int | None:
    """How many training rows each trial fits on (None: all ``n``).

    Only a table at least :data:`SAMPLE_FACTOR` times the sample is sampled: on one barely
    bigger (diamonds: 32k rows for 29k at 60 s) the trials were hardly cheaper, while the saved
    model had to be refitted on every row and could not be the best trials' ensemble."""
    if job.budget_s is None or job.valid is None:
        return None
    cap = max(MIN_SAMPLE, int(SAMPLE_ROWS_PER_S * job.budget_s))
    return cap if n > SAMPLE_FACTOR * cap else None


def check_options(valid: Any, cv: Any, time_col: Any, sampler: str, pruner: str, trials: Any, n_jobs: int) -> None:
    """Refuse option combinations that cannot run (usage errors, exit 2)."""
    if valid is not None and cv is not None:
        raise UsageError("give --valid or --cv, not both")
    if cv is not None and cv < 2:
        raise UsageError(f"--cv {cv}: needs at least 2 folds")
    if time_col and valid is not None:
        raise UsageError("--time-col orders the --cv folds; with --valid the split is already made")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {sampler!r}", f"choose one of: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UsageError(f"unknown pruner {pruner!r}", f"choose one of: {', '.join(PRUNERS)}")
    if trials is not None and trials < 1:
        raise UsageError(f"--trials {trials}: must be at least 1")
    if n_jobs < 1:
        raise UsageError(f"--n-jobs {n_jobs}: must be at least 1")


def fingerprint(paths: Sequence[str]) -> str:
    """One sha256 over the files of ``paths`` (globs and directories expanded), in order."""
    import hashlib

    from mlsys_cli.data.io import resolve_inputs
    from mlsys_cli.fsutil import sha256_file

    digest = hashlib.sha256()
    for path in paths:
        for f in resolve_inputs([path]):
            digest.update(sha256_file(f).encode())
    return digest.hexdigest()


def artifacts_for(valid: Any, keep_models: int, artifacts: str | None, storage: str | None) -> str | None:
    """The artifact store of a run: only a --valid study fits each trial on every training row
    (a CV trial has no one model to keep)."""
    from mlsys_cli.models.study import artifact_dir

    if not (valid and keep_models):
        return None
    return os.path.abspath(artifacts) if artifacts else artifact_dir(storage)
