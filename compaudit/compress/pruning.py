"""Every pruning method in one import: configs, step callbacks and mask tools.

Importing this module registers all pruning handlers with
:func:`compaudit.compress.registry.compress`:

==========================  =================================================
config                      method
==========================  =================================================
``GradualMagnitudeConfig``  gradual magnitude pruning during training (Zhu & Gupta)
``OneShotMagnitudeConfig``  one-shot magnitude pruning, then fine-tuning
``RandomPruningConfig``     random weights pruned (the control)
``UnitPruningConfig``       unit pruning with/without mean replacement
``LotteryTicketConfig``     iterative magnitude pruning with weight rewinding
==========================  =================================================

Examples
--------
>>> import torch
>>> from torch import nn
>>> from compaudit.compress.pruning import OneShotMagnitudeConfig
>>> from compaudit.compress.registry import compress
>>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
>>> out = compress(model, OneShotMagnitudeConfig(sparsity=0.5, fine_tune=False))
>>> out.info["sparsity"]
0.5
"""

from __future__ import annotations

from compaudit.compress.lottery import (
    LotteryTicketConfig,
    RewindPoint,
    lottery_round_targets,
    rewind_weights,
)
from compaudit.compress.magnitude import (
    GradualMagnitudeConfig,
    GradualPruningCallback,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
)
from compaudit.compress.masks import (
    MaskCallback,
    SparsityReport,
    apply_masks,
    magnitude_masks,
    masks_from_scores,
    prunable_parameters,
    random_masks,
    sparsity_report,
)
from compaudit.compress.units import UNIT_SCORES, UnitPruningConfig, find_unit_layers
from compaudit.configs.compress import METHODS
from compaudit.configs.schedules import CubicSparsitySchedule

__all__ = [
    "GradualMagnitudeConfig",
    "GradualPruningCallback",
    "OneShotMagnitudeConfig",
    "RandomPruningConfig",
    "UnitPruningConfig",
    "UNIT_SCORES",
    "LotteryTicketConfig",
    "RewindPoint",
    "rewind_weights",
    "lottery_round_targets",
    "CubicSparsitySchedule",
    "MaskCallback",
    "SparsityReport",
    "apply_masks",
    "magnitude_masks",
    "masks_from_scores",
    "prunable_parameters",
    "random_masks",
    "sparsity_report",
    "find_unit_layers",
    "PRUNING_CONFIGS",
]

#: The pruning config types (methods whose entry ``prunes``), for documentation.
PRUNING_CONFIGS: tuple[type, ...] = tuple(e.config for _, e in METHODS.items() if e.prunes)
