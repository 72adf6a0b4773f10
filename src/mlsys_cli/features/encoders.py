"""Category encodings fitted from integer codes: one-hot, ordinal and target encoding.

Written by hand, on purpose. scikit-learn's ``OneHotEncoder``, ``OrdinalEncoder`` and
``TargetEncoder`` define what these encodings are, and this module computes exactly the same
tables (the tests compare the two on random data, including infrequent categories, unseen values
and cross-fitting). What differs is the cost: sklearn sorts the raw string column on every fit,
every fold and every transform (``np.unique`` over a million Python strings, with Python
comparisons), which made one target-encoded column take over two seconds per million rows.
Here a column is factorized once by hashing (pandas), every count and mean is a
``np.bincount`` over the integer codes, and the cross-fitting folds are computed once per target
and shared by every column. The same formulas, in the same order of floating-point operations,
give bit-identical encodings.

A fitted encoding is a lookup table: ``keys`` (the sorted train categories), ``table`` (one row
of features per key) and ``default`` (the row for a value not in ``keys``). ``transform`` in
Python and the ONNX graph both look values up in this table.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np


def factorize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a canonical string column and each row's index into them.

    Returns
    -------
    keys : ndarray of object
        The distinct strings in code-point order (the order ``np.unique`` and sklearn use).
    codes : ndarray of int64
        ``keys[codes]`` equals ``x``.
    """
    import pandas as pd

    codes, uniques = pd.factorize(x)
    uniques = np.asarray(uniques, dtype=object)
    order = np.argsort(uniques, kind="stable") if uniques.size else np.zeros(0, dtype=np.int64)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return uniques[order], rank[codes]


def lookup(keys: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of each value of ``x`` in ``keys`` (-1 when absent), hashing each distinct value once."""
    import pandas as pd

    codes, uniques = pd.factorize(x)
    if not len(uniques):
        return np.full(len(x), -1, dtype=np.int64)
    return pd.Index(keys, dtype=object).get_indexer(np.asarray(uniques, dtype=object))[codes]


def infrequent_mask(counts: np.ndarray, min_frequency: int | None, max_categories: int | None) -> np.ndarray:
    """Which categories (sorted, with their train counts) go to the infrequent bucket.

    sklearn's rule (``_BaseEncoder._identify_infrequent``): rarer than ``min_frequency``, then,
    when more than ``max_categories`` outputs would remain (the bucket counts as one), all but
    the ``max_categories - 1`` most frequent (a stable sort keeps the earlier key on ties).
    """
    mask = counts < min_frequency if min_frequency is not None else np.zeros(len(counts), dtype=bool)
    remaining = len(counts) - int(mask.sum()) + 1
    if max_categories is not None and max_categories < remaining:
        frequent = max_categories - 1
        if frequent == 0:
            mask[:] = True
        else:
            mask[np.argsort(counts, kind="mergesort")[:-frequent]] = True
    return mask


def onehot_table(infrequent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One column per frequent key, then one for the infrequent bucket (if any).

    An unseen value goes to the bucket when there is one, else to all zeros
    (``handle_unknown="infrequent_if_exist"``).
    """
    frequent = np.flatnonzero(~infrequent)
    has_bucket = bool(infrequent.any())
    width = len(frequent) + int(has_bucket)
    table = np.zeros((len(infrequent), width))
    table[frequent, np.arange(len(frequent))] = 1.0
    default = np.zeros(width)
    if has_bucket:
        table[infrequent, width - 1] = 1.0
        default[width - 1] = 1.0
    return table, default


def ordinal_table(infrequent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequent keys numbered 0.. in order, every infrequent key the next number, unseen -1."""
    frequent = np.flatnonzero(~infrequent)
    codes = np.full(len(infrequent), float(len(frequent)))
    codes[frequent] = np.arange(len(frequent), dtype=np.float64)
    return codes[:, None], np.array([-1.0])


class Target:
    """A training target as the encoders use it, with its cross-fitting folds.

    Parameters
    ----------
    values : ndarray
        float64 values (``kind="continuous"``) or int64 class codes ``0..len(classes)-1``.
    kind : {"binary", "multiclass", "continuous"}
    classes : list of str, optional
        Class names in code order (classification).
    seed : int
        Seed of the shuffled (stratified) folds.
    """

    def __init__(self, values: np.ndarray, kind: str, classes: Sequence[str] | None = None, seed: int = 0):
        self.values = np.asarray(values)
        self.kind = kind
        self.classes = list(classes) if classes is not None else None
        self.seed = seed
        self._folds: dict[int, np.ndarray] = {}

    @classmethod
    def from_labels(cls, labels: Any, kind: str, seed: int = 0, classes: Sequence[str] | None = None) -> "Target":
        """Class codes of ``labels`` in the order of the class names as strings (as sklearn sorts them).

        ``classes`` (names) fixes the classes, and a label outside them is a ``KeyError``; by
        default they are the distinct labels. Each distinct label is converted once.
        """
        import pandas as pd

        codes, distinct = pd.factorize(np.asarray(labels, dtype=object))
        names = sorted({str(v) for v in distinct.tolist()}) if classes is None else list(classes)
        position = {n: i for i, n in enumerate(names)}
        lookup = np.array([position[str(v)] for v in distinct.tolist()], dtype=np.int64)
        return cls(lookup[codes], kind, names, seed)

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: np.ndarray) -> "Target":
        """The target of a subset of rows (new folds are drawn for it)."""
        return Target(self.values[rows], self.kind, self.classes, self.seed)

    def columns(self) -> np.ndarray:
        """What is averaged per category: the value, P(class 1), or one column per class."""
        if self.kind == "continuous":
            return self.values.astype(np.float64)[:, None]
        if self.kind == "binary":
            return (self.values == 1).astype(np.float64)[:, None]
        return (self.values[:, None] == np.arange(len(self.classes or []))[None, :]).astype(np.float64)

    def folds(self, k: int = 5) -> np.ndarray:
        """Fold number of each row: ``StratifiedKFold(k, shuffle=True, random_state=seed)`` for classes
        (``KFold`` for values, or when no class has ``k`` rows)."""
        if k not in self._folds:
            from sklearn.model_selection import KFold, StratifiedKFold

            if len(self) < k:  # every cross-fitted step (target encoding, leakage check) folds here
                from mlsys_cli.errors import InputError

                raise InputError(f"{len(self)} training rows are too few: cross-fitting needs at least {k}",
                                 "train on more rows")

            # Stratified when some class fills every fold; with every class rarer than k rows
            # (a tiny table) sklearn refuses to stratify at all, and plain folds are the best split.
            stratify = self.kind != "continuous" and int(np.bincount(self.values).max()) >= k
            splitter = (StratifiedKFold if stratify else KFold)(k, shuffle=True, random_state=self.seed)
            fold = np.empty(len(self), dtype=np.int64)
            with warnings.catch_warnings():
                # A class rarer than k rows cannot be in every fold; its rows are still spread out.
                warnings.filterwarnings("ignore", "The least populated class", UserWarning)
                for i, (_, held) in enumerate(splitter.split(np.zeros((len(self), 1)), self.values)):
                    fold[held] = i
            self._folds[k] = fold
        return self._folds[k]


def _encode_one(codes: np.ndarray, n_keys: int, y: np.ndarray) -> tuple[np.ndarray, float]:
    # sklearn's _fit_encoding_fast_auto_smooth (Micci-Barreca, eq. 5 and 6), vectorized.
    mean = np.mean(y)
    variance = np.var(y)
    counts = np.bincount(codes, minlength=n_keys)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.bincount(codes, weights=y, minlength=n_keys) / counts
        diff = y - means[codes]
        squares = np.bincount(codes, weights=diff * diff, minlength=n_keys)
        lam = variance * counts / (variance * counts + squares / counts)
        encoding = lam * means + (1 - lam) * mean
    return np.where(np.isnan(lam), mean, encoding), float(mean)


def target_table(codes: np.ndarray, n_keys: int, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target encoding of each key (``smooth="auto"``) and the default (the target mean)."""
    parts = [_encode_one(codes, n_keys, Y[:, j]) for j in range(Y.shape[1])]
    return np.column_stack([p[0] for p in parts]), np.array([p[1] for p in parts])


def target_cross_fit(codes: np.ndarray, n_keys: int, target: Target, k: int = 5) -> np.ndarray:
    """Out-of-fold target encoding of the training rows (what ``TargetEncoder.fit_transform`` returns).

    Each row is encoded with the table fitted on the other folds; a key absent from those folds
    gets their target mean.
    """
    Y = target.columns()
    fold = target.folds(k)
    out = np.empty((len(codes), Y.shape[1]))
    for f in range(k):
        held = fold == f
        fit = ~held
        table, _ = target_table(codes[fit], n_keys, Y[fit])
        out[held] = table[codes[held]]
    return out
