"""``--backend alibi``: the p-values of the tests come from alibi-detect (the optional ``alibi`` extra).

alibi-detect is under the Business Source License and pins numpy<2 and pandas<3, so it is never a
core dependency: install ``mlsys[alibi]`` in an environment of its own. Its detectors work on rows
in memory, so this backend runs on the seeded samples (``--domain-rows`` per side) that the native
domain classifier uses, and needs a reference with rows (a table, or a profile saved with rows).

- per feature: ``TabularDrift`` (Kolmogorov–Smirnov for numbers, chi-square for categories) gives
  the per-feature p-values; mlsys still applies Benjamini–Hochberg across them AND its
  effect-size thresholds (computed from all rows, as with the native backend), so the two
  backends decide by the same rule;
- multivariate: ``ClassifierDrift`` (a scikit-learn gradient-boosted classifier, out-of-fold
  predictions) and, when torch is installed, ``MMDDrift`` (maximum mean discrepancy with a
  permutation test) on the standardized samples.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mlsys_cli.errors import UsageError


def _encoded(ref: Any, cur: Any, types: Mapping[str, str | None]) -> tuple[Any, Any, list[str], list[bool]]:
    """Both samples as float matrices, categories as codes, missing numbers as the reference median."""
    import numpy as np

    from mlsys_cli.monitor.domain import design_matrix

    X, names, is_cat = design_matrix(ref, cur, types)
    n = ref.num_rows
    fill = np.where(is_cat, -1.0, np.nanmedian(np.where(np.isnan(X[:n]), np.nan, X[:n]), axis=0))
    X = np.where(np.isnan(X), fill, X)
    return X[:n].astype(np.float32), X[n:].astype(np.float32), names, is_cat


def _require(ref: Any) -> None:
    if ref is None or ref.num_rows == 0:
        raise UsageError("--backend alibi needs reference rows", "give --reference TABLE or a --profile saved with rows")


def feature_pvalues(ref: Any, cur: Any, types: Mapping[str, str | None], names: Sequence[str]) -> dict[str, float]:
    """alibi-detect ``TabularDrift`` per-feature p-values for ``names``."""
    from alibi_detect.cd import TabularDrift

    _require(ref)
    columns = [c for c in names if c in ref.column_names]
    x_ref, x_cur, cols, is_cat = _encoded(ref.select(columns), cur.select(columns), types)
    detector = TabularDrift(x_ref, p_val=0.05, categories_per_feature={i: None for i, c in enumerate(is_cat) if c})
    pred = detector.predict(x_cur, drift_type="feature", return_p_val=True)
    return {c: float(p) for c, p in zip(cols, pred["data"]["p_val"])}


def multivariate(ref: Any, cur: Any, types: Mapping[str, str | None], options: Any) -> dict[str, Any]:
    """alibi-detect's classifier (and MMD, with torch) two-sample tests, in the report's shape."""
    import numpy as np
    from alibi_detect.cd import ClassifierDrift
    from sklearn.ensemble import HistGradientBoostingClassifier

    _require(ref)
    x_ref, x_cur, names, _ = _encoded(ref, cur, types)
    clf = ClassifierDrift(x_ref, model=HistGradientBoostingClassifier(max_iter=30, random_state=options.seed),
                          backend="sklearn", p_val=options.alpha, preds_type="probs", n_folds=2, binarize_preds=False)
    pred = clf.predict(x_cur)["data"]
    out = {"test": "alibi ClassifierDrift", "ran": True, "p_value": float(pred["p_val"]),
           "distance": float(pred["distance"]), "rows_reference": int(ref.num_rows), "rows_current": int(cur.num_rows),
           "drifted": bool(pred["is_drift"]), "separating_features": []}
    try:
        import torch  # noqa: F401
    except ImportError:
        out["mmd"] = {"ran": False, "note": "MMDDrift needs torch"}
        return out
    from alibi_detect.cd import MMDDrift

    mean, std = x_ref.mean(axis=0), x_ref.std(axis=0) + 1e-9
    keep = min(len(x_ref), 1000)
    mmd = MMDDrift((x_ref[:keep] - mean) / std, backend="pytorch", p_val=options.alpha, n_permutations=options.permutations)
    res = mmd.predict(((x_cur[:keep] - mean) / std).astype(np.float32))["data"]
    out["mmd"] = {"ran": True, "p_value": float(res["p_val"]), "distance": float(res["distance"]), "drifted": bool(res["is_drift"])}
    out["drifted"] = out["drifted"] or out["mmd"]["drifted"]
    return out
