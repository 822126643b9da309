"""The gate's checks on the optional blocks of ``metrics.json``: accuracy under
distribution shift (``robustness``, ``[gate.robustness]``), interpretable units lost
(``dissection``, ``[gate.dissection]``) and the error change of discovered slices
(``slices``, ``[gate.slice]``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial

from compaudit.analysis.stats import RATE_CHANGE, RATE_CHANGE_DIFF, t_interval
from compaudit.gate._check import Check, row_df, selected, sum_df
from compaudit.gate.policy import GatePolicy
from compaudit.schema import DeltaRow, Metrics

__all__ = ["dissection_checks", "robustness_checks", "slice_checks"]


def _overall_accuracy(metrics: Metrics) -> dict[str, DeltaRow]:
    return {r.variant: r for r in metrics.deltas
            if r.metric == "accuracy" and r.subgroup == "overall"}


def robustness_checks(metrics: Metrics, policy: GatePolicy,
                      variants: list[str]) -> Iterator[Check]:
    """``[gate.robustness]``: the accuracy drop under each shift, and its excess over
    the clean drop."""
    pol = policy.robustness
    if pol is None:
        return
    clean = _overall_accuracy(metrics)
    for row in metrics.robustness.shift_deltas:
        if (row.metric != "accuracy" or row.subgroup != "overall"
                or not selected(row.variant, policy, variants)):
            continue
        check = partial(Check, kind="robustness", variant=row.variant, subject=row.shift)
        drop, se, df = -row.abs_diff, row.abs_diff_se, row_df(row.abs_diff_df)
        if pol.max_accuracy_drop is not None:
            yield check(id=f"{row.variant}/{row.shift}/accuracy_drop",
                        metric="accuracy_drop", estimate=drop, se=se, df=df,
                        bounds=RATE_CHANGE, tolerance=pol.max_accuracy_drop, unit="points")
        ref = clean.get(row.variant)
        if pol.max_excess_drop is not None and ref is not None:
            # Shifted examples derive from clean ones, so the two estimates correlate
            # positively; adding variances overstates the se (a conservative interval).
            yield check(id=f"{row.variant}/{row.shift}/excess_drop",
                        metric="accuracy_drop (excess)", estimate=drop + ref.abs_diff,
                        se=math.hypot(se, ref.abs_diff_se),
                        df=sum_df(se, df, ref.abs_diff_se, row_df(ref.abs_diff_df)),
                        bounds=RATE_CHANGE_DIFF, tolerance=pol.max_excess_drop, unit="points")


def dissection_checks(metrics: Metrics, policy: GatePolicy,
                      variants: list[str]) -> Iterator[Check]:
    """``[gate.dissection]``: the share of interpretable units (and distinct concepts)
    lost, a t interval over replicas; variants whose accuracy does not hold are left
    to the other checks."""
    pol = policy.dissection
    if pol is None:
        return
    replicas = metrics.dissection.replicas if metrics.dissection is not None else ()
    clean = _overall_accuracy(metrics)
    wanted = [(f, subject, tol) for f, subject, tol in (
        ("interpretable_drop", "interpretable units", pol.max_unit_drop),
        ("concept_drop", "distinct concepts", pol.max_concept_drop)) if tol is not None]
    for variant in variants:
        if not selected(variant, policy, variants):
            continue
        rows = [r for r in replicas if r.variant == variant]
        if not rows:
            continue
        if pol.accuracy_tolerance is not None and variant in clean:
            if -clean[variant].abs_diff > pol.accuracy_tolerance:
                continue  # accuracy does not hold: the other checks judge this variant
        for metric, subject, tolerance in wanted:
            values = [float(getattr(r, metric)) for r in rows]
            values = [v for v in values if math.isfinite(v)]
            n = len(values)
            mean, std = (float(x) for x in t_interval(values)[:2]) if n else (math.nan, math.nan)
            se = std / math.sqrt(n) if n >= 2 else math.nan
            # In percent, like the other relative checks, so every output formats it alike.
            check = Check(id=f"{variant}/dissection/{metric}", kind="dissection",
                          variant=variant, subject=subject, metric=metric, estimate=100 * mean,
                          se=100 * se, tolerance=100 * tolerance, unit="%",
                          df=n - 1 if n >= 2 else None, bounds=(None, 100.0))
            if not n:
                check.reason = "the dense model has no interpretable unit to lose"
            elif n == 1:
                check.reason = "one replica: no interval (train more replicas)"
            yield check


def slice_checks(metrics: Metrics, policy: GatePolicy,
                 variants: list[str]) -> Iterator[Check]:
    """``[gate.slice]``: the error change of every discovered slice with enough
    held-out members."""
    pol = policy.slice
    if pol is None:
        return
    rows = metrics.slices.rows if metrics.slices is not None else ()
    for row in rows:
        if not selected(row.variant, policy, variants) or row.n_test < pol.min_slice_size:
            continue
        # Every slice, not only the top one: the Bonferroni correction over all checks
        # covers choosing the worst slice after the fact.
        yield Check(id=f"{row.variant}/slice-{row.slice}/error_increase", kind="slice",
                    variant=row.variant, subject=f"slice {row.slice}: {row.description}",
                    metric="error increase", estimate=row.change, se=row.change_se,
                    df=row_df(row.change_df), bounds=RATE_CHANGE, n=row.n_test,
                    tolerance=pol.max_increase, unit="points")
