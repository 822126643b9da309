"""Iterative magnitude pruning with weight rewinding (lottery tickets; Frankle & Carbin,
Frankle et al. "Linear mode connectivity and the lottery ticket hypothesis", and the
pruned networks dissected by Frankle & Bau).

1. Train once with ``context.fine_tune``; a step callback saves the full model state
   (weights and buffers) after optimizer step ``rewind_step`` (``0``: before training).
2. Each round prunes a fraction of the *remaining* weights by magnitude (20% by
   default; pruned weights stay pruned), rewinds every parameter and buffer to the
   saved state, zeroes the pruned ones and retrains with the mask re-applied after
   every step.
3. Rounds continue until the target sparsity; the last round prunes exactly to it.

The first ``fine_tune`` call is the training whose early weights are the rewind point:
to follow the papers, give a ``fine_tune`` that trains from the model's initial weights
for the full schedule. Each retraining is a fresh ``fine_tune`` call, so its optimizer
and learning-rate schedule start anew.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from compaudit.compress._common import (
    pruning_info,
    require_fine_tune,
)
from compaudit.compress.configs import LotteryTicketConfig
from compaudit.compress.masks import MaskCallback, apply_masks, magnitude_masks, prunable_parameters
from compaudit.compress.registry import CompressedModel, CompressionContext
from compaudit.errors import AuditInputError

__all__ = ["LotteryTicketConfig", "RewindPoint", "rewind_weights", "lottery_round_targets"]

#: Per-round fraction used when neither ``rounds`` nor ``per_round_fraction`` is given.
DEFAULT_PER_ROUND = 0.2


def lottery_round_targets(
    sparsity: float, *, per_round_fraction: float | None = None, rounds: int | None = None
) -> list[float]:
    """Sparsity after each round: ``1 - (1 - p)^r``, the last one exactly ``sparsity``.

    Examples
    --------
    >>> [round(s, 4) for s in lottery_round_targets(0.5, per_round_fraction=0.2)]
    [0.2, 0.36, 0.488, 0.5]
    """
    if rounds is None:
        p = DEFAULT_PER_ROUND if per_round_fraction is None else per_round_fraction
        # The small slack keeps float noise from adding a round (0.2 per round to 0.36).
        rounds = max(1, math.ceil(math.log(1 - sparsity) / math.log(1 - p) - 1e-9))
    else:
        p = 1 - (1 - sparsity) ** (1 / rounds)
    targets = [min(sparsity, 1 - (1 - p) ** r) for r in range(1, rounds + 1)]
    targets[-1] = sparsity
    return targets


class RewindPoint:
    """Step callback saving the model state after optimizer step ``step``.

    ``state`` holds detached copies of every parameter and buffer (``state_dict``);
    with ``step=0`` call :meth:`save` before training.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        self.state: dict[str, torch.Tensor] | None = None

    #: Key of this callback's state in a training checkpoint (``train`` resumes it).
    state_key = "lottery_rewind_point"

    def state_dict(self) -> dict[str, Any]:
        """The saved state (empty until saved), so a resumed first training keeps it."""
        return {"step": self.step, "state": {k: v.cpu() for k, v in (self.state or {}).items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.step = int(state["step"])
        self.state = dict(state["state"]) or None

    def save(self, model: nn.Module) -> None:
        """Copy ``model``'s state now."""
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def __call__(self, step: int, model: nn.Module) -> None:
        if step == self.step and self.state is None:
            self.save(model)


@torch.no_grad()
def rewind_weights(
    model: nn.Module, *, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> None:
    """Restore ``state`` into ``model`` in place, then zero the pruned weights.

    The tensors are copied into the model's own parameters and buffers, not loaded with
    ``load_state_dict``: the state is this model's own, and some modules' loading hooks
    refuse a plain dict (torchvision's MNASNet requires the version metadata that
    ``state_dict()`` attaches and a copied dict loses).
    """
    current = model.state_dict()  # detached views of the model's own tensors
    missing, unexpected = current.keys() - state.keys(), state.keys() - current.keys()
    wrong = [k for k in current.keys() & state.keys() if current[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise RuntimeError(f"rewind_weights: the saved state does not match the model "
                           f"(missing {sorted(missing)}, unexpected {sorted(unexpected)}, "
                           f"other shape {sorted(wrong)})")
    for key, tensor in current.items():
        tensor.copy_(state[key])
    apply_masks(model, masks)


def _lottery_ticket(
    model: nn.Module, config: LotteryTicketConfig, context: CompressionContext
) -> CompressedModel:
    fine_tune = require_fine_tune("LotteryTicketConfig", context)
    targets = lottery_round_targets(config.sparsity, per_round_fraction=config.per_round_fraction,
                                    rounds=config.rounds)
    point = RewindPoint(config.rewind_step)
    if config.rewind_step == 0:
        point.save(model)
    fine_tune(model, [point])
    if point.state is None:
        raise AuditInputError(
            f"LotteryTicketConfig.rewind_step: the first training ended before step "
            f"{config.rewind_step}, so there are no weights to rewind to; choose an "
            "earlier step (a few hundred to a few thousand steps into training)"
        )
    masks: dict[str, torch.Tensor] | None = None
    for target in tqdm(targets, desc="lottery rounds", disable=None, leave=False):
        params = prunable_parameters(
            model, exclude_first_conv=config.exclude_first_conv,
            exclude_classifier=config.exclude_classifier,
        )
        masks = magnitude_masks(params, sparsity=target, scope=config.scope, keep_pruned=masks)
        rewind_weights(model, state=point.state, masks=masks)
        fine_tune(model, [MaskCallback(masks)])
        apply_masks(model, masks)
    if masks is None:  # pragma: no cover - lottery_round_targets never returns []
        raise RuntimeError("no pruning round ran")
    info = pruning_info(config, model, masks, round_targets=targets,
                        rounds=len(targets))
    return CompressedModel(model=model, masks=masks, info=info)
