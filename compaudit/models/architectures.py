"""Model architectures by name: a registry of builders behind :func:`build_model`.

``arch`` takes four forms, resolved by one function (:func:`resolve_architecture`):

* a registered name (``small_cnn``, ``resnet18``, ``resnet50``);
* any torchvision classification model (``torchvision.models.list_models(module=
  torchvision.models)``, e.g. ``mobilenet_v3_small``);
* ``"timm:NAME"``, any timm model (e.g. ``"timm:resnet10t"``), built with
  ``timm.create_model(NAME, pretrained=False, num_classes=...)``; needs the optional
  ``timm`` extra (``pip install -e ".[timm]"``);
* ``"package.module:callable"``, **your own code**: the module is imported (from
  ``sys.path``, or from ``search_path``, e.g. the audit spec's folder) and
  ``callable(num_classes=..., **options)`` is called. Importing and calling it runs
  that code, with your permissions, in this process and in every worker process; only
  name modules you trust.

Every model is built with ``num_classes`` and freshly initialised: nothing is
downloaded (weights come from files, :mod:`compaudit.models.weights`). ``options``
(``[model].options`` in a spec) are extra keyword arguments for the torchvision, timm
or user builder. Initialisation draws from torch's global RNG, so seed it
(``torch.manual_seed``) before building when replicas must be reproducible.

Examples
--------
>>> from compaudit.models.architectures import build_model
>>> model = build_model("small_cnn", num_classes=2)
>>> sorted(list_architectures())[:2]
['resnet18', 'resnet50']
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from torch import nn

from compaudit.errors import AuditInputError
from compaudit.registry import Registry

__all__ = [
    "ARCHITECTURES",
    "RESERVED_OPTIONS",
    "TIMM_PREFIX",
    "SmallCNN",
    "architecture_exists",
    "architecture_source",
    "build_model",
    "list_architectures",
    "register_architecture",
    "resolve_architecture",
]


class ArchitectureBuilder(Protocol):
    """``builder(*, num_classes, small_input, **options) -> nn.Module``."""

    def __call__(self, *, num_classes: int, small_input: bool, **options: Any) -> nn.Module: ...


_B = TypeVar("_B", bound=Callable[..., nn.Module])

#: Builders by name; :func:`build_model` looks names up here.
ARCHITECTURES: Registry[ArchitectureBuilder] = Registry("architecture")

#: ``"timm:NAME"`` builds timm model NAME.
TIMM_PREFIX = "timm:"

#: Options compaudit sets itself, or that would fetch weights: never taken from a spec.
RESERVED_OPTIONS = frozenset({"num_classes", "pretrained", "weights", "weights_backbone",
                              "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path"})

_KEY = "[model].arch"
_FORMS = ("any torchvision classification model, e.g. mobilenet_v3_small, efficientnet_b0 "
          "(torchvision.models.list_models), 'timm:NAME' (e.g. 'timm:resnet10t'), or "
          "'package.module:callable' (your own code)")
_TIMM_MISSING = (_KEY + ": {arch!r} needs the optional timm extra, which is not installed; "
                 "install it with pip install -e \".[timm]\" (or pip install timm)")


def register_architecture(name: str) -> Callable[[_B], _B]:
    """Add ``builder(*, num_classes, small_input)`` to the registry as ``name`` (decorator).

    Parameters
    ----------
    name
        The name audit specs and :func:`build_model` use.
    """
    def wrap(builder: _B) -> _B:  # keeps the builder's own type for its callers
        ARCHITECTURES.add(name, builder)
        return builder

    return wrap


def list_architectures() -> list[str]:
    """Registered names, sorted (torchvision, timm and user forms are accepted too)."""
    return ARCHITECTURES.names()


def _torchvision_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def architecture_source(arch: str, *, search_path: str | Path | None = None) -> Path | None:
    """The file of a ``"package.module:callable"`` architecture's module (``None`` for
    registered, torchvision and timm names), so a stage cache can see the user's code
    change. Only that module's file counts, not modules it imports."""
    source = getattr(resolve_architecture(arch, search_path=search_path), "source_file", None)
    return Path(source) if source else None


def architecture_exists(arch: str, *, search_path: str | Path | None = None) -> bool:
    """Whether :func:`build_model` knows ``arch`` (see :func:`resolve_architecture`).

    For ``"package.module:callable"`` this imports the user's module.
    """
    try:
        resolve_architecture(arch, search_path=search_path)
    except AuditInputError:
        return False
    return True


def resolve_architecture(arch: str, *,
                         search_path: str | Path | None = None) -> ArchitectureBuilder:
    """The builder of ``arch``, without building a model.

    Parameters
    ----------
    arch
        A registered name, a torchvision model name, ``"timm:NAME"`` or
        ``"package.module:callable"`` (module docstring).
    search_path
        A folder put first on ``sys.path`` while a ``"package.module:callable"``
        module is imported (and removed after); ignored by the other forms.

    Raises
    ------
    AuditInputError
        One line naming ``[model].arch``: an unknown name (with the valid ones or close
        matches), timm not installed, or a user module that cannot be imported or has
        no such callable (with the underlying error).
    """
    if not isinstance(arch, str) or not arch:
        raise AuditInputError(f"{_KEY}: got {arch!r}; expected a non-empty string")
    if arch.startswith(TIMM_PREFIX):
        return _timm_builder(arch)
    if ":" in arch:
        return _user_builder(arch, search_path)
    if arch in ARCHITECTURES:
        return ARCHITECTURES.get(arch)
    if arch in _torchvision_models():
        return _torchvision_builder(arch)
    raise AuditInputError(f"{_KEY}: unknown architecture {arch!r}; valid: "
                          f"{', '.join(list_architectures())}, or {_FORMS}")


def _torchvision_builder(arch: str) -> ArchitectureBuilder:
    def torchvision_model(*, num_classes: int, small_input: bool, **options: Any) -> nn.Module:
        import torchvision

        # small_input changes only the registered ResNets' stem; torchvision's own
        # models are built as published (no weights: those come from files).
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
                                            **options)

    return torchvision_model


def _timm_builder(arch: str) -> ArchitectureBuilder:
    name = arch[len(TIMM_PREFIX):]
    try:
        import timm
    except ImportError:
        raise AuditInputError(_TIMM_MISSING.format(arch=arch)) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = (f"close matches: {', '.join(TIMM_PREFIX + c for c in close)}" if close
                else "no close match")
        raise AuditInputError(f"{_KEY}: unknown timm model {name!r} in {arch!r}; {hint} "
                              "(all names: timm.list_models())")

    def timm_model(*, num_classes: int, small_input: bool, **options: Any) -> nn.Module:
        # pretrained=False always: compaudit never downloads; weights come from files.
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **options)

    return timm_model


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextmanager
def _on_sys_path(folder: str | Path | None) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the duration; remove it after."""
    if folder is None:
        yield
        return
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        # Remove our entry only: the imported code may have changed sys.path on purpose.
        try:
            sys.path.remove(entry)
        except ValueError:
            pass


def _user_builder(arch: str, search_path: str | Path | None) -> ArchitectureBuilder:
    module_name, _, attr = arch.partition(":")
    parts = module_name.split(".") + attr.split(".")
    if not all(p.isidentifier() for p in parts):
        raise AuditInputError(f"{_KEY}: got {arch!r}; expected 'package.module:callable' "
                              "(dotted Python names, e.g. 'mymodels:factory'), a registered "
                              f"name, or {_FORMS}")
    where = f"sys.path and {search_path}" if search_path is not None else "sys.path"
    with _on_sys_path(search_path):
        # A folder created after the last import would be missed by cached finders.
        importlib.invalidate_caches()
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name or module_name.startswith(f"{err.name}."):
                raise AuditInputError(f"{_KEY}: {arch!r}: no module {module_name!r} in "
                                      f"{where} ({_one_line(err)})") from err
            raise AuditInputError(f"{_KEY}: {arch!r}: importing module {module_name!r} "
                                  f"failed: {_one_line(err)}") from err
        except Exception as err:  # the user's module ran and raised
            raise AuditInputError(f"{_KEY}: {arch!r}: importing module {module_name!r} "
                                  f"failed: {_one_line(err)}") from err
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise AuditInputError(f"{_KEY}: {arch!r}: module {module_name!r} "
                                  f"({getattr(module, '__file__', None)}) has no attribute "
                                  f"{attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise AuditInputError(f"{_KEY}: {arch!r}: {module_name}.{attr} is a "
                              f"{type(factory).__name__}, not a callable; expected a function "
                              "or class taking num_classes= and returning an nn.Module")

    def user_model(*, num_classes: int, small_input: bool, **options: Any) -> nn.Module:
        # small_input is compaudit's stem switch for its own ResNets: not passed on.
        try:
            model = factory(num_classes=num_classes, **options)
        except Exception as err:  # the user's factory raised
            raise AuditInputError(f"{_KEY}: {arch!r}: {module_name}.{attr}(num_classes="
                                  f"{num_classes}, **[model].options) raised "
                                  f"{_one_line(err)}") from err
        if not isinstance(model, nn.Module):
            raise AuditInputError(f"{_KEY}: {arch!r}: {module_name}.{attr} returned a "
                                  f"{type(model).__name__}; expected a torch.nn.Module")
        return model

    # Caches key on this file's contents: editing the user's code retrains (see
    # architecture_source). mypy does not follow attributes set on a function.
    user_model.source_file = getattr(module, "__file__", None)  # type: ignore[attr-defined]
    return user_model


def _check_options(arch: str, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise AuditInputError(f"[model].options: got {options!r}; expected a table of "
                              "keyword arguments")
    if options and arch in ARCHITECTURES:
        raise AuditInputError(f"[model].options: got {sorted(options)}; the registered "
                              f"architecture {arch!r} takes none (options apply to "
                              "torchvision, 'timm:NAME' and 'package.module:callable')")
    reserved = sorted(RESERVED_OPTIONS & set(options))
    if reserved:
        raise AuditInputError(f"[model].options: {', '.join(reserved)} may not be set there; "
                              "num_classes comes from [model].num_classes and weights from "
                              "[model].weights or [model].pretrained (never downloaded)")
    return dict(options)


def build_model(arch: str, *, num_classes: int, small_input: bool = False,
                options: Mapping[str, Any] | None = None,
                search_path: str | Path | None = None) -> nn.Module:
    """Build a freshly initialised model of architecture ``arch``.

    Parameters
    ----------
    arch
        A registered name (:func:`list_architectures`), a torchvision classification
        model name, ``"timm:NAME"`` or ``"package.module:callable"`` (your own code,
        imported and run; module docstring).
    num_classes
        Width of the output layer (2 for binary tasks).
    small_input
        For the registered ResNets: replace the 7x7 stride-2 stem and its max-pool by a
        3x3 stride-1 convolution, as is usual for 32 px images (CIFAR). Ignored by
        ``small_cnn``, which is built for small images already, and by the other forms.
    options
        Extra keyword arguments for a torchvision, timm or user builder
        (``[model].options``); registered architectures take none, and the keys in
        :data:`RESERVED_OPTIONS` are refused.
    search_path
        Folder to import a ``"package.module:callable"`` module from (besides
        ``sys.path``), e.g. the spec's folder; pass an absolute path when worker
        processes may start elsewhere.

    Returns
    -------
    nn.Module
        The model, in training mode, on the CPU.
    """
    builder = resolve_architecture(arch, search_path=search_path)
    # bool is an int subclass; num_classes=True is a mistake, not 1 class.
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise AuditInputError(
            f"num_classes must be a positive integer, got {num_classes!r}; "
            "use 2 for a binary task such as Blond_Hair"
        )
    kwargs = _check_options(arch, options)
    try:
        return builder(num_classes=num_classes, small_input=bool(small_input), **kwargs)
    except TypeError as err:
        if not kwargs:
            raise
        # torchvision's and timm's builders refuse unknown keyword arguments this way.
        raise AuditInputError(f"[model].options: {arch!r} does not accept "
                              f"{', '.join(sorted(kwargs))} ({_one_line(err)})") from err


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

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_architecture("small_cnn")
def _small_cnn(*, num_classes: int, small_input: bool) -> nn.Module:
    return SmallCNN(num_classes=num_classes)
