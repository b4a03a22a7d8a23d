import numpy as np
import pytest
from scipy import stats as sps

from sdc.analysis.stats import (
    benjamini_hochberg,
    binomial_sf,
    grouped_median,
    grouped_rank,
    lower_cusum,
)


def test_binomial_tail_matches_scipy_for_whole_counts():
    k = np.array([0, 1, 2, 5, 30])
    n = np.array([10, 400, 400, 200, 40])
    expected = np.where(k > 0, sps.binom.sf(k - 1, n, 0.01), 1.0)
    assert np.allclose(binomial_sf(k, n, 0.01), expected, rtol=1e-9)


def test_aged_counts_weigh_less_than_fresh_ones():
    fresh, aged = binomial_sf(np.array([3.0, 1.5]), np.array([100.0, 50.0]), 1e-3)
    assert aged > fresh


def test_benjamini_hochberg_rejects_the_step_up_set():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    assert not benjamini_hochberg(np.array([0.5, 0.9]), 0.05).any()


def test_grouped_median_and_rank_agree_with_numpy():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 50, 5000)
    values = rng.standard_t(3, 5000)
    med = grouped_median(groups, values, 50)
    for g in (0, 7, 49):
        assert med[g] == pytest.approx(np.median(values[groups == g]))
    u, size = grouped_rank(groups, values)
    g = groups == 3
    assert np.allclose(u[g], (sps.rankdata(values[g]) - 0.5) / g.sum())
    assert (size[g] == g.sum()).all()


def test_cusum_grows_on_a_sustained_drop_only():
    noise = np.random.default_rng(1).normal(0, 0.003, (2, 20))
    series = noise.copy()
    series[1, 12:] -= 0.05  # a 5% drop from sweep 12 on
    s = lower_cusum(series, np.zeros(2), slack=0.015)
    assert s[0] < 0.02 < 0.2 < s[1]


def test_median_of_others_leaves_the_value_itself_out():
    from sdc.analysis.stats import median_of_others

    rng = np.random.default_rng(1)
    groups = rng.integers(0, 30, 400)
    values = rng.normal(size=400)
    got = median_of_others(groups, values)
    for i in range(400):
        others = values[(groups == groups[i]) & (np.arange(400) != i)]
        assert (np.isnan(got[i]) and others.size == 0) or np.isclose(got[i], np.median(others))
