"""Compression methods (pruning, quantization) behind one entry point, and footprints.

``compress(model, config, context=...)`` applies the method a config dataclass
describes; the configs and each method's identity (:data:`METHODS`) live in
:mod:`compaudit.configs.compress`, which imports no torch, and are re-exported here.
"""

from compaudit.compress.footprint import footprint, variant_record, write_variants_json
from compaudit.compress.pruning import (
    apply_masks,
    magnitude_masks,
    random_masks,
    sparsity_report,
)
from compaudit.compress.registry import CompressedModel, CompressionContext, compress
from compaudit.configs.compress import (
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
    "footprint",
    "variant_record",
    "write_variants_json",
    "apply_masks",
    "magnitude_masks",
    "random_masks",
    "sparsity_report",
    "CompressedModel",
    "CompressionContext",
    "compress",
]
