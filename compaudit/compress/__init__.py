"""Compression methods (pruning, quantization) behind one entry point, and footprints.

``compress(model, config, context=...)`` applies the method a config dataclass
describes; the configs and each method's identity (:data:`METHODS`) live in
:mod:`compaudit.configs.compress`, which imports no torch, and are re-exported here
(its ``__all__``, so the two lists cannot drift apart).
"""

from compaudit.compress.footprint import footprint, variant_record, write_variants_json
from compaudit.compress.pruning import (
    apply_masks,
    magnitude_masks,
    random_masks,
    sparsity_report,
)
from compaudit.compress.registry import CompressedModel, CompressionContext, compress
from compaudit.configs import compress as _configs
from compaudit.configs.compress import *  # noqa: F403  (re-exported: its __all__)

__all__ = [
    *_configs.__all__,
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
