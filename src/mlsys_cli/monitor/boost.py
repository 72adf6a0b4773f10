"""A small gradient-boosted tree classifier on binned columns, in NumPy: the domain classifier's model.

Why not a library. The test needs a flexible classifier fitted on a few thousand rows, once per
run; the fit itself is cheap, the import is not. On this machine (``python -X importtime``,
PYTHONDONTWRITEBYTECODE=1, CPU seconds of a fresh interpreter): ``sklearn.ensemble`` 1.8 s
(scipy, joblib, threadpoolctl and every ensemble module, for ``HistGradientBoostingClassifier``;
plus an OpenMP runtime that had to be held to one thread), ``xgboost`` 1.9 s (it imports
scikit-learn's wrappers, pandas and scipy.sparse itself), LightGBM is not a dependency. In a 1M-row
run that import was the larger half of the domain test's cost, and on two cores it competed with
the counting threads. Histogram boosting on pre-binned columns is a few ``bincount`` calls per
tree level, so it is written here (``benchmarks/results/drift.md``).

The model: logistic loss; level-wise trees of depth ``DEPTH`` (up to 16 leaves, the capacity of
the 15-leaf GBM it replaces); each split picks the column and bin boundary with the largest
second-order gain (L2 penalty ``L2`` on leaf values, at least ``MIN_LEAF`` rows per side); leaf
values shrunk by ``RATE``. Columns are binned on their quantiles in the rows given (at most
``MAX_BINS`` bins); missing values get bin 0, below every value, so one split isolates them
(a missing-rate shift is one of the things the test must see).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_BINS = 64
DEPTH = 4
TREES = 30
RATE = 0.2
L2 = 1.0
MIN_LEAF = 20


def bin_columns(X: Any) -> Any:
    """Bin codes (``uint8``, 0 = missing, 1.. by value) of each column of a float matrix (NaN = missing).

    A column of at most ``MAX_BINS - 1`` distinct values gets one bin per value; a longer one its
    ``MAX_BINS - 1`` quantile bins (ties kept together).
    """
    import numpy as np

    codes = np.zeros(X.shape, dtype=np.uint8)
    for j in range(X.shape[1]):
        x = X[:, j]
        present = ~np.isnan(x)
        values = np.unique(x[present])
        if len(values) >= MAX_BINS:
            values = np.unique(np.quantile(x[present], np.linspace(0, 1, MAX_BINS)[:-1]))
        codes[present, j] = np.searchsorted(values, x[present], side="right")
    return codes


@dataclass(frozen=True)
class Booster:
    """Fitted trees, stored level by level as complete binary trees (heap order).

    ``feature[t, k]`` and ``threshold[t, k]`` are the split of node ``k`` of tree ``t`` (rows with
    ``code > threshold`` go right; a node that does not split sends every row left with
    threshold ``MAX_BINS``), ``leaf[t, i]`` the value of leaf ``i``; ``base`` the starting log-odds.
    """

    base: float
    feature: Any
    threshold: Any
    leaf: Any

    def decision(self, codes: Any) -> Any:
        """Log-odds of the positive class for each row of ``codes`` (from :func:`bin_columns`)."""
        import numpy as np

        trees = np.arange(len(self.leaf))[:, None]
        rows = np.arange(len(codes))[None, :]
        node = np.zeros((len(self.leaf), len(codes)), dtype=np.intp)
        for depth in range(DEPTH):
            heap = node + (2**depth - 1)
            go = codes[rows, self.feature[trees, heap]] > self.threshold[trees, heap]
            node = 2 * node + go
        return self.base + self.leaf[trees, node].sum(axis=0)


def fit(codes: Any, y: Any) -> Booster:
    """Fit ``TREES`` trees to binary labels ``y`` on the bin codes of :func:`bin_columns`."""
    import numpy as np

    n, width = codes.shape
    prior = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    base = float(np.log(prior / (1 - prior)))
    # One flat histogram index per (row, column): column j's bins start at j * MAX_BINS.
    flat = codes.astype(np.intp) + np.arange(width, dtype=np.intp) * MAX_BINS
    inner = 2**DEPTH - 1
    feature = np.zeros((TREES, inner), dtype=np.intp)
    threshold = np.full((TREES, inner), MAX_BINS, dtype=np.intp)
    leaf = np.zeros((TREES, 2**DEPTH))
    score = np.full(n, base)
    target = y.astype(np.float64)
    for t in range(TREES):
        p = 1.0 / (1.0 + np.exp(-score))
        grad, hess = p - target, p * (1.0 - p)
        node = np.zeros(n, dtype=np.intp)
        for depth in range(DEPTH):
            f, b = _best_splits(flat, node, grad, hess, 2**depth, width)
            feature[t, 2**depth - 1:2**(depth + 1) - 1], threshold[t, 2**depth - 1:2**(depth + 1) - 1] = f, b
            node = 2 * node + (codes[np.arange(n), f[node]] > b[node])
        g = np.bincount(node, weights=grad, minlength=2**DEPTH)
        h = np.bincount(node, weights=hess, minlength=2**DEPTH)
        leaf[t] = -RATE * g / (h + L2)
        score += leaf[t][node]
    return Booster(base, feature, threshold, leaf)


def _best_splits(flat: Any, node: Any, grad: Any, hess: Any, nodes: int, width: int) -> tuple[Any, Any]:
    """The best (column, bin) split of each of ``nodes`` nodes; (0, MAX_BINS) where none gains."""
    import numpy as np

    size = width * MAX_BINS
    idx = (flat + (node * size)[:, None]).ravel()
    shape = (nodes, width, MAX_BINS)
    left = [np.bincount(idx, weights=np.repeat(w, width), minlength=nodes * size).reshape(shape).cumsum(axis=2)
            for w in (grad, hess)]
    count = np.bincount(idx, minlength=nodes * size).reshape(shape).cumsum(axis=2)
    (g_left, h_left), total = left, [a[:, :, -1:] for a in (*left, count)]
    g_right, h_right, c_right = total[0] - g_left, total[1] - h_left, total[2] - count
    gain = g_left**2 / (h_left + L2) + g_right**2 / (h_right + L2) - total[0] ** 2 / (total[1] + L2)
    gain[(count < MIN_LEAF) | (c_right < MIN_LEAF)] = -np.inf
    flat_gain = gain.reshape(nodes, size)
    best = flat_gain.argmax(axis=1)
    splits = flat_gain[np.arange(nodes), best] > 1e-12
    return np.where(splits, best // MAX_BINS, 0), np.where(splits, best % MAX_BINS, MAX_BINS)
