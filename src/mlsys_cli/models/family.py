"""What a model family is: the :class:`Family` base class and what every family shares.

A family knows how to build an estimator for a task, its default parameters and Optuna search
space, how to persist it without pickle, how to read its feature importances, its ONNX graph,
the libraries it needs and how it uses threads. Estimators share one ``fit`` signature
(``sample_weight``, ``eval_set``, ``timeout``, ``progress``) so train and tune treat every
family alike. Class labels are always encoded as ``0..C-1`` before they reach an estimator.
The families themselves are in :mod:`.families` (and ``mlp`` in :mod:`.mlp`).
"""

from __future__ import annotations

import abc
import math
import os
import time
from typing import Any, Mapping

from mlsys_cli.errors import UsageError
from mlsys_cli.features.presets import FAMILY_PRESETS

# Fits on fewer rows than this run single-threaded (see Family.execution_params). On the
# loaded 2-core machine (load 7) two OpenMP threads made 16,776 x 50 fits 8 times slower than
# one: XGBoost 44 rounds 19.5 s vs 2.4 s, HistGradientBoosting 58 iterations 15.8 s vs 2.0 s.
SMALL_ROWS = 100_000


def threads() -> int:
    """The thread count of a fit on this machine (fixed per machine)."""
    # A fixed thread count per machine keeps XGBoost's floating-point sums in one order.
    return max(1, min(8, os.cpu_count() or 1))


def resolve_params(family: Any, task: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A family's defaults overlaid with ``params``; an unknown key is a usage error (exit 2).

    Works for any object with ``name`` and ``default_params(task)`` (the mlp family too).
    """
    defaults = family.default_params(task)
    unknown = sorted(set(params or {}) - set(defaults))
    if unknown:
        raise UsageError(f"unknown parameter {unknown[0]!r} for --model {family.name}",
                         f"valid parameters: {', '.join(sorted(defaults)) or '(none)'}")
    resolved = {**defaults, **(params or {})}
    for key, value in (params or {}).items():
        _check_param_type(family.name, key, value, defaults[key])
    return resolved


def _check_param_type(family: str, key: str, value: Any, default: Any) -> None:
    """A --param/--params value must be of its default's kind: a number where a number goes.

    Only the kinds are checked (ints and floats are interchangeable, a string default such as
    ``max_features="sqrt"`` also takes a number); the library validates the ranges.
    """
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise UsageError(f"parameter {key!r} of --model {family} must be a finite number, got {value!r}")
    else:
        return
    if not ok:
        kind = "true or false" if isinstance(default, bool) else "a number"
        raise UsageError(f"parameter {key!r} of --model {family} must be {kind}, got {value!r}",
                         f"its default is {default!r}")


class Budget:
    """Stops iterative fitting after ``timeout`` seconds and reports each step to ``progress``."""

    def __init__(self, timeout: float | None, progress: Any, total: int):
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.progress = progress
        self.stopped = False
        if progress is not None:
            progress.update(completed=0, total=total)

    def step(self, n: int = 1) -> bool:
        """Record ``n`` finished steps; True when the budget is spent."""
        if self.progress is not None:
            self.progress.advance(n)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped = True
        return self.stopped


class SklearnModel:
    """A scikit-learn estimator behind the family ``fit`` signature.

    Parameters
    ----------
    estimator : sklearn estimator
    task : {"binary", "multiclass", "regression"}
    n_classes : int
    """

    def __init__(self, estimator: Any, task: str, n_classes: int = 0):
        self.estimator = estimator
        self.task = task
        self.n_classes = n_classes

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None,
            timeout: float | None = None, progress: Any = None) -> "SklearnModel":
        budget = Budget(timeout, progress, 1)
        self.estimator.fit(X, y, sample_weight=sample_weight)
        budget.step()
        self.n_features_ = X.shape[1]
        self.fit_info_: dict[str, Any] = {}
        return self

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``[N, C]`` (columns in class-index order)."""
        import numpy as np

        proba = self.estimator.predict_proba(X)
        if proba.shape[1] == self.n_classes:
            return proba
        # A class with zero total weight in train is absent from the estimator's classes_.
        full = np.zeros((proba.shape[0], self.n_classes))
        full[:, self.estimator.classes_.astype(int)] = proba
        return full

    def predict(self, X: Any) -> Any:
        """Values (regression) or class indices (classification)."""
        if self.task == "regression":
            return self.estimator.predict(X)
        return self.predict_proba(X).argmax(axis=1)


class Family(abc.ABC):
    """A model family: everything mlsys knows about one kind of estimator, in one object.

    Subclasses set ``name`` (the ``--model`` value, listed in ``features.presets``, which also
    gives its featurizer :attr:`preset`), ``input_dtype`` and ``libraries`` (what a bundle of
    the family records), and
    implement :meth:`default_params`, :meth:`make`, :meth:`search_space` and :meth:`to_onnx`;
    :meth:`execution_params` (thread settings, never part of the recipe), :meth:`save` /
    :meth:`load` (no pickle) and :meth:`importances` have defaults. Adding a family means
    adding one subclass to ``models.families`` and its tests.
    """

    name = ""
    # The feature matrix type the estimator computes in (features are float32-representable either way).
    input_dtype = "float64"
    # Libraries whose versions a model bundle of this family records (mlsys is always added).
    libraries: tuple[str, ...] = ("numpy", "pandas", "pyarrow", "scikit-learn", "skops", "xgboost")
    # The parameter that sets a fit's thread count (None: single-threaded), and below how many
    # rows a fit runs on one thread (None: never; see execution_params).
    thread_param: str | None = None
    serial_rows: int | None = SMALL_ROWS
    # The parameter that sets how many rounds a boosted fit runs: tune records there the rounds
    # early stopping (or the deadline) chose, so the recipe retrains to the same model size.
    rounds_param = "n_estimators"
    # Whether a fit stops at its ``timeout`` (at the next round, chunk of trees or epoch): a fit
    # that cannot be cut (a linear solver) is only started where its estimate fits the time left.
    stops_on_timeout = True

    @abc.abstractmethod
    def default_params(self, task: str) -> dict[str, Any]:
        """Every parameter with its default for ``task`` (the keys a --params file may set)."""

    def resolve_params(self, task: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with ``params``; an unknown key is a usage error."""
        return resolve_params(self, task, params)

    @abc.abstractmethod
    def make(self, task: str, n_classes: int, params: Mapping[str, Any] | None, seed: int) -> Any:
        """An unfitted estimator with the family ``fit`` signature."""

    @abc.abstractmethod
    def search_space(self, trial: Any, task: str) -> dict[str, Any]:
        """Parameters suggested by an Optuna ``trial`` (merged over the defaults by the caller)."""

    @abc.abstractmethod
    def to_onnx(self, est: Any, n_features: int, task: str, n_classes: int = 0) -> Any:
        """The ONNX graph of a fitted estimator: input ``features`` tensor(float) [N, k] to
        ``probabilities`` [N, C] (classification) or ``prediction`` [N, 1] (regression).

        Raises
        ------
        InputError
            When the fitted estimator has no ONNX form (the message names its type).
        """

    @property
    def preset(self) -> str:
        """The featurizer preset the family needs (its entry in the family index, ``features.presets``)."""
        return FAMILY_PRESETS[self.name]

    def library_versions(self) -> dict[str, str]:
        """The installed versions of :attr:`libraries` and of mlsys (for the manifest)."""
        from mlsys_cli.bundle import library_versions

        return library_versions(list(self.libraries))

    def execution_params(self, workers: int, rows: int | None = None) -> dict[str, Any]:
        """Thread settings of a fit: this machine's cores shared by ``workers`` processes
        (oversubscribed OpenMP threads make XGBoost many times slower, not faster).

        Boosting rounds and MLP batches on fewer than :attr:`serial_rows` rows are too short to
        split across threads: one thread is as fast on an idle machine, and on a busy one the
        threads' synchronisation made a 2,600-row XGBoost fit 30 times slower (measured)."""
        if self.thread_param is None:
            return {}
        n = max(1, (os.cpu_count() or 1) // max(workers, 1))
        if rows is not None and self.serial_rows is not None and rows < self.serial_rows:
            n = 1
        return {self.thread_param: n}

    def importances(self, est: Any) -> Any:
        """Non-negative importance per input feature, summing to 1 (all zero when none)."""
        import numpy as np

        raw = np.nan_to_num(np.abs(np.asarray(self._raw_importances(est), dtype=float)))
        total = raw.sum()
        return raw / total if total > 0 else raw

    def _raw_importances(self, est: Any) -> Any:
        import numpy as np

        return np.zeros(est.n_features_)

    def warm_start(self, est: Any, init: Any) -> tuple[Any, str | None]:
        """Prime the unfitted ``est`` to continue from the fitted ``init`` (``mlsys retrain --stateful``).

        Returns the estimator to fit and what its fit will continue from, or ``(est, None)``
        when the family cannot continue (it then trains from scratch).
        """
        return est, None

    def spec(self, est: Any, task: str, n_classes: int, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """What :meth:`load` needs besides the members (stored in the manifest)."""
        return {"family": self.name, "task": task, "n_classes": n_classes, "params": dict(params), "seed": seed,
                "n_features": int(est.n_features_), "fit_info": dict(getattr(est, "fit_info_", {}))}

    def save(self, est: Any, writer: Any, prefix: str) -> None:
        """Add the fitted estimator's members to a :class:`~mlsys_cli.bundle.BundleWriter`."""
        writer.add_skops(f"{prefix}estimator.skops", est.estimator)

    def load(self, reader: Any, prefix: str, spec: Mapping[str, Any]) -> Any:
        """Rebuild a fitted estimator saved by :meth:`save`."""
        inner = reader.skops(f"{prefix}estimator.skops")
        est = self._wrapper()(inner, spec["task"], spec["n_classes"])
        est.n_features_ = spec["n_features"]
        est.fit_info_ = dict(spec.get("fit_info", {}))
        return est

    def _wrapper(self) -> type:
        return SklearnModel
