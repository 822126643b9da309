"""Compression methods as data: ``compress(model, config, context=...)``.

The method entry of ``type(config)`` (:data:`compaudit.configs.compress.METHODS`) names
the handler; the audit spec parser only builds config dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compaudit.configs.compress import method_of

__all__ = [
    "CompressionContext",
    "CompressedModel",
    "compress",
]

StepCallback = Callable[[int, nn.Module], None]


@dataclass
class CompressionContext:
    """What a compression method may need besides the model.

    Attributes
    ----------
    train_dataset
        Training data (yields ``(image, label, example_id)``), for scores and fine-tuning.
    fine_tune
        ``fine_tune(model, step_callbacks)`` trains ``model`` in place with the audit's
        training settings, calling every callback after each optimizer step.
    calibration_dataset
        Data for post-training quantization calibration.
    seed
        Seed for any randomness of the method.
    device
        Torch device string.
    progress
        Show progress bars (calibration); off inside audit jobs.
    fine_tune_steps
        Optimizer steps of one ``fine_tune`` run, for schedules given as fractions.
    replica
        Index k of the dense replica being compressed, counted from 0 (``load`` pairs
        its file k with it).
    head
        How the model's outputs are read (:class:`~compaudit.configs.head.Head`): the
        loss of pruning scores and penalties (``None``: softmax cross-entropy). Give
        ``fine_tune`` the same head.
    replicas
        How many dense replicas the method is applied to, when known (``load`` checks
        that it has one file for each).
    base_model
        For a method that derives from another variant (``Method.derives_from``): that
        variant's compressed replica k, which the method starts from (the model passed
        to :func:`compress` is then dense replica k, the reference).
    protected
        The audit's protected attributes (``[data].protected``); ``train_dataset``'s
        ``examples()`` has an ``attr.<Name>`` column for each.
    dense_population
        Every dense replica (replica k among them), for a method that measures the
        dense population as PIEs do (the repair's ``teacher = "population"``).
    """

    train_dataset: Any = None
    fine_tune: Callable[[nn.Module, Sequence[StepCallback]], None] | None = None
    calibration_dataset: Any = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = False
    fine_tune_steps: int | None = None
    replica: int = 0
    head: Any = None
    replicas: int | None = None
    base_model: nn.Module | None = None
    protected: tuple[str, ...] = ()
    dense_population: tuple[nn.Module, ...] = ()


@dataclass
class CompressedModel:
    """A compressed model, its pruning masks (if any) and what was done to it."""

    model: nn.Module
    masks: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def compress(
    model: nn.Module, config: Any, *, context: CompressionContext | None = None
) -> CompressedModel:
    """Apply the compression method described by ``config`` to ``model``.

    Use the returned ``CompressedModel.model``. Pruning methods train and mask ``model``
    itself and return it; quantization methods return a new module and leave ``model``
    unchanged. To compress one dense model several ways, pass ``copy.deepcopy(model)``.
    """
    entry = method_of(config)
    out = entry.resolve_handler()(model, config, context or CompressionContext())
    # The entry names the method: the name a spec gives it, and variants.json records.
    out.info = {"method": entry.name, **{k: v for k, v in out.info.items() if k != "method"}}
    return out
