"""Metrics by task, the primary metric, and the zero-rule and random baselines.

Pure numpy/scikit-learn so that evaluate (confidence intervals, slices), tune and ensemble all
score a model the same way. A metric that is undefined on the data (AUC on a slice with one
class) is ``None``, never an exception.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError

TASKS = ("binary", "multiclass", "regression")

_PRIMARY = {"binary": ("auc", True), "multiclass": ("log_loss", False), "regression": ("rmse", False)}

# Direction of every metric compute_metrics returns (True: higher is better).
HIGHER_IS_BETTER = {
    "auc": True, "log_loss": False, "accuracy": True, "f1": True, "precision": True, "recall": True,
    "brier": False, "f1_macro": True, "f1_weighted": True, "auc_ovr": True,
    "rmse": False, "mae": False, "r2": True,
}


def primary_metric(task: str) -> tuple[str, bool]:
    """The metric a task is judged by and whether higher is better.

    Examples
    --------
    >>> primary_metric("binary")
    ('auc', True)
    """
    try:
        return _PRIMARY[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}") from None


def _probabilities(output: Any, n_classes: int) -> Any:
    import numpy as np

    proba = output["probabilities"] if isinstance(output, Mapping) else output
    proba = np.asarray(proba, dtype=float)
    if proba.ndim == 1:  # binary scores given as P(positive class)
        proba = np.column_stack([1.0 - proba, proba])
    if proba.shape[1] != n_classes:
        raise ValueError(f"output has {proba.shape[1]} probability columns for {n_classes} classes")
    return proba


def encode_labels(y_true: Any, classes: Sequence[Any]) -> Any:
    """Map labels to class indices (``-1`` for a label not in ``classes``)."""
    import numpy as np

    import pandas as pd

    index = {class_key(c): i for i, c in enumerate(classes)}
    if hasattr(y_true, "to_numpy"):
        values = y_true.to_numpy()
    elif isinstance(y_true, np.ndarray):
        values = y_true
    else:
        values = np.array(list(y_true), dtype=object)
    # Look each distinct label up once (a few classes), then index back; missing labels give -1.
    codes, distinct = pd.factorize(values, use_na_sentinel=True)
    lookup = np.array([index.get(class_key(v), -1) for v in distinct.tolist()] + [-1], dtype=np.int64)
    return lookup[codes]


def unknown_labels_error(unknown: Sequence[Any], classes: Sequence[Any], what: str) -> InputError:
    """The error for labels that are none of the model's classes (exit 3), with the likely cause.

    Labels whose text is a class's text differ in type (``"1"`` read as text from a CSV, the
    model's ``1`` a number, or the reverse); labels equal to a class but for surrounding spaces
    differ by those spaces. Either is named, since both print alike.
    """
    distinct = sorted({str(v) for v in unknown})
    texts = {str(c) for c in classes}
    hint = f"the model's classes: {', '.join(map(label_text, classes))}"
    if set(distinct) & texts:
        kinds = sorted({type(class_key(v)).__name__ for v in unknown})
        hint += (f" ({'/'.join(sorted({type(class_key(c)).__name__ for c in classes}))}); these labels are "
                 f"{'/'.join(kinds)} with the same text: cast the target column to the model's type")
    elif {t.strip() for t in distinct} & {t.strip() for t in texts}:
        hint += " (the labels differ by surrounding spaces: strip them)"
    return InputError(f"{what} holds label{'s' if len(distinct) > 1 else ''} the model does not know: "
                      + ", ".join(map(label_text, distinct[:5])), hint)


def label_text(label: Any) -> str:
    """A label as the user can see it: quoted when spaces around it (or nothing) would hide what it is."""
    text = str(label)
    return repr(text) if text != text.strip() or not text else text


def class_key(value: Any) -> Any:
    """A class label as the plain Python value JSON holds: 1, 1.0 and numpy.int64(1) are one class."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _safe(fn: Any, *args: Any, **kwargs: Any) -> float | None:
    import math
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(fn(*args, **kwargs))
        except ValueError:
            return None
    return value if math.isfinite(value) else None


def compute_metrics(task: str, y_true: Any, output: Any, classes: Sequence[Any] | None = None,
                    threshold: float = 0.5, sample_weight: Any = None) -> dict[str, float | None]:
    """Score predictions against the truth.

    Parameters
    ----------
    task : {"binary", "multiclass", "regression"}
    y_true : array-like
        True labels (original class values) or values.
    output : dict or array
        What ``ModelBundle.predict`` returns, or the bare array: probabilities ``[N, C]``
        (``[N]`` = P(second class) for binary) or predicted values ``[N]``.
    classes : sequence, optional
        Class labels in the column order of the probabilities (required for classification).
    threshold : float
        Binary decision threshold on P(second class) for accuracy, F1, precision and recall.
    sample_weight : array-like, optional

    Returns
    -------
    dict
        binary: auc, log_loss, accuracy, f1, precision, recall, brier; multiclass: accuracy,
        log_loss, f1_macro, f1_weighted, auc_ovr; regression: rmse, mae, r2. ``None`` where a
        metric is undefined on this data.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if task == "regression":
        return _regression_metrics(y_true, output, sample_weight)
    if classes is None:
        raise ValueError("classes are required to score a classifier")
    proba = _probabilities(output, len(classes))
    y = encode_labels(list(y_true), classes)
    if (y < 0).any():
        raise unknown_labels_error([v for v, i in zip(y_true, y) if i < 0], classes, "the target")
    if task == "binary":
        return _binary_metrics(y, proba, threshold, sample_weight)
    return _multiclass_metrics(y, proba, sample_weight)


def _regression_metrics(y_true: Any, output: Any, sample_weight: Any) -> dict[str, float | None]:
    import numpy as np
    from sklearn import metrics as skm

    pred = np.asarray(output["prediction"] if isinstance(output, Mapping) else output, dtype=float).ravel()
    y = np.asarray(y_true, dtype=float)
    if len(y) == 0:
        return {"rmse": None, "mae": None, "r2": None}
    return {
        "rmse": _safe(lambda: np.sqrt(skm.mean_squared_error(y, pred, sample_weight=sample_weight))),
        "mae": _safe(skm.mean_absolute_error, y, pred, sample_weight=sample_weight),
        "r2": _safe(skm.r2_score, y, pred, sample_weight=sample_weight) if len(y) > 1 else None,
    }


def _binary_metrics(y: Any, proba: Any, threshold: float, sample_weight: Any) -> dict[str, float | None]:
    """Binary metrics of class indices ``y`` against probabilities ``[N, 2]``."""
    import numpy as np
    from sklearn import metrics as skm

    if len(y) == 0:
        return dict.fromkeys(("auc", "log_loss", "accuracy", "f1", "precision", "recall", "brier"))
    p1 = proba[:, 1]
    pred = (p1 >= threshold).astype(int)
    return {
        "auc": _safe(skm.roc_auc_score, y, p1, sample_weight=sample_weight) if len(np.unique(y)) > 1 else None,
        "log_loss": _safe(skm.log_loss, y, proba, labels=list(range(proba.shape[1])), sample_weight=sample_weight),
        "accuracy": _safe(skm.accuracy_score, y, pred, sample_weight=sample_weight),
        "f1": _safe(skm.f1_score, y, pred, zero_division=0, sample_weight=sample_weight),
        "precision": _safe(skm.precision_score, y, pred, zero_division=0, sample_weight=sample_weight),
        "recall": _safe(skm.recall_score, y, pred, zero_division=0, sample_weight=sample_weight),
        "brier": _safe(skm.brier_score_loss, y, p1, sample_weight=sample_weight),
    }


def _multiclass_metrics(y: Any, proba: Any, sample_weight: Any) -> dict[str, float | None]:
    """Multiclass metrics of class indices ``y`` against probabilities ``[N, C]``."""
    import numpy as np
    from sklearn import metrics as skm

    if len(y) == 0:
        return dict.fromkeys(("accuracy", "log_loss", "f1_macro", "f1_weighted", "auc_ovr"))
    labels = list(range(proba.shape[1]))
    pred = proba.argmax(axis=1)
    # One-vs-rest AUC needs every class present in y_true (sklearn refuses otherwise).
    auc_defined = len(np.unique(y)) == len(labels)
    return {
        "accuracy": _safe(skm.accuracy_score, y, pred, sample_weight=sample_weight),
        "log_loss": _safe(skm.log_loss, y, proba, labels=labels, sample_weight=sample_weight),
        "f1_macro": _safe(skm.f1_score, y, pred, average="macro", labels=labels, zero_division=0, sample_weight=sample_weight),
        "f1_weighted": _safe(skm.f1_score, y, pred, average="weighted", labels=labels, zero_division=0, sample_weight=sample_weight),
        "auc_ovr": _safe(skm.roc_auc_score, y, proba, multi_class="ovr", labels=labels, sample_weight=sample_weight)
        if auc_defined else None,
    }


def baseline_outputs(task: str, y_train: Any, n: int, classes: Sequence[Any] | None = None,
                     seed: int = 0, sample_weight: Any = None) -> dict[str, Any]:
    """Outputs of the two reference models for ``n`` rows to score.

    ``zero_rule`` predicts the training class frequencies (the mean for regression) for every row;
    ``random`` predicts random class probabilities (a random training value for regression), so
    a model that does no better than it has learned nothing.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if task == "regression":
        y = np.asarray(y_train, dtype=float)
        mean = float(np.average(y, weights=sample_weight))
        return {"zero_rule": np.full(n, mean), "random": rng.choice(y, size=n, replace=True)}
    k = len(classes)
    y = encode_labels(list(y_train), classes)
    prior = np.bincount(y, weights=sample_weight, minlength=k).astype(float)
    prior /= prior.sum()
    random = rng.dirichlet(np.ones(k), size=n)
    return {"zero_rule": np.tile(prior, (n, 1)), "random": random}


def baseline_metrics(task: str, y_train: Any, y_eval: Any, classes: Sequence[Any] | None = None,
                     seed: int = 0, sample_weight: Any = None) -> dict[str, dict[str, float | None]]:
    """Metrics of the zero-rule and random baselines on ``y_eval`` (fitted on ``y_train``)."""
    outputs = baseline_outputs(task, y_train, len(y_eval), classes, seed, sample_weight)
    return {name: compute_metrics(task, y_eval, out, classes) for name, out in outputs.items()}


def resolve_metric(task: str, metric: str | None) -> tuple[str, bool]:
    """The metric to optimise and whether higher is better (default: the task's primary metric)."""
    if metric is None:
        return primary_metric(task)
    import numpy as np

    # The metrics a task has are exactly the keys compute_metrics returns for it (empty input).
    k = {"binary": 2, "multiclass": 3}.get(task, 1)
    probe = compute_metrics(task, [], np.zeros((0, k)), list(range(k)) if task != "regression" else None)
    if metric not in probe:
        raise UsageError(f"unknown metric {metric!r} for a {task} task", f"choose one of: {', '.join(probe)}")
    return metric, HIGHER_IS_BETTER[metric]


# --------------------------------------------------------------------------- one trial
