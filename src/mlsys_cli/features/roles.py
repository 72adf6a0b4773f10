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
unrepresentable     numbers float32 cannot hold: every value infinite or beyond no
                    +/-3.4e38, or distinct integers beyond 2^24 that all round
                    to one float32
nested              lists or structs                                            no
text                free text (long strings with spaces, mostly distinct)       no
dropped             ``--drop``                                                  no
=================== =========================================================== ==========
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

FEATURE_ROLES = ("numeric", "boolean", "categorical", "categorical_high", "datetime")
FLOAT32_EXACT = 2 ** 24  # every integer up to this is a float32; beyond it, neighbours round together
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
    if kind == "time":
        return "numeric", "times of day (seconds since midnight)"
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


def raw_numbers(df: Any, schema: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """What the float32 cast hides about each raw numeric column: ``(present, distinct, merged)``.

    Canonical values are float32 (:mod:`.schema`), so values beyond float32 range become missing
    and distinct integers beyond 2^24 can round to one value. Counted on the raw column, the role
    can say so instead of calling the column "entirely missing" or "constant". ``present``: raw
    values not missing (inf and beyond-range included); ``distinct``: distinct raw values of an
    integer column whose values exceed 2^24 (else 0); ``merged``: how many distinct float32 values
    they become (0 when not counted).
    """
    from pandas.api import types as pdt

    out = {}
    for col in schema:
        if col["type"] != "float" or col["name"] not in df.columns:
            continue
        series = df[col["name"]]
        if not pdt.is_numeric_dtype(series.dtype) or pdt.is_bool_dtype(series.dtype):
            continue
        present = int(series.notna().sum())
        distinct = merged = 0
        if pdt.is_integer_dtype(series.dtype) and present:
            values = series.dropna().to_numpy()
            if max(abs(int(values.min())), abs(int(values.max()))) > FLOAT32_EXACT:
                distinct = int(len(np.unique(values)))
                merged = int(len(np.unique(values.astype(np.float32))))
        out[col["name"]] = (present, distinct, merged)
    return out


def _float32_role(role: tuple[str, str], raw: tuple[int, int, int], n: int) -> tuple[str, str]:
    """The role of a float column, corrected for what its float32 cast lost (see :func:`raw_numbers`)."""
    from mlsys_cli.features.schema import FLOAT32_MAX

    present, distinct, merged = raw
    if role[0] == "empty" and present:
        return "unrepresentable", f"every value is infinite or beyond float32 range, |x| > {FLOAT32_MAX:.3g}"
    if distinct > merged:
        if role[0] == "constant":
            if distinct == present == n and n >= 20:
                return "id", f"{distinct} distinct integers beyond float32 precision (2^24): an identifier"
            return "unrepresentable", f"{distinct} distinct integers beyond 2^24 round to one float32 value"
        return role[0], f"{role[1]}; {distinct} distinct integers beyond 2^24 round to {merged} float32 values"
    return role


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
    raw: dict[str, tuple[int, int, int]] | None = None,
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
    raw : dict, optional
        :func:`raw_numbers` of the raw frame: float columns whose values float32 cannot hold
        become ``unrepresentable`` (or ``id``) instead of ``empty`` or ``constant``.

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
            if raw and name in raw:
                role, reason = _float32_role((role, reason), raw[name], len(values))
            if role not in ("empty", "constant", "unrepresentable"):
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
