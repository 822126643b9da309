"""Recommended operating point: per compression family, how far compression can go.

Variants of one family share a method and differ in how much they compress (gmp-50 and
gmp-90: gradual magnitude pruning to 50% and 90% sparsity). The family and the sparsity
come from ``variants.json`` (``method``, ``sparsity``) when the gate has it, else from the
name (``gmp-90`` -> family ``gmp``, sparsity 0.9). Within a family, variants are ordered
from least to most compressed: by sparsity, then (quantized variants, no sparsity) by
``compressed_size_bytes``, largest first, then by name.

The **recommended** variant is the most compressed one whose every gate check passes
(inconclusive checks count as passing only under an ``inconclusive = "pass"`` policy);
the **first failing** one is the least compressed variant with a failed check; and
``without_failure`` is the most compressed variant less compressed than the first failing
one with no failed check (an inconclusive check allowed): how far the evidence lets one go.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compaudit.errors import AuditInputError

__all__ = [
    "OperatingPoint",
    "VariantPoint",
    "operating_points",
    "read_variants_info",
    "variants_info",
    "variant_point",
]

_SUFFIX = re.compile(r"^(?P<family>.*?)[-_](?P<num>\d+(?:\.\d+)?)$")
#: Method or variant names of quantization: never on the sparsity axis, whatever share of
#: weights rounding happened to zero.
_QUANTIZED = re.compile(r"int\d|uint\d|float\d|fp\d|bf16|quant", re.IGNORECASE)
#: Below this sparsity a variant is not a pruned one (zeros from rounding, say).
MIN_PRUNED_SPARSITY = 0.01


@dataclass(frozen=True)
class VariantPoint:
    """Where a variant sits on the trade-off axis.

    ``sparsity`` is a fraction in [0, 1] or ``None`` (placed categorically); ``family``
    groups variants into one curve (the method, or the name without its number).
    Quantized variants (``int8``, ``float16``... in the method or name) and variants
    below 1% sparsity are placed categorically: they are not points of a pruning curve.
    """

    name: str
    sparsity: float | None
    family: str


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
    """Family and sparsity of a variant, from ``variants.json`` or else its name."""
    if name == dense:
        return VariantPoint(name, 0.0, "")
    match = _SUFFIX.match(name)
    method = (info or {}).get("method")
    # Loaded artifacts all have method "load": their names say which family they are.
    family = str(method if method and method != "load" else
                 (match["family"] if match else name))
    sparsity: float | None = None
    if info is not None and info.get("sparsity") is not None:
        try:
            sparsity = float(info["sparsity"])
        except (TypeError, ValueError):
            sparsity = None
    elif match:
        # gmp-90 -> 0.90; prune-0.9 -> 0.9; anything else is not a sparsity.
        num = float(match["num"])
        sparsity = num if "." in match["num"] and num <= 1 else num / 100
    quantized = bool(_QUANTIZED.search(family) or _QUANTIZED.search(name))
    if sparsity is not None and (quantized or not MIN_PRUNED_SPARSITY <= sparsity <= 1):
        # On the axis it would sit on top of dense and read as a pruning level.
        sparsity = None
    return VariantPoint(name, sparsity, family)


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
        ``variants.json`` entries by variant name (``method``, ``sparsity``,
        ``compressed_size_bytes``), if available.
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
        def order(p: VariantPoint) -> tuple:
            size = (info.get(p.name) or {}).get("compressed_size_bytes")
            size = -float(size) if isinstance(size, (int, float)) else 0.0
            return (p.sparsity if p.sparsity is not None else -1.0, size, p.name)
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
        entries[str(name)] = entry
    return entries


def variants_info(run_dir: Path) -> dict[str, dict[str, Any]] | None:
    """A run folder's ``variants.json`` (method, sparsity of each variant), or ``None``
    when it has none; the gate's operating points read it (else the variants' names)."""
    from compaudit.rundir import RunFolder, read_json

    path = RunFolder(run_dir).variants_json
    if not path.is_file():
        return None
    doc = read_json(path, what="variant footprint", fix="re-run the compress stage")
    return read_variants_info(doc, path)
