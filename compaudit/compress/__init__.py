"""Compression methods (pruning, quantization) behind one entry point, and footprints.

``compress(model, config, context=...)`` applies the method a config dataclass
describes; importing this package registers every method.
"""

from compaudit.compress.footprint import footprint, variant_record, write_variants_json
from compaudit.compress.pruning import (
    GradualMagnitudeConfig,
    LotteryTicketConfig,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
    UnitPruningConfig,
    apply_masks,
    magnitude_masks,
    random_masks,
    sparsity_report,
)
from compaudit.compress.quantization import (
    BFloat16Config,
    Float16Config,
    Int8StaticConfig,
    Int8WeightOnlyConfig,
)
from compaudit.compress.registry import (
    CompressedModel,
    CompressionContext,
    compress,
    register_compression,
    registered_configs,
)

__all__ = [
    "BFloat16Config",
    "CompressedModel",
    "CompressionContext",
    "Float16Config",
    "GradualMagnitudeConfig",
    "Int8StaticConfig",
    "Int8WeightOnlyConfig",
    "LotteryTicketConfig",
    "OneShotMagnitudeConfig",
    "RandomPruningConfig",
    "UnitPruningConfig",
    "apply_masks",
    "compress",
    "footprint",
    "magnitude_masks",
    "random_masks",
    "register_compression",
    "registered_configs",
    "sparsity_report",
    "variant_record",
    "write_variants_json",
]
