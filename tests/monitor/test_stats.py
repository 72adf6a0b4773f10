"""The drift statistics from counts agree with SciPy's on the raw samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from mlsys_cli.data.profile import tail_means
from mlsys_cli.monitor import stats


def _binned(a, b, bins=100):
    edges = np.unique(np.quantile(a, np.linspace(0, 1, bins + 1)[1:-1]))
    count = lambda x: np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)  # noqa: E731
    return edges, count(a), count(b)


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(0).uniform(size=40) ** 3
    assert np.allclose(stats.benjamini_hochberg(p), sps.false_discovery_control(p))
    assert stats.benjamini_hochberg([]) == []


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3])
def test_binned_ks_is_close_to_exact_and_never_larger(shift):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=20_000), rng.normal(shift, size=8_000)
    _, ra, rb = _binned(a, b)
    d, p = stats.ks_binned(ra, rb)
    exact = sps.ks_2samp(a, b)
    assert d <= exact.statistic + 1e-12
    assert exact.statistic - d < 0.01  # percentile bins: within one percent of the CDF
    if shift >= 0.3:
        assert p < 1e-10 and exact.pvalue < 1e-10


def test_binned_wasserstein_is_close_to_exact():
    rng = np.random.default_rng(2)
    a, b = rng.lognormal(size=30_000), rng.lognormal(0.2, size=10_000)
    edges, ra, rb = _binned(a, b)
    got = stats.wasserstein_binned(edges, ra, rb, tail_means(np.sort(a), edges), tail_means(np.sort(b), edges))
    exact = sps.wasserstein_distance(a, b)
    assert abs(got - exact) / exact < 0.05


def test_chi2_and_jensen_shannon_match_scipy():
    r, c = np.array([500, 300, 200, 0]), np.array([260, 140, 80, 20])
    stat, p = stats.chi2_counts(r, c)
    ref = sps.chi2_contingency(np.vstack([r, c]), correction=False)
    assert np.isclose(stat, ref.statistic) and np.isclose(p, ref.pvalue)
    assert np.isclose(stats.jensen_shannon(r, c), jensenshannon(r / r.sum(), c / c.sum(), base=2))
    assert stats.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert stats.psi(r, r) == pytest.approx(0.0)


def test_two_proportions_and_auc():
    assert stats.two_proportions(50, 1000, 50, 1000) == pytest.approx(1.0)
    assert stats.two_proportions(50, 1000, 200, 1000) < 1e-10
    y = np.r_[np.zeros(50), np.ones(50)]
    assert stats.auc_from_scores(np.r_[np.zeros(50), np.ones(50)], y) == 1.0
    assert stats.auc_from_scores(np.ones(100), y) == 0.5
