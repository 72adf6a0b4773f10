"""The multivariate drift test: can a classifier tell reference rows from current rows?

A gradient-boosted tree classifier (:mod:`mlsys_cli.monitor.boost`: columns binned on the pooled
sample's quantiles, missing values a bin of their own, categories as their frequency-rank codes)
is cross-fitted on two folds of the pooled sample to predict "is this row current?".
Its out-of-fold AUC is 0.5 when the two samples come from one distribution. The p-value comes
from a permutation test: the out-of-fold scores stay fixed and the labels are permuted within
each fold (under no drift the labels are exchangeable given the held-out scores), so it needs no
refitting. When the test fires, permutation importance on the held-out folds (the drop of AUC
when one column is shuffled) names the columns that separate the samples.

Cost and power: the test runs on a seeded sample of ``domain_rows`` rows per side (2,000 by
default) whatever the size of the data, so its cost does not grow with N (two fits of 30 trees on
2,000 rows, 200 permutations of fixed scores, importance on 1,000 rows: a few tenths of a second
of CPU, at 1M rows as at 10k). Its power holds at that size because the decision needs an AUC of at least
``domain_auc`` (0.55) besides a significant p-value: under no drift the out-of-fold AUC of
2 x 2,000 rows has a standard deviation of ``sqrt((n0 + n1 + 1) / (12 n0 n1))`` = 0.009, so a
shift the classifier separates at AUC 0.55 lies 5 standard deviations above the null and is found
with near certainty; more rows would only add significance to shifts under the AUC threshold,
which the effect rule ignores anyway (a classifier fitted on more rows could separate slightly
better; the univariate tests, which count every row, catch the per-column shifts).
"""

from __future__ import annotations

from typing import Any, Mapping

from mlsys_cli.monitor.stats import auc_from_scores

_MAX_CATEGORIES = 250
TOP_FEATURES = 5
IMPORTANCE_ROWS = 1000


def design_matrix(ref: Any, cur: Any, types: Mapping[str, str | None]) -> tuple[Any, list[str], list[bool]]:
    """Pooled float matrix of two Arrow tables (categories as codes of their most frequent values)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlsys_cli.monitor.scan import to_float, to_strings

    columns, is_cat = [], []
    for name in ref.column_names:
        # Each side is converted on its own: the current rows may hold another type than the
        # reference's (floats or 1e30 where the reference had int64, from a serve log), which a
        # cast to the reference's type would refuse.
        sides = (ref.column(name), cur.column(name))
        if types.get(name) == "string":
            s = pa.chunked_array([chunk for side in sides for chunk in to_strings(side).cast(pa.string()).chunks], pa.string())
            vc = pc.value_counts(s.drop_null())
            order = np.argsort(-np.asarray(vc.field("counts")), kind="stable")[:_MAX_CATEGORIES - 1]
            keep = pa.array([vc.field("values")[int(i)].as_py() for i in order], pa.string())
            codes = pc.index_in(s, value_set=keep).to_numpy(zero_copy_only=False).astype(np.float64)
            # Rare values share one code; missing stays NaN.
            codes = np.where(np.isnan(codes) & ~s.is_null().to_numpy(zero_copy_only=False), _MAX_CATEGORIES - 1, codes)
            columns.append(codes)
            is_cat.append(True)
        else:
            columns.append(np.concatenate([to_float(side, types.get(name) or "float") for side in sides]))
            is_cat.append(False)
    return np.column_stack(columns), list(ref.column_names), is_cat


def domain_classifier(ref: Any, cur: Any, types: Mapping[str, str | None], options: Any) -> dict[str, Any]:
    """The domain-classifier test on two samples (Arrow tables with the same columns)."""
    import numpy as np

    from mlsys_cli.monitor import boost

    X, names, _ = design_matrix(ref, cur, types)
    codes = boost.bin_columns(X)
    y = np.r_[np.zeros(ref.num_rows, dtype=bool), np.ones(cur.num_rows, dtype=bool)]
    rng = np.random.default_rng(options.seed)
    fold = np.empty(len(y), dtype=np.int64)
    for side in (False, True):
        idx = np.flatnonzero(y == side)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % 2
    scores = np.empty(len(y))
    models = []
    for k in (0, 1):
        model = boost.fit(codes[fold != k], y[fold != k])
        scores[fold == k] = model.decision(codes[fold == k])
        models.append(model)
    auc = auc_from_scores(scores, y)
    null = _null_aucs(scores, y, fold, options.permutations, rng)
    p = float((1 + np.sum(null >= auc)) / (1 + len(null)))
    drifted = p <= options.alpha and auc >= options.domain_auc
    out = {"test": "domain_classifier", "ran": True, "auc": auc, "p_value": p, "permutations": int(options.permutations),
           "rows_reference": int(ref.num_rows), "rows_current": int(cur.num_rows), "threshold_auc": options.domain_auc,
           "drifted": bool(drifted), "separating_features": []}
    if drifted:
        out["separating_features"] = _importance(models, codes, y, fold, names, rng)
    return out


def _null_aucs(scores: Any, y: Any, fold: Any, permutations: int, rng: Any) -> Any:
    """AUCs of the fixed scores under labels permuted within each fold (all permutations at once)."""
    import numpy as np

    from mlsys_cli.monitor.stats import rankdata

    ranks = rankdata(scores)
    n1, n0 = int(y.sum()), int((~y).sum())
    total = np.zeros(permutations)
    for k in (0, 1):
        idx = np.flatnonzero(fold == k)
        labels = rng.permuted(np.broadcast_to(y[idx], (permutations, len(idx))), axis=1)
        # einsum, not a matrix product: BLAS threads cost more than this small sum.
        total += np.einsum("pi,i->p", labels.astype(np.float64), ranks[idx])
    return (total - n1 * (n1 + 1) / 2) / (n1 * n0)


def _importance(models: list[Any], codes: Any, y: Any, fold: Any, names: list[str], rng: Any) -> list[dict[str, Any]]:
    """Drop of held-out AUC when each column is shuffled, largest first (top TOP_FEATURES).

    Measured with the first fold's model on at most IMPORTANCE_ROWS of its held-out rows: naming
    the separating columns needs their order, not precise values, and one prediction per column
    is the cost. The drop is paired (same rows, same model), so its noise is far below the AUC's own.
    """
    import numpy as np

    rows = np.flatnonzero(fold == 0)
    if len(rows) > IMPORTANCE_ROWS:
        rows = np.sort(rng.choice(rows, IMPORTANCE_ROWS, replace=False))
    X0, y0 = codes[rows], y[rows]
    base = auc_from_scores(models[0].decision(X0), y0)
    drops = np.zeros(len(names))
    for j in range(len(names)):
        Xk = X0.copy()
        Xk[:, j] = rng.permutation(Xk[:, j])
        drops[j] = base - auc_from_scores(models[0].decision(Xk), y0)
    order = np.argsort(-drops, kind="stable")[:TOP_FEATURES]
    return [{"feature": names[i], "auc_drop": float(drops[i])} for i in order if drops[i] > 0]
