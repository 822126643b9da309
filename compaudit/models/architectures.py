"""Model architectures by name: a registry of builders behind :func:`build_model`.

A name is a registered architecture (``small_cnn``, ``resnet18``, ``resnet50``) or any
torchvision classification model (``torchvision.models.list_models(module=
torchvision.models)``, e.g. ``mobilenet_v3_small``, built with ``num_classes``).
Every builder takes ``num_classes`` and ``small_input`` and returns a freshly
initialised ``nn.Module`` (no pretrained weights; those come from
:mod:`compaudit.models.weights`). Initialisation draws from torch's global RNG, so seed
it (``torch.manual_seed``) before building when replicas must be reproducible.

Examples
--------
>>> from compaudit.models.architectures import build_model
>>> model = build_model("small_cnn", num_classes=2)
>>> sorted(list_architectures())[:2]
['resnet18', 'resnet50']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from torch import nn

from compaudit.errors import AuditInputError
from compaudit.registry import Registry

__all__ = [
    "ARCHITECTURES",
    "architecture_exists",
    "build_model",
    "register_architecture",
    "list_architectures",
    "SmallCNN",
]


class ArchitectureBuilder(Protocol):
    """``builder(*, num_classes, small_input) -> nn.Module``."""

    def __call__(self, *, num_classes: int, small_input: bool) -> nn.Module: ...


_B = TypeVar("_B", bound=Callable[..., nn.Module])

#: Builders by name; :func:`build_model` looks names up here.
ARCHITECTURES: Registry[ArchitectureBuilder] = Registry("architecture")


def register_architecture(name: str) -> Callable[[_B], _B]:
    """Add ``builder(*, num_classes, small_input)`` to the registry as ``name`` (decorator).

    Parameters
    ----------
    name
        The name audit specs and :func:`build_model` use.
    """
    return ARCHITECTURES.register(name)  # type: ignore[return-value]


def list_architectures() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return ARCHITECTURES.names()


def _torchvision_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def architecture_exists(arch: str) -> bool:
    """Whether :func:`build_model` knows ``arch`` (registered, or a torchvision model)."""
    return arch in ARCHITECTURES or (isinstance(arch, str) and arch in _torchvision_models())


def _builder(arch: str) -> ArchitectureBuilder:
    if arch in ARCHITECTURES or not architecture_exists(arch):
        try:
            return ARCHITECTURES.get(arch)
        except AuditInputError as err:
            raise AuditInputError(f"{err.problems[0]}, or any torchvision classification "
                                  "model, e.g. mobilenet_v3_small, efficientnet_b0 "
                                  "(torchvision.models.list_models)") from None

    def torchvision_model(*, num_classes: int, small_input: bool) -> nn.Module:
        import torchvision

        # small_input changes only the registered ResNets' stem; torchvision's own
        # models are built as published (no weights: those come from files).
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)

    return torchvision_model


def build_model(arch: str, *, num_classes: int, small_input: bool = False) -> nn.Module:
    """Build a freshly initialised model of architecture ``arch``.

    Parameters
    ----------
    arch
        A registered name (:func:`list_architectures`) or a torchvision classification
        model name.
    num_classes
        Width of the output layer (2 for binary tasks).
    small_input
        For the registered ResNets: replace the 7x7 stride-2 stem and its max-pool by a
        3x3 stride-1 convolution, as is usual for 32 px images (CIFAR). Ignored by
        ``small_cnn``, which is built for small images already, and by torchvision's
        own models.

    Returns
    -------
    nn.Module
        The model, in training mode, on the CPU.
    """
    builder = _builder(arch)
    # bool is an int subclass; num_classes=True is a mistake, not 1 class.
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise AuditInputError(
            f"num_classes must be a positive integer, got {num_classes!r}; "
            "use 2 for a binary task such as Blond_Hair"
        )
    return builder(num_classes=num_classes, small_input=bool(small_input))


def _small_stem(model: nn.Module) -> nn.Module:
    # CIFAR-style stem: at 32 px the ImageNet stem would shrink the map to 8x8 at once.
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register_architecture("resnet18")
def _resnet18(*, num_classes: int, small_input: bool) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    return _small_stem(model) if small_input else model


@register_architecture("resnet50")
def _resnet50(*, num_classes: int, small_input: bool) -> nn.Module:
    from torchvision.models import resnet50

    model = resnet50(weights=None, num_classes=num_classes)
    return _small_stem(model) if small_input else model


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks (8, 16, 32, 64 channels), global average pool, linear.

    The first block keeps the resolution and the next three halve it, so a 16 px input
    ends at 2x2 and a 64 px input at 8x8 before pooling.

    Parameters
    ----------
    num_classes
        Width of the output layer.
    channels
        Output channels of the four blocks.
    """

    def __init__(self, *, num_classes: int, channels: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate(channels):
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1 if i == 0 else 2, padding=1,
                          bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):  # noqa: D102 - standard nn.Module forward
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_architecture("small_cnn")
def _small_cnn(*, num_classes: int, small_input: bool) -> nn.Module:
    return SmallCNN(num_classes=num_classes)
