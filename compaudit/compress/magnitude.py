"""Weight (unstructured) pruning: gradual magnitude, one-shot magnitude and the random control.

Gradual magnitude pruning (GMP, Zhu & Gupta 2017) prunes while the model trains: after
every optimizer step a :class:`GradualPruningCallback` re-applies the current masks,
and at the update steps of a :class:`~compaudit.compress.schedules.CubicSparsitySchedule`
it recomputes them by magnitude at the scheduled sparsity.

Mask updates follow TensorFlow's model_pruning, which Hooker et al. used: the forward
pass there uses ``w * mask``, so a pruned entry of the underlying variable gets no
gradient and keeps the value it had when it was pruned, and each update thresholds the
magnitudes of those underlying variables. A pruned weight therefore comes back, with
its old value, when it out-ranks weights that shrank since. We emulate this by keeping
each pruned weight's value at pruning time and ranking it beside the live weights
(``allow_regrowth=True``, the default). TF additionally lets momentum and weight decay
keep moving the hidden value; we do not. With ``allow_regrowth=False`` pruned weights
stay pruned (their magnitude counts as zero).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compaudit.compress._common import (
    mean_loss,
    optional_penalty,
    pruning_info,
    require_fine_tune,
)
from compaudit.compress.configs import (
    GradualMagnitudeConfig,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
)
from compaudit.compress.masks import (
    MaskCallback,
    apply_masks,
    magnitude_masks,
    prunable_parameters,
    random_masks,
)
from compaudit.compress.registry import (
    CompressedModel,
    CompressionContext,
)
from compaudit.errors import AuditInputError

__all__ = [
    "GradualMagnitudeConfig",
    "GradualPruningCallback",
    "OneShotMagnitudeConfig",
    "RandomPruningConfig",
]


class GradualPruningCallback:
    """Step callback doing gradual magnitude pruning inside any training loop.

    Call it as ``cb(step, model)`` after every optimizer step (``step`` counts from 1).
    At update steps it recomputes the masks at the scheduled sparsity; after every step
    it zeroes the pruned weights. After ``end_step`` the masks are fixed.

    Parameters
    ----------
    config
        The method's parameters.
    """

    def __init__(self, config: GradualMagnitudeConfig) -> None:
        self.config = config
        self.schedule = config.schedule()
        self.masks: dict[str, torch.Tensor] | None = None
        self.last_step = 0
        #: (step, target sparsity) of every mask update, in order.
        self.updates: list[tuple[int, float]] = []
        self._frozen: dict[str, torch.Tensor] = {}
        self._apply: MaskCallback | None = None

    #: Key of this callback's state in a training checkpoint (``train`` resumes it).
    state_key = "gradual_magnitude_pruning"

    def state_dict(self) -> dict[str, Any]:
        """Masks, pruned values and update history, so a resumed run continues exactly."""
        return {
            "masks": {n: m.cpu() for n, m in (self.masks or {}).items()},
            "frozen": {n: t.cpu() for n, t in self._frozen.items()},
            "updates": [[s, t] for s, t in self.updates],
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.masks = dict(state["masks"]) or None
        self._frozen = dict(state["frozen"])
        self.updates = [(int(s), float(t)) for s, t in state["updates"]]
        self.last_step = int(state["last_step"])
        self._apply = MaskCallback(self.masks) if self.masks is not None else None

    @property
    def finished(self) -> bool:
        """Whether the final update (at ``end_step``) has happened; masks are then fixed."""
        return bool(self.updates) and self.updates[-1][0] == self.schedule.end_step

    def __call__(self, step: int, model: nn.Module) -> None:
        self.last_step = step
        if not self.finished and self.schedule.is_update_step(step):
            self._update(step, model)
        if self._apply is not None:
            self._apply(step, model)

    @torch.no_grad()
    def _update(self, step: int, model: nn.Module) -> None:
        cfg = self.config
        params = prunable_parameters(
            model, exclude_first_conv=cfg.exclude_first_conv,
            exclude_classifier=cfg.exclude_classifier,
        )
        target = self.schedule.sparsity_at(step)
        if cfg.allow_regrowth:
            # Live weights at their trained value, pruned ones at their value when pruned.
            dense = {
                n: torch.where(self.masks[n].to(p.device), p, self._frozen[n].to(p.device))
                if self.masks is not None else p.detach().clone()
                for n, p in params.items()
            }
            masks = magnitude_masks(dense, sparsity=target, scope=cfg.scope)
            for n, p in params.items():
                p.copy_(dense[n])  # returning weights get their old value back
            self._frozen = dense
        else:
            masks = magnitude_masks(params, sparsity=target, scope=cfg.scope,
                                    keep_pruned=self.masks)
        self.masks = masks
        self._apply = MaskCallback(masks)
        self.updates.append((step, target))


def _gradual_magnitude(
    model: nn.Module, config: GradualMagnitudeConfig, context: CompressionContext
) -> CompressedModel:
    fine_tune = require_fine_tune(type(config).__name__, context)
    if not config.in_steps:
        if context.fine_tune_steps is None:
            raise AuditInputError(
                "GradualMagnitudeConfig: begin/end are fractions of the fine-tuning run, but "
                "the CompressionContext does not say how long it is; pass "
                "CompressionContext(fine_tune_steps=...) or give begin_step/end_step")
        config = config.for_run(context.fine_tune_steps)
    callback = GradualPruningCallback(config)
    fine_tune(model, [callback])
    if not callback.finished or callback.masks is None:
        raise AuditInputError(
            f"GradualMagnitudeConfig.end_step: training ran {callback.last_step} optimizer "
            f"steps but pruning ends at step {config.end_step}, so the model did not reach "
            f"sparsity {config.sparsity}; set end_step (and begin_step) within the "
            "training run or train for more steps"
        )
    apply_masks(model, callback.masks)
    info = pruning_info(
        config, model, callback.masks,
        mask_updates=[{"step": s, "target_sparsity": t} for s, t in callback.updates],
    )
    return CompressedModel(model=model, masks=callback.masks, info=info)


def _prune_then_fine_tune(
    model: nn.Module,
    config: OneShotMagnitudeConfig | RandomPruningConfig,
    context: CompressionContext,
    masks: dict[str, torch.Tensor],
) -> CompressedModel:
    sample = optional_penalty(
        context, n_batches=config.penalty_batches, batch_size=config.batch_size
    )
    before = mean_loss(model, sample, device=context.device, head=context.head) if sample else None
    apply_masks(model, masks)
    after = mean_loss(model, sample, device=context.device, head=context.head) if sample else None
    if config.fine_tune:
        # Checked already (_checked_params); this hands over the function, typed.
        fine_tune = require_fine_tune(type(config).__name__, context)
        fine_tune(model, [MaskCallback(masks)])
        apply_masks(model, masks)
    penalty = None if before is None or after is None else after - before
    info = pruning_info(
        config, model, masks,
        loss_before=before, loss_after_pruning=after, pruning_penalty=penalty,
        fine_tuned=config.fine_tune,
    )
    return CompressedModel(model=model, masks=masks, info=info)


def _checked_params(model: nn.Module, config: Any, context: CompressionContext) -> Any:
    """Validate a one-shot/random config and return the parameters it may prune."""
    if config.fine_tune:
        require_fine_tune(type(config).__name__, context)
    return prunable_parameters(
        model, exclude_first_conv=config.exclude_first_conv,
        exclude_classifier=config.exclude_classifier,
    )


def _one_shot_magnitude(
    model: nn.Module, config: OneShotMagnitudeConfig, context: CompressionContext
) -> CompressedModel:
    params = _checked_params(model, config, context)
    masks = magnitude_masks(params, sparsity=config.sparsity, scope=config.scope)
    return _prune_then_fine_tune(model, config, context, masks)


def _random_pruning(
    model: nn.Module, config: RandomPruningConfig, context: CompressionContext
) -> CompressedModel:
    params = _checked_params(model, config, context)
    seed = context.seed if config.seed is None else config.seed
    masks = random_masks(params, sparsity=config.sparsity, scope=config.scope, seed=seed)
    return _prune_then_fine_tune(model, config, context, masks)
