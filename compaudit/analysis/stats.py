"""Statistical building blocks shared by every analysis.

One vectorized bootstrap engine (:func:`bootstrap_sums`): resample examples with
replacement as multinomial count weights and turn every statistic that is a ratio of
sums into one matrix product per chunk of resamples. No Python loop runs over resamples.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

__all__ = [
    "benjamini_hochberg",
    "welch_ttest",
    "critical_value",
    "t_interval",
    "mcnemar_exact",
    "fisher_exact_2x2",
    "bootstrap_weights",
    "bootstrap_sums",
    "BootstrapSummary",
    "summarize_bootstrap",
    "bounded_interval",
    "RATE",
    "RATE_CHANGE",
    "RATE_CHANGE_DIFF",
    "GROWTH_PCT",
]

#: Resamples generated per matrix product; bounds memory at chunk x n_examples floats.
_CHUNK = 250


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN entries stay NaN.

    The family is the finite entries only: ``scipy.stats.false_discovery_control(p,
    method="bh")`` over them (equal to ``statsmodels.stats.multitest.multipletests(p,
    method="fdr_bh")[1]``); NaN entries (untested cells) neither count towards the
    family size nor receive a q-value.

    Examples
    --------
    >>> benjamini_hochberg(np.array([0.01, np.nan, 0.04, 0.03])).round(3)
    array([0.03,  nan, 0.04, 0.04])
    """
    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = sps.false_discovery_control(p[finite], method="bh")
    return q


def welch_ttest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-sided Welch t-test of ``a`` against ``b`` along axis 0, for every column.

    Parameters
    ----------
    a, b
        Samples of shape (n_a, k) and (n_b, k); NaN-free, n_a, n_b >= 2.

    Returns
    -------
    t, df, p
        Arrays of shape (k,) from ``scipy.stats.ttest_ind(a, b, axis=0,
        equal_var=False)`` (t = mean(a) - mean(b) over its standard error). Columns
        where both samples have zero variance have no test: t, df and p are NaN there
        (scipy would give an infinite t when the means differ).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero-variance columns
        res = sps.ttest_ind(a, b, axis=0, equal_var=False)
    untestable = (a.var(axis=0, ddof=1) + b.var(axis=0, ddof=1)) == 0
    t, df, p = (np.where(untestable, np.nan, x) for x in (res.statistic, res.df, res.pvalue))
    return t, df, p


def critical_value(tail: float, *, df: float | None = None) -> float:
    """The upper ``tail`` quantile of the normal distribution, or of Student's t with
    ``df`` degrees of freedom: the half-width of an interval in standard errors."""
    if df is None:
        return float(sps.norm.ppf(1 - tail))
    return float(sps.t.ppf(1 - tail, df))


def t_interval(
    values: npt.ArrayLike, *, axis: int = 0, level: float = 0.95,
    bounds: tuple[float | None, float | None] = (None, None),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std and the two-sided t-interval of the mean along ``axis``.

    The one t-interval of the package (replica summaries, dissection summaries).

    Parameters
    ----------
    values
        Samples; NaNs are ignored (each slice uses its finite values).
    axis
        Axis of the samples.
    level
        Confidence level of the interval.
    bounds
        The range of the mean (e.g. :data:`RATE` for rates); the interval is then built
        where it is unbounded (:func:`bounded_interval`) and stays inside it.

    Returns
    -------
    mean, std, lo, hi
        Mean, sample standard deviation (ddof 1) and ``mean -/+ t_{(1+level)/2, n-1} *
        std / sqrt(n)``, as ``scipy.stats.t.interval`` (unbounded parameters). Fewer
        than two finite values give a NaN std and interval (and no values a NaN mean).

    Examples
    --------
    >>> mean, std, lo, hi = t_interval(np.array([1.0, 2.0, 3.0, np.nan]))
    >>> float(mean), float(std), round(float(lo), 4), round(float(hi), 4)
    (2.0, 1.0, -0.4841, 4.4841)
    """
    v = np.asarray(values, dtype=float)
    n = np.sum(np.isfinite(v), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(v, axis=axis) / n
        dev = np.where(np.isfinite(v), v - np.expand_dims(mean, axis), 0.0)
        std = np.sqrt(np.sum(dev**2, axis=axis) / (n - 1))
        crit = sps.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
    mean = np.where(n > 0, mean, np.nan)
    std = np.where(n > 1, std, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = bounded_interval(mean, std / np.sqrt(n), crit, bounds)
    return mean, std, lo, hi


def mcnemar_exact(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact (binomial) McNemar p-values from discordant counts ``b`` and ``c``.

    Equals ``statsmodels.stats.contingency_tables.mcnemar(table, exact=True).pvalue``.
    """
    b = np.asarray(b, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    p = 2.0 * sps.binom.cdf(np.minimum(b, c), b + c, 0.5)
    return np.minimum(np.where(b + c == 0, 1.0, p), 1.0)


def fisher_exact_2x2(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Fisher exact test for a stack of 2x2 tables of shape (k, 2, 2).

    Returns the sample odds ratios and p-values (``scipy.stats.fisher_exact``).
    """
    table = np.asarray(table, dtype=np.int64).reshape(-1, 2, 2)
    odds = np.empty(len(table))
    p = np.empty(len(table))
    for i, t in enumerate(table):  # k is small: one per attribute cell
        res = sps.fisher_exact(t)
        odds[i], p[i] = res.statistic, res.pvalue
    return odds, p


def bootstrap_weights(
    n: int, n_boot: int, rng: np.random.Generator, chunk: int = _CHUNK
) -> Iterator[np.ndarray]:
    """Yield multinomial resampling weights, ``chunk`` resamples at a time.

    Each yielded array has shape (b, n), float32, and row sums equal to ``n``: the number
    of times each example is drawn in that resample.
    """
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        draws = rng.integers(0, n, size=(b, n))
        draws += (np.arange(b) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)
        done += b


def bootstrap_sums(
    features: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    segments: np.ndarray | None = None,
    chunk: int = _CHUNK,
) -> np.ndarray:
    """Bootstrap distribution of column sums of ``features``, optionally per segment.

    Parameters
    ----------
    features
        Per-example values, shape (n_examples, k). Sums of integer-valued features are
        exact in float32 while they stay below 2**24.
    n_boot
        Number of resamples B.
    seed
        Seed of the resampling; the same seed gives the same resamples, so statistics of
        several models computed from one call are paired.
    segments
        Optional boundaries ``[0, b1, ..., n]`` of contiguous row blocks (rows sorted by
        group); sums are then returned per block. Resampling is over all rows, so block
        sizes vary between resamples, as in an ordinary bootstrap of the whole table.

    Returns
    -------
    ndarray of shape (B, k), or (B, n_segments, k) with ``segments``.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    bounds = np.array([0, x.shape[0]]) if segments is None else np.asarray(segments)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(bounds) - 1, x.shape[1]), dtype=np.float64)
    start = 0
    for w in bootstrap_weights(x.shape[0], n_boot, rng, chunk):
        for s, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            out[start : start + len(w), s] = w[:, lo:hi] @ x[lo:hi]
        start += len(w)
    return out[:, 0] if segments is None else out


def _nanquantile(s: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.nanquantile(s, q, axis=0)``, with NaN-free columns in one vectorized call.

    NumPy's ``nanquantile`` sorts every column separately in Python-level calls; the
    columns without NaN give the same values through ``np.quantile``.
    """
    nan = np.isnan(s)
    if s.ndim == 0 or s.shape[0] == 0:
        return np.asarray(np.nanquantile(s, q, axis=0))
    clean = ~nan.any(axis=0)
    out = np.empty((len(q),) + s.shape[1:])
    out[:, clean] = np.quantile(s[:, clean], q, axis=0)
    if not clean.all():
        out[:, ~clean] = np.nanquantile(s[:, ~clean], q, axis=0)
    return out


@dataclass(frozen=True)
class BootstrapSummary:
    """Percentile interval, standard error and two-sided Wald p-value of an estimate."""

    estimate: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    se: np.ndarray
    p: np.ndarray


def summarize_bootstrap(
    estimate: np.ndarray, samples: np.ndarray, *, level: float = 0.95, null: float = 0.0
) -> BootstrapSummary:
    """Summarize bootstrap ``samples`` (B, ...) of an ``estimate`` (...).

    The interval is the percentile interval. The p-value tests ``estimate == null`` with
    the bootstrap standard error (``2 * Phi(-|est - null| / se)``): unlike counting
    resamples beyond the null, it resolves p-values below 1/B, which a multiple-testing
    correction over many cells needs. Samples that are NaN (undefined rate in a
    resample) are ignored.
    """
    s = np.asarray(samples, dtype=float)
    est = np.asarray(estimate, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: undefined rates
        lo, hi = _nanquantile(s, [0.5 - level / 2, 0.5 + level / 2])
        se = np.nanstd(s, axis=0, ddof=1)
        z = np.abs(est - null) / se
        p = 2.0 * sps.norm.sf(z)
    # A degenerate distribution (se == 0) is significant only if the estimate is off null.
    p = np.where(se == 0, np.where(est == null, 1.0, 0.0), p)
    p = np.where(np.isfinite(est), p, np.nan)
    return BootstrapSummary(est, lo, hi, se, p)


#: Ranges of the parameters compaudit puts intervals on: a rate, a change of a rate, a
#: difference of two changes (an excess change, a change since a baseline) and a
#: relative growth in percent (``None``: unbounded on that side).
RATE = (0.0, 1.0)
RATE_CHANGE = (-1.0, 1.0)
RATE_CHANGE_DIFF = (-2.0, 2.0)
GROWTH_PCT = (-100.0, None)


def bounded_interval(
    estimate: np.ndarray | float,
    se: np.ndarray | float,
    crit: np.ndarray | float,
    bounds: tuple[float | None, float | None] = (None, None),
) -> tuple[np.ndarray, np.ndarray]:
    """``estimate -/+ crit * se``, built on a scale where the parameter is unbounded.

    A parameter in ``[a, b]`` gets the interval on ``atanh((2x - a - b) / (b - a))``
    (Fisher's z for a correlation; for a change of rates, ``[-1, 1]``), one bounded
    below by ``a`` on ``log(x - a)`` (a relative growth of at least -100%), one bounded
    above by ``b`` on ``-log(b - x)``; the se is carried over by the delta method and
    the ends mapped back, so they never leave the range. Near the middle of the range
    the interval is the Wald one (the transform is locally linear); near a bound it is
    asymmetric, as the parameter is. An estimate on a bound itself has no transformed
    se: its Wald interval is clipped to the range instead.

    Examples
    --------
    >>> lo, hi = bounded_interval(0.0, 0.01, 1.96, RATE_CHANGE)  # the Wald interval
    >>> round(float(lo), 4), round(float(hi), 4)
    (-0.0196, 0.0196)
    >>> lo, hi = bounded_interval(0.003, 0.15, 75.0, RATE_CHANGE)  # 3 replicas, df = 2
    >>> bool(-1 < lo < hi < 1)
    True
    >>> lo, hi = bounded_interval(-90.0, 5.0, 3.0, GROWTH_PCT)  # never below -100%
    >>> round(float(lo), 2), round(float(hi), 2)
    (-97.77, -55.18)
    """
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(se, dtype=float)
    half = np.asarray(crit, dtype=float) * se
    a, b = bounds
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if a is not None and b is not None:
            u = (2 * est - a - b) / (b - a)
            z, dz = np.arctanh(u), 2 / ((b - a) * (1 - u**2))
            lo = a + (b - a) * (np.tanh(z - dz * half) + 1) / 2
            hi = a + (b - a) * (np.tanh(z + dz * half) + 1) / 2
        elif a is not None:
            lo, hi = a + (est - a) * np.exp(-half / (est - a)), a + (est - a) * np.exp(
                half / (est - a))
        elif b is not None:
            lo, hi = b - (b - est) * np.exp(half / (b - est)), b - (b - est) * np.exp(
                -half / (b - est))
        else:
            return est - half, est + half
        # On a bound (or beyond, by rounding) the transform is infinite: clip Wald.
        edge = ~(np.isfinite(lo) & np.isfinite(hi)) & np.isfinite(est) & np.isfinite(half)
        lo = np.where(edge, np.clip(est - half, a, b), lo)
        hi = np.where(edge, np.clip(est + half, a, b), hi)
        # The round trip through the transform may move a zero-width end by an ulp.
        lo, hi = np.where(lo > est, est, lo), np.where(hi < est, est, hi)
    return lo, hi
