"""Compression methods (pruning, quantization) behind one entry point, and footprints.

``compress(model, config, context=...)`` applies the method a config dataclass
describes (:mod:`compaudit.compress.configs`, which imports no torch). The names below
are imported on first use, so reading a config never loads torch; :func:`compress`
imports the handler named by the config's method entry (:data:`METHODS`).
"""

from __future__ import annotations

import importlib
from typing import Any

from compaudit.compress.configs import (
    METHODS,
    BFloat16Config,
    ConstrainedFinetuneConfig,
    Float16Config,
    GradualMagnitudeConfig,
    Int8StaticConfig,
    Int8WeightOnlyConfig,
    LoadConfig,
    LotteryTicketConfig,
    Method,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
    UnitPruningConfig,
    method_of,
)

#: Torch-side names and the module each comes from.
_LAZY = {
    "footprint": "footprint", "variant_record": "footprint", "write_variants_json": "footprint",
    "apply_masks": "pruning", "magnitude_masks": "pruning", "random_masks": "pruning",
    "sparsity_report": "pruning",
    "CompressedModel": "registry", "CompressionContext": "registry", "compress": "registry",
}

__all__ = [
    "METHODS",
    "Method",
    "method_of",
    "BFloat16Config",
    "ConstrainedFinetuneConfig",
    "Float16Config",
    "GradualMagnitudeConfig",
    "Int8StaticConfig",
    "Int8WeightOnlyConfig",
    "LoadConfig",
    "LotteryTicketConfig",
    "OneShotMagnitudeConfig",
    "RandomPruningConfig",
    "UnitPruningConfig",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"compaudit.compress.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'compaudit.compress' has no attribute {name!r}")
