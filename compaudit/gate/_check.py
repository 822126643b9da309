"""One gate check (:class:`Check`) and what every family of checks needs to build one
from a ``metrics.json`` row: the row's degrees of freedom and the variants a policy
selects."""

from __future__ import annotations

import math
from dataclasses import dataclass

from compaudit.gate.policy import GatePolicy
from compaudit.schema import GateCheck
from compaudit.schema.gate import amount

__all__ = ["Bounds", "Check", "row_df", "selected", "sum_df"]

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

    def amount(self, value: float) -> str:
        """``value`` in the unit the check is read in: a rate change (``unit ==
        "points"``, a fraction) in percentage points, a relative growth in percent."""
        return amount(value, self.unit)

    def record(self) -> GateCheck:
        """The check as ``gate.json`` holds it."""
        return GateCheck(id=self.id, kind=self.kind, variant=self.variant,
                         subject=self.subject, metric=self.metric, estimate=self.estimate,
                         se=self.se, tolerance=self.tolerance, unit=self.unit, lo=self.lo,
                         hi=self.hi, verdict=self.verdict, reason=self.reason)


def row_df(x: float) -> float | None:
    """Degrees of freedom of a row's se; ``None`` (normal quantile) when NaN."""
    return float(x) if math.isfinite(x) else None


def sum_df(se1: float, df1: float | None, se2: float, df2: float | None) -> float | None:
    """Satterthwaite df of ``hypot(se1, se2)`` (``None``: both normal)."""
    if df1 is None and df2 is None:
        return None
    den = sum(se**4 / df for se, df in ((se1, df1), (se2, df2)) if df is not None)
    return (se1**2 + se2**2) ** 2 / den if den > 0 else None


def selected(variant: str, policy: GatePolicy, available: list[str]) -> bool:
    """Whether the run has ``variant`` and the policy selects it."""
    return variant in available and (not policy.variants or variant in policy.variants)
