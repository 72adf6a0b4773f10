"""Ensemble combiners and the ensemble predictor (what an ensemble bundle holds).

Every combiner is a weighted sum of member outputs or a linear model on them, stored as JSON
arrays, so ``export`` can write the whole ensemble as one ONNX graph:

- ``average``: equal weights (soft voting for classifiers);
- ``weighted``: non-negative weights summing to one that minimise the log loss (classification)
  or the squared error (regression);
- ``stack``: a logistic (classification) or ridge (regression) meta-learner on the members'
  probabilities (binary: P(positive class) of each member) or predictions;
- ``select``: greedy ensemble selection with replacement (Caruana et al., 2004), weights are
  the selection counts.

Averaged class probabilities are divided by their row sum (members' float32 probabilities drift
from 1 by a few ulps); the ONNX graph (``deploy.onnx_families.weighted_average``) does the same.
:class:`EnsemblePredictor` is loaded through ``predictors.load_predictor`` (kind ``ensemble``).
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError

METHODS = ("average", "weighted", "stack", "select")
SELECT_ROUNDS = 50
# The stack meta-learner reads probabilities in [0, 1]: a strong penalty (C=1) shrinks its
# coefficients until the intercept dominates and the cross-fitted score falls below the members'.
STACK_ALPHA = 0.01


def loss(task: str, y: Any, out: Any) -> float:
    """The smooth loss weights are fit to: log loss (classification) or mean squared error."""
    import numpy as np

    if task == "regression":
        return float(np.mean((out - y) ** 2))
    eps = 1e-12
    return float(-np.mean(np.log(np.clip(out[np.arange(len(y)), y], eps, 1.0))))


def score(task: str, metric: str, y: Any, out: Any) -> float:
    """A metric (by name) of outputs against class indices or values, as compute_metrics gives it.

    Greedy selection scores every candidate in every round and fold: the common metrics are
    computed directly, since compute_metrics computes all of a task's metrics (F1, precision...).
    """
    import numpy as np

    from mlsys_cli.features.leakage import auc
    from mlsys_cli.models.metrics import compute_metrics

    if metric == "rmse":
        return float(np.sqrt(np.mean((out - y) ** 2)))
    if metric == "log_loss":
        return loss(task, y, out / out.sum(axis=1, keepdims=True))
    if metric == "auc" and task == "binary" and len(np.unique(y)) == 2:
        return auc(y, out[:, 1])

    classes = None if task == "regression" else list(range(out.shape[1]))
    value = compute_metrics(task, y, out, classes).get(metric)
    return float("nan") if value is None else float(value)


class Combiner:
    """Combines member outputs into one output (a scikit-learn style estimator).

    Parameters
    ----------
    method : {"average", "weighted", "stack", "select"}
    task : {"binary", "multiclass", "regression"}
    metric : str, optional
        What ``select`` maximises/minimises (the task's primary metric by default).
    rounds : int
        Selection rounds of ``select`` (members added, with replacement).
    alpha : float
        Regularization of the ``stack`` meta-learner (inverse C for logistic, alpha for ridge).
    seed : int
    deadline : float, optional
        Epoch seconds after which ``select`` stops adding members (the best prefix so far is kept).

    Attributes
    ----------
    weights_ : ndarray of shape (n_members,)
        Member weights (``average``, ``weighted``, ``select``); for ``stack`` all zeros.
    coef_ : ndarray, optional
        ``stack`` only: meta-learner coefficients [n_outputs, n_inputs] (binary: [1, M]).
    intercept_ : ndarray, optional
        ``stack`` only: meta-learner intercepts [n_outputs].
    stopped_early_ : bool
        Whether ``select`` stopped at the deadline.
    """

    def __init__(self, method: str = "average", task: str = "binary", metric: str | None = None,
                 rounds: int = SELECT_ROUNDS, alpha: float = STACK_ALPHA, seed: int = 0, deadline: float | None = None):
        self.method = method
        self.task = task
        self.metric = metric
        self.rounds = rounds
        self.alpha = alpha
        self.seed = seed
        self.deadline = deadline

    # P: member outputs, [M, N, C] for classifiers and [M, N] for regressors.
    def fit(self, P: Any, y: Any) -> "Combiner":
        """Fit the combiner on member outputs ``P`` and targets ``y`` (class indices or values)."""
        import numpy as np

        if self.method not in METHODS:
            raise UsageError(f"unknown ensemble method {self.method!r}", f"choose one of: {', '.join(METHODS)}")
        P = np.asarray(P, dtype=float)
        m = P.shape[0]
        self.coef_ = self.intercept_ = None
        self.stopped_early_ = False
        if self.method == "average":
            self.weights_ = np.full(m, 1.0 / m)
        elif self.method == "weighted":
            self.weights_ = self._fit_weights(P, y)
        elif self.method == "select":
            self.weights_ = self._select(P, y)
        else:
            self.weights_ = np.zeros(m)
            self._fit_stack(P, y)
        self.n_members_ = m
        return self

    def _fit_weights(self, P: Any, y: Any) -> Any:
        import numpy as np
        from scipy.optimize import minimize

        m = P.shape[0]

        def objective(theta: Any) -> float:
            w = np.exp(theta - theta.max())
            w /= w.sum()
            return loss(self.task, y, np.tensordot(w, P, axes=1))

        # Softmax weights keep the search on the simplex; start from the plain average.
        res = minimize(objective, np.zeros(m), method="L-BFGS-B")
        w = np.exp(res.x - res.x.max())
        w /= w.sum()
        w[w < 1e-4] = 0.0  # a member with a negligible weight is dead weight at predict time
        return w / w.sum()

    def _select(self, P: Any, y: Any) -> Any:
        import numpy as np

        from mlsys_cli.models.metrics import HIGHER_IS_BETTER, primary_metric

        metric = self.metric or primary_metric(self.task)[0]
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        m = P.shape[0]
        counts = np.zeros(m)
        total = np.zeros_like(P[0])
        best_counts, best_score = None, -math.inf
        for r in range(max(self.rounds, 1)):
            if r > 0 and self.deadline is not None and time.time() >= self.deadline:
                self.stopped_early_ = True
                break
            scores = [sign * score(self.task, metric, y, (total + P[i]) / (r + 1)) for i in range(m)]
            scores = [s if math.isfinite(s) else -math.inf for s in scores]
            i = int(np.argmax(scores))  # ties go to the earlier member (deterministic)
            counts[i] += 1
            total = total + P[i]
            if scores[i] > best_score + 1e-12:
                best_score, best_counts = scores[i], counts.copy()
        return best_counts / best_counts.sum()

    def _meta_inputs(self, P: Any) -> Any:
        import numpy as np

        if self.task == "regression":
            return P.T  # [N, M]
        if self.task == "binary":
            return P[:, :, 1].T  # [N, M]: P(positive class) of each member
        return np.concatenate(list(P), axis=1)  # [N, M*C]

    def _fit_stack(self, P: Any, y: Any) -> None:
        import numpy as np

        Z = self._meta_inputs(P)
        if self.task == "regression":
            from sklearn.linear_model import Ridge

            meta = Ridge(alpha=self.alpha).fit(Z, y)
            self.coef_, self.intercept_ = np.atleast_2d(meta.coef_), np.atleast_1d(meta.intercept_)
            return
        from sklearn.linear_model import LogisticRegression

        n_classes = P.shape[2]
        meta = LogisticRegression(C=1.0 / self.alpha, max_iter=1000, random_state=self.seed).fit(Z, y)
        if len(meta.classes_) != n_classes:
            raise InputError(f"--data holds {len(meta.classes_)} of the {n_classes} classes; stacking needs every class")
        self.coef_, self.intercept_ = np.atleast_2d(meta.coef_), np.atleast_1d(meta.intercept_)

    def combine(self, P: Any) -> Any:
        """The ensemble output for member outputs ``P``: probabilities [N, C] or predictions [N]."""
        import numpy as np

        P = np.asarray(P, dtype=float)
        if self.method != "stack":
            out = np.tensordot(self.weights_, P, axes=1)
            if self.task == "regression":
                return out
            # Members' float32 probabilities sum to 1 only up to a few ulps; log-loss consumers
            # (scikit-learn) refuse rows that do not. The ONNX graph divides the same way.
            return out / out.sum(axis=1, keepdims=True)
        z = self._meta_inputs(P) @ self.coef_.T + self.intercept_
        if self.task == "regression":
            return z[:, 0]
        if self.task == "binary":
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p1, p1])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        """The fitted combiner as JSON (what the bundle stores and export reads)."""
        out: dict[str, Any] = {"method": self.method, "weights": [float(w) for w in self.weights_]}
        if self.coef_ is not None:
            out["meta"] = {"kind": "ridge" if self.task == "regression" else "logistic",
                           "inputs": "predictions" if self.task == "regression" else
                           ("p_positive" if self.task == "binary" else "probabilities"),
                           "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()}
        return out

    @classmethod
    def from_dict(cls, task: str, spec: Mapping[str, Any]) -> "Combiner":
        """Rebuild a fitted combiner from :meth:`to_dict` (validated: bad JSON is an input error)."""
        import numpy as np

        try:
            c = cls(method=str(spec["method"]), task=task)
            c.weights_ = np.asarray(spec["weights"], dtype=float)
            meta = spec.get("meta")
            c.coef_ = np.asarray(meta["coef"], dtype=float) if meta else None
            c.intercept_ = np.asarray(meta["intercept"], dtype=float) if meta else None
            c.n_members_ = len(c.weights_)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid ensemble combiner in the bundle ({type(exc).__name__}: {exc})") from None
        if c.method not in METHODS or c.weights_.ndim != 1 or (c.method == "stack" and c.coef_ is None):
            raise InputError("invalid ensemble combiner in the bundle")
        return c


def cross_fit(method: str, task: str, P: Any, y: Any, folds: int, seed: int, metric: str | None = None,
              deadline: float | None = None) -> Any:
    """Out-of-fold ensemble outputs: each fold is combined by a combiner fit on the other folds."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    P = np.asarray(P, dtype=float)
    n = P.shape[1]
    k = max(2, min(folds, n // 2))
    if task != "regression" and np.bincount(y).min(initial=n) >= k:
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y)
    else:
        splits = KFold(k, shuffle=True, random_state=seed).split(np.zeros(n))
    out = np.zeros_like(P[0])
    for fit_idx, held in splits:
        c = Combiner(method, task, metric=metric, seed=seed, deadline=deadline).fit(P[:, fit_idx], y[fit_idx])
        out[held] = c.combine(P[:, held])
    return out


# --------------------------------------------------------------------------- the predictor


class EnsemblePredictor:
    """Members (any registered predictors) and a :class:`Combiner`; members live under
    ``members/<i>/``, each with its own featurizer and estimator.

    Parameters
    ----------
    members : list of predictors
    combiner : fitted Combiner
    task : str
    """

    kind = "ensemble"

    def __init__(self, members: Sequence[Any], combiner: Combiner, task: str):
        self.members = list(members)
        self.combiner = combiner
        self.task_ = task

    @property
    def task(self) -> str:
        return self.task_

    @property
    def input_schema(self) -> list[dict[str, Any]]:
        return union_schema([m.input_schema for m in self.members])

    def member_scores(self, df: Any) -> Any:
        """Every member's scores: [M, N, C] (classification) or [M, N] (regression)."""
        import numpy as np

        return np.stack([np.asarray(m.predict_scores(df), dtype=np.float64) for m in self.members])

    def predict_scores(self, df: Any) -> Any:
        """Probabilities ``[N, C]`` or values ``[N]`` for raw rows."""
        return self.combiner.combine(self.member_scores(df))

    def save(self, writer: Any, prefix: str) -> dict[str, Any]:
        """Add every member under ``members/<i>/``; returns the layout for the manifest."""
        layouts = [m.save(writer, f"{prefix}members/{i}/") for i, m in enumerate(self.members)]
        return {"kind": self.kind, "task": self.task, "combiner": self.combiner.to_dict(), "members": layouts}

    @classmethod
    def load(cls, reader: Any, prefix: str, layout: Mapping[str, Any], load_member: Any) -> "EnsemblePredictor":
        """Rebuild from ``layout``; ``load_member(reader, prefix, layout)`` loads each member
        (``predictors.load_predictor``, passed in so this module needs no predictor registry)."""
        try:
            task = str(layout["task"])
            members = [load_member(reader, f"{prefix}members/{i}/", m) for i, m in enumerate(layout["members"])]
            combiner = Combiner.from_dict(task, layout["combiner"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"{reader.path}: invalid ensemble layout ({type(exc).__name__}: {exc})") from None
        if len(members) != combiner.n_members_:
            raise InputError(f"{reader.path}: ensemble has {len(members)} members but {combiner.n_members_} weights")
        return cls(members, combiner, task)



def union_schema(schemas: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The raw columns any member needs, in first-seen order (categories seen are merged)."""
    out: dict[str, dict[str, Any]] = {}
    for schema in schemas:
        for col in schema:
            if col["name"] not in out:
                out[col["name"]] = dict(col)
                continue
            seen = out[col["name"]]
            if seen.get("categories") is not None and col.get("categories") is not None:
                seen["categories"] = list(dict.fromkeys([*seen["categories"], *col["categories"]]))
    return list(out.values())
