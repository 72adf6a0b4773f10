"""monitor.boost: the domain classifier's gradient-boosted trees bin, fit and separate what they should."""

from __future__ import annotations

import numpy as np

from mlsys_cli.monitor import boost
from mlsys_cli.monitor.stats import auc_from_scores


def test_bins_keep_missing_apart_and_few_values_exact():
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=1000), rng.integers(0, 5, 1000).astype(float)]
    X[::10, 0] = np.nan
    codes = boost.bin_columns(X)
    assert (codes[::10, 0] == 0).all() and (codes[1::10, 0] > 0).all()
    assert codes[:, 0].max() == boost.MAX_BINS - 1
    # Five distinct values: five bins in their order.
    assert sorted(set(codes[:, 1])) == [1, 2, 3, 4, 5]
    assert all(len(set(X[codes[:, 1] == c, 1])) == 1 for c in range(1, 6))
    # Quantile bins keep their order.
    present = ~np.isnan(X[:, 0])
    order = np.argsort(X[present, 0])
    assert (np.diff(codes[present, 0][order].astype(int)) >= 0).all()


def _held_out_auc(X, y, seed=0):
    codes = boost.bin_columns(X)
    test = np.random.default_rng(seed).uniform(size=len(y)) < 0.5
    model = boost.fit(codes[~test], y[~test])
    return auc_from_scores(model.decision(codes[test]), y[test])


def test_separates_a_mean_shift_a_missing_rate_and_an_interaction():
    rng = np.random.default_rng(1)
    n = 4000
    y = np.r_[np.zeros(n // 2, bool), np.ones(n // 2, bool)]
    X = rng.normal(size=(n, 6))
    same = _held_out_auc(X, y)
    assert abs(same - 0.5) < 0.05
    shifted = X.copy()
    shifted[y, 2] += 1.0
    assert _held_out_auc(shifted, y) > 0.7
    missing = X.copy()
    missing[y & (rng.uniform(size=n) < 0.4), 4] = np.nan
    assert _held_out_auc(missing, y) > 0.65
    # Same marginals on both sides, only the sign of the product differs: trees of depth 2+ see it.
    xor = X.copy()
    flip = y != (xor[:, 0] * xor[:, 1] > 0)
    xor[flip, 1] *= -1
    assert _held_out_auc(xor, y) > 0.8


def test_fit_is_deterministic():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(600, 4)), rng.uniform(size=600) < 0.5
    codes = boost.bin_columns(X)
    a, b = boost.fit(codes, y), boost.fit(codes, y)
    assert np.array_equal(a.decision(codes), b.decision(codes))
