"""Recommended operating point: per compression family, how far compression can go.

Variants of one family share a method and differ in how much they compress (two
``gradual_magnitude`` variants at 50% and 90% sparsity). Family and axis come from the
method's entry (:class:`~compaudit.compress.configs.Method`) through ``variants.json``
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

from compaudit.errors import AuditInputError
from compaudit.rundir import AXES
from compaudit.schema import VariantPlacement

__all__ = [
    "OperatingPoint",
    "VariantPoint",
    "operating_points",
    "read_variants_info",
    "variants_info",
    "variant_point",
]

#: Below this sparsity a variant is not a pruned one (zeros from rounding, say).
MIN_PRUNED_SPARSITY = 0.01
#: The fields of a ``variants.json`` record that place a variant on the operating points.
_PLACEMENT = ("method", "family", "axis")


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


def variant_point(name: str, dense: str, info: Mapping[str, Any] | None) -> VariantPoint:
    """Family, sparsity and bit width of a variant from its ``variants.json`` record
    (checked by :func:`read_variants_info`); without one, the variant is its own family.

    >>> variant_point("q", "dense", {"family": "int8_static", "axis": "bits", "bits": 8,
    ...                              "sparsity": 0.02}).sparsity is None
    True
    >>> variant_point("pruned-50", "dense", None).family
    'pruned-50'
    """
    if name == dense:
        return VariantPoint(name, 0.0, "")
    if info is None:
        return VariantPoint(name, None, name)
    sparsity = info.get("sparsity") if info["axis"] == "sparsity" else None
    if sparsity is not None and not MIN_PRUNED_SPARSITY <= float(sparsity) <= 1:
        # On the axis it would sit on top of dense and read as a pruning level.
        sparsity = None
    bits = info.get("bits") if info["axis"] == "bits" else None
    return VariantPoint(name, None if sparsity is None else float(sparsity),
                        str(info["family"] or name), None if bits is None else int(bits),
                        info.get("base"))


def _status(verdicts: list[str], inconclusive: str) -> str:
    if not verdicts:
        return "unchecked"
    if "fail" in verdicts:
        return "fail"
    if "inconclusive" in verdicts and inconclusive != "pass":
        return "inconclusive"
    return "pass"


def operating_points(checks: Iterable[Any], variants: list[str], *, dense: str,
                     variants_info: Mapping[str, Mapping[str, Any]] | None = None,
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
        ``variants.json`` entries by variant name (``family``, ``axis``, ``sparsity``,
        ``bits``, ``compressed_size_bytes``), if available; without them each variant
        is its own family.
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
            size = (info.get(p.name) or {}).get("compressed_size_bytes")
            size = -float(size) if isinstance(size, (int, float)) else 0.0
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


def read_variants_info(doc: Any, path: str | Path) -> dict[str, dict[str, Any]]:
    """Accept ``{name: {...}}``, ``{"variants": {name: {...}}}`` or a list of objects
    with ``name``/``variant``."""
    if isinstance(doc, dict) and isinstance(doc.get("variants"), (dict, list)):
        doc = doc["variants"]
    entries: dict[str, dict[str, Any]] = {}
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = [(e.get("name", e.get("variant")) if isinstance(e, dict) else None, e)
                 for e in doc]
    else:
        items = [(None, doc)]
    for name, entry in items:
        if name is None or not isinstance(entry, dict):
            raise AuditInputError(
                f"{path}: field 'variants': expected one object per variant (keyed by "
                f"variant name, or with a 'name' field); got {type(entry).__name__}; "
                "re-write it with compaudit.compress.footprint.write_variants_json")
        missing = [f for f in _PLACEMENT if f not in entry]
        if missing or entry.get("axis") not in AXES:
            raise AuditInputError(
                f"{path}: variant {name!r}: field(s) {', '.join(missing or ['axis'])}: "
                f"expected {', '.join(_PLACEMENT)} with axis one of "
                f"{', '.join(map(str, AXES))} (got {entry.get('axis', 'none')!r}); a "
                "variants.json from an older compaudit: re-run the compress stage")
        # Types and links too: a base must be another variant of the file.
        placement = VariantPlacement.of(entry, where=f"{path}: variant {name!r}")
        if placement.base is not None and placement.base not in dict(items):
            raise AuditInputError(f"{path}: variant {name!r}: field 'base': got "
                                  f"{placement.base!r}, which is not a variant of the file; "
                                  "expected the name of the variant it derives from")
        entries[str(name)] = entry
    return entries


def variants_info(run_dir: Path) -> dict[str, dict[str, Any]] | None:
    """A run folder's ``variants.json`` (method, family, axis, sparsity of each variant),
    or ``None`` when it has none; the gate's operating points read it (without it, each
    variant is its own family)."""
    from compaudit.rundir import RunFolder, read_json

    path = RunFolder(run_dir).variants_json
    if not path.is_file():
        return None
    doc = read_json(path, what="variant footprint", fix="re-run the compress stage")
    return read_variants_info(doc, path)
