"""Interpretability audit by network dissection (Bau et al.; Frankle & Bau).

Which units of a layer detect a human-interpretable concept (IoU of their top
activations with the concept's masks above a threshold), and how many of them survive
compression. Torch-side; ``compaudit.analysis`` stays torch-free.
"""

from compaudit.dissection.compare import compare_dissections, comparison_metrics
from compaudit.dissection.concepts import (
    Broden,
    ConceptDataset,
    ConceptSubset,
    SyntheticFaceConcepts,
)
from compaudit.dissection.dissect import (
    DEFAULT_LAYERS,
    DissectionConfig,
    DissectionResult,
    dissect,
)

__all__ = [
    "Broden",
    "ConceptDataset",
    "ConceptSubset",
    "DEFAULT_LAYERS",
    "DissectionConfig",
    "DissectionResult",
    "SyntheticFaceConcepts",
    "compare_dissections",
    "comparison_metrics",
    "dissect",
]
