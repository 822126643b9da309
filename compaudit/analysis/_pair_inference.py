"""Uncertainty of a population comparison: replica pairs *and* examples.

The estimand is the effect of the compression *procedure* on a population rate, so two
things were drawn at random: the test examples and the seeds of the replicas. With K
paired replicas (compressed replica k derived from dense replica k) a statistic
``theta`` of the pooled rates (a change, a normalized change, a change of disparity)
gets the standard error

    se^2 = A + C,   A = max(V_pairs, W / K)

- ``V_pairs``: the delete-one-pair jackknife variance of ``theta`` (for a change of
  rates it is exactly ``s_d^2 / K``, the variance of the per-pair changes ``d_k`` over
  K: the paired t on replica means). It carries seed-to-seed variation and the
  per-replica error noise on the examples at hand.
- ``C``: the part of the example-sampling variance that every pair shares (the same
  test set is used by all pairs), the between-pair covariance of the paired example
  bootstrap, ``(K * Var_boot(theta) - mean_k Var_boot(theta_k)) / (K - 1)``, floored
  at 0. Adding the whole ``Var_boot(theta)`` instead would count the per-replica noise
  twice.
- ``W = mean_k Var_boot(theta_k) - C``: the per-pair noise that the examples alone
  reveal (with many degrees of freedom). ``s_d^2`` estimates ``sigma_seed^2 + W`` from
  only K values; where it falls below ``W`` by chance (often, with 3-5 pairs) the
  interval would be too short, so ``A`` is floored at ``W / K``.

Intervals are ``theta -/+ t_{df} * se`` with Satterthwaite's
``df = (K - 1) * (1 + C / A)^2``: K - 1 when the pairs dominate, large when the
shared test set does. See ``docs/statistics.md`` for the simulation that chose this
over an example-only bootstrap, a two-level bootstrap and a plain paired t.

With one replica per side there is no seed variation to measure: the example-only
paired bootstrap (percentile interval, bootstrap se, normal p) is used unchanged, and
the result describes that one model. The same bootstrap, pooled over the K pairs, is
the inference *about the models at hand* (``[analysis] about = "models"``): when a team
ships these very artifacts, only the test examples were drawn at random.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from compaudit.analysis._subgroup_sums import SubgroupSums, rates_from_sums
from compaudit.analysis.stats import bounded_interval, summarize_bootstrap

__all__ = ["Draws", "Inference", "MAX_DF", "PAIRED", "EXAMPLES", "MODELS", "draws", "infer",
           "mde"]

#: Method names written to ``metrics.json`` (``subgroup_method.kind``).
PAIRED = "paired-replicas+examples"
EXAMPLES = "examples-only bootstrap"
#: The models at hand taken as fixed: the paired example bootstrap pooled over the pairs.
MODELS = "paired example bootstrap (models at hand)"
#: Degrees of freedom are capped here (t_1000 is the normal quantile to 3 decimals).
MAX_DF = 1000.0
#: Power at which the minimum detectable effect is stated.
MDE_POWER = 0.8


@dataclass(frozen=True)
class Draws:
    """One rate of one variant: pooled, leave-one-replica-out, and resampled.

    ``point`` (S,), ``loo`` (K, S) pooled rate without replica k, ``boot`` (B, S) pooled
    rate per resample, ``boot_pairs`` (B, K, S) replica k's own rate per resample;
    ``loo`` and ``boot_pairs`` are ``None`` with one replica (or no bootstrap).
    """

    point: np.ndarray
    loo: np.ndarray | None
    boot: np.ndarray | None
    boot_pairs: np.ndarray | None


def draws(sums: SubgroupSums, *, variant: str, pairs: bool) -> dict[str, Draws]:
    """Every rate of ``variant`` as :class:`Draws` (``pairs``: with the replica parts)."""
    point = sums.rates(variant=variant, replica=None)
    boot = sums.boot_rates(variant=variant, replica=None)
    n_rep = sums.point_layout.pop.variants[variant].n_replicas
    loo = boot_pairs = None
    if pairs and n_rep > 1:
        layout = sums.point_layout
        pooled = layout.model_sums(sums.point, variant=variant, replica=None)
        each = np.stack([layout.model_sums(sums.point, variant=variant, replica=r)
                         for r in range(n_rep)])
        loo = rates_from_sums(pooled[None] - each, binary=sums.binary)
        if sums.boot is not None:
            bl = sums.boot_layout
            boot_pairs = rates_from_sums(
                np.stack([bl.model_sums(sums.boot, variant=variant, replica=r)
                          for r in range(n_rep)], axis=1), binary=sums.binary)
    return {key: Draws(point[key], None if loo is None else loo[key],
                       None if boot is None else boot[key],
                       None if boot_pairs is None else boot_pairs[key])
            for key in point}


@dataclass(frozen=True)
class Inference:
    """Estimate, interval, standard error, p-value and degrees of freedom (NaN: normal)."""

    estimate: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    se: np.ndarray
    p: np.ndarray
    df: np.ndarray


Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def infer(stat: Statistic, dense: Draws, compressed: Draws, *, level: float,
          bounds: tuple[float | None, float | None] = (None, None)) -> Inference:
    """Inference on ``stat(dense rates, compressed rates)`` (see the module docstring).

    ``stat`` maps rate arrays with subgroups on the last axis to the statistic, and
    broadcasts over leading axes. ``bounds`` is the statistic's range (e.g.
    ``(-1, 1)`` for a change of rates): the t-interval of paired replicas is built on a
    scale where it is unbounded (:func:`~compaudit.analysis.stats.bounded_interval`),
    so it never leaves the range; percentile intervals of the example bootstrap lie in
    it already.
    """
    est = np.asarray(stat(dense.point, compressed.point), dtype=np.float64)
    if dense.boot is None or compressed.boot is None:
        nan = np.full(est.shape, np.nan)
        return Inference(est, nan, nan, nan, nan, nan)
    boot = np.asarray(stat(dense.boot, compressed.boot), dtype=np.float64)
    # The replica parts come together (``draws``): with a bootstrap, loo and boot_pairs
    # are both there or both None.
    if (dense.loo is None or compressed.loo is None or dense.boot_pairs is None
            or compressed.boot_pairs is None):
        s = summarize_bootstrap(est, boot, level=level)
        return Inference(est, s.lo, s.hi, s.se, s.p, np.full(est.shape, np.nan))
    loo = np.asarray(stat(dense.loo, compressed.loo), dtype=np.float64)
    per_pair = np.asarray(stat(dense.boot_pairs, compressed.boot_pairs), dtype=np.float64)
    k = loo.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # undefined rates: NaN cells
        v_pairs = (k - 1) / k * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0)
        v_boot = np.nanvar(boot, axis=0, ddof=1)
        v_each = np.nanmean(np.nanvar(per_pair, axis=0, ddof=1), axis=0)
        shared = np.maximum((k * v_boot - v_each) / (k - 1), 0.0)
        pairs = np.maximum(v_pairs, np.maximum(v_each - shared, 0.0) / k)
        se = np.sqrt(pairs + shared)
        df = np.minimum((k - 1) * (1.0 + shared / pairs) ** 2, MAX_DF)
        df = np.where(pairs > 0, df, MAX_DF)
        lo, hi = bounded_interval(est, se, sps.t.ppf(0.5 + level / 2, df), bounds)
        p = 2.0 * sps.t.sf(np.abs(est) / se, df)
    p = np.where(se == 0, np.where(est == 0, 1.0, 0.0), p)
    defined = np.isfinite(est) & np.isfinite(se)
    return Inference(est, np.where(defined, lo, np.nan), np.where(defined, hi, np.nan),
                     np.where(defined, se, np.nan), np.where(defined, p, np.nan),
                     np.where(defined, df, np.nan))


def mde(se: np.ndarray, df: np.ndarray | float | None, *, level: float,
        power: float = MDE_POWER) -> np.ndarray:
    """Minimum detectable effect ``(q_{(1+level)/2} + q_power) * se`` (t with ``df``, or
    normal where ``df`` is NaN/None): the true change a two-sided test at ``level`` finds
    with probability ``power``.

    Examples
    --------
    >>> round(float(mde(np.array(0.01), None, level=0.95)), 5)  # (1.95996 + 0.84162) * se
    0.02802
    """
    se = np.asarray(se, dtype=float)
    df = np.full(se.shape, np.nan) if df is None else np.broadcast_to(np.asarray(df, float),
                                                                    se.shape)
    normal = ~np.isfinite(df)
    dfs = np.where(normal, 1.0, df)
    q = np.where(normal, sps.norm.ppf(0.5 + level / 2) + sps.norm.ppf(power),
                 sps.t.ppf(0.5 + level / 2, dfs) + sps.t.ppf(power, dfs))
    return np.asarray(q * se)
