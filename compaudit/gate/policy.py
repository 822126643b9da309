"""The gate policy: what may regress and by how much, read from TOML.

A policy is the ``[gate]`` table of an audit spec, or a file of its own::

    [gate]
    level = 0.95              # simultaneous confidence over all checks (Bonferroni)
    inconclusive = "warn"     # what an undecided check does: "warn", "fail" or "pass"
    variants = []             # compressed variants to check; empty = all
    min_subgroup_size = 30    # smaller subgroups are not checked

    [gate.accuracy]           # overall accuracy lost vs dense (balanced accuracy if binary)
    max_drop = 0.01           # in rate units (0.01 = 1 point)

    [gate.subgroup_rate]      # per-subgroup increase of an error rate vs dense
    metrics = ["fpr", "fnr"]
    max_abs_increase = 0.02   # in rate units (0.02 = 2 points)
    max_rel_increase_pct = 50.0  # optional
    max_excess_increase = 0.05   # optional: increase beyond the overall increase

    [gate.disparity]          # growth of max - min across a grouping's subgroups
    metrics = ["fpr", "fnr"]
    max_increase = 0.02

    [gate.pie_overindex]      # PIE over-index growth per label x attribute cell (Table 1)
    max_relative_growth_pct = 100.0
    min_cell_size = 30

    [gate.pie_within_label]   # PIE over-index per attribute cell within the true label
    max_relative_growth_pct = 100.0   # on the Mantel-Haenszel pooled ratio over labels
    min_cell_size = 30
    min_pies = 20             # variants with fewer PIEs are not checked

    [gate.robustness]         # accuracy lost vs dense on each shift
    max_accuracy_drop = 0.02
    max_excess_drop = 0.05    # optional: loss on the shift beyond the loss on clean data

    [gate.baseline]           # with --baseline: change of the compression cost since then
    max_abs_increase = 0.01

    [gate.dissection]         # with a [dissection] section: interpretable units lost
    max_unit_drop = 0.25      # relative drop of the interpretable-unit count vs dense
    max_concept_drop = false  # optional: relative drop of the distinct concepts
    accuracy_tolerance = false  # optional: check only variants whose top-1 fell <= this

    [gate.slice]              # with [analysis.slices]: error increase of each discovered slice
    max_increase = 0.10       # compressed minus dense error of the slice, in rate units
    min_slice_size = 30       # slices with fewer held-out (test) examples are not checked

A section that is absent is not checked, except that the defaults below apply when no
policy is given at all; an optional tolerance set to ``false`` is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from compaudit.config import Checked, from_table, parse_toml, plain, read_utf8, setting
from compaudit.errors import AuditInputError

__all__ = [
    "GatePolicy",
    "AccuracyPolicy",
    "SubgroupRatePolicy",
    "DisparityPolicy",
    "OverindexPolicy",
    "WithinLabelPolicy",
    "RobustnessPolicy",
    "BaselinePolicy",
    "DissectionPolicy",
    "SlicePolicy",
    "load_policy",
    "policy_from_dict",
    "policy_table",
]

RateMetric = Literal["fpr", "fnr", "selection_rate", "accuracy", "balanced_accuracy"]


def _tolerance(default: float | None) -> Any:
    """An optional tolerance >= 0; ``false`` in TOML turns its check off.

    A field declaration, typed ``Any`` like :func:`~compaudit.config.setting` (and
    :func:`dataclasses.field`), so that it stands as the default of a ``float | None`` field.
    """
    return setting(default, ge=0, off=True)


@dataclass(frozen=True)
class AccuracyPolicy(Checked):
    """Tolerance on the overall accuracy a variant loses against dense: top-1 for
    many-class tasks, balanced accuracy (the mean of TPR and TNR) for binary ones, so a
    variant cannot pass by trading one error for the other on an unbalanced label."""

    max_drop: float = setting(0.01, ge=0)


@dataclass(frozen=True)
class SubgroupRatePolicy(Checked):
    """Tolerances on a subgroup's rate change vs dense; ``None`` skips that check.

    ``max_excess_increase`` bounds the subgroup's increase *beyond* the overall increase
    (in rate units): it flags disproportionate harm while tolerating a model-wide loss.
    """

    metrics: tuple[RateMetric, ...] = ("fpr", "fnr")
    max_abs_increase: float | None = _tolerance(0.02)
    max_rel_increase_pct: float | None = _tolerance(None)
    max_excess_increase: float | None = _tolerance(None)


@dataclass(frozen=True)
class DisparityPolicy(Checked):
    metrics: tuple[RateMetric, ...] = ("fpr", "fnr")
    max_increase: float = setting(0.02, ge=0)


@dataclass(frozen=True)
class OverindexPolicy(Checked):
    max_relative_growth_pct: float = setting(100.0, ge=0)
    min_cell_size: int = setting(30, ge=0)


@dataclass(frozen=True)
class WithinLabelPolicy(Checked):
    """Tolerance on the within-label PIE over-index of an attribute cell.

    The estimate is the Mantel-Haenszel pooled ratio over true labels of the cell's share
    among PIEs to its share among non-PIEs, as a relative growth in % (0: no
    over-index); its interval is the Greenland-Robins one on the log scale. Unlike
    ``pie_overindex`` it does not flag PIEs that concentrate on one class in every group.
    ``min_cell_size``: cells with fewer examples (all labels) are not checked.
    ``min_pies``: variants with fewer PIEs are not checked: with a handful of PIEs the
    log-ratio interval degenerates (one PIE in a cell gives a zero-width PIE share and a
    "significant" over-index of thousands of percent).
    """

    max_relative_growth_pct: float = setting(100.0, ge=0)
    min_cell_size: int = setting(30, ge=0)
    min_pies: int = setting(20, ge=0)


@dataclass(frozen=True)
class RobustnessPolicy(Checked):
    """``max_accuracy_drop``: accuracy lost vs dense on a shift; ``max_excess_drop``: the
    loss on a shift beyond the loss on clean data. ``None`` skips that check."""

    max_accuracy_drop: float | None = _tolerance(0.02)
    max_excess_drop: float | None = _tolerance(None)


@dataclass(frozen=True)
class BaselinePolicy(Checked):
    max_abs_increase: float = setting(0.01, ge=0)


@dataclass(frozen=True)
class DissectionPolicy(Checked):
    """Tolerances on the interpretable units compression removes (network dissection).

    ``max_unit_drop``: relative drop of the number of interpretable units against the
    paired dense replica (0.25 = a quarter of them); ``max_concept_drop``: the same for
    the distinct concepts they detect. ``accuracy_tolerance``: check only variants whose
    clean top-1 accuracy fell by at most this much (point estimate), the case Frankle &
    Bau study: accuracy holds while interpretability goes; ``None`` checks every variant.
    Intervals are t-intervals over the replicas. Runs without dissection have no checks.
    """

    max_unit_drop: float | None = _tolerance(0.25)
    max_concept_drop: float | None = _tolerance(None)
    accuracy_tolerance: float | None = _tolerance(None)


@dataclass(frozen=True)
class SlicePolicy(Checked):
    """Tolerance on the error increase of the slices slice discovery found.

    Each slice of each compressed variant (``[analysis.slices]``, or ``compaudit analyze
    --embeddings``) is checked: its compressed minus dense error on the held-out examples
    that did not shape it, with the seed-aware interval of the analysis, widened with
    the other checks. ``max_increase`` in rate units (0.10 = 10 points);
    ``min_slice_size``: slices with fewer held-out examples are not checked. Off unless
    the policy names it; runs without slices have no checks.
    """

    max_increase: float = setting(0.10, ge=0)
    min_slice_size: int = setting(30, ge=0)


@dataclass(frozen=True)
class GatePolicy(Checked):
    """Tolerances of every gate check; ``None`` sections are not checked."""

    level: float = setting(0.95, gt=0, lt=1)
    inconclusive: Literal["warn", "fail", "pass"] = "warn"
    variants: tuple[str, ...] = ()
    min_subgroup_size: int = setting(30, ge=0)
    accuracy: AccuracyPolicy | None = setting(factory=AccuracyPolicy)
    subgroup_rate: SubgroupRatePolicy | None = setting(factory=SubgroupRatePolicy)
    disparity: DisparityPolicy | None = setting(factory=DisparityPolicy)
    pie_overindex: OverindexPolicy | None = setting(factory=OverindexPolicy)
    pie_within_label: WithinLabelPolicy | None = setting(factory=WithinLabelPolicy)
    robustness: RobustnessPolicy | None = setting(factory=RobustnessPolicy)
    baseline: BaselinePolicy | None = setting(factory=BaselinePolicy)
    dissection: DissectionPolicy | None = setting(factory=DissectionPolicy)
    # Off by default, even with no policy at all: slices exist only when asked for.
    slice: SlicePolicy | None = None


#: The check sections of a policy; a policy table turns off those it does not name.
SECTIONS = ("accuracy", "subgroup_rate", "disparity", "pie_overindex", "pie_within_label",
            "robustness", "baseline", "dissection", "slice")


def policy_from_dict(table: dict[str, Any], *, source: str = "policy") -> GatePolicy:
    """Build a :class:`GatePolicy` from the ``[gate]`` table; every mistake is reported.

    Sections absent from ``table`` are turned off, so a policy checks exactly what it
    names (``GatePolicy()`` gives every default check).
    """
    problems: list[str] = []
    policy = from_table(GatePolicy, table, where=f"{source}: [gate]", problems=problems,
                        base={name: None for name in SECTIONS})
    if policy is None:  # from_table returns None exactly when it found problems
        raise AuditInputError(problems)
    return policy


def load_policy(path: str | Path) -> GatePolicy:
    """Read a policy file: a TOML file with a ``[gate]`` table (an audit spec works too)."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: policy file not found; expected a TOML file with a "
                              "[gate] table")
    doc = parse_toml(read_utf8(path), source=str(path))
    if not isinstance(doc.get("gate"), dict):
        raise AuditInputError(f"{path}: no [gate] table; expected the policy under [gate]")
    return policy_from_dict(doc["gate"], source=str(path))


def policy_table(policy: GatePolicy) -> dict[str, Any]:
    """``policy`` as the ``[gate]`` table that :func:`policy_from_dict` reads back to an
    equal policy: sections that are off are left out, tolerances that are off are
    ``false``. The audit record stores it so that ``compaudit verify`` re-judges a run
    under the policy it was judged by.

    >>> policy_from_dict(policy_table(GatePolicy())) == GatePolicy()
    True
    """
    table: dict[str, Any] = plain(policy)
    for name in SECTIONS:
        if table[name] is None:
            del table[name]
        else:
            table[name] = {k: (False if v is None else v) for k, v in table[name].items()}
    return table
