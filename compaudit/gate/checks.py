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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from compaudit.analysis._cells import cell_label
from compaudit.analysis.stats import (
    GROWTH_PCT,
    RATE_CHANGE,
    RATE_CHANGE_DIFF,
    bounded_interval,
    critical_value,
    t_interval,
)
from compaudit.errors import AuditInputError
from compaudit.gate.operating import OperatingPoint, operating_points
from compaudit.gate.policy import GatePolicy
from compaudit.registry import Registry
from compaudit.rundir import check_metrics_schema
from compaudit.schema import DeltaRow, GateCheck, Metrics

__all__ = ["SECTIONS", "Check", "GateResult", "run_gate"]

#: Power at which an inconclusive subgroup check states what its cell could detect.
DETECT_POWER = 0.8
Bounds = tuple[float | None, float | None]


@dataclass
class Check:
    """One gate check and its verdict."""

    id: str
    kind: str
    variant: str
    subject: str
    metric: str
    estimate: float
    se: float
    tolerance: float
    unit: str
    lo: float = math.nan
    hi: float = math.nan
    verdict: str = "inconclusive"
    reason: str = ""
    # Where the interval is built on a log scale (ratios): the estimate's log and its se.
    log_estimate: float | None = None
    # Degrees of freedom where the se comes from a few replicas (t, not normal, quantile).
    df: float | None = None
    # Examples and replica pairs behind a subgroup check (for its detectable effect).
    n: int | None = None
    replicas: int | None = None
    # The range of the estimate: its interval is built where it is unbounded.
    bounds: Bounds = (None, None)

    def record(self) -> GateCheck:
        """The check as ``gate.json`` holds it."""
        return GateCheck(id=self.id, kind=self.kind, variant=self.variant,
                         subject=self.subject, metric=self.metric, estimate=self.estimate,
                         se=self.se, tolerance=self.tolerance, unit=self.unit, lo=self.lo,
                         hi=self.hi, verdict=self.verdict, reason=self.reason)


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


def _df(x: float) -> float | None:
    """Degrees of freedom of a row's se; ``None`` (normal quantile) when NaN."""
    return float(x) if math.isfinite(x) else None


def _sum_df(se1: float, df1: float | None, se2: float, df2: float | None) -> float | None:
    """Satterthwaite df of ``hypot(se1, se2)`` (``None``: both normal)."""
    if df1 is None and df2 is None:
        return None
    den = sum(se**4 / df for se, df in ((se1, df1), (se2, df2)) if df is not None)
    return (se1**2 + se2**2) ** 2 / den if den > 0 else None


def _harm_sign(metric: str) -> float:
    """-1 for the accuracies, which harm by falling; +1 for the error rates."""
    return -1.0 if metric in ("accuracy", "balanced_accuracy") else 1.0


def _signed(bounds: Bounds, sign: float) -> Bounds:
    """The range of ``sign * x`` for ``x`` in ``bounds``."""
    lo, hi = bounds
    return bounds if sign > 0 else (None if hi is None else -hi, None if lo is None else -lo)


def _selected(variant: str, policy: GatePolicy, available: list[str]) -> bool:
    return variant in available and (not policy.variants or variant in policy.variants)


def _cell_name(cell: Mapping[str, Any]) -> str:
    """``Male=True & Young=False`` from a row's cell columns (``label``, ``attr.*``)."""
    return cell_label((k.removeprefix("attr."), v) for k, v in cell.items())


def _subgroup_checks(metrics: Metrics, policy: GatePolicy,
                     variants: list[str]) -> Iterator[Check]:
    pol = policy.subgroup_rate
    if pol is None:
        return
    for row in metrics.deltas:
        if (row.metric not in pol.metrics or not _selected(row.variant, policy, variants)
                or row.n < policy.min_subgroup_size):
            continue
        sign = _harm_sign(row.metric)
        check = partial(Check, kind="subgroup_rate", variant=row.variant,
                        subject=row.subgroup, n=row.n, replicas=row.replicas)
        stem = f"{row.variant}/{row.subgroup}/{row.metric}"
        if pol.max_abs_increase is not None:
            yield check(id=f"{stem}/abs", metric=row.metric,
                        estimate=sign * row.abs_diff, se=row.abs_diff_se,
                        df=_df(row.abs_diff_df), bounds=RATE_CHANGE,
                        tolerance=pol.max_abs_increase, unit="points")
        if pol.max_rel_increase_pct is not None:
            yield check(id=f"{stem}/rel", metric=f"{row.metric} (relative)",
                        estimate=sign * row.rel_change_pct, se=row.rel_change_pct_se,
                        df=_df(row.rel_change_pct_df), bounds=_signed(GROWTH_PCT, sign),
                        tolerance=pol.max_rel_increase_pct, unit="%")
        if pol.max_excess_increase is not None and row.subgroup != "overall":
            yield check(id=f"{stem}/excess", metric=f"{row.metric} (excess)",
                        estimate=sign * row.excess_diff, se=row.excess_diff_se,
                        df=_df(row.excess_diff_df), bounds=RATE_CHANGE_DIFF,
                        tolerance=pol.max_excess_increase, unit="points")


def _accuracy_checks(metrics: Metrics, policy: GatePolicy,
                     variants: list[str]) -> Iterator[Check]:
    pol = policy.accuracy
    if pol is None:
        return
    binary = metrics.task.binary
    metric = "balanced_accuracy" if binary else "accuracy"
    for row in metrics.deltas:
        if (row.metric != metric or row.subgroup != "overall"
                or not _selected(row.variant, policy, variants)):
            continue
        yield Check(id=f"{row.variant}/overall/{metric}_drop", kind="accuracy",
                    variant=row.variant, subject="overall",
                    metric="balanced accuracy drop" if binary else "top-1 drop",
                    estimate=-row.abs_diff, se=row.abs_diff_se, df=_df(row.abs_diff_df),
                    bounds=RATE_CHANGE, n=row.n, replicas=row.replicas,
                    tolerance=pol.max_drop, unit="points")


def _disparity_checks(metrics: Metrics, policy: GatePolicy,
                      variants: list[str]) -> Iterator[Check]:
    pol = policy.disparity
    if pol is None:
        return
    for row in metrics.disparity:
        if row.metric not in pol.metrics or not _selected(row.variant, policy, variants):
            continue
        yield Check(id=f"{row.variant}/{row.grouping}/{row.metric}/disparity",
                    kind="disparity", variant=row.variant, subject=row.grouping,
                    metric=row.metric, estimate=row.change, se=row.change_se,
                    df=_df(row.change_df), bounds=RATE_CHANGE, tolerance=pol.max_increase,
                    unit="points")


def _ratio_check(check: Check, log_rr: float, *, zero: bool) -> Check:
    """A relative-growth check on the log scale of its ratio (the analysis' log estimate
    and se); a ratio of 0 (no PIE in the cell) is a degenerate interval at -100%."""
    if zero:
        check.log_estimate, check.se = -math.inf, 0.0
    elif math.isfinite(log_rr):
        check.log_estimate = log_rr
    return check


def _overindex_checks(metrics: Metrics, policy: GatePolicy,
                      variants: list[str]) -> Iterator[Check]:
    pol = policy.pie_overindex
    if pol is None:
        return
    for row in metrics.overindex:
        if (not _selected(row.variant, policy, variants)
                or row.n_pie + row.n_non_pie < pol.min_cell_size):
            continue
        cell = _cell_name(row.cell)
        # Katz log interval of the ratio of the cell's PIE share to its non-PIE share.
        yield _ratio_check(Check(
            id=f"{row.variant}/{cell}/pie_overindex", kind="pie_overindex",
            variant=row.variant, subject=cell, metric="relative_growth_pct",
            estimate=row.relative_growth_pct, se=row.log_rr_se,
            tolerance=pol.max_relative_growth_pct, unit="%"), row.log_rr, zero=row.n_pie == 0)


def _within_label_checks(metrics: Metrics, policy: GatePolicy,
                         variants: list[str]) -> Iterator[Check]:
    pol = policy.pie_within_label
    if pol is None:
        return
    pies: dict[str, int] = {}
    for row in metrics.overindex_mh:
        pies[row.variant] = pies.get(row.variant, 0) + row.n_pie
    for row in metrics.overindex_mh:
        n = row.n_pie + row.n_non_pie
        # No label with both PIEs and non-PIEs (a variant without PIEs): nothing to check.
        if (not _selected(row.variant, policy, variants) or n < pol.min_cell_size
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


def _overall_accuracy(metrics: Metrics) -> dict[str, DeltaRow]:
    return {r.variant: r for r in metrics.deltas
            if r.metric == "accuracy" and r.subgroup == "overall"}


def _robustness_checks(metrics: Metrics, policy: GatePolicy,
                       variants: list[str]) -> Iterator[Check]:
    pol = policy.robustness
    if pol is None:
        return
    clean = _overall_accuracy(metrics)
    for row in metrics.robustness.shift_deltas:
        if (row.metric != "accuracy" or row.subgroup != "overall"
                or not _selected(row.variant, policy, variants)):
            continue
        check = partial(Check, kind="robustness", variant=row.variant, subject=row.shift)
        drop, se, df = -row.abs_diff, row.abs_diff_se, _df(row.abs_diff_df)
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
                        df=_sum_df(se, df, ref.abs_diff_se, _df(ref.abs_diff_df)),
                        bounds=RATE_CHANGE_DIFF, tolerance=pol.max_excess_drop, unit="points")


def _baseline_checks(metrics: Metrics, baseline: Metrics, policy: GatePolicy,
                     variants: list[str]) -> Iterator[Check]:
    pol, rates = policy.baseline, policy.subgroup_rate
    if pol is None:
        return
    wanted = rates.metrics if rates is not None else ("fpr", "fnr")
    old = {(r.variant, r.subgroup, r.metric): r for r in baseline.deltas}
    for row in metrics.deltas:
        key = (row.variant, row.subgroup, row.metric)
        if (key not in old or row.metric not in wanted or row.n < policy.min_subgroup_size
                or not _selected(row.variant, policy, variants)):
            continue
        sign = _harm_sign(row.metric)
        prev = old[key]
        yield Check(id=f"{'/'.join(key)}/vs_baseline", kind="baseline", variant=row.variant,
                    subject=row.subgroup, metric=row.metric,
                    estimate=sign * (row.abs_diff - prev.abs_diff),
                    se=math.hypot(row.abs_diff_se, prev.abs_diff_se),
                    df=_sum_df(row.abs_diff_se, _df(row.abs_diff_df),
                               prev.abs_diff_se, _df(prev.abs_diff_df)),
                    bounds=RATE_CHANGE_DIFF, tolerance=pol.max_abs_increase, unit="points")


def _dissection_checks(metrics: Metrics, policy: GatePolicy,
                       variants: list[str]) -> Iterator[Check]:
    pol = policy.dissection
    if pol is None:
        return
    replicas = metrics.dissection.replicas if metrics.dissection is not None else ()
    clean = _overall_accuracy(metrics)
    wanted = [(f, subject, tol) for f, subject, tol in (
        ("interpretable_drop", "interpretable units", pol.max_unit_drop),
        ("concept_drop", "distinct concepts", pol.max_concept_drop)) if tol is not None]
    for variant in variants:
        if not _selected(variant, policy, variants):
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


def _slice_checks(metrics: Metrics, policy: GatePolicy,
                  variants: list[str]) -> Iterator[Check]:
    pol = policy.slice
    if pol is None:
        return
    rows = metrics.slices.rows if metrics.slices is not None else ()
    for row in rows:
        if not _selected(row.variant, policy, variants) or row.n_test < pol.min_slice_size:
            continue
        # Every slice, not only the top one: the Bonferroni correction over all checks
        # covers choosing the worst slice after the fact.
        yield Check(id=f"{row.variant}/slice-{row.slice}/error_increase", kind="slice",
                    variant=row.variant, subject=f"slice {row.slice}: {row.description}",
                    metric="error increase", estimate=row.change, se=row.change_se,
                    df=_df(row.change_df), bounds=RATE_CHANGE, n=row.n_test,
                    tolerance=pol.max_increase, unit="points")


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
        check.reason = f"increase above {check.tolerance:g} {check.unit} with confidence"
    elif check.hi <= check.tolerance:
        check.verdict, check.reason = "pass", ""
    else:
        check.verdict = "inconclusive"
        check.reason = f"interval contains the tolerance {check.tolerance:g} {check.unit}"
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
             variants_info: Mapping[str, Mapping[str, Any]] | None = None) -> GateResult:
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
for _name, _fn in (("accuracy", _accuracy_checks), ("subgroup_rate", _subgroup_checks),
                   ("disparity", _disparity_checks), ("pie_overindex", _overindex_checks),
                   ("pie_within_label", _within_label_checks),
                   ("robustness", _robustness_checks), ("dissection", _dissection_checks),
                   ("slice", _slice_checks)):
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
                         partial(_baseline_checks, metrics, baseline, policy, variants)))
    for name, make in sections:
        found = list(make())  # rows were checked when metrics.json was read
        if not found:
            notes.append(f"[gate.{name}] matched no check in this run")
        checks += found
    return checks, notes
