"""Ensembles of model bundles: averaging, weighted averaging, stacking, greedy selection.

The combiner (:class:`Combiner`) is fit on the predictions the members make on held-out rows
(``--data``), never on rows a member trained on: the data fingerprints in the members'
manifests are checked, and a table that is some member's training data is refused.

Honest report: the combiner is cross-fitted with K folds inside ``--data`` (fit on K-1 folds,
predict the remaining one), so every row gets an ensemble prediction from a combiner that did
not see it. That out-of-fold score is compared with each member's score on the same rows, with
a paired bootstrap interval of the gain over the best member. The bundle itself holds the
combiner refit on all of ``--data``.

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

From a study (:func:`study_members`), the models ``tune`` kept are loaded from the study's
artifact store (sha256 verified) and only the others are retrained; ``timeout`` bounds the
whole step by leaving out members that do not fit (at least two are used).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlsys_cli.errors import InputError, UsageError
from mlsys_cli.models.bundle import load_predictor, register_predictor

METHODS = ("average", "weighted", "stack", "select")
FOLDS = 5
SELECT_ROUNDS = 50
BOOTSTRAP = 500
# The stack meta-learner reads probabilities in [0, 1]: a strong penalty (C=1) shrinks its
# coefficients until the intercept dominates and the cross-fitted score falls below the members'.
STACK_ALPHA = 0.01
# Below this gain in the primary metric an ensemble is not worth k times the latency.
MIN_GAIN = 0.002
# Under --timeout, this share of the budget is kept for scoring the members and fitting the
# combiner; retraining study members gets the rest.
COMBINE_SHARE = 0.3


def _loss(task: str, y: Any, out: Any) -> float:
    """The smooth loss weights are fit to: log loss (classification) or mean squared error."""
    import numpy as np

    if task == "regression":
        return float(np.mean((out - y) ** 2))
    eps = 1e-12
    return float(-np.mean(np.log(np.clip(out[np.arange(len(y)), y], eps, 1.0))))


def _score(task: str, metric: str, y: Any, out: Any) -> float:
    """A metric (by name) of outputs against class indices or values, as compute_metrics gives it.

    Greedy selection scores every candidate in every round and fold: the common metrics are
    computed directly, since compute_metrics computes all of a task's metrics (F1, precision...).
    """
    import numpy as np

    from mlsys_cli.models.metrics import compute_metrics

    if metric == "rmse":
        return float(np.sqrt(np.mean((out - y) ** 2)))
    if metric == "log_loss":
        return _loss(task, y, out / out.sum(axis=1, keepdims=True))
    if metric == "auc" and task == "binary" and len(np.unique(y)) == 2:
        return _auc(y, out[:, 1])

    classes = None if task == "regression" else list(range(out.shape[1]))
    value = compute_metrics(task, y, out, classes).get(metric)
    return float("nan") if value is None else float(value)


def _auc(y: Any, score: Any) -> float:
    """ROC AUC of binary labels ``y`` (0/1) by the rank-sum (Mann-Whitney) formula, ties counted
    half: what ``roc_auc_score`` gives, without its input validation, which dominates the cost
    of greedy selection (hundreds of scorings of a few thousand rows)."""
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(y) == 1
    pos = int(y.sum())
    neg = len(y) - pos
    ranks = rankdata(score)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


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
            return _loss(self.task, y, np.tensordot(w, P, axes=1))

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
            scores = [sign * _score(self.task, metric, y, (total + P[i]) / (r + 1)) for i in range(m)]
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
    def load(cls, reader: Any, prefix: str, layout: Mapping[str, Any]) -> "EnsemblePredictor":
        try:
            task = str(layout["task"])
            members = [load_predictor(reader, f"{prefix}members/{i}/", m) for i, m in enumerate(layout["members"])]
            combiner = Combiner.from_dict(task, layout["combiner"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"{reader.path}: invalid ensemble layout ({type(exc).__name__}: {exc})") from None
        if len(members) != combiner.n_members_:
            raise InputError(f"{reader.path}: ensemble has {len(members)} members but {combiner.n_members_} weights")
        return cls(members, combiner, task)


register_predictor(EnsemblePredictor.kind, EnsemblePredictor.load)


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


# --------------------------------------------------------------------------- building one


@dataclass(frozen=True)
class EnsembleResult:
    """What ``mlsys ensemble`` reports."""

    output: str | None
    method: str
    task: str
    target: str
    metric: str
    higher_is_better: bool
    rows: int
    evaluated_on: str
    members: list[dict[str, Any]]
    ensemble: dict[str, Any]
    gain: dict[str, Any]
    worth_it: bool
    verdict: str
    combiner: dict[str, Any]
    seconds: float
    dropped: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output, "method": self.method, "task": self.task, "target": self.target,
            "metric": self.metric, "higher_is_better": self.higher_is_better, "rows": self.rows,
            "evaluated_on": self.evaluated_on, "members": self.members, "ensemble": self.ensemble,
            "gain": self.gain, "worth_it": self.worth_it, "verdict": self.verdict, "combiner": self.combiner,
            "dropped": self.dropped, "skipped": self.skipped, "stopped_by": self.stopped_by, "seconds": self.seconds,
        }


def _check_members(named: Sequence[tuple[str, Any]]) -> None:
    if len(named) < 2:
        raise UsageError("an ensemble needs at least two member models",
                         "give two or more .mlsys files, or --from-study with --top 2 or more")
    first_name, first = named[0]
    for name, b in named[1:]:
        for what, a_val, b_val in (("task", first.task, b.task), ("target", first.target, b.target),
                                   ("classes", first.classes, b.classes)):
            if a_val != b_val:
                raise InputError(f"members disagree on the {what}: {first_name} has {a_val!r}, {name} has {b_val!r}",
                                 "ensemble models trained for the same target on the same classes")


def training_fingerprints(manifest: Mapping[str, Any]) -> dict[str, str]:
    """sha256 -> path of every table a model (or, recursively, an ensemble's members) trained on."""
    recipe = manifest.get("recipe") or {}
    found = {r["sha256"]: r.get("path", "?") for r in ((recipe.get("data") or {}).get("train") or []) if r.get("sha256")}
    for member in recipe.get("members") or []:
        found.update(training_fingerprints({"recipe": member.get("recipe") or {}}))
    return found


def _check_held_out(named: Sequence[tuple[str, Any]], data: Sequence[str]) -> list[dict[str, Any]]:
    from mlsys_cli.data.io import input_record, resolve_inputs

    records = [input_record(f) for f in resolve_inputs(list(data))]
    for name, b in named:
        trained = training_fingerprints(b.manifest)
        for rec in records:
            if rec["sha256"] in trained:
                raise InputError(f"--data {rec['path']} is the training data of member {name}",
                                 "fit the ensemble on held-out rows (a validation table), never on rows a member trained on")
    return records


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _gain(task: str, metric: str, higher: bool, y: Any, ens: Any, best: Any, seed: int) -> dict[str, Any]:
    """The ensemble's gain over the best member on the same rows, with a paired bootstrap 95% interval."""
    import numpy as np

    from mlsys_cli.models.evaluate import _interval, bootstrap_weights, weighted_metrics

    reps = []
    for W in bootstrap_weights(len(y), BOOTSTRAP, seed):
        diff = weighted_metrics(task, W, y, ens)[metric] - weighted_metrics(task, W, y, best)[metric]
        reps.append(diff if higher else -diff)
    lo, hi = _interval(np.concatenate(reps), 0.95)
    point = _score(task, metric, y, ens) - _score(task, metric, y, best)
    return {"value": point if higher else -point, "ci95": [lo, hi]}


def build_ensemble(named: Sequence[tuple[str, Any]], data: Sequence[str], *, method: str = "average",
                   metric: str | None = None, folds: int = FOLDS, seed: int = 0,
                   member_records: Sequence[Mapping[str, Any]] | None = None,
                   deadline: float | None = None) -> tuple[Any, EnsembleResult]:
    """Fit an ensemble of loaded model bundles on held-out rows.

    Parameters
    ----------
    named : sequence of (name, ModelBundle)
        The members, with the names the report uses (their paths).
    data : paths
        Held-out rows with the target (never a member's training data).
    method : {"average", "weighted", "stack", "select"}
    metric : str, optional
        Metric for ``select`` and the report (the task's primary metric by default).
    folds : int
        Cross-fitting folds inside ``data`` for the honest estimate.
    seed : int
    member_records : list of dict, optional
        Provenance of each member for the recipe (path and sha256 of its file).
    deadline : float, optional
        Epoch seconds: members after the first two are left out once it has passed (reported in
        ``skipped``), and greedy selection stops its rounds there.

    Returns
    -------
    (ModelBundle, EnsembleResult)
    """
    import numpy as np

    from mlsys_cli.data.io import invocation, read_frame
    from mlsys_cli.data.profile import profile_frame
    from mlsys_cli.models import train as tr
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.metrics import compute_metrics
    from mlsys_cli.models.tune import resolve_metric

    start = time.perf_counter()
    if method not in METHODS:
        raise UsageError(f"unknown ensemble method {method!r}", f"choose one of: {', '.join(METHODS)}")
    _check_members(named)
    first = named[0][1]
    task, target, classes = first.task, first.target, first.classes
    metric, higher = resolve_metric(task, metric)
    data_records = _check_held_out(named, data)
    df = read_frame(list(data))
    if target not in df.columns:
        raise InputError(f"{', '.join(map(str, data))}: no target column {target!r}", "--data must hold the target to fit the ensemble")
    tr.check_target(df[target], target, data)
    y = tr._encode(task, df[target], classes, data)
    labels = df[target].to_numpy()
    if len(df) < 2 * folds:
        raise InputError(f"--data has {len(df)} rows; the ensemble needs at least {2 * folds}")

    scores, latency, skipped = [], [], []
    for i, (name, b) in enumerate(named):
        if deadline is not None and i >= 2 and time.time() >= deadline:
            skipped.append({"model": name, "reason": "--timeout: no time left to score it"})
            continue
        s, secs = _timed(b.predictor.predict_scores, df)
        scores.append(np.asarray(s, dtype=np.float64))
        latency.append(secs)
    if skipped:
        named = named[:len(scores)]
        member_records = list(member_records)[:len(scores)] if member_records else None
    P = np.stack(scores)
    oof = cross_fit(method, task, P, y, folds, seed, metric, deadline=deadline)
    combiner = Combiner(method, task, metric=metric, seed=seed, deadline=deadline).fit(P, y)
    stopped_by = "timeout" if skipped or combiner.stopped_early_ or (deadline is not None and time.time() > deadline) else None

    # Members a weighted combiner gives no weight cost time at predict time for nothing: drop them.
    keep = list(range(len(named))) if method == "stack" else [i for i, w in enumerate(combiner.weights_) if w > 0]
    dropped = [named[i][0] for i in range(len(named)) if i not in keep]
    combiner.weights_ = combiner.weights_[keep]
    combiner.n_members_ = len(keep)
    predictor = EnsemblePredictor([named[i][1].predictor for i in keep], combiner, task)
    final, ens_secs = _timed(predictor.predict_scores, df)

    member_rows = []
    for i, (name, b) in enumerate(named):
        m = compute_metrics(task, labels, P[i], classes)
        member_rows.append({"model": name, "family": (b.manifest.get("recipe") or {}).get("family"),
                            "source": (member_records[i].get("source", "file") if member_records else "file"),
                            "weight": float(combiner.weights_[keep.index(i)]) if i in keep and method != "stack" else None,
                            metric: m.get(metric), "metrics": m, "ms_per_1k_rows": 1000 * latency[i] / len(df) * 1000})
    ens_metrics = compute_metrics(task, labels, oof, classes)
    values = [r[metric] for r in member_rows]
    best_i = int(np.nanargmax(values) if higher else np.nanargmin(values))
    gain = _gain(task, metric, higher, y, oof, P[best_i], seed)
    ratio = ens_secs / max(latency[best_i], 1e-9)
    gain.update(best_member=member_rows[best_i]["model"], latency_ratio=round(ratio, 2))
    lo = gain["ci95"][0]
    worth = gain["value"] >= MIN_GAIN and lo is not None and lo > 0
    if worth:
        verdict = (f"worth it: {metric} {'+' if higher else '-'}{abs(gain['value']):.4f} over the best member "
                   f"({member_rows[best_i]['model']}), 95% CI of the gain [{lo:.4f}, {gain['ci95'][1]:.4f}], "
                   f"at {ratio:.1f}x its latency")
    else:
        why = (f"gain {gain['value']:+.4f} is below {MIN_GAIN}" if gain["value"] < MIN_GAIN else
               f"the 95% CI of the gain [{lo:.4f}, {gain['ci95'][1]:.4f}] includes 0" if lo is not None else
               "the gain cannot be estimated")
        verdict = (f"not worth it: {why} (in {metric}, improvement counted positive), at {ratio:.1f}x the latency of "
                   f"the best member; use {member_rows[best_i]['model']} alone")

    schema = predictor.input_schema
    members_manifest = [{"name": named[i][0], **(dict(member_records[i]) if member_records else {}),
                         "family": (named[i][1].manifest.get("recipe") or {}).get("family"),
                         "recipe": named[i][1].manifest.get("recipe")} for i in keep]
    train_records = [r for i in keep for r in ((named[i][1].manifest.get("recipe") or {}).get("data") or {}).get("train") or []]
    recipe = {"family": "ensemble", "method": method, "params": combiner.to_dict(), "seed": seed, "task": task,
              "metric": metric, "folds": folds, "members": members_manifest, "command": invocation(),
              "data": {"train": train_records, "ensemble": data_records}}
    from mlsys_cli.models.metrics import baseline_metrics

    manifest = {
        "mlsys_version": first.manifest.get("mlsys_version"), "task": task, "target": target, "classes": classes,
        "input_schema": schema, "recipe": recipe,
        "metrics": {"evaluated_on": "data (cross-fitted)", "primary": {"name": metric, "higher_is_better": higher},
                    "valid": ens_metrics, "members": {r["model"]: r["metrics"] for r in member_rows},
                    "baselines": baseline_metrics(task, labels, labels, classes, seed=seed)},
        "reference": {"features": profile_frame(df, schema), "predictions": tr.prediction_reference(task, final, classes)},
        "importance": _importance(named, keep, combiner),
        "libraries": {k: v for i in keep for k, v in (named[i][1].manifest.get("libraries") or {}).items()},
    }
    result = EnsembleResult(
        output=None, method=method, task=task, target=target, metric=metric, higher_is_better=higher, rows=int(len(df)),
        evaluated_on=f"{', '.join(map(str, data))} (members: as given; ensemble: {folds}-fold cross-fitted)",
        members=[{k: v for k, v in r.items() if k != "metrics"} for r in member_rows],
        ensemble={metric: ens_metrics.get(metric), "metrics": ens_metrics, "members_kept": len(keep),
                  "ms_per_1k_rows": 1000 * ens_secs / len(df) * 1000},
        gain=gain, worth_it=bool(worth), verdict=verdict, combiner=combiner.to_dict(),
        seconds=round(time.perf_counter() - start, 3), dropped=dropped, skipped=skipped, stopped_by=stopped_by,
    )
    return ModelBundle(manifest, predictor), result


def _importance(named: Sequence[tuple[str, Any]], keep: Sequence[int], combiner: Combiner) -> list[dict[str, Any]]:
    """Members' feature importances averaged with the member weights (equal weights for stacking)."""
    weights = [1.0 / len(keep)] * len(keep) if combiner.method == "stack" else list(combiner.weights_)
    total: dict[str, float] = {}
    for w, i in zip(weights, keep):
        for row in named[i][1].manifest.get("importance") or []:
            total[row["feature"]] = total.get(row["feature"], 0.0) + w * float(row["importance"])
    return [{"feature": k, "importance": round(v, 6)} for k, v in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))]


def pick_trials(done: Sequence[Any], top: int, maximize: bool) -> list[Any]:
    """The ``top`` trials an ensemble of a study starts from, best first.

    The best trial of each family comes first (models of different families make different
    errors, which is what an ensemble gains from; near-copies of the best configuration add
    cost and little else), then the next best distinct configurations fill the places left.

    Parameters
    ----------
    done : completed optuna FrozenTrials with a ``params`` user attribute
    top : how many to pick
    maximize : whether higher values are better

    Returns
    -------
    list of FrozenTrial, ordered best first
    """
    from mlsys_cli.models.tune import FAMILY_PARAM

    ranked = sorted(done, key=lambda t: (-t.value if maximize else t.value, t.number))
    keys = [(t.params.get(FAMILY_PARAM), repr(sorted(t.user_attrs["params"].items()))) for t in ranked]
    picked: list[int] = []
    families: set[Any] = set()
    for i, (family, _) in enumerate(keys):
        if family not in families and len(picked) < top:
            families.add(family)
            picked.append(i)
    seen = {keys[i] for i in picked}
    for i, key in enumerate(keys):
        if len(picked) >= top:
            break
        if key not in seen:
            seen.add(key)
            picked.append(i)
    return [ranked[i] for i in sorted(picked)]


def load_kept(trial: Any, storage: str) -> Any:
    """The model bundle ``tune`` kept for a trial, verified; None when it is no longer stored.

    Raises
    ------
    InputError
        The stored bytes do not match the sha256 the trial recorded (tampered), or the bundle
        itself fails its member hashes.
    """
    import tempfile

    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    from mlsys_cli.bundle import BundleReader
    from mlsys_cli.fsutil import sha256_file
    from mlsys_cli.models.bundle import ModelBundle
    from mlsys_cli.models.tune import artifact_store

    kept = trial.user_attrs.get("model") or {}
    if not kept.get("artifact") or not os.path.isdir(kept.get("store", "")):
        return None
    with tempfile.TemporaryDirectory(prefix="mlsys-member-") as tmp:
        path = os.path.join(tmp, "member.mlsys")
        try:
            download_artifact(artifact_store=artifact_store(kept["store"]), file_path=path, artifact_id=kept["artifact"])
        except (ArtifactNotFound, ValueError):
            return None
        if sha256_file(path) != kept.get("sha256"):
            raise InputError(f"the model kept for trial {trial.number} in {kept['store']} does not match its sha256 "
                             "(tampered or corrupted)", f"delete {os.path.join(kept['store'], kept['artifact'])} to retrain it")
        bundle = ModelBundle.load(path)
        reader = BundleReader(path, kind="model")
        bundle.predictor = KeptPredictor(bundle.predictor, {n: reader.bytes(n) for n in reader.names()},
                                         bundle.manifest["predictor"])
    bundle.path = None
    return bundle


class KeptPredictor:
    """A member loaded from a kept bundle: answers as its predictor does, and saves itself by
    copying the verified member bytes it was loaded from (same bytes as writing it again,
    without serializing every tree of a forest a second time)."""

    def __init__(self, predictor: Any, members: Mapping[str, bytes], layout: Mapping[str, Any]):
        self._predictor = predictor
        self._members = dict(members)
        self._layout = dict(layout)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (copy, unpickling): no recursion through _predictor
            raise AttributeError(name)
        return getattr(self._predictor, name)

    def save(self, writer: Any, prefix: str) -> dict[str, Any]:
        """Add the members under ``prefix``; returns the layout for the manifest."""
        for name, data in sorted(self._members.items()):
            writer.add_bytes(f"{prefix}{name}", data)
        return dict(self._layout)


def study_members(storage: str, study: str, top: int, train: str | None, seed: int = 0,
                  features: Mapping[str, Any] | None = None, progress: Any = None,
                  deadline: float | None = None, reserve: float = 0.0) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The models of the ``top`` best distinct configurations of a tuning study.

    The best of each family first (see :func:`pick_trials`), then the next best. A trial whose
    fitted model ``tune`` kept is loaded from the study's artifact store (verified); the others
    are trained by :func:`train.train_model` on ``train`` with the parameters the trial recorded
    (for early-stopped boosting, the number of rounds it chose).

    With a ``deadline`` (epoch seconds), ``reserve`` seconds before it are kept for combining: a
    trial that has to be retrained is skipped when its tuning time does not fit before that
    (cheaper trials further down still get their turn); when fewer than two members would be
    left, the best skipped ones are retrained anyway. A retrain stops (boosting rounds, epochs,
    forest growth) at the reserve.

    Returns
    -------
    (members, skipped)
        ``members``: (name, ModelBundle) best first; a kept model's predictor is a
        :class:`KeptPredictor`; ``skipped``: ``{model, reason}`` of trials left out for lack of time.
    """
    import optuna
    from optuna.trial import TrialState

    from mlsys_cli.models.train import train_model
    from mlsys_cli.models.tune import FAMILY_PARAM, open_storage

    if top < 2:
        raise UsageError(f"--top {top}: an ensemble needs at least two members")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    backend = open_storage(storage)
    try:
        loaded = optuna.load_study(study_name=study, storage=backend)
    except KeyError:
        raise InputError(f"no study {study!r} in {storage}") from None
    info = loaded.user_attrs.get("mlsys") or {}
    done = [t for t in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "params" in t.user_attrs]
    if not done:
        raise InputError(f"study {study!r} has no completed trial")
    chosen = pick_trials(done, top, maximize=loaded.direction.name == "MAXIMIZE")
    # The trials were scored with the study's featurizer options (dropped columns...): keep them.
    recipe_features = dict(features) if features else dict(info.get("features") or {})
    members: list[tuple[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    # Kept models first: loading costs little, and then the retrains know how much time is left.
    kept = {t.number: load_kept(t, storage) for t in chosen}
    built: dict[int, Any] = {n: b for n, b in kept.items() if b is not None}
    late: list[Any] = []

    def retrain(t: Any, left: float | None) -> None:
        if train is None:
            raise UsageError(f"trial {t.number} has no kept model: --from-study needs --train to retrain it")
        if progress is not None:
            progress.update(completed=len(built), total=len(chosen), description=f"retraining trial {t.number}")
        built[t.number], _ = train_model(train, target=info.get("target"), model=t.params[FAMILY_PARAM],
                                         params=t.user_attrs["params"], features=recipe_features or None, seed=seed,
                                         timeout=None if left is None else max(left, 1.0))

    for t in (t for t in chosen if t.number not in built):
        left = None if deadline is None else deadline - reserve - time.time()
        cost = t.duration.total_seconds() if t.duration else 0.0
        if left is not None and cost > left:
            late.append(t)  # a cheaper member further down may fit instead
            continue
        retrain(t, left)
    # Two members at least: the best of the trials that did not fit are retrained anyway.
    while len(built) < 2 and late:
        retrain(late.pop(0), None if deadline is None else deadline - reserve - time.time())
    for t in late:
        cost = t.duration.total_seconds() if t.duration else 0.0
        skipped.append({"model": f"{study}#trial{t.number}({t.params[FAMILY_PARAM]})",
                        "reason": f"--timeout: retraining it (~{cost:.1f}s) did not fit"})
    for t in (t for t in chosen if t.number in built):
        members.append((f"{study}#trial{t.number}({t.params[FAMILY_PARAM]})", built[t.number]))
    return members, skipped


def ensemble(models: Sequence[str], *, data: Sequence[str] | str, method: str = "average", metric: str | None = None,
             folds: int = FOLDS, seed: int = 0, output: str | None = None, storage: str | None = None,
             study: str | None = None, top: int = 5, train: str | None = None, timeout: float | None = None,
             progress: Any = None) -> EnsembleResult:
    """Build an ensemble from model bundles (or a tuning study's best trials) and write it.

    Parameters
    ----------
    models : paths of ``.mlsys`` model bundles
    data : path(s) of held-out rows with the target
    method : {"average", "weighted", "stack", "select"}
    metric : str, optional
    folds : int
        Cross-fitting folds for the honest estimate.
    seed : int
    output : path, optional
        Where to write the ensemble bundle.
    storage, study, top, train : optional
        ``--from-study``: add the ``top`` best trials of ``study``: the models ``tune`` kept,
        or retrained on ``train``.
    timeout : float, optional
        Seconds for the whole step: members that do not fit are left out (at least two are
        used), selection stops early, and the report says so (``stopped_by``, ``skipped``).
    progress : object, optional

    Returns
    -------
    EnsembleResult
    """
    from dataclasses import replace

    from mlsys_cli.data.io import input_record
    from mlsys_cli.models.bundle import ModelBundle

    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout {timeout:g}: must be positive")
    deadline = None if timeout is None else time.time() + timeout
    data = [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]
    named = [(str(p), ModelBundle.load(p)) for p in models]
    records: list[dict[str, Any]] = [{"path": str(p), "sha256": input_record(p, with_parent=False)["sha256"]} for p in models]
    skipped: list[dict[str, Any]] = []
    if study is not None:
        if storage is None:
            raise UsageError("--from-study needs --storage and --study")
        reserve = 0.0 if timeout is None else COMBINE_SHARE * timeout
        from_study, skipped = study_members(storage, study, top, train, seed=seed, progress=progress,
                                            deadline=deadline, reserve=reserve)
        named += from_study
        records += [{"study": study, "trial": name, "source": "kept" if isinstance(b.predictor, KeptPredictor) else "retrained"}
                    for name, b in from_study]
    bundle, result = build_ensemble(named, data, method=method, metric=metric, folds=folds, seed=seed,
                                    member_records=records, deadline=deadline)
    if skipped:
        result = replace(result, skipped=skipped + result.skipped, stopped_by="timeout")
    if output:
        bundle.save(output)
    return replace(result, output=str(output) if output else None)
