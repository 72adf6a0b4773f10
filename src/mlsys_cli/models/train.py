"""Training: from a raw table to a model bundle with its report.

:func:`train_model` takes the tables, a :class:`TrainSpec` (what to train: the recipe before the
task is inferred) and a :class:`FitRun` (how the fit runs: time budget, progress, callback). It
reads the tables, checks the target, infers the task, builds (or loads) the featurizer and fits
it on train only (:func:`featurize_tables`), fits the family's estimator (early stopping on the
validation table), optionally calibrates on the validation table, scores the model beside the
zero-rule and random baselines and assembles the manifest.

:func:`fit_estimator` is the one place an estimator meets its featurized matrix
(:class:`EstimatorSpec` + :class:`FitData` + :class:`FitRun`): ``train``, tune's trials and
compress's students all fit through it.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError

TASKS = ("binary", "multiclass", "regression")
CLASS_WEIGHTS = ("balanced",)
# Integer targets with at most this many distinct values are classes, not quantities.
MAX_INT_CLASSES = 20
TOP_FEATURES = 10
# Train-set metrics and the prediction reference are statistics; a seeded sample of this many
# training rows gives them to about 0.3 % while scoring 1M rows would cost as much as a quarter
# of the fit. Validation metrics are always on every validation row.
SCORE_ROWS = 100_000


@dataclass(frozen=True)
class TrainResult:
    """What ``mlsys train`` reports (``--json``)."""

    model: str
    task: str
    target: str
    classes: list[Any] | None
    rows: dict[str, int]
    evaluated_on: str
    primary_metric: str
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    params: dict[str, Any]
    fit: dict[str, Any]
    n_features: int
    top_features: list[dict[str, Any]]
    seconds: float
    calibrate: str | None = None
    warnings: list[str] = field(default_factory=list)
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "model": self.model, "task": self.task, "target": self.target,
            "classes": self.classes, "rows": self.rows, "evaluated_on": self.evaluated_on,
            "primary_metric": self.primary_metric, "metrics": self.metrics, "baselines": self.baselines,
            "params": self.params, "fit": self.fit, "n_features": self.n_features,
            "top_features": self.top_features, "calibrate": self.calibrate, "seconds": self.seconds,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class TrainSpec:
    """What :func:`train_model` makes: the recipe before the task is inferred and the parameters resolved.

    Parameters
    ----------
    family : str
        Family name (``--model``): baseline, linear, forest, xgboost, hgb, mlp.
    target : str, optional
        The column to predict (default: the target recorded by ``mlsys split``).
    task : str, optional
        binary, multiclass or regression (inferred from the target by default).
    features : path or mapping, optional
        A features bundle from ``mlsys featurize`` (used as fitted) or Featurizer settings;
        default: the family's preset.
    params : mapping, optional
        Family parameters over its defaults.
    class_weight : {"balanced"}, optional
    sample_weight : str, optional
        A column of per-row weights (not used as a feature).
    calibrate : {"isotonic", "sigmoid"}, optional
        Calibrate probabilities on the validation table.
    seed : int
    """

    family: str = "xgboost"
    target: str | None = None
    task: str | None = None
    features: Any = None
    params: Mapping[str, Any] | None = None
    class_weight: str | None = None
    sample_weight: str | None = None
    calibrate: str | None = None
    seed: int = 0

    @classmethod
    def from_recipe(cls, recipe: Any, **changes: Any) -> "TrainSpec":
        """The spec that trains a :class:`~mlsys_cli.models.manifest.Recipe`'s model again, with ``changes``."""
        spec = cls(family=recipe.family, target=recipe.target, task=recipe.task,
                   features=dict(recipe.features) if recipe.features else None, params=recipe.params,
                   class_weight=recipe.class_weight, sample_weight=recipe.sample_weight,
                   calibrate=recipe.calibrate, seed=recipe.seed)
        return spec.replace(**changes)

    def replace(self, **changes: Any) -> "TrainSpec":
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- target and task


def resolve_target(df: Any, target: str | None, source: Any = "input") -> str:
    """The target column: ``target`` or the one recorded in the table's lineage; must exist."""
    if not target:
        target = _lineage_target(source)
    if not target:
        raise UsageError("no target column given", "use --target COLUMN")
    if target not in df.columns:
        raise InputError(f"{_name(source)}: no target column {target!r}",
                         f"columns are: {', '.join(map(str, list(df.columns)[:12]))}")
    return target


def _name(source: Any) -> str:
    if isinstance(source, (list, tuple)):
        return ", ".join(map(str, source))
    return str(source)


def _lineage_target(source: Any) -> str | None:
    from mlsys_cli.data.io import read_lineage

    paths = source if isinstance(source, (list, tuple)) else [source]
    for path in paths:
        try:
            lineage = read_lineage(path) or {}
        except OSError:
            continue
        if lineage.get("target"):
            return str(lineage["target"])
    return None


def check_target(y: Any, target: str, source: Any = "input") -> None:
    """Refuse missing (null, NaN, blank text) or infinite target values (exit 3), naming the first bad row."""
    import numpy as np

    from mlsys_cli.features.schema import missing_target

    missing = missing_target(y)
    values = np.asarray(y)
    if values.dtype.kind == "f":
        missing = missing | np.isinf(values)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InputError(f"{_name(source)}: target {target!r} has {int(missing.sum())} missing or infinite value(s) "
                         f"(first at row {row})", "filter those rows out before training")


def check_classes(y: Any, task: str, target: str, source: Any, hint: str) -> None:
    """Refuse (exit 3) held-out labels of one class for a classifier: no AUC or log loss to measure on."""
    import pandas as pd

    values = pd.Series(y).dropna()
    if task != "regression" and values.nunique() < 2:
        shown = f" ({values.iloc[0]})" if len(values) else ""
        raise InputError(f"{_name(source)}: the target {target!r} holds one class only{shown}", hint)


def infer_task(y: Any, task: str | None = None) -> tuple[str, list[Any] | None]:
    """The task and, for classification, the sorted class labels.

    Booleans, strings and integers with few distinct values are classes (two: ``binary``,
    more: ``multiclass``); other numbers are ``regression``. ``task`` overrides the guess.
    """
    import numpy as np
    import pandas as pd
    from pandas.api import types as pdt

    from mlsys_cli.models.metrics import class_key

    if task is not None and task not in TASKS:
        raise UsageError(f"invalid task {task!r}", f"choose one of: {', '.join(TASKS)}")
    series = pd.Series(y).dropna()
    numeric = pdt.is_numeric_dtype(series.dtype) and not pdt.is_bool_dtype(series.dtype)
    if task is None:
        distinct = series.nunique()
        if pdt.is_bool_dtype(series.dtype) or not numeric:
            task = "binary" if distinct <= 2 else "multiclass"
        else:
            values = series.to_numpy(dtype=np.float64)
            whole = bool(np.all(np.mod(values, 1) == 0))
            if whole and (pdt.is_integer_dtype(series.dtype) and distinct <= MAX_INT_CLASSES or distinct <= 2):
                task = "binary" if distinct <= 2 else "multiclass"
            else:
                task = "regression"
    if task == "regression":
        if not numeric:
            raise InputError(f"target of type {series.dtype} cannot be a regression target", "use --task binary or multiclass")
        return task, None
    # Distinct values first: the classes are few, the rows many.
    classes = sorted({class_key(v) for v in series.drop_duplicates().tolist()}, key=lambda v: (str(type(v)), v) if not isinstance(v, str) else ("", v))
    if len(classes) < 2:
        raise InputError(f"target has only one class ({classes[0]!r})" if classes else "target has no values",
                         "a classifier needs at least two classes in the training rows")
    if task == "binary" and len(classes) > 2:
        raise InputError(f"--task binary but the target has {len(classes)} classes", "use --task multiclass")
    return task, classes


# --------------------------------------------------------------------------- featurizer


def make_featurizer(target: str, preset: str, features: Any = None, seed: int = 0) -> Any:
    """An unfitted Featurizer for ``preset``.

    ``features`` may be None (the preset's defaults), a dict of Featurizer parameters, or the
    path of a features bundle whose settings are reused (refitted, e.g. per cross-validation fold).
    """
    from mlsys_cli.features import Featurizer

    if features is None:
        return Featurizer(target=target, preset=preset, seed=seed)
    if isinstance(features, Mapping):
        kwargs = {"target": target, "preset": preset, "seed": seed, **features}
        try:
            return Featurizer(**kwargs)
        except TypeError as exc:
            raise UsageError(f"invalid features setting: {exc}") from None
    from sklearn.base import clone

    return clone(load_features(features, target))


def load_features(path: Any, target: str) -> Any:
    """The fitted Featurizer of a features bundle; refused when it was fitted for another target."""
    from mlsys_cli.features.bundle import load_features_bundle

    return load_features_bundle(path, target)[0]


def role_warnings(featurizer: Any) -> list[str]:
    """Name the input columns the model learns nothing from (missing, one value, unrepresentable, nested).

    The featurizer sets them aside, so training goes on without them (a broken extract must not
    stop a nightly retrain); the warning names each one so it is noticed, and ``--drop COL``
    silences it.
    """
    out = []
    for name, role in getattr(featurizer, "roles_", {}).items():
        if role.get("role") == "empty":
            out.append(f"column {name!r} is entirely missing: left out (--drop {name} to silence)")
        elif role.get("role") == "constant":
            out.append(f"column {name!r} is constant (one value in every training row): left out (--drop {name} to silence)")
        elif role.get("role") == "unrepresentable":
            out.append(f"column {name!r} holds numbers float32 cannot hold ({role['reason']}): left out (--drop {name} to silence)")
        elif role.get("role") == "nested":
            out.append(f"column {name!r} holds lists or structs: left out (--drop {name} to silence)")
        elif role.get("role") == "unnamed":
            out.append(f"column {name!r} has an empty or blank name: left out (rename it to use it)")
    return out


# --------------------------------------------------------------------------- weights and params


def sample_weights(df: Any, column: str | None, class_weight: str | None, y: Any, task: str,
                   n_classes: int, source: Any = "input") -> Any:
    """Per-row weights from ``--sample-weight COL`` times ``--class-weight balanced`` (None: all 1)."""
    import numpy as np

    weights = None
    if column:
        if column not in df.columns:
            raise InputError(f"{_name(source)}: no sample-weight column {column!r}")
        try:
            weights = df[column].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            raise InputError(f"{_name(source)}: sample-weight column {column!r} is not numeric") from None
        if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
            raise InputError(f"{_name(source)}: sample-weight column {column!r} must be finite, non-negative and not all zero")
    if class_weight is None:
        return weights
    if class_weight not in CLASS_WEIGHTS:
        raise UsageError(f"invalid --class-weight {class_weight!r}", "use --class-weight balanced")
    if task == "regression":
        raise UsageError("--class-weight needs a classification task")
    base = np.ones(len(y)) if weights is None else weights
    totals = np.bincount(y, weights=base, minlength=n_classes)
    per_class = np.where(totals > 0, base.sum() / (n_classes * np.where(totals > 0, totals, 1)), 0.0)
    return base * per_class[y]


def load_params(path: Any) -> tuple[dict[str, Any], str | None]:
    """Parameters from a JSON file: a plain object, or tune's ``params.json`` (``family`` + ``params``)."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a JSON parameter file ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: parameters must be a JSON object")
    if "params" in doc and isinstance(doc["params"], dict):
        return dict(doc["params"]), doc.get("family")
    return doc, None


@dataclass(frozen=True)
class EstimatorSpec:
    """What estimator :func:`fit_estimator` builds: the task, its classes, parameters and seed.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    n_classes : int
        Number of classes (0 for regression).
    params : mapping, optional
        Family parameters over its defaults (unknown keys raise UsageError).
    seed : int
    """

    task: str
    n_classes: int = 0
    params: Mapping[str, Any] | None = None
    seed: int = 0


@dataclass(frozen=True, eq=False)
class FitData:
    """A featurized training matrix and what the fit weighs and stops on.

    Parameters
    ----------
    X : ndarray [N, k]
    y : ndarray [N]
        Class indices ``0..C-1`` or values.
    sample_weight : ndarray [N], optional
    eval_set : tuple, optional
        ``(X_valid, y_valid)`` or ``(X_valid, y_valid, w_valid)`` for early stopping.
    """

    X: Any
    y: Any
    sample_weight: Any = None
    eval_set: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class FitRun:
    """How a fit runs, as opposed to what it learns: nothing here enters the recipe.

    Parameters
    ----------
    timeout : float, optional
        Seconds; iterative families stop at the next round after it.
    progress : object, optional
        ``update(completed=, total=)`` / ``advance(n)``.
    callback : callable, optional
        ``callback(step, valid_loss)`` after each boosting round (families whose ``fit`` takes
        ``callback``; others ignore it). May raise to abort the fit (tune's pruning).
    init : estimator, optional
        A fitted estimator of the same family to continue from (``Family.warm_start``); the
        fit records what it continued from as ``warm_start_`` (None: it trained from scratch).
    """

    timeout: float | None = None
    progress: Any = None
    callback: Callable[[int, float], Any] | None = None
    init: Any = None


def fit_estimator(family: Any, spec: EstimatorSpec, data: FitData, run: FitRun = FitRun()) -> Any:
    """Fit one estimator of ``family`` on a featurized matrix.

    This is the one place where an estimator meets its training matrix: ``train`` (through
    :func:`train_model`), tune's trials and compress's students all fit here.

    Parameters
    ----------
    family : Family
    spec : EstimatorSpec
    data : FitData
    run : FitRun
    """
    import inspect

    from mlsys_cli.models.families import resolve_params

    try:
        est = family.make(spec.task, spec.n_classes, resolve_params(family, spec.task, spec.params), spec.seed)
        continued = None
        if run.init is not None:
            est, continued = family.warm_start(est, run.init)
        callback = run.callback
        extra = {"callback": callback} if callback is not None and "callback" in inspect.signature(est.fit).parameters else {}
        est = est.fit(data.X, data.y, sample_weight=data.sample_weight, eval_set=data.eval_set, timeout=run.timeout,
                      progress=run.progress, **extra)
    except Exception as exc:
        raise _parameter_error(family, exc) or exc
    if run.init is not None:
        est.warm_start_ = continued
    return est


def _parameter_error(family: Any, exc: Exception) -> UsageError | None:
    """The library's refusal of a parameter value (out of range: ``C=0``, a negative learning
    rate) as a usage error naming it; None for any other failure.

    The ranges live in the libraries (scikit-learn's parameter constraints, XGBoost's parameter
    manager), so they are not copied here; their refusal is mapped where the fit happens.
    """
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if name == "InvalidParameterError" or (name == "XGBoostError" and "for Parameter" in text):
        return UsageError(f"--model {family.name}: {text}", "check the --param / --params values")
    return None


# --------------------------------------------------------------------------- the whole step


def libraries(family: str) -> dict[str, str]:
    """The library versions a model bundle of ``family`` records in its manifest."""
    from mlsys_cli.models.families import get_family

    return get_family(family).library_versions()


def encode_target(task: str, y: Any, classes: Sequence[Any] | None, source: Any) -> Any:
    """Target values as class indices (classification) or float64 (regression); refuses unknown classes (exit 3)."""
    import numpy as np

    from mlsys_cli.models.metrics import encode_labels, unknown_labels_error

    if task == "regression":
        from mlsys_cli.features.schema import regression_values

        return regression_values(y, f"{_name(source)}: target")
    values = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y, dtype=object)
    codes = encode_labels(values, classes)  # per distinct value, indexed back
    if (codes < 0).any():
        raise unknown_labels_error(values[codes < 0].tolist(), classes, f"{_name(source)}: the target")
    return codes


def baseline_inputs(task: str, y: Any, classes: Sequence[Any] | None, weights: Any = None) -> tuple[Any, Any]:
    """``(y_train, sample_weight)`` for :func:`~mlsys_cli.models.metrics.baseline_metrics` from encoded targets.

    For classes, one row per class weighted by its (weighted) total: the same zero-rule prior as
    every training row, without labelling a million rows in Python.
    """
    import numpy as np

    if task == "regression":
        return y, weights
    return np.asarray(classes, dtype=object), np.bincount(y, weights=weights, minlength=len(classes or [])).astype(float)


def score_sample(n: int, seed: int, size: int = SCORE_ROWS) -> Any:
    """Sorted row indices of a seeded sample of at most ``size`` of ``n`` rows (all when ``n <= size``)."""
    import numpy as np

    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def ranked_importance(family: Any, est: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"feature", "importance"}]`` of a fitted estimator, most important first (ties by name)."""
    import numpy as np

    importance = np.asarray(family.importances(est), dtype=float)
    order = sorted(range(len(names)), key=lambda i: (-importance[i], names[i]))
    return [{"feature": names[i], "importance": round(float(importance[i]), 6)} for i in order]


def prediction_reference(task: str, scores: Any, classes: Sequence[Any] | None) -> dict[str, Any]:
    """Reference statistics of a model's outputs (labels and class probabilities, or values), for drift."""
    import numpy as np

    from mlsys_cli.data.profile import profile_values

    if task == "regression":
        return {"prediction": profile_values(scores)}
    labels = np.asarray([str(c) for c in classes], dtype=object)[scores.argmax(axis=1)]
    ref = {"label": profile_values(labels)}
    ref.update({f"proba_{c}": profile_values(scores[:, i]) for i, c in enumerate(classes)})
    return ref


def train_model(train: Any, spec: TrainSpec = TrainSpec(), *, valid: Any = None, run: FitRun = FitRun(),
                init: Any = None) -> tuple[Any, TrainResult]:
    """Train a model on a table and return the bundle and its report.

    The steps: read the tables, resolve the problem (task, classes, parameters), featurize
    (:func:`featurize_tables`), score the baselines, fit (:func:`fit_estimator`, the one place an
    estimator meets its matrix), calibrate, measure, and assemble the manifest.

    Parameters
    ----------
    train, valid : path (or list of paths)
        Training table; optional validation table (early stopping, calibration, reported metrics).
    spec : TrainSpec
        What to train: family, target, task, features, parameters, weights, calibration, seed.
    run : FitRun
        ``timeout`` (seconds for the whole step: boosting stops at the next round after it),
        ``progress`` and ``callback`` of the fit; its ``init`` must be None (set from ``init``).
    init : SinglePredictor, optional
        Continue from this fitted model (``retrain --stateful``): its featurizer is used as
        fitted and its estimator is continued where the family can (``Family.warm_start``);
        ``spec.features`` is then only recorded in the recipe.

    Returns
    -------
    (ModelBundle, TrainResult)
    """
    from concurrent.futures import ThreadPoolExecutor

    from mlsys_cli.data.profile import profile_frame
    from mlsys_cli.features.schema import infer_schema
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.families import get_family

    if run.init is not None:  # only ``init`` carries the featurizer: never drop an estimator silently
        raise TypeError("train_model: pass the model to continue from as init=, not FitRun(init=...)")
    start = time.perf_counter()
    family = get_family(spec.family)
    _check_calibrate(spec.calibrate, valid)
    train_df, valid_df, target = _read_tables(train, valid, spec.target)
    problem = _resolve_problem(family, spec, train_df[target], target)
    # The reference statistics of the input columns need nothing from the model: start them now on a
    # second thread (NumPy and XGBoost release the GIL), with the types the table suggests; any
    # column the fitted featurizer types differently is profiled again at the end.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlsys-profile")
    guessed = infer_schema(train_df.drop(columns=[c for c in (target, spec.sample_weight) if c in train_df.columns]))
    reference = pool.submit(profile_frame, train_df, guessed)
    matrices = featurize_tables(family, spec, problem, (train_df, valid_df), (train, valid), init)
    scored = score_sample(len(matrices.train.y), spec.seed)
    # (Not on the profiling thread: the metrics silence warnings, and warning filters are process-wide.)
    baselines = _baselines(problem, matrices, scored)
    pool.shutdown(wait=False)
    remaining = None if run.timeout is None else max(0.0, run.timeout - (time.perf_counter() - start))
    fit_run = dataclasses.replace(run, timeout=remaining, init=init.estimator if init is not None else None)
    est, fit_info, caught = _fit(family, problem.estimator, matrices.train, fit_run)
    predictor = _predictor(family, problem, matrices, (est, fit_info), spec.calibrate)
    measured = _measure(predictor, problem, matrices, scored, baselines)
    caught += _notes(spec.calibrate, matrices.valid is None, len(scored), len(matrices.train.y))
    manifest = _manifest(spec, problem, (predictor, matrices, measured), _Sources(train, valid, train_df, reference))
    caught += _out_of_range_notes(matrices.featurizer, train_df, valid_df)
    return ModelBundle(manifest, predictor), _report(spec, problem, (predictor, matrices, measured), caught, start)


@dataclass(frozen=True)
class TrainProblem:
    """One training's resolved problem: the target, its classes and the estimator to fit."""

    target: str
    classes: list[Any] | None
    estimator: EstimatorSpec

    @property
    def task(self) -> str:
        return self.estimator.task

    def labels(self, y: Any) -> Any:
        """Encoded targets as the metrics take them: class labels, or the values."""
        import numpy as np

        return y if self.task == "regression" else np.asarray(self.classes, dtype=object)[y]


@dataclass(frozen=True, eq=False)
class Matrices:
    """The featurized tables: the fitted featurizer, what the recipe records of it, the matrices."""

    featurizer: Any
    features: Mapping[str, Any]
    train: FitData
    valid: FitData | None


@dataclass(frozen=True, eq=False)
class _Measured:
    """What the fitted model scored: the manifest's metrics, its scores on the scored training rows
    (the prediction reference) and the ranked feature importance."""

    metrics: dict[str, Any]
    train_scores: Any
    importance: list[dict[str, Any]]


@dataclass(frozen=True, eq=False)
class _Sources:
    """Where the training rows came from (the recipe's fingerprints, the reference statistics)."""

    train: Any
    valid: Any
    train_df: Any
    reference: Any  # the input columns' profiles, computed ahead on another thread (a Future)


def _check_calibrate(method: str | None, valid: Any) -> None:
    from mlsys_cli.models.predictors import CALIBRATION_METHODS

    if method is not None and method not in CALIBRATION_METHODS:
        raise UsageError(f"invalid --calibrate {method!r}", f"choose one of: {', '.join(CALIBRATION_METHODS)}")
    if method and valid is None:
        raise UsageError("--calibrate needs --valid", "calibration is fitted on held-out rows")


def _resolve_problem(family: Any, spec: TrainSpec, y: Any, target: str) -> TrainProblem:
    """The task and classes (inferred unless ``spec.task``) and the family's resolved parameters."""
    from mlsys_cli.models.families import resolve_params

    task, classes = infer_task(y, spec.task)
    if spec.calibrate and task == "regression":
        raise UsageError("--calibrate needs a classification task")
    n_classes = len(classes) if classes else 0
    return TrainProblem(target, classes, EstimatorSpec(task, n_classes, resolve_params(family, task, spec.params), spec.seed))


def featurize_tables(family: Any, spec: TrainSpec, problem: TrainProblem, frames: tuple[Any, Any],
                     sources: tuple[Any, Any], init: Any = None) -> Matrices:
    """Encoded targets, weights and feature matrices of the training and validation frames.

    The featurizer is fitted on the training rows (``spec.features``: settings over the family's
    preset, or a features bundle used as fitted); with ``init``, that model's fitted featurizer
    is used (the champion's encodings were fitted on older rows: these rows are out of sample
    for them). ``sources`` name the tables in errors.
    """
    (train_df, valid_df), (train, valid) = frames, sources
    target, task, n_classes = problem.target, problem.task, problem.estimator.n_classes
    y = encode_target(task, train_df[target], problem.classes, train)
    weights = sample_weights(train_df, spec.sample_weight, spec.class_weight, y, task, n_classes, train)
    frame = train_df.drop(columns=[spec.sample_weight] if spec.sample_weight else [])
    if init is not None:
        featurizer, features = init.featurizer, dict(spec.features or {})
        X = featurizer.transform(frame, dtype=family.input_dtype)
    else:
        featurizer, X, features = _featurize(family, frame, spec.features, (target, task, spec.seed), train)
    held_out = None
    if valid_df is not None:
        check_target(valid_df[target], target, valid)
        y_valid = encode_target(task, valid_df[target], problem.classes, valid)
        w_valid = sample_weights(valid_df, spec.sample_weight, spec.class_weight, y_valid, task, n_classes, valid)
        X_valid = featurizer.transform(valid_df.drop(columns=[spec.sample_weight] if spec.sample_weight else []),
                                       dtype=family.input_dtype)
        held_out = FitData(X_valid, y_valid, w_valid)
    return Matrices(featurizer, features, FitData(X, y, weights, _eval_set(held_out)), held_out)


def _eval_set(valid: FitData | None) -> tuple[Any, ...] | None:
    if valid is None:
        return None
    return (valid.X, valid.y) if valid.sample_weight is None else (valid.X, valid.y, valid.sample_weight)


def _baselines(problem: TrainProblem, matrices: Matrices, scored: Any) -> dict[str, Any]:
    """The zero-rule and random baselines, on the validation rows (else the scored training rows)."""
    from mlsys_cli.models.metrics import baseline_metrics

    data = matrices.train
    eval_y = matrices.valid.y if matrices.valid is not None else data.y[scored]
    train_labels, prior_weights = baseline_inputs(problem.task, data.y, problem.classes, data.sample_weight)
    return baseline_metrics(problem.task, train_labels, problem.labels(eval_y), problem.classes,
                            seed=problem.estimator.seed, sample_weight=prior_weights)


def _fit(family: Any, spec: EstimatorSpec, data: FitData, run: FitRun) -> tuple[Any, dict[str, Any], list[str]]:
    """:func:`fit_estimator` on the training matrix: the estimator, its fit record (with what it
    continued from, when ``run.init``) and the warnings the fit raised, once each."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        est = fit_estimator(family, spec, data, run)
    caught = list(dict.fromkeys(f"{r.category.__name__}: {str(r.message).splitlines()[0]}" for r in records))
    fit_info = dict(getattr(est, "fit_info_", {}))
    if run.init is not None:
        fit_info["warm_start"] = est.warm_start_
    return est, fit_info, caught


def _predictor(family: Any, problem: TrainProblem, matrices: Matrices, fitted: tuple[Any, dict[str, Any]],
               calibrate: str | None) -> Any:
    """The SinglePredictor of the fitted estimator, its calibrator fitted on the validation rows."""
    from mlsys_cli.models.predictors import Calibrator, SinglePredictor

    est, fit_info = fitted
    estimator = problem.estimator
    spec = {"task": estimator.task, "n_classes": estimator.n_classes, "params": estimator.params,
            "seed": estimator.seed, "n_features": int(matrices.train.X.shape[1]), "fit_info": fit_info}
    predictor = SinglePredictor(matrices.featurizer, family, est, spec)
    if calibrate:
        valid = matrices.valid
        predictor.calibrator = Calibrator(calibrate).fit(predictor.scores_from_features(valid.X, calibrated=False),
                                                          valid.y, sample_weight=valid.sample_weight)
    return predictor


def _measure(predictor: Any, problem: TrainProblem, matrices: Matrices, scored: Any, baselines: Mapping[str, Any]) -> _Measured:
    """Metrics on the scored training rows and the validation rows, and the feature importance."""
    from mlsys_cli.models.metrics import compute_metrics, primary_metric

    def score(X: Any, y: Any) -> tuple[Any, dict[str, Any]]:
        s = predictor.scores_from_features(X)
        return s, compute_metrics(problem.task, problem.labels(y), s, problem.classes)

    data, valid = matrices.train, matrices.valid
    train_scores, train_metrics = score(data.X[scored], data.y[scored])
    valid_metrics = score(valid.X, valid.y)[1] if valid is not None else None
    metric_name, higher = primary_metric(problem.task)
    metrics = {"evaluated_on": "valid" if valid is not None else "train",
               "primary": {"name": metric_name, "higher_is_better": higher}, "train": train_metrics,
               "train_scored": {"rows": int(len(scored)), "of": int(len(data.y)), "seed": problem.estimator.seed},
               "valid": valid_metrics, "baselines": baselines}
    names = list(matrices.featurizer.get_feature_names_out())
    return _Measured(metrics, train_scores, ranked_importance(predictor.family, predictor.estimator, names))


def _notes(calibrate: str | None, no_valid: bool, n_scored: int, n_rows: int) -> list[str]:
    """The report's warnings about how the metrics were measured."""
    notes = []
    if calibrate:
        notes.append("the validation metrics include the calibrator fitted on those rows; evaluate on a test table")
    if no_valid:
        notes.append("no --valid table: metrics are on the training rows and flatter the model")
    if n_scored < n_rows:
        notes.append(f"train metrics and the prediction reference are on a seeded sample of {n_scored:,} "
                     f"of the {n_rows:,} training rows (manifest: metrics.train_scored)")
    return notes


def _out_of_range_notes(featurizer: Any, train_df: Any, valid_df: Any) -> list[str]:
    """The inf (or beyond float32) values the model reads as missing, counted in train and valid."""
    from mlsys_cli.features.schema import out_of_range, out_of_range_warnings

    notes = out_of_range_warnings(out_of_range(train_df, featurizer.input_schema_), " (train)")
    if valid_df is not None:
        notes += out_of_range_warnings(out_of_range(valid_df, featurizer.input_schema_), " (valid)")
    return notes


def _report(spec: TrainSpec, problem: TrainProblem, model: tuple[Any, Matrices, _Measured], notes: list[str],
            start: float) -> TrainResult:
    """What ``mlsys train`` reports; ``start`` is when the step began (``time.perf_counter``)."""
    predictor, matrices, measured = model
    metrics = measured.metrics
    rows = {"train": int(len(matrices.train.y)), "valid": int(len(matrices.valid.y)) if matrices.valid is not None else 0}
    return TrainResult(
        model=predictor.family.name, task=problem.task, target=problem.target, classes=problem.classes, rows=rows,
        evaluated_on=metrics["evaluated_on"], primary_metric=metrics["primary"]["name"],
        metrics={"train": metrics["train"], "valid": metrics["valid"]}, baselines=metrics["baselines"],
        params=problem.estimator.params, fit=predictor.spec["fit_info"], n_features=predictor.spec["n_features"],
        top_features=measured.importance[:TOP_FEATURES], seconds=round(time.perf_counter() - start, 3),
        calibrate=spec.calibrate, warnings=role_warnings(matrices.featurizer) + notes,
    )


def _manifest(spec: TrainSpec, problem: TrainProblem, model: tuple[Any, Matrices, _Measured], sources: _Sources) -> Any:
    """The typed manifest: the recipe, metrics, reference statistics, importance and libraries."""
    from mlsys_cli.data.io import input_record, invocation, resolve_inputs
    from mlsys_cli.data.profile import profile_values
    from mlsys_cli.models.manifest import Manifest, Recipe

    predictor, matrices, measured = model
    name, estimator = predictor.family.name, problem.estimator
    schema = list(matrices.featurizer.input_schema_)
    valid = [input_record(p) for p in resolve_inputs(_paths(sources.valid))] if sources.valid is not None else None
    recipe = Recipe(
        family=name, task=problem.task, target=problem.target, params=estimator.params, seed=estimator.seed,
        features=matrices.features, class_weight=spec.class_weight, sample_weight=spec.sample_weight,
        calibrate=spec.calibrate, fit=predictor.spec["fit_info"], command=invocation(),
        data={"train": [input_record(p) for p in resolve_inputs(_paths(sources.train))], "valid": valid},
    )
    libs = libraries(name)
    return Manifest(
        mlsys_version=libs["mlsys"], task=problem.task, target=problem.target, classes=problem.classes,
        input_schema=schema, recipe=recipe, metrics=measured.metrics,
        reference={"features": _reference(sources.reference, sources.train_df, schema),
                   "predictions": prediction_reference(problem.task, measured.train_scores, problem.classes),
                   # The training labels' distribution: drift's label shift, evaluate's zero rule.
                   "target": profile_values(sources.train_df[problem.target].to_numpy())},
        importance=measured.importance, libraries=libs,
    )


def _read_tables(train: Any, valid: Any, target: str | None) -> tuple[Any, Any, str]:
    """The training and validation frames and the target column (checked, exit 3 when unusable)."""
    from mlsys_cli.data.io import read_frame

    train_df = read_frame(train)
    if len(train_df) == 0:
        raise InputError(f"{_name(train)}: no rows")
    target = resolve_target(train_df, target, train)
    valid_df = read_frame(valid) if valid is not None else None
    if valid_df is not None and target not in valid_df.columns:
        raise InputError(f"{_name(valid)}: no target column {target!r}")
    check_target(train_df[target], target, train)
    return train_df, valid_df, target


def _featurize(family: Any, frame: Any, features: Any, problem: tuple[str, str, int],
               source: Any) -> tuple[Any, Any, dict[str, Any]]:
    """The featurizer, the training matrix and the featurizer settings the recipe records.

    ``features`` is a features-bundle path (used as fitted) or Featurizer settings (fitted here
    for ``problem``: target, task, seed). Target-encoded columns of the training matrix are
    cross-fitted (out of fold) either way.
    """
    target, task, seed = problem
    from mlsys_cli.data.io import input_record

    if isinstance(features, (str, bytes)) or hasattr(features, "__fspath__"):
        featurizer = load_features(features, target)
        return featurizer, featurizer.transform_train(frame, dtype=family.input_dtype), {"bundle": input_record(features)}
    spec = {"preset": family.preset, "family": family.name, "task": task, **dict(features or {})}
    featurizer = make_featurizer(target, family.preset, spec, seed)
    X = featurizer.fit_transform(frame, dtype=family.input_dtype)
    return featurizer, X, spec


def _reference(started: Any, df: Any, schema: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Profiles of the model's input columns: the ones computed ahead where the types agree."""
    from mlsys_cli.data.profile import profile_frame

    ahead = started.result()
    missing = [c for c in schema if ahead.get(c["name"], {}).get("type") != c["type"]]
    again = profile_frame(df, missing) if missing else {}
    return {c["name"]: again.get(c["name"]) or ahead[c["name"]] for c in schema}


def _paths(source: Any) -> list[Any]:
    return list(source) if isinstance(source, (list, tuple)) else [source]
