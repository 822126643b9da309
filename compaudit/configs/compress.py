"""Every compression method's config, and the two that are neither pruning nor
quantization: ``load`` (models compressed elsewhere) and ``constrained_finetune`` (a
repair derived from another variant).

The one place to import configs from: it re-exports the registry
(:data:`METHODS`, :class:`Method`, :func:`method_of`, from
:mod:`~compaudit.configs.methods`) and the pruning and quantization configs
(:mod:`~compaudit.configs.pruning`, :mod:`~compaudit.configs.quantization`). A config is
checked when it is built, so a spec with ``sparsity = 1.5`` is refused at parse time,
before anything trains. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from compaudit.config import Checked, setting
from compaudit.configs.methods import HANDLERS, METHODS, Method, method, method_of
from compaudit.configs.pruning import (
    UNIT_SCORES,
    GradualMagnitudeConfig,
    LotteryTicketConfig,
    OneShotMagnitudeConfig,
    RandomPruningConfig,
    UnitPruningConfig,
)
from compaudit.configs.quantization import (
    DEFAULT_OPSET,
    BFloat16Config,
    Float16Config,
    Int8StaticConfig,
    Int8WeightOnlyConfig,
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
    "UNIT_SCORES",
    "DEFAULT_OPSET",
]

_Problems = Iterator[tuple[str | None, str]]


@method("load", handler=HANDLERS + "loaded:load_compressed", axis="sparsity",
        family=None, artifacts="files")
@dataclass(frozen=True, kw_only=True)
class LoadConfig(Checked):
    """Compressed models made elsewhere: the team's own artifacts, audited as they ship.

    Parameters
    ----------
    files
        One model file per dense replica: file k is paired with dense replica k, so
        compression harm is measured replica against the replica it came from. A
        single file is accepted only when there is a single dense replica. The format
        is read from each file's header
        (:func:`~compaudit.artifact_format.artifact_format`):

        * a state dict written by ``torch.save`` (a plain one, or a checkpoint dict
          holding it under ``state_dict``, ``model`` or ``model_state_dict``), loaded
          with ``weights_only=True`` into a copy of the dense replica's architecture.
          Pruning reparametrisations of ``torch.nn.utils.prune`` saved without
          ``prune.remove`` (``weight_orig`` and ``weight_mask``) are folded to
          ``weight = weight_orig * weight_mask``; sparsity is measured from the zeros;
        * an ONNX model (float32, float16, or int8 in QDQ or QOperator form, from ONNX
          Runtime or any toolchain), run by ONNX Runtime on the CPU.

        ``torch.export`` programs (``.pt2``) and whole pickled models are refused:
        reading them can run code from the file (see
        :func:`compaudit.models.artifacts.load_artifact`).
    """

    files: tuple[str, ...] = setting(nonempty=True)


# revision 2: the training loop's batch order (models/training.epoch_loader).
@method("constrained_finetune", handler=HANDLERS + "repair:_constrained_finetune", trains=True,
        reads_training_set=True, prunes=True, axis="sparsity", derives_from="base",
        revision=2)
@dataclass(frozen=True, kw_only=True)
class ConstrainedFinetuneConfig(Checked):
    """Repair a pruned variant: fine-tune it, masks kept, under subgroup error bounds.

    Replica k starts from the compressed replica k of the variant named ``base`` (a
    pruning method), keeps its zeros (the sparsity is the base's exactly) and
    minimises the training loss subject to, for every group g (a label crossed with a
    cell of the ``[data].protected`` attributes: its false-negative or false-positive
    rate), ``error_g(repaired) - error_g(dense replica k) <= max_increase`` on the
    training split. The Lagrangian is solved with ``cooper-optim`` as in Balancing Act
    (Hashemizadeh et al., ICLR 2024), with proxy constraints: the multipliers follow
    the true 0-1 error rates (a running estimate over recent batches), the weights
    the gradient of each group's mean cross-entropy. See :mod:`compaudit.compress.repair`
    and docs/repair.md.

    Parameters
    ----------
    base
        The ``[[variants]]`` name of the pruned variant to repair.
    max_increase
        Bound on each group's error increase over the dense replica, a fraction
        (0.02 = 2 pp). ``false``: no constraint, plain fine-tuning of the masked base
        with the same budget (the baseline a repair must beat).
    epochs, batch_size, lr, momentum, weight_decay
        The fine-tuning run (SGD, cosine learning rate to zero).
    dual_lr
        Step size of the multipliers' gradient ascent (on the violation, a fraction).
    dual_decay
        Shrink the multipliers' step with the weights' (cosine to zero), so the run
        ends near the saddle point rather than mid-oscillation. Off by default: a
        multiplier must be able to fall back once its bound holds, or the repair
        overshoots (on the demo, decayed multipliers pushed blond men's FNR to half
        the dense model's, and the changes onto them; docs/repair.md).
    error_window
        Batches the running 0-1 error of each group averages over (an exponential
        window), so that rare groups' multipliers move on more than a few examples.
    distill
        Weight in [0, 1] of distillation from the dense replica in the objective:
        ``(1 - distill) * cross-entropy + distill * KL(dense || repaired)``; 0 is the
        training loss alone. It pulls the repair towards the dense model's own
        predictions, not past them.
    relative_to
        ``"labels"`` (default, Balancing Act): a group's error is its error rate
        (false-negative or false-positive rate), bounded by the dense replica's plus
        ``max_increase``. ``"dense"``: a group's error is the share of its examples on
        which the repaired model disagrees with dense replica k (the per-replica form
        of a PIE), bounded by ``max_increase`` itself; it bounds changes in both
        directions, which a PIE over-index check also counts.
    teacher
        The dense reference of ``distill`` and of ``relative_to = "dense"``:
        ``"replica"`` (default), dense replica k; ``"population"``, every dense
        replica: their mean probabilities and their modal prediction, which PIEs
        are measured against (Hooker et al.).
    """

    base: str = setting(slug=True)
    max_increase: float | None = setting(0.02, ge=0, le=1, off=True)
    epochs: int = setting(2, ge=1)
    batch_size: int = setting(128, ge=1)
    lr: float = setting(0.01, gt=0)
    momentum: float = setting(0.9, ge=0, lt=1)
    weight_decay: float = setting(0.0, ge=0)
    dual_lr: float = setting(0.2, gt=0)
    error_window: int = setting(20, ge=1)
    distill: float = setting(0.0, ge=0, le=1)
    relative_to: Literal["labels", "dense"] = "labels"
    teacher: Literal["replica", "population"] = "replica"
    dual_decay: bool = False
