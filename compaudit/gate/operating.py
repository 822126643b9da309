"""Recommended operating point: per compression family, how far compression can go.

Variants of one family share a method and differ in how much they compress (two
``gradual_magnitude`` variants at 50% and 90% sparsity). Family and axis come from the
method's entry (:class:`~compaudit.configs.compress.Method`) through ``variants.json``
(``family``, ``axis``, ``sparsity``, ``bits`` of each record); nothing is read from a
variant's name. Within a family, variants are ordered from least to most compressed:
on the ``sparsity`` axis by the measured sparsity, on the ``bits`` axis by bit width,
widest first, then by ``compressed_size_bytes``, largest first, then by name. A derived
variant (``base`` in its record: a repair) is in its base's family and comes right after
the variants it ties with, so a repaired variant is the base's step further: when the base
fails and its repair passes, the repair is the recommended operating point.

Without ``variants.json`` (``compaudit gate`` on a folder holding only ``metrics.json``)
nothing says which variants share a method: **each variant is its own family**, placed
categorically, and is recommended or not on its own checks.

The **recommended** variant is the most compressed one whose every gate check passes
(inconclusive checks count as passing only under an ``inconclusive = "pass"`` policy);
the **first failing** one is the least compressed variant with a failed check; and
``without_failure`` is the most compressed variant less compressed than the first failing
one with no failed check (an inconclusive check allowed): how far the evidence lets one go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compaudit.schema import VariantRecord, read_variants

__all__ = [
    "OperatingPoint",
    "VariantPoint",
    "operating_points",
    "variants_info",
    "variant_point",
]

#: Below this sparsity a variant is not a pruned one (zeros from rounding, say).
MIN_PRUNED_SPARSITY = 0.01


@dataclass(frozen=True)
class VariantPoint:
    """Where a variant sits on the trade-off axis.

    ``sparsity`` is a fraction in [0, 1] or ``None`` (placed categorically); ``family``
    groups variants into one curve (the method's family from ``variants.json``, else
    the variant alone). Only a method on the ``sparsity`` axis has a sparsity here, and
    only from 1%: below that, zeros come from rounding, not pruning. ``base`` names the
    variant a derived one (a repair) starts from, at the same sparsity.
    """

    name: str
    sparsity: float | None
    family: str
    bits: int | None = None
    base: str | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """One family's variants (least to most compressed), their gate status, and the
    recommendation. ``status`` per variant: ``pass``, ``fail``, ``inconclusive`` or
    ``unchecked`` (no check judged it)."""

    family: str
    variants: tuple[str, ...]
    status: tuple[str, ...]
    sparsity: tuple[float | None, ...]
    recommended: str | None
    first_failing: str | None
    without_failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["variants"] = [{"name": n, "status": s, "sparsity": sp}
                         for n, s, sp in zip(self.variants, self.status, self.sparsity)]
        del d["status"], d["sparsity"]
        return d


def variant_point(name: str, dense: str, info: VariantRecord | None) -> VariantPoint:
    """Family, sparsity and bit width of a variant from its ``variants.json`` record;
    without one, the variant is its own family.

    >>> from compaudit.schema import VARIANT_FIELDS, VariantRecord
    >>> fields = dict.fromkeys(VARIANT_FIELDS)
    >>> q = VariantRecord(**{**fields, "method": "int8_static", "family": "int8_static",
    ...                      "axis": "bits", "bits": 8, "sparsity": 0.02, "parameters": {},
    ...                      "extra": {}})
    >>> variant_point("q", "dense", q).sparsity is None
    True
    >>> variant_point("pruned-50", "dense", None).family
    'pruned-50'
    """
    if name == dense:
        return VariantPoint(name, 0.0, "")
    if info is None:
        return VariantPoint(name, None, name)
    sparsity = info.sparsity if info.axis == "sparsity" else None
    if sparsity is not None and not MIN_PRUNED_SPARSITY <= sparsity <= 1:
        # On the axis it would sit on top of dense and read as a pruning level.
        sparsity = None
    bits = info.bits if info.axis == "bits" else None
    return VariantPoint(name, sparsity, info.family or name, bits, info.base)


def _status(verdicts: list[str], inconclusive: str) -> str:
    if not verdicts:
        return "unchecked"
    if "fail" in verdicts:
        return "fail"
    if "inconclusive" in verdicts and inconclusive != "pass":
        return "inconclusive"
    return "pass"


def operating_points(checks: Iterable[Any], variants: list[str], *, dense: str,
                     variants_info: Mapping[str, VariantRecord] | None = None,
                     inconclusive: str = "warn") -> list[OperatingPoint]:
    """The operating point of every compression family among ``variants``.

    Parameters
    ----------
    checks
        The gate's checks (``variant`` and ``verdict`` attributes).
    variants
        Compressed variants of the run, in the run's order.
    dense
        Name of the dense variant (never part of a family).
    variants_info
        ``variants.json`` records by variant name (:func:`variants_info`), if
        available; without them each variant is its own family.
    inconclusive
        The policy's ``inconclusive`` setting.
    """
    info = variants_info or {}
    verdicts: dict[str, list[str]] = {v: [] for v in variants}
    for c in checks:
        if c.variant in verdicts:
            verdicts[c.variant].append(c.verdict)
    families: dict[str, list[VariantPoint]] = {}
    for v in variants:
        point = variant_point(v, dense, info.get(v))
        families.setdefault(point.family, []).append(point)
    out = []
    for family, points in families.items():
        def order(p: VariantPoint) -> tuple[float, int, float, bool, str]:
            record = info.get(p.name)
            nbytes = record.compressed_size_bytes if record is not None else None
            size = -float(nbytes) if nbytes is not None else 0.0
            bits = -p.bits if p.bits is not None else 0
            # A derived variant (a repair, ``base`` in its record) shares its base's
            # sparsity and size: it comes right after it, as the step taken from it.
            return (p.sparsity if p.sparsity is not None else -1.0, bits, size,
                    p.base is not None, p.name)
        points = sorted(points, key=order)
        status = tuple(_status(verdicts[p.name], inconclusive) for p in points)
        passing = [p.name for p, s in zip(points, status) if s == "pass"]
        failing = [p.name for p, s in zip(points, status) if s == "fail"]
        names = [p.name for p in points]
        before = names[:names.index(failing[0])] if failing else names
        out.append(OperatingPoint(family=family, variants=tuple(names),
                                  status=status, sparsity=tuple(p.sparsity for p in points),
                                  recommended=passing[-1] if passing else None,
                                  first_failing=failing[0] if failing else None,
                                  without_failure=before[-1] if before else None))
    return out


def variants_info(run_dir: Path) -> dict[str, VariantRecord] | None:
    """A run folder's ``variants.json`` records by variant (method, family, axis,
    sparsity, ...), or ``None`` when it has none; the gate's operating points read them
    (without them, each variant is its own family)."""
    doc = read_variants(run_dir)
    return None if doc is None else dict(doc.variants)
