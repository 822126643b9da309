"""The CI gate: policy checks on ``metrics.json`` with simultaneous intervals.

Every check estimates an increase (of an error rate, a disparity, a PIE over-index, an
accuracy loss, a loss of interpretable units) and compares it with the policy's
tolerance. Intervals are Wald intervals from the standard errors in ``metrics.json``,
with t quantiles where a row carries degrees of freedom (``*_df``: subgroup, disparity
and shift changes, whose se covers replica pairs and examples; dissection checks, whose
only source of variation is the replica), widened by a Bonferroni correction over all
checks of the run, so that together they hold with the policy's ``level``. An interval
never leaves its parameter's range (a change of a rate lies in [-1, 1], a relative growth
is at least -100%): it is built on a scale where the parameter is unbounded
(:func:`compaudit.analysis.stats.bounded_interval`; ratios on the log scale).

- **fail**: the whole interval lies above the tolerance (the increase is real and too big);
- **pass**: the whole interval lies at or below the tolerance;
- **inconclusive**: the interval contains the tolerance; the policy's ``inconclusive``
  setting turns it into a warning, a failure, or a pass.

A check whose estimate is undefined (a rate with no negatives, say) is inconclusive with
that reason. An inconclusive subgroup check also states the smallest increase its cell
could detect at the check's own simultaneous level with 80% power.

This module is the driver: it collects every policy section's checks (:data:`SECTIONS`;
the families live in :mod:`~compaudit.gate.rate_checks`, :mod:`~compaudit.gate.pie_checks`
and :mod:`~compaudit.gate.block_checks`), builds the intervals and decides the verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

from compaudit.analysis.stats import bounded_interval, critical_value
from compaudit.errors import AuditInputError
from compaudit.gate._check import Check
from compaudit.gate.block_checks import dissection_checks, robustness_checks, slice_checks
from compaudit.gate.operating import OperatingPoint, operating_points
from compaudit.gate.pie_checks import overindex_checks, within_label_checks
from compaudit.gate.policy import GatePolicy
from compaudit.gate.rate_checks import (
    accuracy_checks,
    baseline_checks,
    disparity_checks,
    subgroup_checks,
)
from compaudit.registry import Registry
from compaudit.rundir import check_metrics_schema
from compaudit.schema import Metrics, VariantRecord

__all__ = ["SECTIONS", "Check", "GateResult", "run_gate"]

#: Power at which an inconclusive subgroup check states what its cell could detect.
DETECT_POWER = 0.8


@dataclass
class GateResult:
    """All checks, the overall verdict and the exit code it maps to."""

    checks: list[Check]
    policy: GatePolicy
    z: float
    #: Policy sections that matched no check in this run.
    notes: list[str] = field(default_factory=list)
    #: Per compression family: the most compressed variant that passes every check and
    #: the first that fails (:mod:`compaudit.gate.operating`).
    operating_points: list[OperatingPoint] = field(default_factory=list)
    #: What the intervals are about (``metrics.json["subgroup_method"]["note"]``): the
    #: models at hand or the compression procedure, in one sentence.
    inference: str = ""

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "fail"]

    @property
    def inconclusive(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "inconclusive"]

    @property
    def verdict(self) -> str:
        """``fail``, ``warn`` (inconclusive checks under a warn policy) or ``pass``."""
        if self.failed or (self.inconclusive and self.policy.inconclusive == "fail"):
            return "fail"
        if self.inconclusive and self.policy.inconclusive == "warn":
            return "warn"
        return "pass"

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "fail" else 0


def _decide(check: Check, z: float, tail: float) -> None:
    if not (math.isfinite(check.estimate) or check.log_estimate == -math.inf):
        check.verdict = "inconclusive"
        check.reason = check.reason or "estimate undefined (see note in metrics)"
        return
    if check.df is not None:
        z = critical_value(tail, df=check.df)
    if check.log_estimate is not None:
        lo = check.log_estimate - z * check.se
        hi = check.log_estimate + z * check.se
        check.lo, check.hi = 100 * (math.exp(lo) - 1), 100 * (math.exp(hi) - 1)
    elif math.isfinite(check.se):
        interval = bounded_interval(check.estimate, check.se, z, check.bounds)
        check.lo, check.hi = float(interval[0]), float(interval[1])
    else:
        check.verdict = "inconclusive"
        check.reason = check.reason or "no standard error (bootstrap off?)"
        return
    if check.lo > check.tolerance:
        check.verdict = "fail"
        check.reason = f"increase above {check.amount(check.tolerance)} with confidence"
    elif check.hi <= check.tolerance:
        check.verdict, check.reason = "pass", ""
    else:
        check.verdict = "inconclusive"
        check.reason = f"interval contains the tolerance {check.amount(check.tolerance)}"
        if check.kind in ("subgroup_rate", "accuracy") and check.n is not None:
            check.reason += "; " + detectable(check, z)


def detectable(check: Check, crit: float) -> str:
    """"this cell can detect only >= X ... with N examples and K replicas": the minimum
    detectable increase ``(crit + q_power) * se`` at the check's critical value ``crit``
    (its simultaneous level) and 80% power, with t quantiles where the check has df."""
    q_power = (critical_value(1 - DETECT_POWER) if check.df is None
               else critical_value(1 - DETECT_POWER, df=check.df))
    size = (crit + q_power) * check.se
    k = check.replicas
    replicas = f"{k} replica{'s' if k != 1 else ''}" if k is not None else "the replicas"
    top = check.bounds[1]
    if top is not None and size >= top - check.tolerance:
        # No increase the parameter's range allows above the tolerance could be found.
        return f"cannot be decided with {replicas} and {check.n:,} examples"
    amount = f"{100 * size:.1f} pp" if check.unit == "points" else f"{size:.1f} {check.unit}"
    return f"this cell can detect only ≥ {amount} with {check.n:,} examples and {replicas}"


def run_gate(metrics: Metrics, policy: GatePolicy | None = None, *,
             baseline: Metrics | None = None,
             variants_info: Mapping[str, VariantRecord] | None = None) -> GateResult:
    """Evaluate ``policy`` on a run's ``metrics.json`` (and a baseline's, if given).

    ``variants_info`` (a run's ``variants.json`` entries by variant) gives the method
    and sparsity that group variants into families for the operating points; without
    it they come from the variant names.

    Refuses (``AuditInputError``, exit 2) what it cannot judge: another schema, a
    baseline without the run's compressed variants, or no applicable check at all.
    Policy sections that match no check are listed in :attr:`GateResult.notes`.
    """
    policy = policy or GatePolicy()
    check_metrics_schema({"schema": metrics.schema})
    variants = metrics.compressed
    unknown = [v for v in policy.variants if v not in variants]
    if unknown:
        raise AuditInputError(f"policy: [gate].variants names {unknown}; the run has "
                              f"{', '.join(variants)}")
    if baseline is not None:
        _check_baseline(baseline, variants)
    checks, notes = _collect(metrics, policy, variants, baseline)
    if not checks:
        raise AuditInputError(
            "metrics: no gate check applies (" + "; ".join(notes or ["the policy is empty"])
            + "); expected a metrics.json with compressed variants and the tables the "
              "policy checks, or a policy that names them")
    m = len(checks)
    # Two-sided Bonferroni: all m intervals hold together with probability >= level.
    tail = (1 - policy.level) / (2 * m)
    z = critical_value(tail)
    for check in checks:
        _decide(check, z, tail)
    if policy.inconclusive == "pass":
        for check in checks:
            if check.verdict == "inconclusive":
                check.reason += " (policy: inconclusive passes)"
    points = operating_points(checks, variants, dense=metrics.dense,
                              variants_info=variants_info, inconclusive=policy.inconclusive)
    method = metrics.subgroup_method
    inference = method.note if method is not None else ""
    return GateResult(checks=checks, policy=policy, z=z, notes=notes, operating_points=points,
                      inference=inference)


def _check_baseline(baseline: Metrics, variants: list[str]) -> None:
    check_metrics_schema({"schema": baseline.schema}, source="baseline metrics")
    missing = [v for v in variants if v not in baseline.variants]
    if missing:
        raise AuditInputError(f"baseline metrics: field 'variants': has no {', '.join(missing)}; "
                              "expected a baseline run with the same compressed variants")


#: Each policy section and the function producing its checks, in the order they run.
Section = Callable[[Metrics, GatePolicy, list[str]], Iterator[Check]]
SECTIONS: Registry[Section] = Registry("gate section")
for _name, _fn in (("accuracy", accuracy_checks), ("subgroup_rate", subgroup_checks),
                   ("disparity", disparity_checks), ("pie_overindex", overindex_checks),
                   ("pie_within_label", within_label_checks),
                   ("robustness", robustness_checks), ("dissection", dissection_checks),
                   ("slice", slice_checks)):
    SECTIONS.add(_name, _fn)


def _collect(metrics: Metrics, policy: GatePolicy, variants: list[str],
             baseline: Metrics | None) -> tuple[list[Check], list[str]]:
    """Every section's checks, and a note for each section that produced none."""
    checks: list[Check] = []
    notes: list[str] = []
    sections: list[tuple[str, Callable[[], Iterator[Check]]]] = [
        (name, partial(fn, metrics, policy, variants))
        for name, fn in SECTIONS.items() if getattr(policy, name) is not None]
    if baseline is not None and policy.baseline is not None:
        sections.append(("baseline",
                         partial(baseline_checks, metrics, baseline, policy, variants)))
    for name, make in sections:
        found = list(make())  # rows were checked when metrics.json was read
        if not found:
            notes.append(f"[gate.{name}] matched no check in this run")
        checks += found
    return checks, notes
