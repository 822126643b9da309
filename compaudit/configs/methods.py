"""Every compression method's identity, and the registry of them.

:data:`METHODS` maps the names used in ``[[variants]] method = "..."`` to a
:class:`Method` entry, the method's whole identity: the config class the spec builds, the
handler that :func:`compaudit.compress.compress` runs (named by import path, so reading a
spec imports no torch), whether it trains, reads the training set, prunes or quantizes,
and where its variants sit on the gate's operating points (family and axis). Config
classes register themselves with the :func:`method` decorator in
:mod:`~compaudit.configs.pruning`, :mod:`~compaudit.configs.quantization` and
:mod:`~compaudit.configs.compress`; importing any :mod:`compaudit.configs` module
imports them all (the package imports :mod:`~compaudit.configs.compress`), so the
registry is complete. Nothing else in the package keeps a list of method names. This
module imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from compaudit.registry import Registry
from compaudit.rundir import AXES

__all__ = ["METHODS", "Method", "method", "method_of", "HANDLERS"]

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
#: Package of the handler modules (they import torch): ``HANDLERS + "module:function"``.
HANDLERS = "compaudit.compress."


def method(name: str, *, handler: str, **flags: Any) -> Callable[[_C], _C]:
    """Class decorator registering a config class as method ``name`` (see :class:`Method`)."""

    def wrap(config: _C) -> _C:
        METHODS.add(name, Method(name=name, config=config, handler=handler, **flags))
        return config

    return wrap


def method_of(config: Any) -> Method:
    """The entry whose config class is exactly ``type(config)``.

    >>> from compaudit.configs.quantization import Float16Config
    >>> method_of(Float16Config()).name
    'float16'
    """
    for _, entry in METHODS.items():
        if type(config) is entry.config:
            return entry
    raise TypeError(f"no compression method for {type(config).__name__}; valid: "
                    f"{', '.join(e.config.__name__ for _, e in METHODS.items())}")
