"""``metrics.json``: the :class:`Metrics` record and the rows of its tables.

The analysis builds a :class:`Metrics` and writes it with :func:`dumps_metrics`; the gate
and the report read it back with :func:`read_metrics` and use its fields, never
``.get()`` on another stage's JSON. Rows keep the flat form of their CSV tables: a row's
attribute cell (``label``, ``attr.<Name>``) is its ``cell`` mapping, written back as
those columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from compaudit.errors import AuditInputError
from compaudit.rundir import METRICS_SCHEMA, RunFolder, check_metrics_schema, jsonable, read_json
from compaudit.schema._records import NAN, Record

__all__ = [
    "DeltaRow", "ShiftDeltaRow", "DisparityRow", "OverindexRow", "OverindexMHRow",
    "ScreenGroupRow", "SubgroupMethod", "DissectionReplicaRow", "Dissection", "Robustness",
    "SliceRow", "Slices", "Task", "Metrics", "dumps_metrics", "metrics_from_dict",
    "read_metrics",
]


@dataclass(frozen=True, kw_only=True)
class DeltaRow(Record):
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
class DisparityRow(Record):
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
class OverindexRow(Record):
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
class OverindexMHRow(Record):
    """Within-label over-index pooled over labels (``overindex_mh.csv``); ``n_pie_fixed``
    of the ``n_pie`` PIEs are corrections (the variant's modal prediction is the label)."""

    variant: str
    cell: Mapping[str, Any] = field(default_factory=dict)
    n_pie: int
    n_pie_fixed: int = 0
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
class ScreenGroupRow(Record):
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
class SubgroupMethod(Record):
    """How the changes vs dense were inferred, and what the intervals are about."""

    kind: str
    about: str
    replicas: int
    warning: str = ""
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class DissectionReplicaRow(Record):
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
class Dissection(Record):
    """The ``dissection`` block (docs/outputs.md)."""

    config: Mapping[str, Any] = field(default_factory=dict)
    n_images: int = 0
    concepts: tuple[Mapping[str, Any], ...] = ()
    unreachable: tuple[str, ...] = ()
    variants: Mapping[str, Any] = field(default_factory=dict)
    replicas: tuple[DissectionReplicaRow, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Robustness(Record):
    """The ``robustness`` block: corruption errors, per-shift metrics and changes."""

    reference: str = "dense"
    corruption_errors: tuple[Mapping[str, Any], ...] = ()
    shift_metrics: tuple[Mapping[str, Any], ...] = ()
    shift_deltas: tuple[ShiftDeltaRow, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SliceRow(Record):
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
class Slices(Record):
    """The ``slices`` block: the settings, the embedding and every slice's row."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    n_examples: int = 0
    dims: int = 0
    method: Mapping[str, Any] = field(default_factory=dict)
    rows: tuple[SliceRow, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Task(Record):
    """What was analysed."""

    num_classes: int | None = None
    binary: bool = False
    n_examples: int = 0
    attributes: tuple[str, ...] = ()
    shifts: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Metrics(Record):
    """``metrics.json``: every number the report and the gate use (docs/outputs.md).

    ``options`` are :class:`compaudit.analysis.options.AnalysisOptions` as a mapping;
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
