"""Typed records of the artifacts that cross a stage: ``metrics.json``, ``gate.json``,
``variants.json`` and ``run.json``.

The analysis builds a :class:`Metrics` and writes it with :func:`dumps_metrics`; the gate
and the report read it back with :func:`read_metrics` and use its fields, never
``.get()`` on another stage's JSON. Rows keep the flat form of their CSV tables: a row's
attribute cell (``label``, ``attr.<Name>``) is its :attr:`cell` mapping, written back as
those columns. Reading refuses unknown fields and wrong types with the file and the field.

This module imports no torch (nor pandas).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from compaudit.errors import AuditInputError
from compaudit.rundir import (
    AXES,
    METRICS_SCHEMA,
    VARIANTS_SCHEMA,
    RunFolder,
    check_metrics_schema,
    jsonable,
    read_json,
)

__all__ = [
    "DeltaRow", "ShiftDeltaRow", "DisparityRow", "OverindexRow", "OverindexMHRow",
    "ScreenGroupRow", "SubgroupMethod", "DissectionReplicaRow", "Dissection", "Robustness",
    "SliceRow", "Slices",
    "Task", "Metrics", "GateCheck", "GateDoc", "RunInfo", "dumps_metrics",
    "read_metrics",
    "read_gate", "read_run_info", "dumps_gate", "metrics_from_dict",
    "LATENCY_KERNELS", "VARIANT_FIELDS", "VariantRecord", "Variants", "dumps_variants", "read_variants",
]

R = TypeVar("R", bound="_Record")
NAN = math.nan


def _cell_key(key: str, label: bool) -> bool:
    return key.startswith("attr.") or (label and key == "label")


@dataclass(frozen=True, kw_only=True)
class _Record:
    """Reading from and writing to the JSON form, the same for every record.

    ``float`` fields read ``null`` as NaN (and write NaN as ``null``); a ``cell`` field
    gathers the ``attr.*`` columns (and ``label`` where :attr:`_LABEL_IN_CELL`); an
    ``extra`` field gathers every other key (open records: a method's own fields).
    """

    _LABEL_IN_CELL: ClassVar[bool] = False

    @classmethod
    def from_dict(cls: type[R], data: Any, *, where: str) -> R:
        """The record from its JSON object; a problem names ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise AuditInputError(f"{where}: got {type(data).__name__}; expected a JSON object")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        if "cell" in fields:
            values["cell"] = {k: v for k, v in data.items()
                              if _cell_key(k, cls._LABEL_IN_CELL)}
        unknown = [k for k in data if k not in fields and k not in values.get("cell", {})]
        if "extra" in fields:
            values["extra"], unknown = {k: data[k] for k in unknown}, []
        if unknown:
            raise AuditInputError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                                  f"expected {', '.join(n for n in fields if n != 'cell')}")
        missing = [name for name, f in fields.items()
                   if name not in ("cell", "extra") and name not in data
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            # Every one at once: the file is fixed in one go.
            raise AuditInputError(f"{where}: "
                                  + "; ".join(f"field {name!r} missing" for name in missing))
        for name in fields:
            if name not in ("cell", "extra") and name in data:
                values[name] = _coerce(data[name], hints[name],
                                       where=f"{where}: field {name!r}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object (cell columns in place of ``cell``; NaN stays NaN here)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("cell", "extra"):
                out.update(value)
            elif isinstance(value, _Record):
                out[f.name] = value.as_dict()
            elif isinstance(value, tuple) and value and isinstance(value[0], _Record):
                out[f.name] = [v.as_dict() for v in value]
            elif isinstance(value, Mapping) and any(isinstance(v, _Record)
                                                    for v in value.values()):
                out[f.name] = {k: v.as_dict() for k, v in value.items()}
            else:
                out[f.name] = value
        return out


def _coerce(value: Any, hint: Any, *, where: str) -> Any:
    """``value`` checked against a field's type hint (records and tuples of them built)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(value, hint, where=where)
    if isinstance(hint, type) and issubclass(hint, _Record):
        return hint.from_dict(value, where=where)
    if origin is tuple:
        if not isinstance(value, list):
            raise AuditInputError(f"{where}: got {type(value).__name__}; expected a list")
        return tuple(_coerce(v, args[0], where=f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if value is None:
            return NAN
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif origin is Mapping or hint is Mapping:
        if isinstance(value, Mapping):
            if args and isinstance(args[1], type) and issubclass(args[1], _Record):
                return {k: _coerce(v, args[1], where=f"{where}[{k!r}]") for k, v in value.items()}
            return value
    else:
        return value  # Any
    expected = {float: "a number", int: "an integer", bool: "true or false",
                str: "a string"}.get(hint, "a JSON object")
    raise AuditInputError(f"{where}: got {value!r}; expected {expected}")


# --- metrics.json rows -------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class DeltaRow(_Record):
    """A change of a subgroup's rate, compressed minus dense (``deltas.csv``).

    ``<stat>_se``/``_df``/``_lo``/``_hi``/``_p``/``_q``: standard error, degrees of
    freedom (NaN: normal quantiles), interval at the analysis level, p- and BH q-value.
    """

    variant: str
    subgroup: str
    grouping: str
    metric: str
    n: int
    replicas: int | None = None
    dense: float = NAN
    compressed: float = NAN
    abs_diff: float = NAN
    abs_diff_se: float = NAN
    abs_diff_df: float = NAN
    abs_diff_lo: float = NAN
    abs_diff_hi: float = NAN
    abs_diff_p: float = NAN
    abs_diff_q: float = NAN
    rel_change_pct: float = NAN
    rel_change_pct_se: float = NAN
    rel_change_pct_df: float = NAN
    rel_change_pct_lo: float = NAN
    rel_change_pct_hi: float = NAN
    norm_change_pct: float = NAN
    norm_change_pct_se: float = NAN
    norm_change_pct_df: float = NAN
    norm_change_pct_lo: float = NAN
    norm_change_pct_hi: float = NAN
    norm_change_pct_p: float = NAN
    norm_change_pct_q: float = NAN
    excess_diff: float = NAN
    excess_diff_se: float = NAN
    excess_diff_df: float = NAN
    excess_diff_lo: float = NAN
    excess_diff_hi: float = NAN
    excess_diff_p: float = NAN
    excess_diff_q: float = NAN
    #: Smallest increase detectable at the analysis level with 80% power (NaN: none).
    mde: float = NAN
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class ShiftDeltaRow(DeltaRow):
    """A :class:`DeltaRow` under one distribution shift (``shift_deltas.csv``)."""

    shift: str


@dataclass(frozen=True, kw_only=True)
class DisparityRow(_Record):
    """Change of the gap between a grouping's best and worst subgroup (``disparity.csv``)."""

    variant: str
    grouping: str
    metric: str
    dense: float = NAN
    compressed: float = NAN
    change: float = NAN
    change_se: float = NAN
    change_df: float = NAN
    change_lo: float = NAN
    change_hi: float = NAN
    change_p: float = NAN
    change_q: float = NAN
    max_subgroup: str | None = None
    min_subgroup: str | None = None


@dataclass(frozen=True, kw_only=True)
class OverindexRow(_Record):
    """PIE over-index of one cell (``overindex.csv``, ``overindex_within_label.csv``).

    ``log_rr``/``log_rr_se``: log of the ratio of the cell's PIE share to its non-PIE
    share and its Katz standard error (NaN where the cell lacks PIEs or non-PIEs).
    """

    _LABEL_IN_CELL: ClassVar[bool] = True

    variant: str
    cell: Mapping[str, Any] = field(default_factory=dict)
    n_pie: int
    n_non_pie: int
    pie_pct: float = NAN
    non_pie_pct: float = NAN
    relative_growth_pct: float = NAN
    log_rr: float = NAN
    log_rr_se: float = NAN
    odds_ratio: float = NAN
    p_value: float = NAN
    q_value: float = NAN


@dataclass(frozen=True, kw_only=True)
class OverindexMHRow(_Record):
    """Within-label over-index pooled over labels (``overindex_mh.csv``)."""

    variant: str
    cell: Mapping[str, Any] = field(default_factory=dict)
    n_pie: int
    n_non_pie: int
    strata: int = 0
    rr_mh: float = NAN
    relative_growth_pct: float = NAN
    log_rr_se: float = NAN
    lo: float = NAN
    hi: float = NAN
    cmh_chi2: float = NAN
    p_value: float = NAN
    q_value: float = NAN


@dataclass(frozen=True, kw_only=True)
class ScreenGroupRow(_Record):
    """Expected harm of one attribute cell from the dense replicas (``screen_groups.csv``)."""

    cell: Mapping[str, Any] = field(default_factory=dict)
    n: int
    n_at_risk: int
    at_risk_rate: float = NAN
    rate_ratio: float = NAN
    mean_risk: float = NAN
    expected_growth_pct: float = NAN
    lo: float = NAN
    hi: float = NAN
    expected_q: float = NAN


@dataclass(frozen=True, kw_only=True)
class SubgroupMethod(_Record):
    """How the changes vs dense were inferred, and what the intervals are about."""

    kind: str
    about: str
    replicas: int
    warning: str = ""
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class DissectionReplicaRow(_Record):
    """Dissection metrics of one (variant, replica) (``dissection_replicas.csv``)."""

    variant: str
    replica: int
    units: float = NAN
    interpretable_units: float = NAN
    interpretable_share: float = NAN
    distinct_concepts: float = NAN
    retained_interpretable: float = NAN
    retained_concept: float = NAN
    interpretable_drop: float = NAN
    concept_drop: float = NAN


@dataclass(frozen=True, kw_only=True)
class Dissection(_Record):
    """The ``dissection`` block (docs/outputs.md)."""

    config: Mapping[str, Any] = field(default_factory=dict)
    n_images: int = 0
    concepts: tuple[Mapping[str, Any], ...] = ()
    unreachable: tuple[str, ...] = ()
    variants: Mapping[str, Any] = field(default_factory=dict)
    replicas: tuple[DissectionReplicaRow, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Robustness(_Record):
    """The ``robustness`` block: corruption errors, per-shift metrics and changes."""

    reference: str = "dense"
    corruption_errors: tuple[Mapping[str, Any], ...] = ()
    shift_metrics: tuple[Mapping[str, Any], ...] = ()
    shift_deltas: tuple[ShiftDeltaRow, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SliceRow(_Record):
    """One slice of one compressed variant (``slices.csv``; docs/outputs.md).

    ``slice`` is the rank by ``change`` within the variant (0: the slice compression
    hurt most); ``n`` members, ``n_test`` of them held out of the mixture's fit, on
    which ``dense_error``, ``compressed_error`` and ``change`` (their difference) are
    estimated with the seed-aware interval ``change_lo``..``change_hi`` (from
    ``change_se`` with ``change_df`` degrees of freedom, NaN: normal), ``p`` and the BH
    ``q`` across the variant's slices. ``label_mix``: label -> share in the slice;
    ``over_index``: ``attr=value`` -> its share in the slice over its share in the
    whole set. ``typical``: the most typical members' ids, most typical first.
    """

    variant: str
    slice: int
    n: int
    n_test: int = 0
    dense_error: float = NAN
    compressed_error: float = NAN
    change: float = NAN
    change_se: float = NAN
    change_df: float = NAN
    change_lo: float = NAN
    change_hi: float = NAN
    p: float = NAN
    q: float = NAN
    label_mix: Mapping[str, Any] = field(default_factory=dict)
    over_index: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    typical: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Slices(_Record):
    """The ``slices`` block: the settings, the embedding and every slice's row."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    n_examples: int = 0
    dims: int = 0
    method: Mapping[str, Any] = field(default_factory=dict)
    rows: tuple[SliceRow, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Task(_Record):
    """What was analysed."""

    num_classes: int | None = None
    binary: bool = False
    n_examples: int = 0
    attributes: tuple[str, ...] = ()
    shifts: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Metrics(_Record):
    """``metrics.json``: every number the report and the gate use (docs/outputs.md).

    ``options`` are :class:`compaudit.analysis.audit.AnalysisOptions` as a mapping;
    :attr:`dense`, :attr:`level`, :attr:`alpha` and :attr:`shift` read it.
    """

    schema: str = METRICS_SCHEMA
    created_by: str = ""
    environment: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any]
    task: Task = field(default_factory=Task)
    #: Replica ids per variant: ``{name: {"replicas": [...]}}``.
    variants: Mapping[str, Any]
    accuracy: Mapping[str, Any] = field(default_factory=dict)
    accuracy_by_shift: tuple[Mapping[str, Any], ...] = ()
    classes: Mapping[str, Any] = field(default_factory=dict)
    pie: Mapping[str, Any] = field(default_factory=dict)
    overindex: tuple[OverindexRow, ...] = ()
    overindex_within_label: tuple[OverindexRow, ...] = ()
    overindex_mh: tuple[OverindexMHRow, ...] = ()
    screen_summary: Mapping[str, Any] = field(default_factory=dict)
    screen: Mapping[str, Any] = field(default_factory=dict)
    screen_groups: tuple[ScreenGroupRow, ...] = ()
    subgroup_cells: Mapping[str, Any] = field(default_factory=dict)
    subgroups: tuple[Mapping[str, Any], ...] = ()
    subgroup_method: SubgroupMethod | None = None
    deltas: tuple[DeltaRow, ...] = ()
    disparity: tuple[DisparityRow, ...] = ()
    robustness: Robustness = field(default_factory=Robustness)
    dissection: Dissection | None = None
    slices: Slices | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.options.get("dense"), str):
            raise AuditInputError("metrics: field 'options.dense' missing; expected the "
                                  "metrics.json written by 'compaudit analyze'")

    @property
    def dense(self) -> str:
        """The reference variant."""
        return str(self.options["dense"])

    @property
    def level(self) -> float:
        """Confidence level of the analysis' intervals."""
        return float(self.options.get("level", 0.95))

    @property
    def alpha(self) -> float:
        """Significance level of the ``significant_*`` flags."""
        return float(self.options.get("alpha", 0.05))

    @property
    def shift(self) -> str:
        """The analysed shift."""
        return str(self.options.get("shift", "clean"))

    @property
    def compressed(self) -> list[str]:
        """Every variant but dense, in the order of the file."""
        return [v for v in self.variants if v != self.dense]


def dumps_metrics(metrics: Metrics) -> str:
    """``metrics.json`` text: strict JSON, NaN and infinities as ``null``."""
    return json.dumps(jsonable(metrics.as_dict()), indent=2, allow_nan=False) + "\n"


def metrics_from_dict(doc: Any, *, source: str = "metrics") -> Metrics:
    """The record of a parsed ``metrics.json``: schema version checked first."""
    check_metrics_schema(doc, source=source)
    return Metrics.from_dict(doc, where=source)


def read_metrics(path: str | Path, *, what: str = "metrics") -> Metrics:
    """Read a run's ``metrics.json`` (``path``: the file or its run folder), typed."""
    path = Path(path)
    file = RunFolder(path).metrics if path.is_dir() else path
    doc = read_json(file, what=what, fix="expected the metrics.json written by "
                    "'compaudit analyze' or 'compaudit run'")
    return metrics_from_dict(doc, source=str(file))


# --- gate.json ---------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class GateCheck(_Record):
    """One check of ``gate.json``: its estimate, simultaneous interval and verdict.

    ``unit`` is ``points`` (fractions shown as percentage points) or ``%``.
    """

    id: str
    kind: str
    variant: str
    subject: str
    metric: str
    estimate: float = NAN
    se: float = NAN
    tolerance: float = NAN
    unit: str
    lo: float = NAN
    hi: float = NAN
    verdict: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class GateDoc(_Record):
    """``gate/gate.json``."""

    verdict: str
    exit_code: int
    z: float = NAN
    notes: tuple[str, ...] = ()
    inference: str = ""
    operating_points: tuple[Mapping[str, Any], ...] = ()
    checks: tuple[GateCheck, ...] = ()


def dumps_gate(doc: GateDoc) -> str:
    """``gate.json`` text: strict JSON, NaN as ``null``."""
    return json.dumps(jsonable(doc.as_dict()), indent=2, allow_nan=False) + "\n"


def read_gate(path: Path) -> GateDoc:
    """Read ``gate.json``; a malformed one names the field and the fix."""
    doc = read_json(path, what="gate result", fix="re-run 'compaudit gate RUN_DIR'")
    return GateDoc.from_dict(doc, where=str(path))


# --- run.json ----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class RunInfo(_Record):
    """``run.json``: provenance of a ``compaudit run`` (written by the pipeline)."""

    spec: str
    spec_path: str | None = None
    spec_sha256: str
    seeds: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    timings: Mapping[str, Any] = field(default_factory=dict)


def read_run_info(path: Path) -> RunInfo:
    """Read ``run.json``."""
    doc = read_json(path, what="run provenance", fix="re-run 'compaudit run'")
    return RunInfo.from_dict(doc, where=str(path))


# --- variants.json -----------------------------------------------------------------------

#: What ``latency_ms`` of a variant was measured on (docs/outputs.md).
LATENCY_KERNELS = ("onnxruntime", "torch", "simulated")


@dataclass(frozen=True, kw_only=True)
class VariantRecord(_Record):
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
class Variants(_Record):
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
