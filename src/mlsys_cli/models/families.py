"""Model families: what ``--model NAME`` means.

A :class:`Family` knows how to build an estimator for a task, its default parameters and
Optuna search space, how to persist it without pickle (skops for scikit-learn, UBJSON for
XGBoost) and how to read its feature importances. Estimators share one ``fit`` signature
(``sample_weight``, ``eval_set``, ``timeout``, ``progress``) so train and tune treat every
family alike. Class labels are always encoded as ``0..C-1`` before they reach an estimator.

The ``mlp`` family lives in :mod:`mlsys_cli.models.mlp` (torch, an optional extra) and is
imported only when asked for.
"""

from __future__ import annotations

import abc
import importlib
import os
import time
from typing import Any, Callable, Mapping

from mlsys_cli import bundle
from mlsys_cli.errors import InputError, UsageError

FAMILIES = ("baseline", "linear", "forest", "xgboost", "mlp")

_TREE_TYPES = ("sklearn.tree._tree.Tree",)
bundle.trust(
    "sklearn.dummy.DummyClassifier", "sklearn.dummy.DummyRegressor",
    "sklearn.linear_model._logistic.LogisticRegression", "sklearn.linear_model._ridge.Ridge",
    "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier", "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._classes.ExtraTreeClassifier", "sklearn.tree._classes.ExtraTreeRegressor",
    *_TREE_TYPES,
)


def _threads() -> int:
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
    else:
        return
    if not ok:
        kind = "true or false" if isinstance(default, bool) else "a number"
        raise UsageError(f"parameter {key!r} of --model {family} must be {kind}, got {value!r}",
                         f"its default is {default!r}")


class _Budget:
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
        budget = _Budget(timeout, progress, 1)
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


class ForestModel(SklearnModel):
    """A forest grown in chunks of trees, so ``timeout`` and progress work per chunk.

    Growing with ``warm_start`` draws each tree's seed from the same stream as a single fit,
    so the result equals fitting all trees at once.
    """

    chunk = 25

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None,
            timeout: float | None = None, progress: Any = None) -> "ForestModel":
        total = self.estimator.n_estimators
        budget = _Budget(timeout, progress, total)
        self.estimator.set_params(warm_start=True)
        grown = 0
        while grown < total:
            step = min(self.chunk, total - grown)
            self.estimator.set_params(n_estimators=grown + step)
            self.estimator.fit(X, y, sample_weight=sample_weight)
            grown += step
            if budget.step(step):
                break
        # Parallel prediction adds the trees' outputs in thread order, which changes the last bits
        # from run to run; one thread keeps predictions reproducible (training stays parallel).
        self.estimator.set_params(warm_start=False, n_estimators=grown, n_jobs=1)
        self.n_features_ = X.shape[1]
        self.fit_info_ = {"n_estimators": grown, "stopped_by": "timeout" if grown < total else None}
        return self


class XGBoostModel(SklearnModel):
    """XGBoost's scikit-learn wrapper, with early stopping, ``timeout`` and progress per round.

    ``estimator`` is an ``XGBClassifier`` / ``XGBRegressor``, so export and compress work on the
    library object. Early stopping keeps only the trees up to the best validation round.
    """

    early_stopping_rounds = 50
    # A fitted Booster to continue from (retrain --stateful): its trees are kept, new rounds added.
    init_model = None

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None,
            timeout: float | None = None, progress: Any = None, callback: Any = None) -> "XGBoostModel":
        """Fit; ``callback(round, valid_loss)`` is called after each round when ``eval_set`` is given
        (tune's pruner raises from it to stop a hopeless trial)."""
        import xgboost as xgb

        rounds = int(self.estimator.get_params()["n_estimators"])
        budget = _Budget(timeout, progress, rounds)

        class _Stop(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                if callback is not None and evals_log:
                    history = next(iter(next(iter(evals_log.values())).values()))
                    callback(epoch, float(history[-1]))
                return budget.step()

        callbacks: list[Any] = [_Stop()]
        fit_kwargs: dict[str, Any] = {"sample_weight": sample_weight, "verbose": False, "xgb_model": self.init_model}
        if eval_set is not None:
            Xv, yv, *wv = eval_set
            fit_kwargs.update(eval_set=[(Xv, yv)], sample_weight_eval_set=[wv[0]] if wv else None)
            callbacks.insert(0, xgb.callback.EarlyStopping(rounds=self.early_stopping_rounds, save_best=True))
        self.estimator.set_params(callbacks=callbacks)
        try:
            self.estimator.fit(X, y, **fit_kwargs)
        finally:
            # The callbacks hold this fit's clock and progress bar; they are not part of the model.
            self.estimator.set_params(callbacks=None)
        self.n_features_ = X.shape[1]
        start = self.init_model.num_boosted_rounds() if self.init_model is not None else 0
        trees = self.estimator.get_booster().num_boosted_rounds()
        stopped = "timeout" if budget.stopped else ("early_stopping" if eval_set is not None and trees - start < rounds else None)
        self.init_model = None  # the champion's booster is not part of this model's state
        self.fit_info_ = {"n_estimators": trees, "best_iteration": trees - 1, "stopped_by": stopped}
        return self


class Family(abc.ABC):
    """A model family: builds, persists and describes one kind of estimator.

    Subclasses set ``name`` and ``preset`` (the featurizer preset it needs) and implement
    :meth:`default_params`, :meth:`make` and :meth:`search_space`.
    """

    name = ""
    preset = "trees"
    # The feature matrix type the estimator computes in (features are float32-representable either way).
    input_dtype = "float64"

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


class BaselineFamily(Family):
    """The class prior (classification) or the mean (regression): the floor to beat."""

    name = "baseline"
    preset = "trees"

    def default_params(self, task: str) -> dict[str, Any]:
        return {"strategy": "mean" if task == "regression" else "prior"}

    def make(self, task: str, n_classes: int, params: Mapping[str, Any] | None, seed: int) -> SklearnModel:
        from sklearn.dummy import DummyClassifier, DummyRegressor

        p = self.resolve_params(task, params)
        if task == "regression":
            return SklearnModel(DummyRegressor(strategy=p["strategy"]), task)
        return SklearnModel(DummyClassifier(strategy=p["strategy"], random_state=seed), task, n_classes)

    def search_space(self, trial: Any, task: str) -> dict[str, Any]:
        return {}


class LinearFamily(Family):
    """Logistic regression (classification) or ridge regression, on scaled, one-hot features."""

    name = "linear"
    preset = "linear"

    def default_params(self, task: str) -> dict[str, Any]:
        if task == "regression":
            return {"alpha": 1.0}
        return {"C": 1.0, "max_iter": 1000, "tol": 1e-4}

    def make(self, task: str, n_classes: int, params: Mapping[str, Any] | None, seed: int) -> SklearnModel:
        from sklearn.linear_model import LogisticRegression, Ridge

        p = self.resolve_params(task, params)
        if task == "regression":
            return SklearnModel(Ridge(alpha=p["alpha"]), task)
        est = LogisticRegression(C=p["C"], max_iter=p["max_iter"], tol=p["tol"], random_state=seed)
        return SklearnModel(est, task, n_classes)

    def search_space(self, trial: Any, task: str) -> dict[str, Any]:
        if task == "regression":
            return {"alpha": trial.suggest_float("alpha", 1e-4, 1e3, log=True)}
        return {"C": trial.suggest_float("C", 1e-4, 1e2, log=True)}

    def warm_start(self, est: Any, init: Any) -> tuple[Any, str | None]:
        """Logistic regression starts its solver (lbfgs) from the champion's coefficients; ridge
        has a closed form, so there is nothing to start from."""
        if est.task == "regression":
            return est, None
        est.estimator.set_params(warm_start=True)
        est.estimator.coef_ = init.estimator.coef_.copy()
        est.estimator.intercept_ = init.estimator.intercept_.copy()
        return est, "the solver started from the champion's coefficients"

    def _raw_importances(self, est: Any) -> Any:
        import numpy as np

        coef = np.atleast_2d(est.estimator.coef_)
        return np.abs(coef).mean(axis=0)


class ForestFamily(Family):
    """Bagged trees: random forest (``kind=rf``) or extremely randomized trees (``kind=extra``)."""

    name = "forest"
    preset = "trees"

    def default_params(self, task: str) -> dict[str, Any]:
        return {"kind": "rf", "n_estimators": 300, "max_depth": None, "min_samples_leaf": 1,
                "max_features": 1.0 if task == "regression" else "sqrt", "n_jobs": -1}

    def make(self, task: str, n_classes: int, params: Mapping[str, Any] | None, seed: int) -> ForestModel:
        from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier,
                                      RandomForestRegressor)

        p = self.resolve_params(task, params)
        classes = {"rf": (RandomForestClassifier, RandomForestRegressor),
                   "extra": (ExtraTreesClassifier, ExtraTreesRegressor)}
        if p["kind"] not in classes:
            raise UsageError(f"invalid forest kind {p['kind']!r}", "use kind=rf or kind=extra")
        cls = classes[p["kind"]][1 if task == "regression" else 0]
        est = cls(n_estimators=int(p["n_estimators"]), max_depth=p["max_depth"], min_samples_leaf=p["min_samples_leaf"],
                  max_features=p["max_features"], n_jobs=p["n_jobs"], random_state=seed)
        return ForestModel(est, task, n_classes)

    def search_space(self, trial: Any, task: str) -> dict[str, Any]:
        return {
            "kind": trial.suggest_categorical("kind", ["rf", "extra"]),
            "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
            "max_depth": trial.suggest_categorical("max_depth", [None, 6, 10, 16, 24]),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 32, log=True),
            "max_features": trial.suggest_float("max_features", 0.1, 1.0),
        }

    def _raw_importances(self, est: Any) -> Any:
        return est.estimator.feature_importances_

    def _wrapper(self) -> type:
        return ForestModel


class XGBoostFamily(Family):
    """Gradient boosting with XGBoost (histogram trees, early stopping on ``--valid``)."""

    name = "xgboost"
    preset = "trees"
    # XGBoost compares float32 values: a float32 matrix gives the same trees and predictions
    # without a float64 copy of the matrix and XGBoost's own conversion of it.
    input_dtype = "float32"

    def default_params(self, task: str) -> dict[str, Any]:
        return {"n_estimators": 500, "learning_rate": 0.1, "max_depth": 6, "min_child_weight": 1.0,
                "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1.0, "reg_alpha": 0.0, "gamma": 0.0,
                "max_bin": 256, "early_stopping_rounds": 50, "nthread": _threads()}

    def _estimator(self, task: str, params: Mapping[str, Any], seed: int) -> Any:
        import xgboost as xgb

        p = dict(params)
        kwargs = {k: p[k] for k in ("n_estimators", "learning_rate", "max_depth", "min_child_weight", "subsample",
                                    "colsample_bytree", "reg_lambda", "reg_alpha", "gamma", "max_bin")}
        kwargs.update(tree_method="hist", n_jobs=p["nthread"], random_state=seed, verbosity=0)
        if task == "regression":
            return xgb.XGBRegressor(objective="reg:squarederror", eval_metric="rmse", **kwargs)
        metric = "logloss" if task == "binary" else "mlogloss"
        return xgb.XGBClassifier(eval_metric=metric, **kwargs)

    def make(self, task: str, n_classes: int, params: Mapping[str, Any] | None, seed: int) -> XGBoostModel:
        p = self.resolve_params(task, params)
        est = XGBoostModel(self._estimator(task, p, seed), task, n_classes)
        est.early_stopping_rounds = int(p["early_stopping_rounds"])
        return est

    def search_space(self, trial: Any, task: str) -> dict[str, Any]:
        return {
            "n_estimators": 2000,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 50.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
        }

    def warm_start(self, est: Any, init: Any) -> tuple[Any, str | None]:
        """New rounds are boosted on top of the champion's trees (XGBoost's ``xgb_model``)."""
        est.init_model = init.estimator.get_booster()
        return est, f"boosting continued from the champion's {est.init_model.num_boosted_rounds()} trees"

    def _raw_importances(self, est: Any) -> Any:
        import numpy as np

        gain = est.estimator.get_booster().get_score(importance_type="total_gain")
        out = np.zeros(est.n_features_)
        for key, value in gain.items():
            out[int(key.lstrip("f"))] = value
        return out

    def save(self, est: Any, writer: Any, prefix: str) -> None:
        import tempfile
        from pathlib import Path

        # save_model (not Booster.save_raw) also stores the wrapper's classes and best iteration.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.ubj"
            est.estimator.save_model(path)
            writer.add_bytes(f"{prefix}booster.ubj", path.read_bytes())

    def load(self, reader: Any, prefix: str, spec: Mapping[str, Any]) -> XGBoostModel:
        import xgboost as xgb

        params = {**spec["params"], "nthread": _threads()}
        inner = self._estimator(spec["task"], params, spec.get("seed", 0))
        try:
            inner.load_model(bytearray(reader.bytes(f"{prefix}booster.ubj")))
        except xgb.core.XGBoostError as exc:
            raise InputError(f"{reader.path}: cannot load the XGBoost model ({str(exc).splitlines()[0]})") from None
        est = XGBoostModel(inner, spec["task"], spec["n_classes"])
        est.n_features_ = spec["n_features"]
        est.fit_info_ = dict(spec.get("fit_info", {}))
        return est


_BUILTIN: dict[str, Callable[[], Family]] = {
    "baseline": BaselineFamily, "linear": LinearFamily, "forest": ForestFamily, "xgboost": XGBoostFamily,
}


def _mlp() -> Family:
    try:
        module = importlib.import_module("mlsys_cli.models.mlp")
    except ImportError as exc:
        if exc.name in ("torch", "safetensors"):
            raise UsageError("--model mlp needs torch", "install the nn extra: pip install 'mlsys[nn]'") from None
        raise
    return module.FAMILY


def get_family(name: str) -> Family:
    """The family called ``name`` (``baseline``, ``linear``, ``forest``, ``xgboost``, ``mlp``).

    Raises
    ------
    UsageError
        For an unknown name (exit 2).
    """
    if name == "mlp":
        return _mlp()
    try:
        return _BUILTIN[name]()
    except KeyError:
        raise UsageError(f"unknown model family {name!r}", f"choose one of: {', '.join(FAMILIES)}") from None
