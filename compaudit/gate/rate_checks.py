"""The gate's checks on rate changes: overall accuracy (``[gate.accuracy]``), subgroup
rates (``[gate.subgroup_rate]``), the gap between subgroups (``[gate.disparity]``), and
subgroup rates against a baseline run (``[gate.baseline]``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial

from compaudit.analysis.stats import GROWTH_PCT, RATE_CHANGE, RATE_CHANGE_DIFF
from compaudit.gate._check import Bounds, Check, row_df, selected, sum_df
from compaudit.gate.policy import GatePolicy
from compaudit.schema import Metrics

__all__ = ["accuracy_checks", "baseline_checks", "disparity_checks", "subgroup_checks"]


def _harm_sign(metric: str) -> float:
    """-1 for the accuracies, which harm by falling; +1 for the error rates."""
    return -1.0 if metric in ("accuracy", "balanced_accuracy") else 1.0


def _signed(bounds: Bounds, sign: float) -> Bounds:
    """The range of ``sign * x`` for ``x`` in ``bounds``."""
    lo, hi = bounds
    return bounds if sign > 0 else (None if hi is None else -hi, None if lo is None else -lo)


def subgroup_checks(metrics: Metrics, policy: GatePolicy,
                    variants: list[str]) -> Iterator[Check]:
    """``[gate.subgroup_rate]``: each subgroup's rate change (absolute, relative, excess
    over the overall change), harm measured in the direction the metric harms."""
    pol = policy.subgroup_rate
    if pol is None:
        return
    for row in metrics.deltas:
        if (row.metric not in pol.metrics or not selected(row.variant, policy, variants)
                or row.n < policy.min_subgroup_size):
            continue
        sign = _harm_sign(row.metric)
        check = partial(Check, kind="subgroup_rate", variant=row.variant,
                        subject=row.subgroup, n=row.n, replicas=row.replicas)
        stem = f"{row.variant}/{row.subgroup}/{row.metric}"
        if pol.max_abs_increase is not None:
            yield check(id=f"{stem}/abs", metric=row.metric,
                        estimate=sign * row.abs_diff, se=row.abs_diff_se,
                        df=row_df(row.abs_diff_df), bounds=RATE_CHANGE,
                        tolerance=pol.max_abs_increase, unit="points")
        if pol.max_rel_increase_pct is not None:
            yield check(id=f"{stem}/rel", metric=f"{row.metric} (relative)",
                        estimate=sign * row.rel_change_pct, se=row.rel_change_pct_se,
                        df=row_df(row.rel_change_pct_df), bounds=_signed(GROWTH_PCT, sign),
                        tolerance=pol.max_rel_increase_pct, unit="%")
        if pol.max_excess_increase is not None and row.subgroup != "overall":
            yield check(id=f"{stem}/excess", metric=f"{row.metric} (excess)",
                        estimate=sign * row.excess_diff, se=row.excess_diff_se,
                        df=row_df(row.excess_diff_df), bounds=RATE_CHANGE_DIFF,
                        tolerance=pol.max_excess_increase, unit="points")


def accuracy_checks(metrics: Metrics, policy: GatePolicy,
                    variants: list[str]) -> Iterator[Check]:
    """``[gate.accuracy]``: the drop of overall accuracy (balanced accuracy for binary
    tasks)."""
    pol = policy.accuracy
    if pol is None:
        return
    binary = metrics.task.binary
    metric = "balanced_accuracy" if binary else "accuracy"
    for row in metrics.deltas:
        if (row.metric != metric or row.subgroup != "overall"
                or not selected(row.variant, policy, variants)):
            continue
        yield Check(id=f"{row.variant}/overall/{metric}_drop", kind="accuracy",
                    variant=row.variant, subject="overall",
                    metric="balanced accuracy drop" if binary else "top-1 drop",
                    estimate=-row.abs_diff, se=row.abs_diff_se, df=row_df(row.abs_diff_df),
                    bounds=RATE_CHANGE, n=row.n, replicas=row.replicas,
                    tolerance=pol.max_drop, unit="points")


def disparity_checks(metrics: Metrics, policy: GatePolicy,
                     variants: list[str]) -> Iterator[Check]:
    """``[gate.disparity]``: the change of the gap between a grouping's best and worst
    subgroup."""
    pol = policy.disparity
    if pol is None:
        return
    for row in metrics.disparity:
        if row.metric not in pol.metrics or not selected(row.variant, policy, variants):
            continue
        yield Check(id=f"{row.variant}/{row.grouping}/{row.metric}/disparity",
                    kind="disparity", variant=row.variant, subject=row.grouping,
                    metric=row.metric, estimate=row.change, se=row.change_se,
                    df=row_df(row.change_df), bounds=RATE_CHANGE, tolerance=pol.max_increase,
                    unit="points")


def baseline_checks(metrics: Metrics, baseline: Metrics, policy: GatePolicy,
                    variants: list[str]) -> Iterator[Check]:
    """``[gate.baseline]``: each subgroup's rate change against the same change in a
    baseline run."""
    pol, rates = policy.baseline, policy.subgroup_rate
    if pol is None:
        return
    wanted = rates.metrics if rates is not None else ("fpr", "fnr")
    old = {(r.variant, r.subgroup, r.metric): r for r in baseline.deltas}
    for row in metrics.deltas:
        key = (row.variant, row.subgroup, row.metric)
        if (key not in old or row.metric not in wanted or row.n < policy.min_subgroup_size
                or not selected(row.variant, policy, variants)):
            continue
        sign = _harm_sign(row.metric)
        prev = old[key]
        yield Check(id=f"{'/'.join(key)}/vs_baseline", kind="baseline", variant=row.variant,
                    subject=row.subgroup, metric=row.metric,
                    estimate=sign * (row.abs_diff - prev.abs_diff),
                    se=math.hypot(row.abs_diff_se, prev.abs_diff_se),
                    df=sum_df(row.abs_diff_se, row_df(row.abs_diff_df),
                               prev.abs_diff_se, row_df(prev.abs_diff_df)),
                    bounds=RATE_CHANGE_DIFF, tolerance=pol.max_abs_increase, unit="points")
