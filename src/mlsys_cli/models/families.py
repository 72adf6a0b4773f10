"""Model families: what ``--model NAME`` means, one :class:`~.family.Family` object per family.

``baseline``, ``linear``, ``forest``, ``xgboost`` and ``hgb`` are here, with the estimator wrappers that
give scikit-learn and XGBoost the family ``fit`` signature (timeout, progress, early stopping);
each persists without pickle (skops for scikit-learn, UBJSON for XGBoost) and converts itself
to ONNX (:mod:`.onnx_graphs`). The ``mlp`` family lives in :mod:`mlsys_cli.models.mlp` (torch,
an optional extra) and is imported only when asked for. :func:`get_family` is the registry.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from mlsys_cli import bundle
from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.features.presets import FAMILIES  # the index of the families registered here
from mlsys_cli.models.family import Budget, Family, SklearnModel, resolve_params, threads  # noqa: F401 (resolve_params, SklearnModel: importable from here too)

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
_HGB = "sklearn.ensemble._hist_gradient_boosting"
# skops trusts scikit-learn's estimators; the fitted trees and the binner are helper types.
bundle.trust(
    f"{_HGB}.gradient_boosting.HistGradientBoostingClassifier", f"{_HGB}.gradient_boosting.HistGradientBoostingRegressor",
    f"{_HGB}.predictor.TreePredictor", f"{_HGB}.binning._BinMapper",
)


class ForestModel(SklearnModel):
    """A forest grown in chunks of trees, so ``timeout`` and progress work per chunk.

    Growing with ``warm_start`` draws each tree's seed from the same stream as a single fit,
    so the result equals fitting all trees at once.
    """

    chunk = 25

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None,
            timeout: float | None = None, progress: Any = None) -> "ForestModel":
        # The chunked loop never fits with the requested n_estimators, so check the values
        # against scikit-learn's own constraints first (n_estimators=-3 would fit nothing).
        getattr(self.estimator, "_validate_params", lambda: None)()
        total = self.estimator.n_estimators
        budget = Budget(timeout, progress, total)
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
    library object. Early stopping keeps only the trees up to the best validation round;
    ``early_stopping_rounds = 0`` turns it off (the validation losses still reach ``callback``).
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
        budget = Budget(timeout, progress, rounds)

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
            if self.early_stopping_rounds:  # 0: every round, as XGBoost's own defaults train
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


class LibraryFamily(Family):
    """A family whose estimator is a scikit-learn or XGBoost object (``est.estimator``)."""

    def to_onnx(self, est: Any, n_features: int, task: str, n_classes: int = 0) -> Any:
        """The graph of the library estimator (:func:`~.onnx_graphs.estimator_to_onnx`)."""
        from mlsys_cli.models.onnx_graphs import estimator_to_onnx

        return estimator_to_onnx(self.name, est, n_features, task, n_classes)


class BaselineFamily(LibraryFamily):
    """The class prior (classification) or the mean (regression): the floor to beat."""

    name = "baseline"
    stops_on_timeout = False

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


class LinearFamily(LibraryFamily):
    """Logistic regression (classification) or ridge regression, on scaled, one-hot features."""

    name = "linear"
    stops_on_timeout = False

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


class ForestFamily(LibraryFamily):
    """Bagged trees: random forest (``kind=rf``) or extremely randomized trees (``kind=extra``)."""

    name = "forest"
    thread_param = "n_jobs"
    serial_rows = None  # trees grow independently: threads pay off on small tables too

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


class XGBoostFamily(LibraryFamily):
    """Gradient boosting with XGBoost (histogram trees, early stopping on ``--valid``)."""

    name = "xgboost"
    # XGBoost compares float32 values: a float32 matrix gives the same trees and predictions
    # without a float64 copy of the matrix and XGBoost's own conversion of it.
    input_dtype = "float32"
    thread_param = "nthread"

    def default_params(self, task: str) -> dict[str, Any]:
        return {"n_estimators": 500, "learning_rate": 0.1, "max_depth": 6, "min_child_weight": 1.0,
                "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1.0, "reg_alpha": 0.0, "gamma": 0.0,
                "max_bin": 256, "early_stopping_rounds": 50, "nthread": threads()}

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

        params = {**spec["params"], "nthread": threads()}
        inner = self._estimator(spec["task"], params, spec.get("seed", 0))
        try:
            inner.load_model(bytearray(reader.bytes(f"{prefix}booster.ubj")))
        except xgb.core.XGBoostError as exc:
            raise InputError(f"{reader.path}: cannot load the XGBoost model ({str(exc).splitlines()[0]})") from None
        est = XGBoostModel(inner, spec["task"], spec["n_classes"])
        est.n_features_ = spec["n_features"]
        est.fit_info_ = dict(spec.get("fit_info", {}))
        return est


class HistGBModel(SklearnModel):
    """scikit-learn's HistGradientBoosting grown in chunks of iterations (``warm_start``), so
    ``timeout`` and progress work per chunk; with ``eval_set`` it stops early on those rows.

    Growing with ``warm_start`` continues the same boosting (the same early-stopping history),
    so the result equals one fit of as many iterations.
    """

    chunk = 25
    # OpenMP threads of a fit (None: the library's choice); see HistGBFamily.serial_rows.
    n_threads: int | None = None

    def fit(self, X: Any, y: Any, sample_weight: Any = None, eval_set: Any = None,
            timeout: float | None = None, progress: Any = None) -> "HistGBModel":
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            return self._fit(X, y, sample_weight, eval_set, Budget(timeout, progress, int(self.estimator.get_params()["max_iter"])))

    def _fit(self, X: Any, y: Any, sample_weight: Any, eval_set: Any, budget: Budget) -> "HistGBModel":
        est = self.estimator
        total = int(est.get_params()["max_iter"])
        kwargs: dict[str, Any] = {}
        if eval_set is not None and est.get_params()["early_stopping"] is not False:
            Xv, yv, *wv = eval_set
            kwargs = {"X_val": Xv, "y_val": yv, "sample_weight_val": wv[0] if wv else None}
            est.set_params(early_stopping=True)
        est.set_params(warm_start=True)
        grown, early = 0, False
        while grown < total:
            step = min(self.chunk, total - grown)
            est.set_params(max_iter=grown + step)
            est.fit(X, y, sample_weight=sample_weight, **kwargs)
            early = est.n_iter_ < grown + step
            budget.step(est.n_iter_ - grown)
            grown = est.n_iter_
            if early or budget.stopped:
                break
        est.set_params(warm_start=False, max_iter=grown)
        self.n_features_ = X.shape[1]
        stopped = "timeout" if budget.stopped and not early else ("early_stopping" if early else None)
        self.fit_info_ = {"n_estimators": grown, "best_iteration": grown - 1, "stopped_by": stopped}
        return self


class HistGBFamily(LibraryFamily):
    """scikit-learn's histogram gradient boosting: a strong default on small tables, exported to ONNX."""

    name = "hgb"
    rounds_param = "max_iter"
    thread_param = "n_threads"

    def default_params(self, task: str) -> dict[str, Any]:
        # scikit-learn's own defaults (the default trial is the library default); ``early_stopping``
        # "auto" stops on --valid when given, else as scikit-learn does (a 10% holdout above 10k rows).
        return {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31, "max_depth": None,
                "min_samples_leaf": 20, "l2_regularization": 0.0, "max_features": 1.0, "max_bins": 255,
                "early_stopping": "auto", "n_iter_no_change": 10, "validation_fraction": 0.1, "n_threads": threads()}

    def make(self, task: str, n_classes: int, params: Mapping[str, Any] | None, seed: int) -> HistGBModel:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        p = self.resolve_params(task, params)
        cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
        kwargs = {k: p[k] for k in ("learning_rate", "max_leaf_nodes", "max_depth", "min_samples_leaf",
                                    "l2_regularization", "max_features", "max_bins", "early_stopping",
                                    "n_iter_no_change", "validation_fraction")}
        # Features arrive encoded (no categorical splits, which have no ONNX form here).
        est = cls(max_iter=int(p["max_iter"]), categorical_features=None, random_state=seed, **kwargs)
        model = HistGBModel(est, task, n_classes)
        model.n_threads = int(p["n_threads"])
        return model

    def search_space(self, trial: Any, task: str) -> dict[str, Any]:
        return {
            # Early stopping on the validation rows picks the number of iterations.
            "max_iter": 1000,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 4, 256, log=True),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 200, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
            "max_features": trial.suggest_float("max_features", 0.3, 1.0),
        }

    def _raw_importances(self, est: Any) -> Any:
        """Total split gain per feature (HistGradientBoosting has no ``feature_importances_``)."""
        import numpy as np

        out = np.zeros(est.n_features_)
        for predictors in est.estimator._predictors:
            for predictor in predictors:
                nodes = predictor.nodes[predictor.nodes["is_leaf"] == 0]
                np.add.at(out, nodes["feature_idx"], np.maximum(nodes["gain"], 0.0))
        return out

    def _wrapper(self) -> type:
        return HistGBModel


_BUILTIN: dict[str, Callable[[], Family]] = {
    cls.name: cls for cls in (BaselineFamily, LinearFamily, ForestFamily, XGBoostFamily, HistGBFamily)
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
    """The family called ``name`` (one of :data:`FAMILIES`).

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
