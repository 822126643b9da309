"""Statistics against scipy and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from compaudit.analysis.stats import (
    benjamini_hochberg,
    bootstrap_sums,
    bootstrap_weights,
    mcnemar_exact,
    summarize_bootstrap,
    t_interval,
    welch_ttest,
)


def test_benjamini_hochberg_equals_statsmodels():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(200), rng.random(20) * 1e-4, [0.05, 0.05, 1.0]])
    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12)


def test_benjamini_hochberg_keeps_nan_out_of_the_family():
    p = np.array([0.01, np.nan, 0.04, 0.03])
    q = benjamini_hochberg(p)
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="fdr_bh")[1])


def test_welch_equals_scipy_per_column():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, (30, 50))
    b = rng.normal(0.3, 2.0, (12, 50))
    t, df, p = welch_ttest(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False, axis=0)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-8)
    np.testing.assert_allclose(df, ref.df, rtol=1e-10)


def test_welch_zero_variance_is_nan_like_scipy():
    a = np.ones((5, 1))
    b = np.ones((5, 1))
    t, _, p = welch_ttest(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False, axis=0)
    assert np.isnan(t[0]) and np.isnan(p[0]) and np.isnan(ref.pvalue[0])


def test_t_interval_equals_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 4))
    mean, std, lo, hi = t_interval(x, axis=0)
    for j in range(4):
        ref = sps.t.interval(0.95, 6, loc=x[:, j].mean(), scale=sps.sem(x[:, j]))
        np.testing.assert_allclose([lo[j], hi[j]], ref, rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=0, ddof=1))


def test_t_interval_single_value_has_no_interval():
    mean, std, lo, hi = t_interval(np.array([[0.5]]), axis=0)
    assert mean[0] == 0.5 and np.isnan(std[0]) and np.isnan(lo[0]) and np.isnan(hi[0])


@pytest.mark.parametrize("b,c", [(0, 0), (3, 11), (25, 10), (7, 7), (0, 6)])
def test_mcnemar_exact_equals_statsmodels(b, c):
    ref = mcnemar(np.array([[50, b], [c, 40]]), exact=True).pvalue
    assert mcnemar_exact(np.array([b]), np.array([c]))[0] == pytest.approx(ref, rel=1e-12)


def test_bootstrap_weights_are_multinomial_resamples():
    rng = np.random.default_rng(3)
    w = np.concatenate(list(bootstrap_weights(40, 600, rng, chunk=250)))
    assert w.shape == (600, 40)
    np.testing.assert_array_equal(w.sum(axis=1), 40)
    # Each count is Binomial(40, 1/40): mean 1, variance 39/40.
    assert abs(w.mean() - 1) < 1e-9
    assert abs(w.var() - 39 / 40) < 0.05


def test_bootstrap_sums_are_weighted_row_sums_of_multinomial_counts():
    # The engine's contract, independent of how it draws: each resample's sums are
    # ``counts @ x`` with counts the multinomial weights of that resample.
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(57, 3)).astype(float)
    fast = bootstrap_sums(x, n_boot=300, seed=11, chunk=128)
    counts = np.concatenate(list(bootstrap_weights(57, 300, np.random.default_rng(11), chunk=128)))
    assert counts.shape == (300, 57) and np.all(counts == np.round(counts)) and counts.min() >= 0
    np.testing.assert_array_equal(counts.sum(axis=1), 57)
    np.testing.assert_allclose(fast, counts.astype(float) @ x)


def test_bootstrap_mean_has_the_analytic_mean_and_variance():
    # Resampling n values with replacement: the bootstrap mean has expectation mean(x)
    # and variance var(x, ddof=0) / n (exact results for the nonparametric bootstrap).
    rng = np.random.default_rng(7)
    n, n_boot = 50, 20000
    x = rng.exponential(size=(n, 1))
    means = bootstrap_sums(x, n_boot=n_boot, seed=3)[:, 0] / n
    var = x.var() / n
    assert abs(means.mean() - x.mean()) < 4 * np.sqrt(var / n_boot)
    # The sample variance of B draws has relative sd ~ sqrt(2 / B) (1% here) plus kurtosis.
    assert means.var(ddof=1) == pytest.approx(var, rel=0.06)


def test_bootstrap_segments_sum_to_the_whole():
    rng = np.random.default_rng(5)
    x = rng.random((100, 2))
    seg = bootstrap_sums(x, n_boot=50, seed=1, segments=np.array([0, 30, 100]))
    whole = bootstrap_sums(x, n_boot=50, seed=1)
    np.testing.assert_allclose(seg.sum(axis=1), whole, rtol=1e-5)


def test_bootstrap_mean_interval_covers_like_the_normal_theory():
    # Percentile interval of a mean of 2,000 N(0,1) draws: half-width ~ 1.96/sqrt(n).
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2000, 1))
    sums = bootstrap_sums(x, n_boot=2000, seed=2)[:, 0] / 2000
    s = summarize_bootstrap(np.array(x.mean()), sums)
    assert (s.hi - s.lo) / 2 == pytest.approx(1.96 / np.sqrt(2000), rel=0.1)
    assert s.se == pytest.approx(1 / np.sqrt(2000), rel=0.1)


def test_critical_values_match_the_printed_tables():
    from compaudit.analysis.stats import critical_value

    # Standard normal and Student's t tables (two-sided 95%: tail 0.025).
    assert critical_value(0.025) == pytest.approx(1.959964, abs=1e-6)
    assert critical_value(0.025, df=4) == pytest.approx(2.776445, abs=1e-6)
    assert critical_value(0.005, df=10) == pytest.approx(3.169273, abs=1e-6)
