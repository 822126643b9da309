"""Compression methods as data: a config dataclass per method plus a registered handler.

``compress(model, config, context=...)`` looks up the handler registered for
``type(config)``; the audit spec parser only builds config dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from torch import nn

__all__ = [
    "CompressionContext",
    "CompressedModel",
    "register_compression",
    "compress",
    "registered_configs",
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
        How the model's outputs are read (:class:`~compaudit.models.head.Head`): the
        loss of pruning scores and penalties (``None``: softmax cross-entropy). Give
        ``fine_tune`` the same head.
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


@dataclass
class CompressedModel:
    """A compressed model, its pruning masks (if any) and what was done to it."""

    model: nn.Module
    masks: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


_C = TypeVar("_C")
_HANDLERS: dict[type, Callable[..., CompressedModel]] = {}


def register_compression(config_type: type) -> Callable[[_C], _C]:
    """Decorator registering ``fn(model, config, context) -> CompressedModel`` for a config type."""

    def wrap(fn: _C) -> _C:
        if config_type in _HANDLERS:
            raise ValueError(f"a handler for {config_type.__name__} is registered twice")
        _HANDLERS[config_type] = fn  # type: ignore[assignment]
        return fn

    return wrap


def _load_handlers() -> None:
    """Import the modules that register every method's handler (once)."""
    from compaudit.compress import loaded, pruning, quantization  # noqa: F401


def registered_configs() -> list[type]:
    """Config types that :func:`compress` accepts."""
    _load_handlers()
    return list(_HANDLERS)


def compress(
    model: nn.Module, config: Any, *, context: CompressionContext | None = None
) -> CompressedModel:
    """Apply the compression method described by ``config`` to ``model``.

    Use the returned ``CompressedModel.model``. Pruning methods train and mask ``model``
    itself and return it; quantization methods return a new module and leave ``model``
    unchanged. To compress one dense model several ways, pass ``copy.deepcopy(model)``.
    """
    _load_handlers()
    handler = _HANDLERS.get(type(config))
    if handler is None:
        valid = ", ".join(sorted(t.__name__ for t in _HANDLERS)) or "none registered"
        raise TypeError(f"no compression method for {type(config).__name__}; valid: {valid}")
    return handler(model, config, context or CompressionContext())
