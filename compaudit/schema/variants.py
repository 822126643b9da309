"""``variants.json``: what each variant is and what it costs, as :class:`Variants`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compaudit.errors import AuditInputError
from compaudit.rundir import AXES, VARIANTS_SCHEMA, RunFolder, jsonable, read_json
from compaudit.schema._records import Record

__all__ = ["LATENCY_KERNELS", "VARIANT_FIELDS", "VariantRecord", "Variants", "dumps_variants",
           "read_variants"]


#: What ``latency_ms`` of a variant was measured on (docs/outputs.md).
LATENCY_KERNELS = ("onnxruntime", "torch", "simulated")


@dataclass(frozen=True, kw_only=True)
class VariantRecord(Record):
    """One variant of ``variants.json``: what it is and what it costs (docs/outputs.md).

    ``None`` where not measured. ``family`` and ``axis`` come from the method's registry
    entry and place the variant on the gate's operating points; ``extra`` holds the
    method's own fields (``execution``, ``pruning_penalty``, ...) and ``timing``.
    """

    method: str
    family: str | None
    axis: str | None
    bits: int | None
    parameters: Mapping[str, Any]
    derives_from: str | None
    sparsity: float | None
    parameter_count: int | None
    nonzero_count: int | None
    size_bytes: int | None
    compressed_size_bytes: int | None
    int8_weight_share: float | None
    int8_op_share: float | None
    macs: int | None
    theoretical_speedup: float | None
    latency_ms: float | None
    latency_batch_size: int | None
    latency_kernel: str | None
    #: The compressed variant a derived variant (a repair) starts from: it is in that
    #: variant's family, at the same sparsity, right after it.
    base: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Values outside their field's range (the caller names the file and variant)."""
        out = [f"field {name!r} must be a share in [0, 1] or null, got {share!r}"
               for name in ("int8_weight_share", "int8_op_share")
               if (share := getattr(self, name)) is not None and not 0.0 <= share <= 1.0]
        if self.axis not in AXES:
            out.append(f"field 'axis' must be one of {', '.join(map(str, AXES))}, got "
                       f"{self.axis!r}")
        if self.latency_kernel is not None and self.latency_kernel not in LATENCY_KERNELS:
            out.append(f"field 'latency_kernel' must be one of {', '.join(LATENCY_KERNELS)} "
                       f"or null, got {self.latency_kernel!r}")
        return out


#: Fields every record of ``variants.json`` has (``null`` when not measured).
VARIANT_FIELDS = tuple(f.name for f in dataclasses.fields(VariantRecord) if f.name != "extra")


@dataclass(frozen=True, kw_only=True)
class Variants(Record):
    """``variants.json``: every variant's :class:`VariantRecord`, by name.

    Written by the variants stage (:func:`compaudit.compress.footprint.write_variants_json`),
    read by the gate's operating points and the report.
    """

    schema: str = VARIANTS_SCHEMA
    variants: Mapping[str, VariantRecord]

    def problems(self, where: str) -> list[str]:
        """Every value out of range, and ``derives_from`` naming no variant of the file."""
        out = [] if self.variants else [f"{where}: field 'variants': expected at least one "
                                        "variant"]
        for name, record in self.variants.items():
            at = f"{where}: variant {name!r}"
            out += [f"{at}: {p}" for p in record.problems()]
            for link in ("derives_from", "base"):
                other = getattr(record, link)
                if other is not None and other not in self.variants:
                    out.append(f"{at}: field {link!r} is {other!r}, which is not a variant; "
                               f"valid: {', '.join(self.variants)}")
        return out


def dumps_variants(doc: Variants) -> str:
    """``variants.json`` text: strict JSON."""
    return json.dumps(jsonable(doc.as_dict(), where="variants.json"), indent=2,
                      allow_nan=False) + "\n"


def read_variants(run_dir: str | Path) -> Variants | None:
    """A run folder's ``variants.json`` typed and checked, or ``None`` when it has none
    (a run analysed from prediction files alone)."""
    path = RunFolder(Path(run_dir)).variants_json
    if not path.is_file():
        return None
    doc = read_json(path, what="variant footprint", fix="re-run the compress stage")
    if not isinstance(doc, Mapping) or doc.get("schema") != VARIANTS_SCHEMA:
        found = doc.get("schema") if isinstance(doc, Mapping) else type(doc).__name__
        raise AuditInputError(f"{path}: field 'schema': got {found!r}; expected "
                              f"{VARIANTS_SCHEMA!r}; a variants.json from another compaudit "
                              "version: re-run 'compaudit run' (it recompresses the variants)")
    records, unknown = doc.get("variants"), sorted(set(doc) - {"schema", "variants"})
    if unknown or not isinstance(records, Mapping):
        raise AuditInputError(f"{path}: expected the fields schema and variants (an object "
                              "of variant name to record); re-run the compress stage")
    variants = Variants(variants={str(name): VariantRecord.from_dict(
        record, where=f"{path}: variant {name!r}") for name, record in records.items()})
    problems = variants.problems(str(path))
    if problems:
        raise AuditInputError(problems)
    return variants
