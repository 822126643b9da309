"""Interpretability audit by network dissection (Bau et al.; Frankle & Bau).

Which units of a layer detect a human-interpretable concept (IoU of their top
activations with the concept's masks above a threshold), and how many of them survive
compression. The settings (:mod:`compaudit.dissection.config`) import no torch; the
dissection itself does, and loads on first use of the names below. The comparison of
dissections is pure pandas and lives in :mod:`compaudit.analysis.dissection`.
"""

from __future__ import annotations

import importlib
from typing import Any

from compaudit.dissection.config import DEFAULT_LAYERS, DissectionConfig, DissectionSpec

#: Torch-side names and the module each comes from.
_LAZY = {
    "Broden": "concepts", "ConceptDataset": "concepts", "ConceptSubset": "concepts",
    "SyntheticFaceConcepts": "concepts",
    "DissectionResult": "netdissect", "dissect": "netdissect",
    "compare_dissections": "compare", "comparison_metrics": "compare",
}

__all__ = ["DEFAULT_LAYERS", "DissectionConfig", "DissectionSpec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"compaudit.dissection.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'compaudit.dissection' has no attribute {name!r}")
