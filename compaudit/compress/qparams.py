"""Integer quantization arithmetic with ONNX Runtime's conventions, in plain torch ops.

Quantization maps a real value ``r`` to an integer ``q = clamp(round(r / s) + z, qmin,
qmax)`` and back with ``r' = (q - z) * s`` (scale ``s``, zero point ``z``). The rules
here are copied from ``onnxruntime.quantization`` (``quant_utils.compute_scale_zp``,
``quantize_nparray``, ``base_quantizer.quantize_bias_static_impl``) and from the ONNX
``QuantizeLinear`` operator, so a model simulated here and the same model quantized by
ONNX Runtime round identically:

* ``round`` is round half to even (``torch.round``, ``numpy.round``, ``nearbyint``).
* The range is widened to include zero: ``rmin = min(rmin, 0)``, ``rmax = max(rmax, 0)``.
* Symmetric ranges use ``[-absmax, absmax]`` and the symmetric integer range
  (int8: [-127, 127], so ``s = max|w| / 127``), zero point ``round((qmin + qmax) / 2)``.
* Asymmetric: ``s = (rmax - rmin) / (qmax - qmin)`` and ``z = round(qmin - rmin / s)``,
  computed in float64, then ``s`` is stored as float32.
* A range of width 0 gets ``s = 1, z = 0``.
* Division ``r / s`` happens in float32, as ONNX Runtime does.
* Biases become int32 at scale ``s_input * s_weight`` (float32 product), zero point 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "QDType",
    "QRange",
    "qrange",
    "compute_qparams",
    "weight_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "quantize_bias",
]

QDType = Literal["int8", "uint8"]

_FLOAT32_TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class QRange:
    """The integers a quantized tensor may hold: ``[qmin, qmax]``."""

    qmin: int
    qmax: int


def qrange(dtype: QDType, *, symmetric: bool = False) -> QRange:
    """Integer range of ``dtype``; symmetric int8 drops -128 so that 0 sits in the middle.

    Examples
    --------
    >>> qrange("int8", symmetric=True)
    QRange(qmin=-127, qmax=127)
    >>> qrange("uint8")
    QRange(qmin=0, qmax=255)
    """
    if dtype == "int8":
        return QRange(-127, 127) if symmetric else QRange(-128, 127)
    if dtype == "uint8":
        return QRange(0, 255)
    raise ValueError(f"quantized dtype must be 'int8' or 'uint8', got {dtype!r}")


def compute_qparams(
    rmin: torch.Tensor, rmax: torch.Tensor, *, dtype: QDType, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point covering ``[rmin, rmax]`` (element-wise for per-channel ranges).

    Parameters
    ----------
    rmin, rmax
        Observed minimum and maximum (float32 tensors of the same shape).
    dtype
        ``"int8"`` or ``"uint8"``.
    symmetric
        Use ``[-absmax, absmax]`` and the symmetric integer range.

    Returns
    -------
    scale, zero_point
        float32 scales and int64 zero points, shaped like ``rmin``.

    Examples
    --------
    >>> s, z = compute_qparams(torch.tensor(-1.0), torch.tensor(3.0), dtype="uint8",
    ...                        symmetric=False)
    >>> round(float(s) * 255, 4), int(z)
    (4.0, 64)
    """
    rng = qrange(dtype, symmetric=symmetric)
    rmin = torch.as_tensor(rmin, dtype=torch.float32)
    rmax = torch.as_tensor(rmax, dtype=torch.float32)
    rmin = torch.minimum(rmin, torch.zeros_like(rmin))
    rmax = torch.maximum(rmax, torch.zeros_like(rmax))
    if symmetric:
        absmax = torch.maximum(rmin.abs(), rmax.abs())
        rmin, rmax = -absmax, absmax
    scale64 = (rmax.double() - rmin.double()) / float(rng.qmax - rng.qmin)
    if symmetric:
        # ORT: round((qmin + qmax) / 2), independent of the scale (0 for int8, 128 for uint8).
        zp = torch.round(torch.full_like(scale64, (rng.qmin + rng.qmax) / 2.0))
    else:
        zp = torch.round(rng.qmin - rmin.double() / torch.where(scale64 > 0, scale64, 1.0))
    degenerate = scale64 < _FLOAT32_TINY
    scale = torch.where(degenerate, torch.ones_like(scale64), scale64).float()
    zero_point = torch.where(degenerate, torch.zeros_like(zp), zp).long()
    return scale, zero_point


def weight_qparams(
    weight: torch.Tensor,
    *,
    per_channel: bool = True,
    symmetric: bool = True,
    axis: int = 0,
    dtype: QDType = "int8",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of a weight tensor, per output channel (``axis``) or per tensor.

    With the defaults the scale of channel ``c`` is ``max|w_c| / 127`` and the zero point
    0. Returned tensors have shape ``(weight.shape[axis],)`` per channel, ``()`` otherwise.

    Examples
    --------
    >>> w = torch.tensor([[0.5, -1.27], [0.0, 0.254]])
    >>> s, z = weight_qparams(w)
    >>> [round(float(v), 6) for v in s], z.tolist()
    ([0.01, 0.002], [0, 0])
    """
    w = weight.detach().float()
    if per_channel:
        dims = [d for d in range(w.ndim) if d != axis % w.ndim]
        rmin = w.amin(dim=dims) if dims else w.clone()
        rmax = w.amax(dim=dims) if dims else w.clone()
    else:
        rmin, rmax = w.min(), w.max()
    return compute_qparams(rmin, rmax, dtype=dtype, symmetric=symmetric)


def _broadcast(t: torch.Tensor, like: torch.Tensor, axis: int | None) -> torch.Tensor:
    t = t.to(like.device)
    if axis is None or t.ndim == 0:
        return t
    shape = [1] * like.ndim
    shape[axis % like.ndim] = -1
    return t.reshape(shape)


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    *,
    dtype: QDType,
    axis: int | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """Integers ``clamp(round(x / scale) + zero_point, qmin, qmax)`` as an int64 tensor.

    ``axis`` names the channel dimension of per-channel ``scale``/``zero_point``.
    ``symmetric`` clamps int8 to [-127, 127] (ORT's symmetric weight range).
    """
    rng = qrange(dtype, symmetric=symmetric)
    s = _broadcast(scale.float(), x, axis)
    z = _broadcast(zero_point.float(), x, axis)
    q = torch.clamp(torch.round(x.float() / s) + z, rng.qmin, rng.qmax)
    return q.long()


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int | None = None
) -> torch.Tensor:
    """Real values ``(q - zero_point) * scale`` in float32."""
    s = _broadcast(scale.float(), q, axis)
    z = _broadcast(zero_point.float(), q, axis)
    return (q.float() - z) * s


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    *,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """``dequantize(quantize(x))`` in float32 on ``x``'s device: QuantizeLinear + DequantizeLinear.

    ``inplace`` overwrites ``x`` (float32) with the result instead of a new tensor.

    Examples
    --------
    Round half to even: 0.5 and 2.5 go down, 1.5 goes up; 300 is clamped to 255.

    >>> fake_quantize(torch.tensor([0.5, 1.5, 2.5, 300.0]), torch.tensor(1.0), torch.tensor(0),
    ...               qmin=0, qmax=255).tolist()
    [0.0, 2.0, 2.0, 255.0]
    """
    s: float | torch.Tensor
    z: float | torch.Tensor
    if scale.ndim == 0 and zero_point.ndim == 0:
        # Python numbers: clamp with tensor bounds runs 5x slower than with scalars;
        # a 0-dim tensor and its float are the same float32 operand of div and mul.
        s, z = float(scale.float()), float(zero_point.float())
    else:
        s = _broadcast(scale.float(), x, axis)
        z = _broadcast(zero_point.float(), x, axis)
    # One temporary updated in place: 4 passes instead of 6 passes over 5 new tensors
    # (3x faster on a CPU) and the same values: clamp(r + z, qmin, qmax) - z ==
    # clamp(r, qmin - z, qmax - z) for the integer r = round(x / s), exact in float32
    # below 2**24 (larger r clamp either way). Only a zero's sign may differ (round()
    # keeps -0.0 where "- z" gave +0.0; -0.0 == 0.0 in every later sum and product).
    q = x.div_(s) if inplace else torch.div(x.float(), s)
    # torch accepts numbers or tensors here; its overloads take one kind at a time.
    q.round_().clamp_(qmin - z, qmax - z)  # type: ignore[arg-type]
    return q.mul_(s)


def quantize_bias(
    bias: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 bias at scale ``input_scale * weight_scale`` (zero point 0), and that scale.

    As ONNX Runtime: the scale is the float32 product, the division is done in float64
    and the result rounded half to even and clipped to the int32 range.
    """
    bias_scale = (input_scale.float() * weight_scale.float()).to(bias.device)
    q = torch.round(bias.detach().double() / bias_scale.double())
    info = torch.iinfo(torch.int32)
    q = torch.clamp(q, info.min, info.max).to(torch.int32)
    return q, bias_scale
