"""The pruning methods' configs: gradual and one-shot magnitude, random, unit (structured)
and lottery-ticket pruning, each registered in :data:`~compaudit.configs.methods.METHODS`.
This module imports no torch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

from compaudit.config import Checked, setting
from compaudit.configs.methods import HANDLERS, method
from compaudit.configs.schedules import CubicSparsitySchedule, schedule_problems

__all__ = ["GradualMagnitudeConfig", "OneShotMagnitudeConfig", "RandomPruningConfig",
           "UnitPruningConfig", "LotteryTicketConfig", "UNIT_SCORES"]

Scope = Literal["global", "layer"]
UnitScore = Literal["random", "l2", "abs_rs", "abs_mrs", "rs", "mrs"]
UNIT_SCORES: tuple[str, ...] = ("random", "l2", "abs_rs", "abs_mrs", "rs", "mrs")
UnitOrder = Literal["simultaneous", "sequential"]

_Problems = Iterator[tuple[str | None, str]]


@method("gradual_magnitude", handler=HANDLERS + "magnitude:_gradual_magnitude", trains=True,
        reads_training_set=True, prunes=True, axis="sparsity")
@dataclass(frozen=True, kw_only=True)
class GradualMagnitudeConfig(Checked):
    """Gradual magnitude pruning during training (Zhu & Gupta).

    Parameters
    ----------
    sparsity
        Final fraction of prunable weights set to zero, reached at the end step.
    begin_step, end_step
        First and last mask update, in optimizer steps counted from 1; see
        :class:`~compaudit.configs.schedules.CubicSparsitySchedule`.
    begin, end
        The same as fractions of the fine-tuning run (e.g. ``begin = 0.0, end = 0.8``),
        so one spec works for any dataset size; give these or the steps.
    frequency
        Optimizer steps between mask updates.
    initial_sparsity
        Target at the begin step.
    scope
        ``"layer"`` (default, as in Zhu & Gupta: a threshold per tensor) or ``"global"``.
    exclude_first_conv, exclude_classifier
        Keep these layers dense.
    allow_regrowth
        Rank pruned weights by their value at pruning time, as TF model_pruning does,
        so they can return (see :mod:`compaudit.compress.magnitude`).
    """

    sparsity: float = setting(ge=0, lt=1)
    begin_step: int | None = setting(None, ge=0)
    end_step: int | None = setting(None, ge=1)
    begin: float | None = setting(None, ge=0, lt=1)
    end: float | None = setting(None, gt=0, le=1)
    frequency: int = setting(ge=1)
    initial_sparsity: float = setting(0.0, ge=0, lt=1)
    scope: Scope = "layer"
    exclude_first_conv: bool = True
    exclude_classifier: bool = False
    allow_regrowth: bool = True

    def _problems(self) -> _Problems:
        # Exactly one complete pair, the other absent: a begin_step beside begin and end
        # would be dropped by for_run without a word.
        no_steps = self.begin_step is None and self.end_step is None
        no_fractions = self.begin is None and self.end is None
        if self.begin_step is not None and self.end_step is not None and no_fractions:
            begin, end = self.begin_step, self.end_step
        elif self.begin is not None and self.end is not None and no_steps:
            if self.end <= self.begin:
                yield "end", (f"got {self.end!r}; expected a fraction greater than begin "
                              f"({self.begin!r})")
            begin, end = 0, 1
        else:
            yield None, ("give begin_step and end_step (optimizer steps) or begin and end "
                         "(fractions of the fine-tuning run), one pair")
            return
        yield from schedule_problems(initial=self.initial_sparsity, final=self.sparsity,
                                     begin=begin, end=end, final_name="sparsity")

    @property
    def in_steps(self) -> bool:
        """Whether the schedule is given in optimizer steps (else in fractions)."""
        return self.end_step is not None

    def for_run(self, total_steps: int) -> GradualMagnitudeConfig:
        """This config in optimizer steps, for a fine-tuning run of ``total_steps``."""
        if self.in_steps or self.begin is None or self.end is None:
            return self
        begin = int(round(self.begin * total_steps))
        end = max(begin + 1, int(round(self.end * total_steps)))
        return replace(self, begin_step=begin, end_step=end, begin=None, end=None)

    def schedule(self) -> CubicSparsitySchedule:
        """The cubic schedule these fields describe (the steps must be known)."""
        if self.begin_step is None or self.end_step is None:
            raise ValueError("GradualMagnitudeConfig: call for_run(total_steps) first")
        return CubicSparsitySchedule(
            final_sparsity=self.sparsity, begin_step=self.begin_step, end_step=self.end_step,
            frequency=self.frequency, initial_sparsity=self.initial_sparsity,
        )


@method("one_shot_magnitude", handler=HANDLERS + "magnitude:_one_shot_magnitude", trains=True,
        reads_training_set=True, prunes=True, axis="sparsity")
@dataclass(frozen=True, kw_only=True)
class OneShotMagnitudeConfig(Checked):
    """Prune a trained model once by magnitude, then fine-tune with the mask fixed.

    Parameters
    ----------
    sparsity
        Fraction of prunable weights set to zero, e.g. 0.9 for 90% sparsity.
    scope
        ``"layer"`` or ``"global"`` (see :func:`~compaudit.compress.masks.magnitude_masks`).
    fine_tune
        Fine-tune after pruning with ``context.fine_tune``, masks re-applied every step.
    exclude_first_conv, exclude_classifier
        Keep these layers dense.
    penalty_batches, batch_size
        Sample of the training data on which the pruning penalty (loss right after
        pruning minus loss before) is measured; 0 batches skips it.
    """

    sparsity: float = setting(ge=0, lt=1)
    scope: Scope = "layer"
    fine_tune: bool = True
    exclude_first_conv: bool = True
    exclude_classifier: bool = False
    penalty_batches: int = setting(4, ge=0)
    batch_size: int = setting(64, ge=1)


@method("random", handler=HANDLERS + "magnitude:_random_pruning", trains=True,
        reads_training_set=True, prunes=True, axis="sparsity")
@dataclass(frozen=True, kw_only=True)
class RandomPruningConfig(OneShotMagnitudeConfig):
    """The control: prune a uniformly random set of weights, then (optionally) fine-tune.

    Parameters are those of :class:`OneShotMagnitudeConfig` plus ``seed`` (``None``
    takes the context's seed).
    """

    seed: int | None = setting(None, ge=0)


@method("unit", handler=HANDLERS + "units:_unit_pruning", reads_training_set=True, prunes=True,
        axis="sparsity")
@dataclass(frozen=True, kw_only=True)
class UnitPruningConfig(Checked):
    """Remove units of conv/linear layers, optionally folding their means into biases.

    Parameters
    ----------
    fraction
        Fraction of each chosen layer's units to remove (rounded to the nearest count).
    count
        Units to remove per chosen layer; give exactly one of ``fraction`` and ``count``.
    score
        How units are ranked: ``"random"``, ``"l2"``, ``"abs_rs"``, ``"abs_mrs"``
        (the reference's best), ``"rs"`` or ``"mrs"``; see :mod:`compaudit.compress.units`.
    mean_replacement
        Fold removed units' mean activations into the next layer's bias.
    layers
        Producer module names to prune (see
        :func:`~compaudit.compress.units.find_unit_layers`); ``None`` prunes every
        eligible layer.
    n_batches, batch_size
        Size of the training sample for activations, scores and the pruning penalty.
    order
        ``"simultaneous"`` (default): every chosen layer is scored in the same passes
        over the sample, one forward and one backward per batch, on the unpruned
        network, and then all are pruned; the cost grows with ``n_batches`` only, and
        the pruning penalty is measured for all layers together. ``"sequential"``: the
        reference's procedure, each layer in forward order scored on the network its
        predecessors left and its own penalty measured, at two forwards and a backward
        per batch per layer. The two agree when one layer is chosen.
    """

    fraction: float | None = setting(None, gt=0, lt=1)
    count: int | None = setting(None, ge=1)
    score: UnitScore = "abs_mrs"
    mean_replacement: bool = True
    layers: tuple[str, ...] | None = setting(None, nonempty=True)
    n_batches: int = setting(8, ge=1)
    batch_size: int = setting(64, ge=1)
    order: UnitOrder = "simultaneous"

    def _problems(self) -> _Problems:
        if (self.fraction is None) == (self.count is None):
            yield None, ("give exactly one of fraction (share of each layer's units) and "
                         f"count (units per layer); got fraction={self.fraction!r}, "
                         f"count={self.count!r}")


@method("lottery", handler=HANDLERS + "lottery:_lottery_ticket", trains=True,
        reads_training_set=True, prunes=True, axis="sparsity")
@dataclass(frozen=True, kw_only=True)
class LotteryTicketConfig(Checked):
    """Iterative magnitude pruning with rewinding.

    Parameters
    ----------
    sparsity
        Final fraction of prunable weights set to zero.
    per_round_fraction
        Fraction of the remaining weights pruned per round (0.2 when neither this nor
        ``rounds`` is given).
    rounds
        Number of rounds instead; each then prunes ``1 - (1 - sparsity)^(1/rounds)`` of
        the remaining weights. Give at most one of the two.
    rewind_step
        Optimizer step of the first training whose weights are restored before each
        retraining; 0 restores the weights from before training (the original ticket).
    scope
        ``"global"`` (default, as for deep networks in Frankle et al.) or ``"layer"``.
    exclude_first_conv, exclude_classifier
        Keep these layers dense.
    """

    sparsity: float = setting(gt=0, lt=1)
    per_round_fraction: float | None = setting(None, gt=0, lt=1)
    rounds: int | None = setting(None, ge=1)
    rewind_step: int = setting(0, ge=0)
    scope: Scope = "global"
    exclude_first_conv: bool = True
    exclude_classifier: bool = False

    def _problems(self) -> _Problems:
        if self.per_round_fraction is not None and self.rounds is not None:
            yield None, (f"give per_round_fraction or rounds, not both (got "
                         f"{self.per_round_fraction!r} and {self.rounds!r})")
