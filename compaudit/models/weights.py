"""Loading weights the user already has: state-dict files, cached torchvision weights.

Nothing here downloads. Files are read with ``torch.load(weights_only=True)``, which
runs no code from the file; a whole pickled model is refused with the fix (save
``model.state_dict()`` instead). torchvision weight enums such as
``ResNet50_Weights.IMAGENET1K_V2`` are read only from the local torch hub cache, and a
missing file is reported with the exact path to put it at. Compressed models from
other toolchains come in as ONNX (:class:`~compaudit.models.onnx_runtime.OnnxModule`).

Example (not run here: it needs files on disk)::

    model = build_model("resnet50", num_classes=1000)
    load_weights(model, source="ResNet50_Weights.IMAGENET1K_V2")
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_weight

from compaudit._atomic import atomic_path
from compaudit.errors import AuditInputError
from compaudit.models.onnx_runtime import OnnxModule, load_onnx

__all__ = [
    "read_state_dict",
    "save_state_dict",
    "load_weights",
    "check_compatible",
    "torchvision_weights_path",
    "read_torchvision_weights",
    "OnnxModule",
    "load_onnx",
    "WHOLE_MODEL_MESSAGE",
]

#: How many offending keys a mismatch message lists.
SHOW = 5
#: Keys under which training checkpoints commonly keep the model's state dict.
CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")
# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# BatchNorm's step counter, absent from checkpoints of torch < 0.4.1.
_BN_COUNTER = "num_batches_tracked"
# Suffixes of torch.nn.utils.prune's reparametrisation (weight -> weight_orig, weight_mask).
_ORIG, _MASK = "_orig", "_mask"
_ENUM_NAME = re.compile(r"^[A-Za-z0-9]+_Weights\.[A-Za-z0-9_]+$")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: name-<sha256 prefix>.pth

WHOLE_MODEL_MESSAGE = (
    "{path}: holds a pickled {found} (a whole model or other Python objects), which "
    "compaudit does not load because unpickling can run arbitrary code; save the weights "
    "only with torch.save(model.state_dict(), path) and pass that file"
)
# How torch's weights-only unpickler names the global it refused: "Unsupported global:
# GLOBAL x.Y" for a class, "unsupported GLOBAL posix.system whose module posix is
# blocked" for a function of a blocked module (os, subprocess, ...).
_REFUSED_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")

#: A path, the name of a torchvision weights enum, or the enum member itself.
WeightsSource = Any


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file without executing code from it.

    Plain state dicts and checkpoint dicts holding one under ``state_dict``, ``model``
    or ``model_state_dict`` are accepted; ``module.`` / ``_orig_mod.`` prefixes added by
    DataParallel or ``torch.compile`` are removed. A ``torch.nn.utils.prune``
    reparametrisation saved without ``prune.remove`` (``<name>_orig`` and
    ``<name>_mask``) is folded into ``<name> = <name>_orig * <name>_mask``, the tensor
    the pruned module computes, so the file loads into the unpruned architecture.

    Parameters
    ----------
    path
        A file written by ``torch.save``.

    Returns
    -------
    dict
        Parameter and buffer names to CPU tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{path}: weights file not found; put the file there or fix the path")
    if path.suffix.lower() == ".onnx":
        raise AuditInputError(f"{path}: is an ONNX model, not a state dict; load it with "
                              "compaudit.models.weights.load_onnx")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused:  # a readable pickle, but of objects other than tensors
            raise AuditInputError(
                WHOLE_MODEL_MESSAGE.format(path=path, found=refused.group(1))) from err
        raise _unreadable(path, "corrupt, or not written by torch.save") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        lines = str(err).strip().splitlines()
        why = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        raise _unreadable(path, why) from err
    return _fold_pruning(path, _unwrap(path, obj))


def _unreadable(path: Path, why: str) -> AuditInputError:
    return AuditInputError(
        f"{path}: not a readable torch weights file ({why}); "
        "expected the output of torch.save(model.state_dict(), path)"
    )


def _unwrap(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise AuditInputError(
            f"{path}: expected a state dict (parameter name -> tensor), found "
            f"{type(obj).__name__}; save the weights with torch.save(model.state_dict(), path)"
        )
    if not _all_tensors(obj):
        bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise AuditInputError(
            f"{path}: expected a state dict of tensors, but keys {_few(bad)} are not tensors "
            f"and none of {', '.join(CHECKPOINT_KEYS)} holds a state dict; save "
            "model.state_dict() or a checkpoint dict with a 'state_dict' key"
        )
    state = dict(obj)
    for prefix in _WRAPPER_PREFIXES:
        if all(str(k).startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _fold_pruning(path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each ``<name>_orig`` / ``<name>_mask`` pair by ``<name>``.

    ``torch.nn.utils.prune`` keeps the dense tensor as a parameter ``<name>_orig`` and
    the keep-mask as a buffer ``<name>_mask``, and computes ``<name>_orig *
    <name>_mask`` in a forward pre-hook; the product is what the pruned model runs
    (and what ``prune.remove`` would have stored). An ``_orig`` without its ``_mask``
    (or the reverse) is left alone, so :func:`check_compatible` reports it.
    """
    pairs = [k[:-len(_ORIG)] for k in state
             if k.endswith(_ORIG) and k[:-len(_ORIG)] + _MASK in state]
    clash = [name for name in pairs if name in state]
    if clash:
        raise AuditInputError(
            f"{path}: holds both a pruned tensor and its prune reparametrisation for "
            f"{_few(clash)} (e.g. {clash[0]} and {clash[0]}{_ORIG}/{clash[0]}{_MASK}); "
            "expected one of the two: save the pruned model's state_dict() once")
    for name in pairs:
        orig, mask = state.pop(name + _ORIG), state.pop(name + _MASK)
        if orig.shape != mask.shape:
            raise AuditInputError(
                f"{path}: {name}{_MASK} has shape {tuple(mask.shape)} but {name}{_ORIG} has "
                f"{tuple(orig.shape)}; a torch.nn.utils.prune mask has the shape of the tensor "
                "it prunes")
        state[name] = (orig * mask).to(orig.dtype)
    return state


def _all_tensors(obj: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def _few(items: list[str]) -> str:
    more = f" (and {len(items) - SHOW} more)" if len(items) > SHOW else ""
    return ", ".join(items[:SHOW]) + more


def save_state_dict(state: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a model's (or a state dict's) tensors to ``path`` atomically, on the CPU.

    Parameters
    ----------
    state
        A model or its ``state_dict()``.
    path
        Target file; its folder is created.
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    tensors = {k: v.detach().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)
    return Path(path)


def _weights_enum(source: Any) -> Any | None:
    """Return the torchvision weights enum ``source`` names, or ``None`` for a file."""
    if isinstance(source, WeightsEnum):
        return source
    if isinstance(source, str) and _ENUM_NAME.match(source) and not Path(source).exists():
        try:
            return get_weight(source)
        except (ValueError, KeyError, AttributeError) as err:
            raise AuditInputError(
                f"unknown torchvision weights {source!r}; expected a name such as "
                "'ResNet50_Weights.IMAGENET1K_V2' (see torchvision.models.list_models)"
            ) from err
    return None


def torchvision_weights_path(weights: Any) -> Path:
    """Where torch hub caches the file of a torchvision weights enum (nothing is fetched).

    The path is ``torch.hub.get_dir()/checkpoints/<file name of weights.url>``, the one
    ``torch.hub.load_state_dict_from_url`` uses, so files fetched by torchvision before
    are found.
    """
    enum = _weights_enum(weights) or weights
    filename = os.path.basename(urlparse(enum.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def read_torchvision_weights(weights: Any, *, check_hash: bool = True) -> dict[str, torch.Tensor]:
    """Read the state dict of a torchvision weights enum from the local torch hub cache.

    Parameters
    ----------
    weights
        A ``WeightsEnum`` member or its name, e.g. ``"ResNet50_Weights.IMAGENET1K_V2"``.
    check_hash
        Compare the file's SHA-256 with the prefix in its name, as torch hub does.
    """
    enum = _weights_enum(weights)
    if enum is None:
        raise AuditInputError(f"{weights!r} is not a torchvision weights enum")
    path = torchvision_weights_path(enum)
    if not path.is_file():
        raise AuditInputError(
            f"torchvision weights {enum} are not in the local cache: compaudit never "
            f"downloads; put the file {enum.url} at {path} (or set TORCH_HOME to the "
            "folder whose hub/checkpoints holds it)"
        )
    match = _HASH_IN_NAME.search(path.name)
    if check_hash and match:
        digest = _sha256(path)
        if not digest.startswith(match.group(1)):
            raise AuditInputError(
                f"{path}: SHA-256 {digest[:len(match.group(1))]}... does not match the "
                f"prefix {match.group(1)} in its name; the file is corrupt or not {enum}, "
                f"replace it with a fresh copy of {enum.url}"
            )
    return read_state_dict(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights(model: nn.Module, *, source: WeightsSource, strict: bool = True) -> nn.Module:
    """Load weights from a file or a cached torchvision enum into ``model``, in place.

    Parameters
    ----------
    model
        A model built with the same architecture the weights were saved from.
    source
        A state-dict file path, a torchvision ``WeightsEnum`` or its name.
    strict
        Refuse missing or unexpected keys (shape mismatches are always refused).

    Returns
    -------
    nn.Module
        ``model``, for chaining.
    """
    enum = _weights_enum(source)
    state = read_torchvision_weights(enum) if enum is not None else read_state_dict(source)
    check_compatible(model, state, source=str(enum or source), strict=strict)
    model.load_state_dict(state, strict=strict)
    return model


def check_compatible(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                     strict: bool = True) -> None:
    """Raise one message listing missing, unexpected and mis-shaped keys (first few each).

    Accepts what torch's ``load_state_dict`` accepts from a file: a checkpoint without
    BatchNorm ``num_batches_tracked`` buffers (torch < 0.4.1) loads, the counters
    filled by torch.
    """
    expected = model.state_dict()
    problems: list[str] = []
    # BatchNorm's step counter came in torch 0.4.1; for checkpoints written before it
    # (no version in their metadata, as every state dict read here) torch's own
    # load_state_dict fills the counter, so its absence is no mismatch.
    missing = [k for k in expected if k not in state
               and k.rpartition(".")[2] != _BN_COUNTER]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if strict and missing:
        problems.append(f"missing keys {_few(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_few(shapes)}")
    if problems:
        raise AuditInputError(
            f"{source}: weights do not fit the {type(model).__name__} model: "
            f"{'; '.join(problems)}; build the model with the architecture, num_classes and "
            "small_input the weights were trained with"
        )
