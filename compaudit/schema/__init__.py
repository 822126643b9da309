"""Typed records of the artifacts that cross a stage: ``metrics.json``, ``gate.json``,
``variants.json`` and ``run.json``, one module each (:mod:`~compaudit.schema.metrics`,
:mod:`~compaudit.schema.gate`, :mod:`~compaudit.schema.variants`,
:mod:`~compaudit.schema.run`) on the JSON form of :mod:`~compaudit.schema._records`.

The analysis builds a :class:`Metrics` and writes it with :func:`dumps_metrics`; the gate
and the report read it back with :func:`read_metrics` and use its fields, never
``.get()`` on another stage's JSON. Rows keep the flat form of their CSV tables: a row's
attribute cell (``label``, ``attr.<Name>``) is its ``cell`` mapping, written back as
those columns. Reading refuses unknown fields and wrong types with the file and the field.

This package imports no torch (nor pandas).
"""

from compaudit.schema.gate import GateCheck, GateDoc, dumps_gate, read_gate
from compaudit.schema.metrics import (
    DeltaRow,
    DisparityRow,
    Dissection,
    DissectionReplicaRow,
    Metrics,
    OverindexMHRow,
    OverindexRow,
    Robustness,
    ScreenGroupRow,
    ShiftDeltaRow,
    SliceRow,
    Slices,
    SubgroupMethod,
    Task,
    dumps_metrics,
    metrics_from_dict,
    read_metrics,
)
from compaudit.schema.run import RunInfo, read_run_info
from compaudit.schema.variants import (
    LATENCY_KERNELS,
    VARIANT_FIELDS,
    VariantRecord,
    Variants,
    dumps_variants,
    read_variants,
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
