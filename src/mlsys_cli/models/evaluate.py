"""Evaluate a model on labelled data: metrics with confidence intervals, baselines, slices,
calibration, behavioural tests and gates (the book's chapter 6, "Model offline evaluation").

Works on any *model* object with ``predict(df)`` (a dict: ``probabilities`` [N, C] and
``label`` for classifiers, ``prediction`` for regressors), ``task``, ``classes``,
``input_schema``, ``target`` and ``manifest``: a :class:`~mlsys_cli.models.bundle.ModelBundle`
or an exported ONNX model loaded by ``deploy.predict.load_model``.

Confidence intervals come from one bootstrap: ``B`` resamples of the row indices drawn once
(seeded) and held as a matrix of row multiplicities ``W`` [B, N]. Every metric is a weighted
sum over rows, so all replicates of all metrics, overall and per slice, are a few matrix
products on that one matrix (computed in chunks of replicates to bound memory). Point
estimates come from :func:`~mlsys_cli.models.metrics.compute_metrics`, so they are exactly
the numbers train, tune and ensemble report.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.metrics import compute_metrics, encode_labels, primary_metric, unknown_labels_error

CALIBRATION_BINS = 15
DEFAULT_BOOTSTRAP = 200
DEFAULT_CONFIDENCE = 0.95
MIN_SLICE_ROWS = 30
SLICE_BINS = 4
MAX_SLICE_GROUPS = 20
BEHAVIOUR_MAX_ROWS = 20_000
# Documented tolerances of the behavioural tests (commands/evaluate.md).
TOLERANCE = {"perturbation": 0.05, "invariance": 0.01, "directional": 0.05}
# A regression prediction "flips" when it moves by more than this share of the target's std.
REGRESSION_FLIP = 0.1
# Each use of randomness draws from its own stream of the seed, so that neither repeats the
# other nor the plain default_rng(seed) a user may have generated the data with.
_STREAM = {"bootstrap": 0x5EED_0001, "behaviour": 0x5EED_0002}
_BOOTSTRAP_CELLS = 2_000_000  # replicate chunk size x rows: about 16 MB of float64 at a time

BEHAVIOUR_GATES = {"perturb_flip_rate": "perturbation", "invariance_flip_rate": "invariance",
                   "expect_violation_rate": "directional"}
GATE_SCOPES = ("slice_min", "slice_max", "ci_low", "ci_high")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
_REQUIRE = re.compile(r"^\s*(?:(?P<scope>[a-z_]+):)?(?P<metric>[a-z][a-z0-9_]*)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


# --------------------------------------------------------------------------- gates


@dataclass(frozen=True)
class Requirement:
    """One ``--require`` gate: ``[SCOPE:]METRIC OP NUMBER``.

    ``SCOPE`` is empty (the overall point estimate), ``ci_low``/``ci_high`` (a bound of its
    confidence interval) or ``slice_min``/``slice_max`` (the lowest/highest value over every
    slice with enough rows).
    """

    text: str
    metric: str
    op: str
    value: float
    scope: str = ""

    def holds(self, observed: float | None) -> bool:
        return observed is not None and math.isfinite(observed) and _OPS[self.op](observed, self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"requirement": self.text, "scope": self.scope or "overall", "metric": self.metric, "op": self.op, "value": self.value}


def parse_requirement(text: str) -> Requirement:
    """Parse ``"auc>=0.8"``, ``"ece<=0.05"``, ``"slice_min:auc>=0.7"`` (bad syntax: exit 2).

    Examples
    --------
    >>> parse_requirement("ci_low:auc >= 0.8")
    Requirement(text='ci_low:auc>=0.8', metric='auc', op='>=', value=0.8, scope='ci_low')
    """
    m = _REQUIRE.match(text or "")
    if not m:
        raise UsageError(f"invalid --require {text!r}", "use METRIC OP NUMBER, e.g. --require 'auc>=0.8' or 'slice_min:auc>=0.7'")
    scope = m["scope"] or ""
    if scope and scope not in GATE_SCOPES:
        raise UsageError(f"invalid --require {text!r}: unknown scope {scope!r}", f"scopes: {', '.join(GATE_SCOPES)}")
    value = float(m["value"])
    canonical = f"{scope + ':' if scope else ''}{m['metric']}{m['op']}{m['value']}"
    return Requirement(canonical, m["metric"], m["op"], value, scope)


def gate_metrics(task: str) -> list[str]:
    """The metric names ``--require`` accepts for a task."""
    return [*_metric_names(task), *(["ece"] if task != "regression" else []), *BEHAVIOUR_GATES]


def _metric_names(task: str) -> list[str]:
    return {"binary": ["auc", "log_loss", "accuracy", "f1", "precision", "recall", "brier"],
            "multiclass": ["accuracy", "log_loss", "f1_macro", "f1_weighted", "auc_ovr"],
            "regression": ["rmse", "mae", "r2"]}[task]


def check_requirements(task: str, requirements: Sequence[Requirement], requested: Mapping[str, bool]) -> None:
    """Refuse (exit 2) a gate on a metric the task lacks, or on a test or slice not requested."""
    names = gate_metrics(task)
    for req in requirements:
        if req.metric not in names:
            raise UsageError(f"--require {req.text}: unknown metric {req.metric!r} for a {task} model",
                             f"metrics: {', '.join(names)}")
        if req.metric in BEHAVIOUR_GATES and not requested.get(BEHAVIOUR_GATES[req.metric]):
            flag = {"perturbation": "--perturb", "invariance": "--invariant", "directional": "--expect"}[BEHAVIOUR_GATES[req.metric]]
            raise UsageError(f"--require {req.text} needs {flag}")
        if req.scope.startswith("slice") and not requested.get("slices"):
            raise UsageError(f"--require {req.text} needs --slice")
        if req.scope.startswith("ci") and req.metric in BEHAVIOUR_GATES:
            raise UsageError(f"--require {req.text}: behavioural rates have no confidence interval")


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, replicates: int, seed: int) -> Any:
    """Row multiplicities of ``replicates`` bootstrap resamples of ``n`` rows, in chunks.

    Yields float arrays [c, n] (``c`` replicates per chunk); the same ``n``, ``replicates`` and
    ``seed`` give the same resamples.
    """
    import numpy as np

    rng = np.random.default_rng([seed, _STREAM["bootstrap"]])
    chunk = max(1, min(replicates, _BOOTSTRAP_CELLS // max(n, 1)))
    done = 0
    while done < replicates:
        c = min(chunk, replicates - done)
        idx = rng.integers(0, n, size=(c, n))
        flat = (idx + (np.arange(c) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=c * n).reshape(c, n).astype(float)
        done += c


def _ratio(num: Any, den: Any, empty: float = math.nan) -> Any:
    import numpy as np

    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, empty)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_auc(W: Any, y: Any, score: Any) -> Any:
    """ROC AUC of ``score`` for binary ``y`` under each row of weights ``W`` [B, N] (ties count half)."""
    import numpy as np

    order = np.argsort(score, kind="mergesort")
    s, yy = score[order], y[order].astype(float)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.array([0])
    if len(s) == 0:
        return np.full(W.shape[0], np.nan)
    Ws = W[:, order]
    pos = np.add.reduceat(Ws * yy, starts, axis=1)
    neg = np.add.reduceat(Ws, starts, axis=1) - pos
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    return _ratio(num, pos.sum(axis=1) * neg.sum(axis=1))


def weighted_metrics(task: str, W: Any, y: Any, out: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Every metric of ``compute_metrics`` under each row of weights ``W`` [B, N].

    ``y`` is the class index (classification) or the value (regression); ``out`` the
    probabilities [N, C] or predictions [N]. With ``W`` of ones the values equal
    ``compute_metrics`` on the same rows; a metric undefined under some weights is NaN there.
    """
    import numpy as np

    # Per-row terms stacked as columns: one matrix product reads W once for all the sums.
    if task == "regression":
        err = out - y
        tot, sum_y, sum_y2, sse, sae = (W @ np.column_stack([np.ones_like(y), y, y * y, err * err, np.abs(err)])).T
        sst = sum_y2 - tot * _ratio(sum_y, tot) ** 2
        r2 = np.where(sst > 1e-12 * np.maximum(tot, 1), 1.0 - _ratio(sse, sst), np.nan)
        return {"rmse": np.sqrt(_ratio(sse, tot)), "mae": _ratio(sae, tot), "r2": r2}
    eps = np.finfo(float).eps
    loss = -np.log(np.clip(out[np.arange(len(y)), y], eps, 1 - eps))
    if task == "binary":
        p1 = out[:, 1]
        yb = (y == 1).astype(float)
        pred = (p1 >= threshold).astype(float)
        terms = np.column_stack([np.ones_like(yb), loss, pred * yb, pred, yb, (pred == yb).astype(float), (p1 - yb) ** 2])
        tot, loss_sum, tp, pp, P, correct, sq = (W @ terms).T
        return {
            "auc": weighted_auc(W, yb, p1),
            "log_loss": _ratio(loss_sum, tot),
            "accuracy": _ratio(correct, tot),
            "f1": _ratio(2 * tp, pp + P, 0.0),
            "precision": _ratio(tp, pp, 0.0),
            "recall": _ratio(tp, P, 0.0),
            "brier": _ratio(sq, tot),
        }
    tot = W.sum(axis=1)
    log_loss = _ratio(W @ loss, tot)
    k = out.shape[1]
    pred = out.argmax(axis=1)
    onehot_true = np.eye(k)[y]
    onehot_pred = np.eye(k)[pred]
    tp = W @ (onehot_true * onehot_pred)
    support, predicted = W @ onehot_true, W @ onehot_pred
    f1 = _ratio(2 * tp, support + predicted, 0.0)
    aucs = np.stack([weighted_auc(W, onehot_true[:, j], out[:, j]) for j in range(k)], axis=1)
    return {
        "accuracy": _ratio(tp.sum(axis=1), tot),
        "log_loss": log_loss,
        "f1_macro": f1.mean(axis=1),
        "f1_weighted": _ratio((f1 * support).sum(axis=1), support.sum(axis=1)),
        # sklearn's one-vs-rest AUC is defined only when every class occurs.
        "auc_ovr": np.where((support > 0).all(axis=1), aucs.mean(axis=1), np.nan),
    }


def weighted_ece(W: Any, confidence: Any, hit: Any, bins: int = CALIBRATION_BINS) -> Any:
    """Expected calibration error under each row of weights ``W`` [B, N].

    ``confidence`` in [0, 1] is binned into ``bins`` equal-width bins (right-open, the last
    closed); ECE = sum over bins of (bin rows / rows) x |mean confidence - mean hit|.
    """
    import numpy as np
    from scipy import sparse

    b = np.minimum((np.asarray(confidence) * bins).astype(int), bins - 1)
    n = len(b)
    rows = np.arange(n)
    onehot = sparse.csr_matrix((np.ones(n), (rows, b)), shape=(n, bins))
    conf_sum = (onehot.multiply(np.asarray(confidence)[:, None]).T @ W.T).T
    hit_sum = (onehot.multiply(np.asarray(hit, dtype=float)[:, None]).T @ W.T).T
    return _ratio(np.abs(np.asarray(conf_sum) - np.asarray(hit_sum)).sum(axis=1), W.sum(axis=1))


def interval(reps: Any, confidence: float) -> tuple[float | None, float | None]:
    import numpy as np

    reps = np.asarray(reps, dtype=float)
    reps = reps[np.isfinite(reps)]
    if len(reps) < 2:
        return None, None
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- calibration


def reliability_table(confidence: Any, hit: Any, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Per non-empty bin: its edges, rows, mean confidence and observed frequency."""
    import numpy as np

    confidence = np.asarray(confidence, dtype=float)
    hit = np.asarray(hit, dtype=float)
    b = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(b, minlength=bins)
    conf = np.bincount(b, weights=confidence, minlength=bins)
    obs = np.bincount(b, weights=hit, minlength=bins)
    return [{"bin": int(i), "lower": i / bins, "upper": (i + 1) / bins, "rows": int(counts[i]),
             "mean_predicted": float(conf[i] / counts[i]), "observed": float(obs[i] / counts[i])}
            for i in range(bins) if counts[i]]


def _calibration_inputs(task: str, y: Any, proba: Any) -> tuple[Any, Any, str]:
    """Binary: P(positive) against the positive rate; multiclass: top-label confidence."""
    if task == "binary":
        return proba[:, 1], (y == 1).astype(float), "positive_class"
    return proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float), "top_label"


# --------------------------------------------------------------------------- slices


def slice_groups(df: Any, column: str, bins: int = SLICE_BINS, max_groups: int = MAX_SLICE_GROUPS) -> list[tuple[str, Any]]:
    """Partition rows by a column: ``(label, boolean mask)`` per group, in a stable order.

    Numeric columns with more than ``bins`` distinct values are cut at quantiles (labels like
    ``[12, 30)``); others group by value, the ``max_groups - 1`` largest kept and the rest
    merged into ``(other)``; missing values form ``(missing)``.
    """
    import numpy as np
    import pandas as pd

    if column not in df.columns:
        raise InputError(f"no column {column!r} to slice by", f"columns: {', '.join(map(str, df.columns[:20]))}")
    s = df[column]
    missing = s.isna().to_numpy()
    groups: list[tuple[str, Any]] = []
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    if numeric and s.nunique(dropna=True) > bins:
        values = s.to_numpy(dtype=float)
        edges = np.unique(np.nanquantile(values, np.linspace(0, 1, bins + 1)))
        idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        for i in range(len(edges) - 1):
            mask = (idx == i) & ~missing
            close = "]" if i == len(edges) - 2 else ")"
            groups.append((f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{close}", mask))
    else:
        keys = s.astype(str).where(~s.isna(), None)
        counts = keys.value_counts(dropna=True)
        ordered = sorted(counts.index, key=lambda k: (-counts[k], k))
        kept = ordered if len(ordered) <= max_groups else ordered[: max_groups - 1]
        for k in kept:
            groups.append((str(k), (keys == k).to_numpy() & ~missing))
        rest = ordered[len(kept):]
        if rest:
            groups.append(("(other)", keys.isin(rest).to_numpy() & ~missing))
    if missing.any():
        groups.append(("(missing)", missing))
    return [(label, mask) for label, mask in groups if mask.any()]


# --------------------------------------------------------------------------- behavioural tests


def parse_expectation(text: str) -> tuple[str, int, str | None]:
    """``COL:+`` / ``COL:-`` (``COL:+:CLASS`` for multiclass) -> (column, +1 or -1, class).

    ``+``: increasing COL should not lower the prediction; ``-``: it should not raise it.
    """
    parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.rsplit(":", 1)
    if len(parts) < 2 or parts[1] not in ("+", "-") or not parts[0]:
        raise UsageError(f"invalid --expect {text!r}", "use COL:+ (increasing COL should not lower the prediction) or COL:-")
    return parts[0], (1 if parts[1] == "+" else -1), (parts[2] if len(parts) == 3 else None)


def _numeric_inputs(model: Any, df: Any) -> list[str]:
    import pandas as pd

    cols = []
    for spec in getattr(model, "input_schema", None) or []:
        name = spec.get("name")
        if name in df.columns and spec.get("type") == "float" and spec.get("role") not in ("id", "constant", "drop", "dropped"):
            if pd.api.types.is_numeric_dtype(df[name]) and not pd.api.types.is_bool_dtype(df[name]):
                cols.append(name)
    return cols


def _score(task: str, output: Mapping[str, Any], threshold: float, cls: int | None = None) -> tuple[Any, Any]:
    """(decision, continuous score) of a prediction, for flip and direction checks."""
    import numpy as np

    if task == "regression":
        pred = np.asarray(output["prediction"], dtype=float).ravel()
        return pred, pred
    proba = np.asarray(output["probabilities"], dtype=float)
    if task == "binary":
        return (proba[:, 1] >= threshold).astype(int), proba[:, 1]
    return proba.argmax(axis=1), proba[:, cls] if cls is not None else proba


def _delta(task: str, base: Any, new: Any, scale: float) -> tuple[Any, Any]:
    """Per row: did the decision flip, and how far did the score move."""
    import numpy as np

    (d0, s0), (d1, s1) = base, new
    moved = np.abs(s1 - s0)
    if moved.ndim == 2:
        moved = moved.max(axis=1)
    if task == "regression":
        return moved > REGRESSION_FLIP * scale, moved
    return d0 != d1, moved


@dataclass(frozen=True)
class BehaviourResult:
    """One behavioural test: its rate (flips or violations), against its tolerance."""

    test: str
    column: str
    rows: int
    rate: float
    mean_abs_delta: float
    tolerance: float
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BehaviourSpec:
    """The behavioural tests to run (Ribeiro et al., 2020); none by default.

    Parameters
    ----------
    perturb : float, optional
        Gaussian noise with std ``perturb`` x each numeric input's std; rate = share of
        decisions that flip (regression: predictions moving more than 0.1 x the target's std).
    invariant : columns
        Each replaced by a seeded permutation of its own values; rate = share of flips.
    expect : ``COL:+`` / ``COL:-`` (``COL:+:CLASS`` for multiclass)
        ``COL`` increased by one std; rate = share of rows whose score then falls (``+``) or
        rises (``-``): the score is P(positive), P(CLASS) or the predicted value.
    max_rows : int
        Tests run on a seeded sample of at most this many rows.
    """

    perturb: float | None = None
    invariant: Sequence[str] = ()
    expect: Sequence[str] = ()
    max_rows: int = BEHAVIOUR_MAX_ROWS

    def __post_init__(self) -> None:
        object.__setattr__(self, "invariant", tuple(self.invariant))
        object.__setattr__(self, "expect", tuple(self.expect))

    @property
    def count(self) -> int:
        """How many tests run."""
        return (self.perturb is not None) + len(self.invariant) + len(self.expect)


@dataclass(frozen=True, eq=False)
class _Probe:
    """The model and its predictions on the tests' rows, which every test compares against."""

    model: Any
    df: Any
    base: Mapping[str, Any]  # model.predict(df)
    threshold: float
    target_std: float

    @property
    def task(self) -> str:
        return self.model.task

    def flips(self, changed: Any) -> tuple[Any, Any]:
        """Per row of ``changed`` (``df`` altered): did the decision flip, and how far did the score move."""
        task = self.task
        return _delta(task, _score(task, self.base, self.threshold), _score(task, self.model.predict(changed), self.threshold),
                      self.target_std)


def behavioural_tests(model: Any, df: Any, spec: BehaviourSpec, *, threshold: float = 0.5, seed: int = 0,
                      target_std: float = 1.0, progress: Any = None) -> list[BehaviourResult]:
    """Perturbation, invariance and directional-expectation tests (Ribeiro et al., 2020).

    Parameters
    ----------
    model : object
        ``predict(df)``, ``task``, ``classes``, ``input_schema``.
    df : pandas.DataFrame
    spec : BehaviourSpec
        Which tests, and on at most how many (seeded) rows.
    threshold : float
        Binary decision threshold.
    seed : int
        Seeds the row sample, the noise and the permutations.
    target_std : float
        The target's std (regression: a prediction flips when it moves by 0.1 of it).
    progress : object, optional
        ``advance()`` after each test.
    """
    import numpy as np

    rng = np.random.default_rng([seed, _STREAM["behaviour"]])
    if len(df) > spec.max_rows:
        df = df.iloc[np.sort(rng.choice(len(df), size=spec.max_rows, replace=False))]
    df = df.reset_index(drop=True)
    expectations = [parse_expectation(e) for e in spec.expect]
    for column in [*spec.invariant, *(c for c, _, _ in expectations)]:
        if column not in df.columns:
            raise InputError(f"no column {column!r} in the data (named by --invariant/--expect)")
    probe = _Probe(model, df, model.predict(df), threshold, target_std)
    results: list[BehaviourResult] = []
    if spec.perturb is not None:
        results.append(_perturbation(probe, spec.perturb, rng))
        _advance(progress)
    for col in spec.invariant:
        results.append(_invariance(probe, col, rng))
        _advance(progress)
    for expectation in expectations:
        results.append(_directional(probe, expectation))
        _advance(progress)
    return results


def _perturbation(probe: _Probe, perturb: float, rng: Any) -> BehaviourResult:
    import numpy as np

    df = probe.df
    noisy = df.copy()
    cols = _numeric_inputs(probe.model, df)
    for col in cols:
        values = noisy[col].to_numpy(dtype=float)
        std = float(np.nanstd(values))
        if std > 0:
            noisy[col] = values + rng.normal(0.0, perturb * std, size=len(values))
    flips, moved = probe.flips(noisy)
    rate = float(flips.mean()) if len(flips) else 0.0
    return BehaviourResult("perturbation", f"{len(cols)} numeric inputs", len(df), rate, float(moved.mean()),
                           TOLERANCE["perturbation"], rate <= TOLERANCE["perturbation"],
                           f"gaussian noise of {perturb:g} x std on {', '.join(cols) or 'no column'}")


def _invariance(probe: _Probe, col: str, rng: Any) -> BehaviourResult:
    df = probe.df
    shuffled = df.copy()
    shuffled[col] = df[col].to_numpy()[rng.permutation(len(df))]
    flips, moved = probe.flips(shuffled)
    rate = float(flips.mean()) if len(flips) else 0.0
    return BehaviourResult("invariance", col, len(df), rate, float(moved.mean()), TOLERANCE["invariance"],
                           rate <= TOLERANCE["invariance"], "values permuted across rows")


def _directional(probe: _Probe, expectation: tuple[str, int, str | None]) -> BehaviourResult:
    import numpy as np
    import pandas as pd

    col, sign, cls_name = expectation
    df, task = probe.df, probe.task
    if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
        raise UsageError(f"--expect {col}: column {col!r} is not numeric")
    cls = _expected_class(col, cls_name, task, list(getattr(probe.model, "classes", None) or []))
    values = df[col].to_numpy(dtype=float)
    std = float(np.nanstd(values)) or 1.0
    moved = df.copy()
    moved[col] = values + std
    s0 = _score(task, probe.base, probe.threshold, cls)[1]
    s1 = _score(task, probe.model.predict(moved), probe.threshold, cls)[1]
    change = (s1 - s0) * sign
    # A change smaller than this is float noise, not a violation.
    eps = 1e-6 * (float(np.nanstd(s0)) or 1.0)
    violations = change < -eps
    rate = float(np.mean(violations)) if len(change) else 0.0
    what = "prediction" if task == "regression" else "probability" + (f" of {cls_name}" if cls_name else "")
    moved_by = float(np.mean(np.abs(s1 - s0))) if len(change) else 0.0
    # An expectation the model cannot violate because it ignores the column is not met either.
    responds = moved_by > eps
    detail = (f"increasing {col} by {std:.4g} should not {'lower' if sign > 0 else 'raise'} the {what}" if responds
              else f"increasing {col} by {std:.4g} does not move the {what} at all: the model ignores {col}")
    return BehaviourResult("directional", f"{col}:{'+' if sign > 0 else '-'}", len(df), rate, moved_by,
                           TOLERANCE["directional"], responds and rate <= TOLERANCE["directional"], detail)


def _expected_class(col: str, cls_name: str | None, task: str, classes: list) -> int | None:
    """The index of the class whose probability ``--expect COL:+:CLASS`` watches (multiclass only)."""
    if task != "multiclass":
        return None
    if cls_name is None:
        raise UsageError(f"--expect {col}: a multiclass model needs the class, e.g. --expect '{col}:+:{classes[-1]}'")
    matches = [i for i, c in enumerate(classes) if str(c) == cls_name]
    if not matches:
        raise UsageError(f"--expect {col}: unknown class {cls_name!r}", f"classes: {', '.join(map(str, classes))}")
    return matches[0]


def _advance(progress: Any) -> None:
    if progress is not None:
        progress.advance(1)


# --------------------------------------------------------------------------- the evaluation


@dataclass(frozen=True)
class Evaluation:
    """Everything ``mlsys evaluate`` reports (keys documented in commands/evaluate.md)."""

    model: str
    data: str
    task: str
    target: str
    rows: int
    dropped_missing_target: int
    primary_metric: str
    threshold: float | None
    metrics: dict[str, float | None]
    ci: dict[str, list[float | None]]
    bootstrap: dict[str, Any]
    baseline: dict[str, Any]
    best_threshold: dict[str, float] | None
    confusion_matrix: dict[str, Any] | None
    calibration: dict[str, Any] | None
    slices: list[dict[str, Any]]
    behaviour: list[BehaviourResult]
    gates: list[dict[str, Any]]
    passed: bool
    slicing: dict[str, Any] | None = None
    curves: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    out_of_range: dict[str, int] = field(default_factory=dict)
    unseen_categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in self.gates if not g["passed"]]

    @property
    def worst_slices(self) -> list[dict[str, Any]]:
        return [s for s in self.slices if s["flagged"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "data": self.data, "task": self.task, "target": self.target, "rows": self.rows,
            "dropped_missing_target": self.dropped_missing_target, "primary_metric": self.primary_metric,
            "threshold": self.threshold, "metrics": self.metrics, "ci": self.ci, "bootstrap": self.bootstrap,
            "baseline": self.baseline, "best_threshold": self.best_threshold, "confusion_matrix": self.confusion_matrix,
            "calibration": self.calibration, "slicing": self.slicing, "slices": self.slices, "worst_slices": self.worst_slices,
            "behaviour": [b.to_dict() for b in self.behaviour], "gates": self.gates, "passed": self.passed,
            "out_of_range": self.out_of_range, "unseen_categories": self.unseen_categories,
        }


def _labelled_rows(df: Any, target: str) -> tuple[Any, int]:
    """The rows with a target value; the count of rows dropped for a missing (null or blank) one.

    The model checks its own input columns when it predicts (a missing one is exit 3).
    """
    if len(df) == 0:
        raise InputError("the evaluation table has no rows")
    if target not in df.columns:
        raise InputError(f"target column {target!r} is not in the evaluation data",
                         f"the model predicts {target!r}; give a table with that column (or --target)")
    from mlsys_cli.features.schema import missing_target

    keep = ~missing_target(df[target])
    dropped = int((~keep).sum())
    if not keep.any():
        raise InputError(f"every value of the target {target!r} is missing")
    return df.loc[keep].reset_index(drop=True), dropped


def _truth(task: str, y_raw: Any, classes: Sequence[Any], target: str) -> Any:
    if task == "regression":
        from mlsys_cli.features.schema import regression_values

        return regression_values(y_raw, f"target {target!r}")
    y = encode_labels(list(y_raw), classes)
    if (y < 0).any():
        raise unknown_labels_error([v for v, i in zip(y_raw, y) if i < 0], classes, f"target {target!r}")
    return y


def _baseline(model: Any, task: str, y: Any, classes: Sequence[Any], threshold: float) -> dict[str, Any]:
    """The zero-rule baseline scored on the same rows: the training prior when the manifest has it."""
    import numpy as np

    prior, source = _train_prior(getattr(model, "manifest", None) or {}, task, classes)
    if prior is None:
        source = "evaluation data"
        prior = float(np.mean(y)) if task == "regression" else np.bincount(y, minlength=len(classes)) / len(y)
    out = np.full(len(y), prior) if task == "regression" else np.tile(np.asarray(prior, dtype=float), (len(y), 1))
    return {"name": "zero_rule", "prior_from": source,
            "prior": prior if task == "regression" else [float(p) for p in prior],
            "metrics": compute_metrics(task, _raw_labels(y, classes, task), out, classes, threshold=threshold)}


def _train_prior(manifest: Mapping[str, Any], task: str, classes: Sequence[Any]) -> tuple[Any, str | None]:
    """The training target's prior from ``manifest["reference"]["target"]`` when recorded.

    That entry is a ``data.profile.profile_values`` profile of the training target: numeric
    (``mean``: the regression mean, or the positive rate of 0/1 and boolean classes) or
    categorical (``top``: counts per class name).
    """
    ref = (manifest.get("reference") or {}).get("target") or {}
    mean = ref.get("mean")
    if task == "regression":
        return (float(mean), "training data") if isinstance(mean, (int, float)) and math.isfinite(mean) else (None, None)
    top = ref.get("top")
    if isinstance(top, Mapping) and not ref.get("other"):
        counts = [float(top.get(str(c.item() if hasattr(c, "item") else c), 0)) for c in classes]
        if sum(counts) > 0:
            return [c / sum(counts) for c in counts], "training data"
    if isinstance(mean, (int, float)) and task == "binary" and [float(c) for c in classes if isinstance(c, (bool, int, float))] == [0.0, 1.0]:
        return [1.0 - float(mean), float(mean)], "training data"
    return None, None


def _raw_labels(y: Any, classes: Sequence[Any], task: str) -> Any:
    return y if task == "regression" else [classes[i] for i in y]


def _best_f1(y: Any, p1: Any) -> dict[str, float] | None:
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    if len(np.unique(y)) < 2:
        return None
    precision, recall, thresholds = precision_recall_curve(y, p1)
    f1 = _ratio(2 * precision[:-1] * recall[:-1], precision[:-1] + recall[:-1], 0.0)
    i = int(np.argmax(f1))
    return {"threshold": float(thresholds[i]), "f1": float(f1[i]), "precision": float(precision[i]), "recall": float(recall[i])}


@dataclass(frozen=True)
class EvaluateOptions:
    """What :func:`evaluate` measures and checks (the options of ``mlsys evaluate``).

    Parameters
    ----------
    target : str, optional
        The target column; the model's own target by default.
    threshold : float, optional
        Binary decision threshold on P(second class) for accuracy, F1, precision, recall;
        the model's own (``model.threshold``, 0.5 when it has none) by default.
    bootstrap : int
        Bootstrap replicates for the confidence intervals (0: none).
    confidence : float
        Coverage of the percentile intervals.
    slices : column names
        Metric per group of each column (numeric columns in ``slice_bins`` quantile bins);
        a slice is flagged when it has at least ``min_slice_rows`` rows and its interval lies
        entirely on the worse side of the reference (the row-weighted mean of the column's slices).
    slice_bins, min_slice_rows : int
    behaviour : BehaviourSpec
        Behavioural tests, see :func:`behavioural_tests`.
    requirements : ``Requirement`` or its text
        Gates; each is reported with its observed value; ``passed`` is False when one fails.
    seed : int
        Seeds the bootstrap, the behavioural tests' noise and permutations.
    """

    target: str | None = None
    threshold: float | None = None
    bootstrap: int = DEFAULT_BOOTSTRAP
    confidence: float = DEFAULT_CONFIDENCE
    slices: Sequence[str] = ()
    slice_bins: int = SLICE_BINS
    min_slice_rows: int = MIN_SLICE_ROWS
    behaviour: BehaviourSpec = BehaviourSpec()
    requirements: Sequence[Requirement | str] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "slices", tuple(self.slices))
        object.__setattr__(self, "requirements", tuple(self.requirements))

    def replace(self, **changes: Any) -> "EvaluateOptions":
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class _Scored:
    """The model's outputs on the labelled rows, with what every metric of them needs."""

    task: str
    classes: list[Any]
    y: Any  # class indices or values
    output: Mapping[str, Any]  # model.predict(df)
    threshold: float

    @property
    def scored(self) -> Any:
        """Predictions [N] (regression) or probabilities [N, C]."""
        import numpy as np

        if self.task == "regression":
            return np.asarray(self.output["prediction"], dtype=float).ravel()
        return np.asarray(self.output["probabilities"], dtype=float)

    def metrics(self, mask: Any = None) -> dict[str, Any]:
        """``compute_metrics`` on every row, or on the rows of ``mask``."""
        import numpy as np

        y, output = self.y, self.output
        if mask is not None:
            y, output = y[mask], {k: np.asarray(v)[mask] for k, v in output.items()}
        return compute_metrics(self.task, _raw_labels(y, self.classes, self.task), output, self.classes or None,
                               threshold=self.threshold)


def evaluate(model: Any, df: Any, options: EvaluateOptions = EvaluateOptions(), *, model_name: str = "",
             data_name: str = "", progress: Any = None) -> Evaluation:
    """Evaluate ``model`` on the labelled table ``df``.

    Parameters
    ----------
    model : object
        ``predict(df)``, ``task``, ``classes``, ``input_schema``, ``target``, ``manifest``.
    df : pandas.DataFrame
        Inputs and the target column. Rows with a missing target are dropped and counted.
    options : EvaluateOptions
        Target, threshold, bootstrap, slices, behavioural tests, gates and seed.
    model_name, data_name : str
        How the report names the model and the data.
    progress : object, optional
        ``update(total=...)`` and ``advance()``.

    Returns
    -------
    Evaluation
    """
    import numpy as np

    from mlsys_cli.features.unseen import input_counts

    target, threshold, reqs = _check_options(model, df, options)
    if progress is not None:
        progress.update(total=3 + options.behaviour.count, description="predicting")
    df, dropped = _labelled_rows(df, target)
    classes = list(getattr(model, "classes", None) or [])
    y = _truth(model.task, df[target].to_numpy(), classes, target)
    s = _Scored(model.task, classes, y, model.predict(df), threshold)
    _advance(progress)
    metrics = s.metrics()
    conf_hit = None if s.task == "regression" else _calibration_inputs(s.task, y, s.scored)
    if conf_hit is not None:
        metrics["ece"] = float(weighted_ece(np.ones((1, len(y))), conf_hit[0], conf_hit[1])[0])

    groups = [(col, label, mask) for col in options.slices for label, mask in slice_groups(df, col, options.slice_bins)]
    reps = _bootstrap(s, conf_hit, groups, options.bootstrap, options.seed)
    ci = {name: list(interval(reps["overall"][name], options.confidence)) if options.bootstrap else [None, None]
          for name in metrics}
    slice_rows = _slice_rows(s, groups, reps, options)
    _advance(progress)
    behaviour = behavioural_tests(model, df, options.behaviour, threshold=threshold, seed=options.seed,
                                  target_std=(float(np.std(y)) if s.task == "regression" else 1.0) or 1.0,
                                  progress=progress) if options.behaviour.count else []
    gates = [_gate(r, metrics, ci, slice_rows, behaviour) for r in reqs]
    result = _evaluation(s, (metrics, ci, conf_hit), (slice_rows, behaviour, gates), options,
                         {"model": model_name, "data": data_name, "target": target, "dropped_missing_target": dropped,
                          **input_counts(df, model.input_schema),
                          "baseline": _baseline(model, s.task, y, classes, threshold)})
    _advance(progress)
    return result


def _check_options(model: Any, df: Any, options: EvaluateOptions) -> tuple[str, float, list[Requirement]]:
    """The target, the threshold and the parsed gates; a bad option is a usage error (exit 2)."""
    task = model.task
    target = options.target or getattr(model, "target", None) or (getattr(model, "manifest", None) or {}).get("target")
    if not target:
        raise UsageError("the model does not name its target; give --target")
    threshold = options.threshold
    if threshold is None:  # the model's own: a bundle has .threshold, an ONNX model only its manifest
        threshold = getattr(model, "threshold", None) or (getattr(model, "manifest", None) or {}).get("threshold", 0.5)
    threshold = float(threshold)
    reqs = [r if isinstance(r, Requirement) else parse_requirement(r) for r in options.requirements]
    tests = options.behaviour
    check_requirements(task, reqs, {"perturbation": tests.perturb is not None, "invariance": bool(tests.invariant),
                                    "directional": bool(tests.expect), "slices": bool(options.slices)})
    if not 0 < threshold < 1 and task == "binary":
        raise UsageError(f"--threshold {threshold:g} must lie between 0 and 1")
    if options.bootstrap < 0:
        raise UsageError("--bootstrap must be 0 or more")
    if not 0 < options.confidence < 1:
        raise UsageError("--confidence must lie between 0 and 1")
    for col in options.slices:
        if col not in df.columns:
            raise InputError(f"no column {col!r} to slice by", f"columns: {', '.join(map(str, list(df.columns)[:20]))}")
    for e in tests.expect:
        parse_expectation(e)
    return target, threshold, reqs


def _evaluation(s: _Scored, measured: tuple[dict[str, Any], dict[str, Any], Any], checked: tuple[list, list, list],
                options: EvaluateOptions, about: Mapping[str, Any]) -> Evaluation:
    """The report: ``measured`` = (metrics, intervals, calibration inputs), ``checked`` = (slice rows,
    behavioural results, gates), ``about`` = model and data names, target, dropped rows, baseline."""
    metrics, ci, conf_hit = measured
    slice_rows, behaviour, gates = checked
    name, _ = primary_metric(s.task)
    proba = None if s.task == "regression" else s.scored
    slicing = {"columns": list(options.slices), "bins": options.slice_bins, "min_rows": options.min_slice_rows,
               "metric": name, "reference": "row-weighted mean of the column's slices"} if options.slices else None
    return Evaluation(
        model=about["model"], data=about["data"], task=s.task, target=about["target"], rows=int(len(s.y)),
        dropped_missing_target=about["dropped_missing_target"], primary_metric=name,
        threshold=s.threshold if s.task == "binary" else None, metrics=metrics, ci=ci,
        bootstrap={"replicates": options.bootstrap, "confidence": options.confidence, "seed": options.seed,
                   "method": "percentile"},
        baseline=about["baseline"], best_threshold=_best_f1(s.y, proba[:, 1]) if s.task == "binary" else None,
        confusion_matrix=_confusion(s.task, s.y, proba, s.classes, s.threshold),
        calibration=_calibration(conf_hit, metrics.get("ece"), ci.get("ece")),
        slices=slice_rows, slicing=slicing, behaviour=behaviour, gates=gates, passed=all(g["passed"] for g in gates),
        curves=_curves(s.task, s.y, s.scored), out_of_range=about["out_of_range"],
        unseen_categories=about["unseen_categories"],
    )


def _bootstrap(s: _Scored, conf_hit: Any, groups: list, replicates: int, seed: int) -> dict[str, Any]:
    """Bootstrap replicates of every metric, overall and per slice, from one set of resamples."""
    overall: dict[str, list] = {}
    per_group: list[dict[str, list]] = [{} for _ in groups]
    if replicates == 0:
        return {"overall": overall, "groups": per_group}
    scored = s.scored
    for W in bootstrap_weights(len(s.y), replicates, seed):
        values = weighted_metrics(s.task, W, s.y, scored, s.threshold)
        if conf_hit is not None:
            values["ece"] = weighted_ece(W, conf_hit[0], conf_hit[1])
        for k, v in values.items():
            overall.setdefault(k, []).append(v)
        for g, (_, _, mask) in enumerate(groups):
            for k, v in weighted_metrics(s.task, W[:, mask], s.y[mask], scored[mask], s.threshold).items():
                per_group[g].setdefault(k, []).append(v)
    return {"overall": _concat(overall), "groups": [_concat(d) for d in per_group]}


def _concat(chunks: Mapping[str, list]) -> dict[str, Any]:
    import numpy as np

    return {k: np.concatenate(v) for k, v in chunks.items()}


def _slice_rows(s: _Scored, groups: list, reps: Mapping[str, Any], options: EvaluateOptions) -> list[dict[str, Any]]:
    """Metrics per slice, each column's slices compared with their row-weighted mean.

    The reference is the row-weighted mean of the column's slice values, not the overall
    value: for averages (accuracy, log loss, Brier, MAE) the two agree, but a ranking metric
    such as AUC is lower inside every slice of a predictive column (the slice spans a narrower
    range of scores), so comparing with the overall AUC would flag every slice.
    """
    name, higher = primary_metric(s.task)
    rows = []
    n = len(s.y)
    for g, (col, label, mask) in enumerate(groups):
        values = s.metrics(mask)
        lo, hi = interval(reps["groups"][g].get(name, []), options.confidence) if options.bootstrap else (None, None)
        count = int(mask.sum())
        rows.append({"column": col, "slice": label, "rows": count, "share": count / n, "metric": name,
                     "value": values.get(name), "ci_low": lo, "ci_high": hi, "metrics": values})
    for col in dict.fromkeys(r["column"] for r in rows):
        mine = [r for r in rows if r["column"] == col]
        known = [(r["value"], r["rows"]) for r in mine if r["value"] is not None]
        reference = sum(v * c for v, c in known) / sum(c for _, c in known) if known else None
        for r in mine:
            worse = reference is not None and ((r["ci_high"] is not None and r["ci_high"] < reference) if higher
                                               else (r["ci_low"] is not None and r["ci_low"] > reference))
            r["reference"] = reference
            r["flagged"] = bool(worse and r["rows"] >= options.min_slice_rows)
    # Worst first within each column, so the table reads top-down by concern.
    sign = 1 if higher else -1
    return sorted(rows, key=lambda r: (r["column"], math.inf if r["value"] is None else sign * r["value"]))


def _gate(req: Requirement, metrics: Mapping[str, Any], ci: Mapping[str, list], slices: list, behaviour: list) -> dict[str, Any]:
    if req.metric in BEHAVIOUR_GATES:
        rates = [b.rate for b in behaviour if b.test == BEHAVIOUR_GATES[req.metric]]
        observed = max(rates) if rates else None
    elif req.scope in ("ci_low", "ci_high"):
        observed = (ci.get(req.metric) or [None, None])[0 if req.scope == "ci_low" else 1]
    elif req.scope in ("slice_min", "slice_max"):
        values = [s["metrics"].get(req.metric) for s in slices]
        values = [v for v in values if v is not None]
        observed = (min(values) if req.scope == "slice_min" else max(values)) if values else None
    else:
        observed = metrics.get(req.metric)
    return {**req.to_dict(), "observed": observed, "passed": req.holds(observed)}


def _confusion(task: str, y: Any, proba: Any, classes: Sequence[Any], threshold: float) -> dict[str, Any] | None:
    import numpy as np
    from sklearn.metrics import confusion_matrix

    if task == "regression":
        return None
    pred = (proba[:, 1] >= threshold).astype(int) if task == "binary" else proba.argmax(axis=1)
    matrix = confusion_matrix(y, pred, labels=list(range(len(classes))))
    return {"labels": [c.item() if hasattr(c, "item") else c for c in classes], "matrix": np.asarray(matrix).tolist(),
            "rows": "actual", "columns": "predicted"}


def _calibration(conf_hit: Any, ece: float | None, ece_ci: list | None) -> dict[str, Any] | None:
    if conf_hit is None:
        return None
    conf, hit, method = conf_hit
    return {"ece": ece, "ece_ci": ece_ci, "bins": CALIBRATION_BINS, "binning": "equal-width", "method": method,
            "table": reliability_table(conf, hit)}


def _curves(task: str, y: Any, scored: Any) -> dict[str, Any]:
    """Curves for the HTML report (not part of the JSON report)."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve, roc_curve

    if task == "regression":
        return {"actual": y, "predicted": scored}
    if task == "binary" and len(np.unique(y)) > 1:
        fpr, tpr, _ = roc_curve(y, scored[:, 1])
        precision, recall, _ = precision_recall_curve(y, scored[:, 1])
        return {"roc": (fpr, tpr), "pr": (recall, precision), "positive_rate": float(np.mean(y == 1))}
    return {}


# --------------------------------------------------------------------------- the HTML report


def write_html(result: Evaluation, path: Any) -> None:
    """Write the evaluation as a self-contained HTML page (plots inline, no scripts)."""
    from mlsys_cli import __version__
    from mlsys_cli import htmlreport as hr

    d = result.to_dict()
    page = hr.Report(f"Evaluation of {result.model or 'a model'}",
                     subtitle=f"{result.task} model predicting {result.target!r} on {result.rows} rows of {result.data or 'data'}"
                     + (f" ({result.dropped_missing_target} rows without a target dropped)" if result.dropped_missing_target else ""),
                     footer=f"mlsys {__version__} evaluate; bootstrap {result.bootstrap['replicates']} replicates, "
                            f"seed {result.bootstrap['seed']}")
    if result.gates:
        page.heading("Gates")
        page.table([{"requirement": g["requirement"], "observed": g["observed"], "passed": g["passed"]} for g in result.gates],
                   status="passed")
    page.heading("Metrics")
    level = f"{result.bootstrap['confidence']:.0%}"
    base = result.baseline["metrics"]
    page.table([{"metric": k, "value": v, f"{level} CI low": result.ci[k][0], f"{level} CI high": result.ci[k][1],
                 "zero-rule baseline": base.get(k)} for k, v in result.metrics.items()])
    page.text(f"Baseline: the zero rule (always the prior of the {result.baseline['prior_from']}). "
              f"Intervals: percentile bootstrap over rows." + (f" Threshold {result.threshold:g}." if result.threshold is not None else ""))
    if result.best_threshold:
        b = result.best_threshold
        page.text(f"The threshold maximising F1 is {b['threshold']:.4g} (F1 {b['f1']:.4g}, precision {b['precision']:.4g}, recall {b['recall']:.4g}).")
    page.figures(*_performance_plots(result, hr))
    if result.calibration:
        cal = result.calibration
        table = cal["table"]
        page.heading("Calibration")
        page.text(f"Expected calibration error {hr.format_value(cal['ece'])} over {cal['bins']} equal-width bins "
                  f"({'probability of the positive class' if cal['method'] == 'positive_class' else 'top-label confidence'}).")
        page.figures(hr.reliability_diagram([r["mean_predicted"] for r in table], [r["observed"] for r in table],
                                            [r["rows"] for r in table]))
        page.table(table, ["lower", "upper", "rows", "mean_predicted", "observed"])
    if result.slices:
        page.heading("Slices")
        plots = []
        for col in dict.fromkeys(s["column"] for s in result.slices):
            rows = [s for s in result.slices if s["column"] == col]
            plots.append(hr.bar_chart([s["slice"] for s in rows], [s["value"] for s in rows],
                                      errors=([s["ci_low"] for s in rows], [s["ci_high"] for s in rows]),
                                      reference=rows[0]["reference"], reference_label="mean of slices", highlight=[s["flagged"] for s in rows],
                                      title=f"{result.primary_metric} by {col}", value_label=result.primary_metric,
                                      zero=False, kind="slices"))
        page.figures(*plots)
        page.text(f"Flagged: at least {result.slicing['min_rows']} rows and the whole {level} interval worse than the "
                  f"row-weighted mean of the column's slices (the dashed line).")
        page.table(d["slices"], ["column", "slice", "rows", "value", "ci_low", "ci_high", "flagged"], flag="flagged")
    if result.behaviour:
        page.heading("Behavioural tests")
        page.table([b.to_dict() for b in result.behaviour], ["test", "column", "rows", "rate", "mean_abs_delta", "tolerance", "passed", "detail"],
                   status="passed")
    page.write(path)


def _performance_plots(result: Evaluation, hr: Any) -> list:
    curves = result.curves
    plots = []
    if "roc" in curves:
        fpr, tpr = curves["roc"]
        recall, precision = curves["pr"]
        plots.append(hr.line_plot([hr.Series(f"model (AUC {hr.format_value(result.metrics.get('auc'))})", fpr, tpr)],
                                  title="ROC curve", x_label="false positive rate", y_label="true positive rate",
                                  x_range=(0, 1), y_range=(0, 1), diagonal=True, legend="bottom", kind="roc"))
        plots.append(hr.line_plot([hr.Series("model", recall, precision, step=True)], title="Precision-recall curve",
                                  x_label="recall", y_label="precision", x_range=(0, 1), y_range=(0, 1.02),
                                  hline=curves["positive_rate"], kind="pr"))
    if result.confusion_matrix:
        cm = result.confusion_matrix
        labels = [str(c) for c in cm["labels"]]
        plots.append(hr.heatmap(cm["matrix"], labels, labels, title="Confusion matrix", x_label="predicted",
                                y_label="actual", kind="confusion"))
    if "predicted" in curves:
        actual, predicted = curves["actual"], curves["predicted"]
        plots.append(hr.scatter_plot([hr.Series("", predicted, actual)], title="Actual vs predicted", x_label="predicted",
                                     y_label="actual", diagonal=True, kind="actual_vs_predicted"))
        plots.append(hr.scatter_plot([hr.Series("", predicted, actual - predicted)], title="Residuals", x_label="predicted",
                                     y_label="actual - predicted", hline=0.0, kind="residuals"))
    return plots
