"""The gate policy: what may regress and by how much, read from TOML.

A policy is the ``[gate]`` table of an audit spec, or a file of its own::

    [gate]
    level = 0.95              # simultaneous confidence over all checks (Bonferroni)
    inconclusive = "warn"     # what an undecided check does: "warn", "fail" or "pass"
    variants = []             # compressed variants to check; empty = all
    min_subgroup_size = 30    # smaller subgroups are not checked

    [gate.subgroup_rate]      # per-subgroup increase of an error rate vs dense
    metrics = ["fpr", "fnr"]
    max_abs_increase = 0.02   # in rate units (0.02 = 2 points)
    max_rel_increase_pct = 50.0  # optional
    max_excess_increase = 0.05   # optional: increase beyond the overall increase

    [gate.disparity]          # growth of max - min across a grouping's subgroups
    metrics = ["fpr", "fnr"]
    max_increase = 0.02

    [gate.pie_overindex]      # PIE over-index growth per attribute cell
    max_relative_growth_pct = 100.0
    min_cell_size = 30

    [gate.robustness]         # accuracy lost vs dense on each shift
    max_accuracy_drop = 0.02
    max_excess_drop = 0.05    # optional: loss on the shift beyond the loss on clean data

    [gate.baseline]           # with --baseline: change of the compression cost since then
    max_abs_increase = 0.01

    [gate.dissection]         # with a [dissection] section: interpretable units lost
    max_unit_drop = 0.25      # relative drop of the interpretable-unit count vs dense
    max_concept_drop = false  # optional: relative drop of the distinct concepts
    accuracy_tolerance = false  # optional: check only variants whose top-1 fell <= this

A section that is absent is not checked, except that the defaults below apply when no
policy is given at all; an optional tolerance set to ``false`` is not checked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from compaudit.errors import AuditInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "GatePolicy",
    "SubgroupRatePolicy",
    "DisparityPolicy",
    "OverindexPolicy",
    "RobustnessPolicy",
    "BaselinePolicy",
    "DissectionPolicy",
    "load_policy",
    "policy_from_dict",
]

RATE_METRICS = ("fpr", "fnr", "selection_rate", "accuracy")
#: Tolerances that ``false`` turns off (TOML has no null).
_SWITCHABLE = frozenset({"max_abs_increase", "max_rel_increase_pct", "max_excess_increase",
                         "max_accuracy_drop", "max_excess_drop", "max_unit_drop",
                         "max_concept_drop", "accuracy_tolerance"})


@dataclass(frozen=True)
class SubgroupRatePolicy:
    """Tolerances on a subgroup's rate change vs dense; ``None`` skips that check.

    ``max_excess_increase`` bounds the subgroup's increase *beyond* the overall increase
    (in rate units): it flags disproportionate harm while tolerating a model-wide loss.
    """

    metrics: tuple[str, ...] = ("fpr", "fnr")
    max_abs_increase: float | None = 0.02
    max_rel_increase_pct: float | None = None
    max_excess_increase: float | None = None


@dataclass(frozen=True)
class DisparityPolicy:
    metrics: tuple[str, ...] = ("fpr", "fnr")
    max_increase: float = 0.02


@dataclass(frozen=True)
class OverindexPolicy:
    max_relative_growth_pct: float = 100.0
    min_cell_size: int = 30


@dataclass(frozen=True)
class RobustnessPolicy:
    """``max_accuracy_drop``: accuracy lost vs dense on a shift; ``max_excess_drop``: the
    loss on a shift beyond the loss on clean data. ``None`` skips that check."""

    max_accuracy_drop: float | None = 0.02
    max_excess_drop: float | None = None


@dataclass(frozen=True)
class BaselinePolicy:
    max_abs_increase: float = 0.01


@dataclass(frozen=True)
class DissectionPolicy:
    """Tolerances on the interpretable units compression removes (network dissection).

    ``max_unit_drop``: relative drop of the number of interpretable units against the
    paired dense replica (0.25 = a quarter of them); ``max_concept_drop``: the same for
    the distinct concepts they detect. ``accuracy_tolerance``: check only variants whose
    clean top-1 accuracy fell by at most this much (point estimate), the case Frankle &
    Bau study: accuracy holds while interpretability goes; ``None`` checks every variant.
    Intervals are t-intervals over the replicas. Runs without dissection have no checks.
    """

    max_unit_drop: float | None = 0.25
    max_concept_drop: float | None = None
    accuracy_tolerance: float | None = None


@dataclass(frozen=True)
class GatePolicy:
    """Tolerances of every gate check; ``None`` sections are not checked."""

    level: float = 0.95
    inconclusive: Literal["warn", "fail", "pass"] = "warn"
    variants: tuple[str, ...] = ()
    min_subgroup_size: int = 30
    subgroup_rate: SubgroupRatePolicy | None = field(default_factory=SubgroupRatePolicy)
    disparity: DisparityPolicy | None = field(default_factory=DisparityPolicy)
    pie_overindex: OverindexPolicy | None = field(default_factory=OverindexPolicy)
    robustness: RobustnessPolicy | None = field(default_factory=RobustnessPolicy)
    baseline: BaselinePolicy | None = field(default_factory=BaselinePolicy)
    dissection: DissectionPolicy | None = field(default_factory=DissectionPolicy)


_SECTIONS = {
    "subgroup_rate": SubgroupRatePolicy,
    "disparity": DisparityPolicy,
    "pie_overindex": OverindexPolicy,
    "robustness": RobustnessPolicy,
    "baseline": BaselinePolicy,
    "dissection": DissectionPolicy,
}


def _check_value(where: str, key: str, value: Any, default: Any, problems: list[str]) -> Any:
    """Type-check one policy value against its default's type."""
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{where}.{key}: got {value!r}; expected a list of strings")
            return default
        if key == "metrics":
            bad = [v for v in value if v not in RATE_METRICS]
            if bad:
                problems.append(f"{where}.{key}: unknown metric(s) {bad}; valid: "
                                f"{', '.join(RATE_METRICS)}")
        return tuple(value)
    if value is False and key in _SWITCHABLE:
        return None  # `key = false` turns an optional check off
    if isinstance(default, bool) or isinstance(value, bool):
        problems.append(f"{where}.{key}: got {value!r}; expected a number")
        return default
    if isinstance(default, int) and not isinstance(value, int):
        problems.append(f"{where}.{key}: got {value!r}; expected an integer")
        return default
    if (default is None or isinstance(default, float)) and not isinstance(value, (int, float)):
        problems.append(f"{where}.{key}: got {value!r}; expected a number")
        return default
    if isinstance(value, (int, float)) and value < 0:
        problems.append(f"{where}.{key}: got {value!r}; expected a value >= 0")
        return default
    return float(value) if isinstance(default, float) or default is None else value


def _build(cls: type, table: dict[str, Any], where: str, problems: list[str]) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in table.items():
        if key not in known:
            problems.append(f"{where}: unknown key {key!r}; valid keys: {', '.join(known)}")
            continue
        kwargs[key] = _check_value(where, key, value, known[key].default, problems)
    return cls(**kwargs)


def policy_from_dict(table: dict[str, Any], *, source: str = "policy") -> GatePolicy:
    """Build a :class:`GatePolicy` from the ``[gate]`` table; every mistake is reported.

    Sections absent from ``table`` are turned off, so a policy checks exactly what it
    names (``GatePolicy()`` gives every default check).
    """
    problems: list[str] = []
    top: dict[str, Any] = {name: None for name in _SECTIONS}
    for key, value in table.items():
        where = f"{source}: [gate]"
        if key in _SECTIONS:
            if not isinstance(value, dict):
                problems.append(f"{where}.{key}: expected a table [gate.{key}]")
                continue
            top[key] = _build(_SECTIONS[key], value, f"{source}: [gate.{key}]", problems)
        elif key == "level":
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                problems.append(f"{where}.level: got {value!r}; expected a number in (0, 1)")
            else:
                top["level"] = float(value)
        elif key == "inconclusive":
            if value not in ("warn", "fail", "pass"):
                problems.append(f"{where}.inconclusive: got {value!r}; expected 'warn', "
                                "'fail' or 'pass'")
            else:
                top["inconclusive"] = value
        elif key == "variants":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{where}.variants: got {value!r}; expected a list of names")
            else:
                top["variants"] = tuple(value)
        elif key == "min_subgroup_size":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{where}.min_subgroup_size: got {value!r}; expected an "
                                "integer >= 0")
            else:
                top["min_subgroup_size"] = value
        else:
            valid = ["level", "inconclusive", "variants", "min_subgroup_size", *_SECTIONS]
            problems.append(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
    if problems:
        raise AuditInputError(problems)
    return GatePolicy(**top)


def load_policy(path: str | Path) -> GatePolicy:
    """Read a policy file: a TOML file with a ``[gate]`` table (an audit spec works too)."""
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: policy file not found; expected a TOML file with a "
                              "[gate] table")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AuditInputError(f"{path}: not valid TOML ({err})") from err
    if not isinstance(doc.get("gate"), dict):
        raise AuditInputError(f"{path}: no [gate] table; expected the policy under [gate]")
    return policy_from_dict(doc["gate"], source=str(path))
