"""Interpretability audit by network dissection (Bau et al.; Frankle & Bau).

Which units of a layer detect a human-interpretable concept (IoU of their top
activations with the concept's masks above a threshold), and how many of them survive
compression. The settings live in :mod:`compaudit.configs.dissection` (no torch) and
are re-exported here. The comparison of dissections is pure pandas and lives in
:mod:`compaudit.analysis.dissection`.
"""

from compaudit.configs.dissection import DEFAULT_LAYERS, DissectionConfig, DissectionSpec
from compaudit.dissection.compare import compare_dissections, comparison_metrics
from compaudit.dissection.concepts import (
    Broden,
    ConceptDataset,
    ConceptSubset,
    SyntheticFaceConcepts,
)
from compaudit.dissection.netdissect import DissectionResult, dissect

__all__ = [
    "DEFAULT_LAYERS",
    "DissectionConfig",
    "DissectionSpec",
    "Broden",
    "ConceptDataset",
    "ConceptSubset",
    "SyntheticFaceConcepts",
    "DissectionResult",
    "dissect",
    "compare_dissections",
    "comparison_metrics",
]
