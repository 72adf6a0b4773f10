"""The multivariate drift test: can a classifier tell reference rows from current rows?

A gradient-boosted classifier (scikit-learn's histogram GBM: missing values and categories handled
natively) is cross-fitted on two folds of the pooled sample to predict "is this row current?".
Its out-of-fold AUC is 0.5 when the two samples come from one distribution. The p-value comes
from a permutation test: the out-of-fold scores stay fixed and the labels are permuted within
each fold (under no drift the labels are exchangeable given the held-out scores), so it needs no
refitting. When the test fires, permutation importance on the held-out folds (the drop of AUC
when one column is shuffled) names the columns that separate the samples.
"""

from __future__ import annotations

from typing import Any, Mapping

from mlsys_cli.monitor.stats import auc_from_scores

_MAX_CATEGORIES = 250
TOP_FEATURES = 5


def design_matrix(ref: Any, cur: Any, types: Mapping[str, str | None]) -> tuple[Any, list[str], list[bool]]:
    """Pooled float matrix of two Arrow tables (categories as codes of their most frequent values)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlsys_cli.monitor.scan import to_float, to_strings

    columns, is_cat = [], []
    for name in ref.column_names:
        both = pa.chunked_array([*ref.column(name).chunks, *cur.column(name).cast(ref.column(name).type).chunks], ref.column(name).type)
        if types.get(name) == "string":
            s = to_strings(both)
            vc = pc.value_counts(s.drop_null())
            order = np.argsort(-np.asarray(vc.field("counts")), kind="stable")[:_MAX_CATEGORIES - 1]
            keep = pa.array([vc.field("values")[int(i)].as_py() for i in order], pa.string())
            codes = pc.index_in(s, value_set=keep).to_numpy(zero_copy_only=False).astype(np.float64)
            # Rare values share one code; missing stays NaN.
            codes = np.where(np.isnan(codes) & ~s.is_null().to_numpy(zero_copy_only=False), _MAX_CATEGORIES - 1, codes)
            columns.append(codes)
            is_cat.append(True)
        else:
            columns.append(to_float(both, types.get(name) or "float"))
            is_cat.append(False)
    return np.column_stack(columns), list(ref.column_names), is_cat


def domain_classifier(ref: Any, cur: Any, types: Mapping[str, str | None], options: Any) -> dict[str, Any]:
    """The domain-classifier test on two samples (Arrow tables with the same columns)."""
    from threadpoolctl import threadpool_limits

    # One OpenMP thread: on a few thousand rows the GBM's threads mostly wait for each other, and
    # on a loaded machine (cron beside other jobs) one thread measured twice as fast as two.
    with threadpool_limits(1):
        return _domain_classifier(ref, cur, types, options)


def _domain_classifier(ref: Any, cur: Any, types: Mapping[str, str | None], options: Any) -> dict[str, Any]:
    import numpy as np

    X, names, is_cat = design_matrix(ref, cur, types)
    y = np.r_[np.zeros(ref.num_rows, dtype=bool), np.ones(cur.num_rows, dtype=bool)]
    rng = np.random.default_rng(options.seed)
    fold = np.empty(len(y), dtype=np.int64)
    for side in (False, True):
        idx = np.flatnonzero(y == side)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % 2
    scores = np.empty(len(y))
    models = []
    for k in (0, 1):
        model = _classifier(is_cat, options.seed).fit(X[fold != k], y[fold != k])
        scores[fold == k] = model.predict_proba(X[fold == k])[:, 1]
        models.append(model)
    auc = auc_from_scores(scores, y)
    null = _null_aucs(scores, y, fold, options.permutations, rng)
    p = float((1 + np.sum(null >= auc)) / (1 + len(null)))
    drifted = p <= options.alpha and auc >= options.domain_auc
    out = {"test": "domain_classifier", "ran": True, "auc": auc, "p_value": p, "permutations": int(options.permutations),
           "rows_reference": int(ref.num_rows), "rows_current": int(cur.num_rows), "threshold_auc": options.domain_auc,
           "drifted": bool(drifted), "separating_features": []}
    if drifted:
        out["separating_features"] = _importance(models, X, y, fold, names, rng)
    return out


def _classifier(is_cat: list[bool], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=30, learning_rate=0.2, max_leaf_nodes=15, early_stopping=False,
                                          categorical_features=is_cat if any(is_cat) else None, random_state=seed)


def _null_aucs(scores: Any, y: Any, fold: Any, permutations: int, rng: Any) -> Any:
    """AUCs of the fixed scores under labels permuted within each fold."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n1, n0 = int(y.sum()), int((~y).sum())
    out = np.empty(permutations)
    parts = [np.flatnonzero(fold == k) for k in (0, 1)]
    for i in range(permutations):
        perm = y.copy()
        for idx in parts:
            perm[idx] = rng.permutation(y[idx])
        out[i] = (ranks[perm].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out


def _importance(models: list[Any], X: Any, y: Any, fold: Any, names: list[str], rng: Any) -> list[dict[str, Any]]:
    """Drop of held-out AUC when each column is shuffled, largest first (top TOP_FEATURES).

    Measured on the first fold only: naming the separating columns needs their order, not
    precise values, and it halves the cost.
    """
    import numpy as np

    X0, y0 = X[fold == 0], y[fold == 0]
    base = auc_from_scores(models[0].predict_proba(X0)[:, 1], y0)
    drops = np.zeros(len(names))
    for j in range(len(names)):
        Xk = X0.copy()
        Xk[:, j] = rng.permutation(Xk[:, j])
        drops[j] = base - auc_from_scores(models[0].predict_proba(Xk)[:, 1], y0)
    order = np.argsort(-drops, kind="stable")[:TOP_FEATURES]
    return [{"feature": names[i], "auc_drop": float(drops[i])} for i in order if drops[i] > 0]
