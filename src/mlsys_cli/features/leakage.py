"""Leakage checks: features that give the answer away, and splits that do not look like train.

``single_feature_findings`` runs on train only, inside ``Featurizer.fit``: each feature alone
predicts the target with a quick cross-validated tree (depth 4, 3 folds; strings first go
through out-of-fold target encoding so a category's own label is never used to score it).
A score (AUC for classification, R^2 for regression, or Spearman rho^2 for a monotone
relation) at or above the threshold is a near-perfect predictor: almost always a target
derivative (a column filled in after the outcome, a status code, the label under another name).

``missing_shift`` compares the missing rates of a held-out table with train's.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mlsys_cli.features.roles import FEATURE_ROLES, missing_mask
from mlsys_cli.features.schema import INT64_MIN

MAX_ROWS = 20_000


def import_dependencies() -> None:
    """Import the modules the check uses, in the calling thread, before it runs on another one.

    Two threads importing scikit-learn at once can see a partially initialised module (an
    ImportError about 1 run in 25): the featurizer calls this before starting the check's thread.
    """
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.tree  # noqa: F401


def _as_number(values: np.ndarray, kind: str) -> np.ndarray:
    if kind == "datetime":
        x = np.where(values == INT64_MIN, np.nan, values.astype(np.float64))
    else:
        x = values.astype(np.float64)
    # Missing below every value, so a tree can still split on "is missing".
    low = np.nanmin(x) - 1.0 if np.isfinite(x).any() else 0.0
    return np.where(np.isnan(x), low, x)


def auc(y: Any, score: Any) -> float:
    """ROC AUC of binary labels ``y`` (0/1) by the rank-sum (Mann-Whitney) formula, ties counted
    half: what ``roc_auc_score`` gives, without its input validation, which dominates the cost
    of many small scorings (a column each here; hundreds in greedy ensemble selection)."""
    from scipy.stats import rankdata

    y = np.asarray(y) == 1
    pos = int(y.sum())
    neg = len(y) - pos
    ranks = rankdata(score)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _out_of_fold(model: Any, X: np.ndarray, y: np.ndarray, folds: list, proba: bool) -> np.ndarray:
    # A plain fold loop: cross_val_predict's dispatch costs more than these tiny trees. X is
    # already what a tree fits on (float32, C order, no NaN), so the trees skip their input
    # validation (check_input=False), which cost more than the fits on a wide table.
    classes = np.unique(y)
    out = np.zeros((len(y), len(classes)) if proba else len(y))
    check = not np.isfinite(X).all()  # NaN: the trees' own missing-value handling, which needs their check
    for fit_rows, held_rows in folds:
        model.fit(X[fit_rows], y[fit_rows], check_input=check)
        if proba:
            out[np.ix_(held_rows, np.searchsorted(classes, model.classes_))] = model.predict_proba(X[held_rows], check_input=check)
        else:
            out[held_rows] = model.predict(X[held_rows], check_input=check)
    return out


def _folds(y: np.ndarray, task: str, seed: int) -> list:
    """The 3 cross-validation folds of the target (no folds: a class too rare to score).

    The splits depend only on the labels and the row count, so they are made once per fit
    rather than once per column (a wide table has thousands of columns).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    rows = np.zeros((len(y), 1))
    if task == "regression":
        return list(KFold(3, shuffle=True, random_state=seed).split(rows, y))
    k = int(min(3, np.unique(y, return_counts=True)[1].min()))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(rows, y)) if k >= 2 else []


def _score(x: np.ndarray, y: np.ndarray, task: str, seed: int, folds: list) -> float:
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    # float32 is what a tree fits on anyway (it casts its input): the same splits, cast once here.
    X = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
    if task == "regression":
        pred = _out_of_fold(DecisionTreeRegressor(max_depth=4, random_state=seed), X, y, folds, proba=False)
        score = r2_score(y, pred)
        if X.shape[1] == 1 and np.ptp(x) > 0:
            from scipy.stats import spearmanr

            rho = spearmanr(x.reshape(-1), y).statistic
            score = max(score, float(rho) ** 2 if np.isfinite(rho) else 0.0)
        return float(score)
    if not folds:
        return 0.0
    classes = np.unique(y)
    proba = _out_of_fold(DecisionTreeClassifier(max_depth=4, random_state=seed), X, y, folds, proba=True)
    if len(classes) == 2:
        return auc(y == classes[1], proba[:, 1])
    proba = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
    return float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))


def single_feature_findings(
    data: Mapping[str, np.ndarray],
    schema: Sequence[Mapping[str, Any]],
    roles: Mapping[str, Mapping[str, Any]],
    y: Any,
    task: str,
    threshold: float = 0.98,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Features that alone predict the target almost perfectly on train.

    Parameters
    ----------
    y : Target or array-like
        The training target (:class:`~mlsys_cli.features.encoders.Target`, or plain labels/values).

    Returns
    -------
    list of dict
        ``{"column", "check", "score", "metric", "message"}`` for each feature at or above
        ``threshold``, strongest first.
    """
    from mlsys_cli.features import encoders
    from mlsys_cli.features.transformers import as_target

    target_type = {"regression": "continuous"}.get(task, task)
    if not isinstance(y, encoders.Target):
        y = as_target(y, target_type, seed)
    n = len(y)
    rows = np.sort(np.random.default_rng(seed).choice(n, MAX_ROWS, replace=False)) if n > MAX_ROWS else np.arange(n)
    # Class codes (integers) rather than labels: every fold split and unique() below is then cheap.
    target = y.take(rows)
    y = target.values
    metric = "r2" if task == "regression" else "auc"
    folds = _folds(y, task, seed)
    findings = []
    for col in schema:
        name, kind = col["name"], col["type"]
        if roles[name]["role"] not in FEATURE_ROLES:
            continue
        values = data[name][rows]
        if kind == "string":
            keys, codes = encoders.factorize(values)
            x = encoders.target_cross_fit(codes, len(keys), target, k=3)
        else:
            x = _as_number(values, kind)
        score = _score(x, y, task, seed, folds)
        if score >= threshold:
            findings.append({"column": name, "check": "near_perfect_predictor", "score": round(score, 6), "metric": metric,
                             "message": f"{name!r} alone predicts the target ({metric} {score:.4f} on train): likely leakage"})
            continue
        missing = missing_mask(values, kind)
        if missing.any() and not missing.all():
            miss_score = _score(missing.astype(np.float64), y, task, seed, folds)
            if miss_score >= threshold:
                findings.append({"column": name, "check": "missing_pattern", "score": round(miss_score, 6), "metric": metric,
                                 "message": f"whether {name!r} is missing predicts the target ({metric} {miss_score:.4f}): "
                                            "likely filled in after the outcome"})
    return sorted(findings, key=lambda f: -f["score"])


def missing_shift(
    train_missing: Mapping[str, float], check: Mapping[str, np.ndarray], schema: Sequence[Mapping[str, Any]], label: str,
    min_increase: float = 0.1, ratio: float = 2.0,
) -> list[dict[str, Any]]:
    """Columns with far more missing values in a held-out table than in train.

    A column is flagged when its missing rate rises by at least ``min_increase`` (absolute)
    and to at least ``ratio`` times the train rate.
    """
    findings = []
    for col in schema:
        name = col["name"]
        rate = float(missing_mask(check[name], col["type"]).mean()) if len(check[name]) else 0.0
        base = float(train_missing.get(name, 0.0))
        if rate - base >= min_increase and rate >= ratio * base:
            findings.append({"column": name, "check": "missing_shift", "data": label, "train_missing": round(base, 6),
                             "missing": round(rate, 6),
                             "message": f"{name!r} is missing in {rate:.1%} of {label} rows but {base:.1%} of train rows"})
    return findings
