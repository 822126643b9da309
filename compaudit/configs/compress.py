"""Every compression method's identity: its name, config dataclass, handler and flags.

``METHODS`` maps the names used in ``[[variants]] method = "..."`` to a :class:`Method`
entry, the method's whole identity: the config class the spec builds, the handler that
:func:`compaudit.compress.compress` runs (named by import path, so reading a spec
imports no torch), whether it trains, reads the training set, prunes or quantizes, and
where its variants sit on the gate's operating points (family and axis). Nothing else
in the package keeps a list of method names. A config is checked when it is built, so
a spec with ``sparsity = 1.5`` is refused at parse time, before anything trains.
This module imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from compaudit.config import Checked, setting
from compaudit.configs.schedules import CubicSparsitySchedule, schedule_problems
from compaudit.registry import Registry
from compaudit.rundir import AXES

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

Axis = Literal["sparsity", "bits"]


def _torch_layers(config: Any) -> bool:
    return True


@dataclass(frozen=True, kw_only=True)
class Method:
    """One compression method's identity, registered under its spec name.

    Attributes
    ----------
    name
        The ``[[variants]] method`` name; also ``method`` in ``variants.json``, the
        gate's family and the report's.
    config
        The config dataclass the spec's table builds.
    handler
        ``handler(model, config, context) -> CompressedModel``, or its import path
        ``"module:function"`` (imported when a model is compressed).
    trains
        Its job trains every replica again (``context.fine_tune``): the long jobs.
    reads_training_set
        Its job reads the training set (fine-tuning, scores, calibration); the others
        get no training data.
    prunes, quantizes
        It sets weights to zero / lowers their bit width; a pruning method's record has
        ``sparsity > 0``, a quantizing one's a ``bits``.
    axis
        Where its variants sit on the operating points: ``"sparsity"`` (the record's
        measured sparsity), ``"bits"`` (the record's bit width) or ``None`` (placed by
        size on disk).
    family
        Operating-point family its variants are grouped in; the name when not given;
        ``None``: each variant is its own family (``load``: files made elsewhere, by
        methods compaudit does not know, are not points of one curve).
    artifacts
        The config field listing model files made elsewhere (``load``): the method
        compresses no dense weights, and the stage cache fingerprints these files.
    torch_layers
        ``torch_layers(config)``: whether its models keep torch layers that dissection
        can hook (false for models run by ONNX Runtime).
    derives_from
        The config field naming another variant this method starts from (a repair
        starts from its base's compressed replicas); ``None``: it starts from the dense
        replicas. The pipeline runs such a variant after the one it names, hands its
        job that variant's model files, and places it in that variant's family.
    revision
        Raised when the method's code changes what it produces for the same settings;
        part of each variant's stage key, so a run folder recomputes that method's
        variants (only those) instead of reusing outputs of the older code.
    """

    name: str
    config: type
    handler: str | Callable[..., Any]
    trains: bool = False
    reads_training_set: bool = False
    prunes: bool = False
    quantizes: bool = False
    axis: Axis | None = None
    family: str | None = ""
    artifacts: str | None = None
    torch_layers: Callable[[Any], bool] = field(default=_torch_layers)
    derives_from: str | None = None
    revision: int = 1

    def __post_init__(self) -> None:
        if self.family == "":
            object.__setattr__(self, "family", self.name)
        if self.axis not in AXES:
            raise ValueError(f"method {self.name!r}: axis {self.axis!r} is not one of {AXES}")
        if self.trains and not self.reads_training_set:
            raise ValueError(f"method {self.name!r} trains, so it reads the training set")

    def resolve_handler(self) -> Callable[..., Any]:
        """The handler function (imports its module when given by path)."""
        if callable(self.handler):
            return self.handler
        module, _, attr = self.handler.partition(":")
        return getattr(importlib.import_module(module), attr)

    def files(self, config: Any) -> tuple[str, ...]:
        """The model files made elsewhere that ``config`` reads (none for most methods)."""
        return tuple(getattr(config, self.artifacts)) if self.artifacts else ()

    def base_of(self, config: Any) -> str | None:
        """The variant ``config`` derives from (its :attr:`derives_from` field), if any."""
        return getattr(config, self.derives_from) if self.derives_from else None

    def family_of(self, variant: str) -> str:
        """The operating-point family of a variant of this method called ``variant``."""
        return variant if self.family is None else self.family

    @property
    def compresses_weights(self) -> bool:
        """Whether it transforms the dense replica's torch weights (all but ``load``)."""
        return self.artifacts is None


#: Names accepted by ``[[variants]] method``, each with its :class:`Method` entry.
METHODS: Registry[Method] = Registry("compression method")

_C = TypeVar("_C", bound=type)
#: Package of the handler modules (they import torch).
_HANDLERS = "compaudit.compress."


def method(name: str, *, handler: str, **flags: Any) -> Callable[[_C], _C]:
    """Class decorator registering a config class as method ``name`` (see :class:`Method`)."""

    def wrap(config: _C) -> _C:
        METHODS.add(name, Method(name=name, config=config, handler=handler, **flags))
        return config

    return wrap


def method_of(config: Any) -> Method:
    """The entry whose config class is exactly ``type(config)``.

    >>> method_of(Float16Config()).name
    'float16'
    """
    for _, entry in METHODS.items():
        if type(config) is entry.config:
            return entry
    raise TypeError(f"no compression method for {type(config).__name__}; valid: "
                    f"{', '.join(e.config.__name__ for _, e in METHODS.items())}")

Scope = Literal["global", "layer"]
Execution = Literal["auto", "native", "simulated"]
UnitScore = Literal["random", "l2", "abs_rs", "abs_mrs", "rs", "mrs"]
UNIT_SCORES: tuple[str, ...] = ("random", "l2", "abs_rs", "abs_mrs", "rs", "mrs")
UnitOrder = Literal["simultaneous", "sequential"]
#: ONNX opset of the ONNX Runtime int8 backend.
DEFAULT_OPSET = 20

_Problems = Iterator[tuple[str | None, str]]


@method("gradual_magnitude", handler=_HANDLERS + "magnitude:_gradual_magnitude", trains=True,
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


@method("one_shot_magnitude", handler=_HANDLERS + "magnitude:_one_shot_magnitude", trains=True,
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


@method("random", handler=_HANDLERS + "magnitude:_random_pruning", trains=True,
        reads_training_set=True, prunes=True, axis="sparsity")
@dataclass(frozen=True, kw_only=True)
class RandomPruningConfig(OneShotMagnitudeConfig):
    """The control: prune a uniformly random set of weights, then (optionally) fine-tune.

    Parameters are those of :class:`OneShotMagnitudeConfig` plus ``seed`` (``None``
    takes the context's seed).
    """

    seed: int | None = setting(None, ge=0)


@method("unit", handler=_HANDLERS + "units:_unit_pruning", reads_training_set=True, prunes=True,
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


@method("lottery", handler=_HANDLERS + "lottery:_lottery_ticket", trains=True,
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


# revision 2: BatchNorm folded into its conv before rounding (compress/fold.py).
@method("float16", handler=_HANDLERS + "quantization:_float16", quantizes=True, axis="bits",
        revision=2)
@dataclass(frozen=True, kw_only=True)
class Float16Config(Checked):
    """Cast to float16 (IEEE half).

    Parameters
    ----------
    execution
        ``"native"`` casts the model and runs float16 kernels; ``"simulated"`` rounds
        weights and every layer's output through float16 but computes in float32;
        ``"auto"`` (default) is native on CUDA and simulated on the CPU, where float16
        kernels are slow.
    """

    execution: Execution = "auto"


@method("bfloat16", handler=_HANDLERS + "quantization:_bfloat16", quantizes=True, axis="bits",
        revision=2)
@dataclass(frozen=True, kw_only=True)
class BFloat16Config(Float16Config):
    """Cast to bfloat16 (8-bit exponent, 7-bit mantissa); ``execution`` as for float16."""


@method("int8_weight_only", handler=_HANDLERS + "quantization:_int8_weight_only",
        quantizes=True, axis="bits")
@dataclass(frozen=True, kw_only=True)
class Int8WeightOnlyConfig(Checked):
    """int8 weights of every conv and linear layer; activations stay float32.

    Parameters
    ----------
    per_channel
        One scale per output channel (default) or one per tensor.
    symmetric
        Scale ``max|w| / 127`` and zero point 0 (default), else an affine range
        ``[-128, 127]`` from the tensor's min and max.
    """

    per_channel: bool = True
    symmetric: bool = True


def _runs_in_torch(config: Int8StaticConfig) -> bool:
    return config.backend != "onnxruntime"


# revision 2: ReLU6/Hardtanh/clamp (ONNX Clip) fused into the conv/linear output's quantizer,
# as ReLU was, in the simulation and ONNX Runtime's op_types_to_quantize alike.
@method("int8_static", handler=_HANDLERS + "quantization:_int8_static", reads_training_set=True,
        quantizes=True, axis="bits", torch_layers=_runs_in_torch, revision=2)
@dataclass(frozen=True, kw_only=True)
class Int8StaticConfig(Checked):
    """int8 weights (per channel, symmetric) and activations (per tensor) calibrated on data.

    Parameters
    ----------
    calibration_images
        How many images of the calibration dataset (a seeded random subset) set the
        activation ranges; a few hundred training images are usual.
    calibration_batch_size
        Images per calibration batch.
    backend
        ``"simulated"`` (torch fake-quant, any device) or ``"onnxruntime"`` (ONNX export
        and ONNX Runtime int8 kernels on the CPU; needs the ``onnx`` extra).
    activation_observer
        ``"minmax"`` (full observed range) or ``"percentile"`` (symmetric percentile of
        ``|x|``, clipping outliers; ``calibration_images`` must then be a multiple of
        ``calibration_batch_size`` with the ONNX Runtime backend).
    activation_dtype
        ``"uint8"`` (default, ONNX Runtime's CPU recommendation) or ``"int8"``.
    percentile
        Percentile of the ``"percentile"`` observer, in (0, 100], e.g. 99.999.
    opset
        ONNX opset for the ONNX Runtime backend (>= 17: the exporter and ONNX
        Runtime's quantizer need it).
    onnx_dir
        Where the ONNX Runtime backend writes its ``.onnx`` files; a new temporary folder
        when ``None``. Keep it on shared storage when models travel between machines.
    num_threads
        ONNX Runtime intra-op threads (``None``: its default).
    """

    calibration_images: int = setting(512, ge=1)
    calibration_batch_size: int = setting(32, ge=1)
    backend: Literal["simulated", "onnxruntime"] = "simulated"
    activation_observer: Literal["minmax", "percentile"] = "minmax"
    activation_dtype: Literal["uint8", "int8"] = "uint8"
    percentile: float = setting(99.999, gt=0, le=100)
    opset: int = setting(DEFAULT_OPSET, ge=17)
    onnx_dir: str | None = None
    num_threads: int | None = setting(None, ge=1)


@method("load", handler=_HANDLERS + "loaded:load_compressed", axis="sparsity",
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
@method("constrained_finetune", handler=_HANDLERS + "repair:_constrained_finetune", trains=True,
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
