"""Reduced precision and int8 weights simulated with core torch ops, on any device.

Transforms that modify ``model`` in place (callers pass a copy):

* :func:`round_float_precision` / :func:`cast_float_precision`: float16 or bfloat16.
  Both first fold every eval-mode BatchNorm into the convolution that feeds it
  (:mod:`compaudit.compress.fold`, in float32), as ONNX export and every float16/int8
  runtime do, so the folded weight is what is rounded and a Conv-BN-ReLU block rounds
  once; the :class:`~compaudit.compress.fold.FoldReport` is kept on the root as
  :data:`FOLDED_BATCHNORM_ATTR`. *Native* casts parameters and buffers and runs every
  op in that dtype. *Simulated* keeps float32 kernels but rounds parameters, buffers,
  the input and the output of every leaf module through the dtype
  (``x.to(dtype).to(float32)``); it differs from native execution only inside an op
  (accumulation precision), and it exists because CPU half-precision kernels, though
  present in torch 2.15, run 10-15x slower than float32 on CPUs without native
  FP16/BF16 arithmetic. It rounds a module's own output in place (one half-size
  temporary per layer), does not hook the Identity left by a folded BatchNorm, and
  skips the ReLU/ReLU6/pooling that an ``nn.Sequential`` applies to a rounded output
  (their values are already rounded): the same logits bit for bit as rounding every
  leaf's output of the folded model. Forward CPU time against dense, 224 px, one
  thread (``benchmarks/bench_quant_sim.py``): ``mobilenet_v2`` 1.74x rounding every
  leaf, 1.50x with these shortcuts, 1.17x with BatchNorm folded; ``resnet50`` 1.26x
  -> 1.15x; the float16 conversions themselves are the rest.
* :func:`quantize_weights_int8`: int8 weights (per output channel, symmetric by
  default) of every conv and linear layer, stored dequantized; activations stay float.

Int8 static quantization is in :mod:`compaudit.compress.quant_static`.

Quantized layers carry their integer format for :mod:`compaudit.compress.footprint`:
buffers ``weight_scale`` and ``weight_zero_point`` and the attribute named by
:data:`WEIGHT_FORMAT_ATTR`. Rounding runs in forward (pre-)hooks that are module-level
functions (with ``functools.partial``), so transformed models deep-copy and pickle.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from compaudit.compress.fold import fold_batchnorm_
from compaudit.compress.qparams import dequantize, quantize, weight_qparams

__all__ = [
    "WEIGHT_FORMAT_ATTR",
    "FLOAT_STORAGE_ATTR",
    "FOLDED_BATCHNORM_ATTR",
    "QUANTIZABLE",
    "round_float_precision",
    "cast_float_precision",
    "quantize_weights_int8",
    "set_weight_format",
]

#: Attribute of a quantized layer: ``{"dtype": "int8", "axis": 0 | None, "symmetric": bool}``.
WEIGHT_FORMAT_ATTR = "compaudit_weight_format"
#: Attribute of a reduced-precision model's root: ``"float16"`` or ``"bfloat16"``.
FLOAT_STORAGE_ATTR = "compaudit_float_storage"
#: Attribute of a float16/bfloat16 model's root: the :class:`~compaudit.compress.fold.FoldReport`.
FOLDED_BATCHNORM_ATTR = "compaudit_folded_batchnorm"
#: Layers whose weights are quantized.
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# --- float16 / bfloat16 -----------------------------------------------------------------


def _round_tensor(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.to(dtype).to(x.dtype)
    if isinstance(x, tuple):
        return tuple(_round_tensor(v, dtype) for v in x)
    if isinstance(x, list):
        return [_round_tensor(v, dtype) for v in x]
    return x


def _round_inputs_hook(dtype: torch.dtype, module: nn.Module, args: tuple) -> tuple:
    return _round_tensor(args, dtype)


def _storages(values: Any) -> set[int]:
    if isinstance(values, torch.Tensor):
        return {values.untyped_storage().data_ptr()}
    if isinstance(values, (tuple, list)):
        return set().union(*(_storages(v) for v in values))
    return set()


class _LastRounded:
    """The module whose output the last rounding hook returned, and that tensor (never
    copied or pickled with the model; cleared after each forward), so a module right
    after it in an ``nn.Sequential`` can tell that its input is that rounded output."""

    __slots__ = ("module", "tensor")

    def __init__(self) -> None:
        self.module: nn.Module | None = None
        self.tensor: torch.Tensor | None = None

    def __reduce__(self) -> tuple:
        return (_LastRounded, ())


def _keeps_rounding(module: nn.Module, dtype: torch.dtype) -> bool:
    """Whether every output value of ``module`` is an input value or a constant exactly
    representable in ``dtype`` (so a rounded input gives a rounded output)."""
    if isinstance(module, (nn.ReLU, nn.Identity, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d,
                           nn.MaxPool3d)):
        return True
    if isinstance(module, nn.Hardtanh):  # ReLU6 too
        bounds = torch.tensor([module.min_val, module.max_val])
        return bool(torch.equal(bounds.to(dtype).to(bounds.dtype), bounds))
    return isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)) \
        and not module.training


def _after_rounded_leaf(model: nn.Module, dtype: torch.dtype,
                        folded: set[nn.Module]) -> dict[nn.Module, list]:
    """Leaves that an ``nn.Sequential`` calls directly on another leaf's output and that
    keep rounding (the ReLU6 after every folded BatchNorm of MobileNetV2), with the
    leaves they follow: their output needs no rounding when their input is that leaf's
    rounded output (checked when called: the module may be called elsewhere too).
    ``folded`` (the Identity left by a folded BatchNorm, not hooked) is looked through."""
    found: dict[nn.Module, list] = {}
    for seq in model.modules():
        if isinstance(seq, nn.Sequential) and type(seq).forward is nn.Sequential.forward:
            children = [c for c in seq.children() if c not in folded]
            for prev, cur in zip(children, children[1:]):
                if not list(prev.children()) and not list(cur.children()) \
                        and _keeps_rounding(cur, dtype):
                    found.setdefault(cur, []).append(prev)
    return found


def _skip_if_rounded_hook(dtype: torch.dtype, last: _LastRounded, after: tuple,
                          module: nn.Module, args: tuple, output: Any) -> Any:
    if args and args[0] is last.tensor and any(last.module is m for m in after) and \
            (output is args[0] or not getattr(module, "inplace", False)):
        last.module, last.tensor = module, output  # already rounded values
        return output
    return _round_output_hook(dtype, module, args, output, last=last)


def _clear_hook(last: _LastRounded, module: nn.Module, args: tuple, output: Any) -> None:
    last.module = last.tensor = None


def _round_output_hook(dtype: torch.dtype, module: nn.Module, args: tuple, output: Any,
                       last: _LastRounded | None = None) -> Any:
    out = _round_output(dtype, module, args, output)
    if last is not None:
        last.module, last.tensor = (module, out) if isinstance(out, torch.Tensor) \
            else (None, None)
    return out


def _round_output(dtype: torch.dtype, module: nn.Module, args: tuple, output: Any) -> Any:
    # Rounded in place when the output is the module's own: a new tensor, or its input
    # changed in place by an in-place module (ReLU(inplace=True)), whose input is its
    # output by contract. One half-size temporary instead of two full-size tensors.
    # Other outputs that share memory with an input (views, Identity) are rounded into
    # a new tensor: the input may be read elsewhere.
    if isinstance(output, torch.Tensor) and output.is_floating_point() \
            and output.dtype != dtype and output.is_contiguous() \
            and _owns(module, args, output):
        return output.copy_(output.to(dtype))
    return _round_tensor(output, dtype)


def _owns(module: nn.Module, args: tuple, output: torch.Tensor) -> bool:
    if getattr(module, "inplace", False) is True and args and output is args[0]:
        return True
    try:
        return output.untyped_storage().data_ptr() not in _storages(args)
    except (NotImplementedError, RuntimeError):  # no storage: vmap's batched tensors
        return False


def _cast_inputs_hook(dtype: torch.dtype, module: nn.Module, args: tuple) -> tuple:
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


def _float32_output_hook(module: nn.Module, args: tuple, output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.is_floating_point():
        return output.float()
    return output


def _fold(model: nn.Module, fold_batchnorm: bool) -> set[nn.Module]:
    """Fold BatchNorm (:mod:`compaudit.compress.fold`), record the report on the root and
    return the Identity modules left in place of the folded BatchNorms."""
    if not fold_batchnorm:
        return set()
    report = fold_batchnorm_(model)
    setattr(model, FOLDED_BATCHNORM_ATTR, report)
    return {model.get_submodule(norm) for _, norm in report.pairs}


def round_float_precision(model: nn.Module, dtype: torch.dtype, *,
                          fold_batchnorm: bool = True) -> nn.Module:
    """Simulate ``dtype`` in float32: fold BatchNorm, round weights, buffers and every
    leaf's output.

    ``fold_batchnorm=False`` keeps BatchNorm as a layer of its own (rounded weights,
    buffers and output), as no deployment runs it; for comparisons only.
    Returns ``model`` (modified in place) for chaining.
    """
    folded = _fold(model, fold_batchnorm)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(t.to(dtype).to(t.dtype))
    model.register_forward_pre_hook(functools.partial(_round_inputs_hook, dtype))
    last = _LastRounded()
    skippable = _after_rounded_leaf(model, dtype, folded)
    for module in model.modules():
        if module in folded:
            continue  # an Identity on its conv's output, which is rounded
        if module in skippable:
            module.register_forward_hook(functools.partial(
                _skip_if_rounded_hook, dtype, last, tuple(skippable[module])))
        elif not list(module.children()):
            module.register_forward_hook(functools.partial(_round_output_hook, dtype,
                                                           last=last))
    model.register_forward_hook(functools.partial(_clear_hook, last))
    setattr(model, FLOAT_STORAGE_ATTR, str(dtype).removeprefix("torch."))
    return model


def cast_float_precision(model: nn.Module, dtype: torch.dtype, *,
                         fold_batchnorm: bool = True) -> nn.Module:
    """Run natively in ``dtype``: fold BatchNorm (in float32), cast parameters and
    buffers; float32 in, float32 logits out."""
    _fold(model, fold_batchnorm)
    model.to(dtype)
    model.register_forward_pre_hook(functools.partial(_cast_inputs_hook, dtype))
    model.register_forward_hook(_float32_output_hook)
    setattr(model, FLOAT_STORAGE_ATTR, str(dtype).removeprefix("torch."))
    return model


# --- int8 weights -------------------------------------------------------------------------


def set_weight_format(module: nn.Module, scale: torch.Tensor, zero_point: torch.Tensor,
                      *, axis: int | None, symmetric: bool) -> None:
    """Record that ``module.weight`` holds int8 values: scale, zero point and layout."""
    for name, value in (("weight_scale", scale), ("weight_zero_point", zero_point)):
        if name in module._buffers:
            module._buffers[name] = value
        else:
            module.register_buffer(name, value)
    setattr(module, WEIGHT_FORMAT_ATTR, {"dtype": "int8", "axis": axis, "symmetric": symmetric})


@torch.no_grad()
def _quantize_weight(module: nn.Module, *, per_channel: bool, symmetric: bool) -> None:
    w = module.get_parameter("weight")
    axis = 0 if per_channel else None
    scale, zp = weight_qparams(w, per_channel=per_channel, symmetric=symmetric, axis=0)
    q = quantize(w, scale, zp, dtype="int8", axis=axis, symmetric=symmetric)
    w.copy_(dequantize(q, scale, zp, axis=axis).to(w.dtype))
    set_weight_format(module, scale.to(w.device), zp.to(w.device), axis=axis,
                       symmetric=symmetric)


def quantize_weights_int8(model: nn.Module, *, per_channel: bool = True,
                          symmetric: bool = True) -> list[str]:
    """Replace the weight of every conv/linear layer by its int8 round trip, in place.

    Parameters
    ----------
    model
        The model to quantize (modified).
    per_channel
        One scale per output channel (axis 0), else one per tensor.
    symmetric
        Symmetric range ``[-127, 127]`` with zero point 0, else affine ``[-128, 127]``.

    Returns
    -------
    list of str
        Names of the quantized layers.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, QUANTIZABLE):
            _quantize_weight(module, per_channel=per_channel, symmetric=symmetric)
            names.append(name)
    return names
