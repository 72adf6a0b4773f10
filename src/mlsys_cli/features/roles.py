"""Column roles: what each raw column is, inferred from canonical train values, with overrides.

=================== =========================================================== ==========
role                meaning                                                     featurized
=================== =========================================================== ==========
numeric             numbers                                                     yes
boolean             true/false                                                  yes
categorical         strings with few distinct values (<= ``max_categories``)    yes
categorical_high    strings with many distinct values                           yes
datetime            timestamps / dates                                          yes
id                  an identifier (name like ``*_id`` with many values, or      no
                    every value distinct)
constant            one distinct value in train                                 no
empty               every value missing in train                                no
text                free text (long strings with spaces, mostly distinct)       no
dropped             ``--drop``                                                  no
=================== =========================================================== ==========
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

FEATURE_ROLES = ("numeric", "boolean", "categorical", "categorical_high", "datetime")
_ID_NAME = re.compile(r"(^|[_\-\s.])(id|uuid|guid|key)$|^(id|uuid|guid)[_\-]|[a-z]Id$", re.IGNORECASE)


def missing_mask(values: np.ndarray, kind: str) -> np.ndarray:
    """Which canonical values are missing."""
    from mlsys_cli.features.schema import INT64_MIN

    if kind == "string":
        return values == ""
    if kind == "datetime":
        return values == INT64_MIN
    return np.isnan(values)


def category_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts, most frequent first (ties by value).

    Hash-based (pandas) rather than ``np.unique``, which sorts object arrays with Python
    comparisons: on a million strings that sort was most of the featurizer's fit time.
    """
    import pandas as pd

    counts = pd.Series(values, dtype=object, copy=False).value_counts(sort=False, dropna=False)
    keys, n = counts.index.to_numpy(dtype=object), counts.to_numpy(dtype=np.int64)
    order = np.lexsort((keys, -n))
    return keys[order], n[order]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _role(name: str, values: np.ndarray, kind: str, max_categories: int) -> tuple[str, str]:
    import pandas as pd

    n = len(values)
    present = values[~missing_mask(values, kind)]
    if present.size == 0:
        return "empty", "every value is missing"
    if kind == "string":
        keys, counts = category_counts(present)
        if len(keys) == 1:
            return "constant", f"one distinct value ({_plain(present[0])!r})"
        n_unique = len(keys)
    elif present.min() == present.max():
        return "constant", f"one distinct value ({_plain(present[0])!r})"
    if kind == "bool":
        return "boolean", "true/false values"
    if kind == "datetime":
        return "datetime", "timestamps"
    name_like_id = bool(_ID_NAME.search(name))
    if kind == "float":
        # An id is a column of distinct integers with no gaps in it: only then count distinct values.
        if present.size == n and n >= 20 and bool(np.all(np.floor(present) == present)):
            if bool(np.all(np.diff(present) > 0)):
                return "id", "identifier name, distinct values" if name_like_id else "distinct increasing integers"
            if name_like_id and len(pd.unique(present)) == n:
                return "id", "identifier name, distinct values"
        return "numeric", "numbers"
    if name_like_id and n_unique > max(max_categories, 0.05 * n):
        return "id", f"identifier name, {n_unique} distinct values"
    if n >= 20 and n_unique == n:
        return "id", "every value distinct"
    # Mean length over the distinct values weighted by their counts: one len() per category.
    mean_length = float(np.dot(np.fromiter((len(k) for k in keys), dtype=np.float64, count=len(keys)), counts)) / present.size
    if mean_length > 40 and n_unique > 0.5 * present.size and np.mean([" " in v for v in present[:1000]]) > 0.5:
        return "text", "free text (not featurized)"
    if n_unique <= max_categories:
        return "categorical", f"{n_unique} categories"
    return "categorical_high", f"{n_unique} categories"


def infer_roles(
    canon: Any,
    schema: Sequence[dict[str, Any]],
    *,
    max_categories: int = 20,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    datetime: Sequence[str] = (),
    drop: Sequence[str] = (),
    ids: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Infer the role of every column of a canonical train frame.

    Parameters
    ----------
    canon : pandas.DataFrame or dict of arrays
        Canonical values (:func:`mlsys_cli.features.schema.canonicalize`).
    schema : list of dict
        ``[{"name", "type"}]`` of ``canon``.
    max_categories : int
        Strings with more distinct values than this are ``categorical_high``.
    numeric, categorical, datetime, drop, ids : sequence of str
        Overrides. A forced type still becomes ``empty`` or ``constant`` when its train values are.

    Returns
    -------
    dict
        name -> ``{"type", "role", "reason", "missing"}``; ``missing`` is the fraction missing in train.
    """
    roles: dict[str, dict[str, Any]] = {}
    for col in schema:
        name, kind = col["name"], col["type"]
        values = np.asarray(canon[name])
        miss = float(missing_mask(values, kind).mean()) if len(values) else 0.0
        if name in drop:
            role, reason = "dropped", "--drop"
        elif name in ids:
            role, reason = "id", "--id"
        else:
            role, reason = _role(name, values, kind, max_categories)
            if role not in ("empty", "constant"):
                if name in numeric:
                    role, reason = "numeric", "--numeric"
                elif name in categorical:
                    role, reason = ("categorical" if role != "categorical_high" else role), "--categorical"
                    if role not in ("categorical", "categorical_high"):
                        n_unique = len(set(values.tolist()) - {""})
                        role = "categorical" if n_unique <= max_categories else "categorical_high"
                elif name in datetime:
                    role, reason = "datetime", "--datetime"
        roles[name] = {"type": kind, "role": role, "reason": reason, "missing": round(miss, 6)}
    return roles
