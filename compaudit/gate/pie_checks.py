"""The gate's checks on where PIEs concentrate: a cell's PIE over-index
(``[gate.pie_overindex]``, Katz interval) and its Mantel-Haenszel over-index within the
label (``[gate.pie_within_label]``, Greenland-Robins interval), both on the log scale of
their ratio."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from compaudit.analysis._cells import cell_label
from compaudit.gate._check import Check, selected
from compaudit.gate.policy import GatePolicy
from compaudit.schema import Metrics

__all__ = ["overindex_checks", "within_label_checks"]


def _cell_name(cell: Mapping[str, Any]) -> str:
    """``Male=True & Young=False`` from a row's cell columns (``label``, ``attr.*``)."""
    return cell_label((k.removeprefix("attr."), v) for k, v in cell.items())


def _ratio_check(check: Check, log_rr: float, *, zero: bool) -> Check:
    """A relative-growth check on the log scale of its ratio (the analysis' log estimate
    and se); a ratio of 0 (no PIE in the cell) is a degenerate interval at -100%."""
    if zero:
        check.log_estimate, check.se = -math.inf, 0.0
    elif math.isfinite(log_rr):
        check.log_estimate = log_rr
    return check


def overindex_checks(metrics: Metrics, policy: GatePolicy,
                     variants: list[str]) -> Iterator[Check]:
    """``[gate.pie_overindex]``: each cell's PIE over-index (Katz interval of the
    ratio)."""
    pol = policy.pie_overindex
    if pol is None:
        return
    for row in metrics.overindex:
        if (not selected(row.variant, policy, variants)
                or row.n_pie + row.n_non_pie < pol.min_cell_size):
            continue
        cell = _cell_name(row.cell)
        # Katz log interval of the ratio of the cell's PIE share to its non-PIE share.
        yield _ratio_check(Check(
            id=f"{row.variant}/{cell}/pie_overindex", kind="pie_overindex",
            variant=row.variant, subject=cell, metric="relative_growth_pct",
            estimate=row.relative_growth_pct, se=row.log_rr_se,
            tolerance=pol.max_relative_growth_pct, unit="%"), row.log_rr, zero=row.n_pie == 0)


def within_label_checks(metrics: Metrics, policy: GatePolicy,
                        variants: list[str]) -> Iterator[Check]:
    """``[gate.pie_within_label]``: each cell's PIE over-index within the label
    (Mantel-Haenszel), for variants with enough PIEs."""
    pol = policy.pie_within_label
    if pol is None:
        return
    pies: dict[str, int] = {}
    for row in metrics.overindex_mh:
        pies[row.variant] = pies.get(row.variant, 0) + row.n_pie
    for row in metrics.overindex_mh:
        n = row.n_pie + row.n_non_pie
        # No label with both PIEs and non-PIEs (a variant without PIEs): nothing to check.
        if (not selected(row.variant, policy, variants) or n < pol.min_cell_size
                or not row.strata or pies[row.variant] < pol.min_pies):
            continue
        cell = _cell_name(row.cell) or "all"
        rr = row.rr_mh
        # Greenland-Robins interval of the Mantel-Haenszel risk ratio, on the log scale.
        yield _ratio_check(Check(
            id=f"{row.variant}/{cell}/pie_within_label", kind="pie_within_label",
            variant=row.variant, subject=f"{cell} (within label)",
            metric="MH relative_growth_pct", estimate=100 * (rr - 1), se=row.log_rr_se,
            tolerance=pol.max_relative_growth_pct, unit="%"),
            math.log(rr) if rr > 0 and math.isfinite(row.log_rr_se) else math.nan,
            zero=rr == 0)
