"""A compressed on-disk representation of a model's tensors, to measure what compression saves.

:func:`encode_state` turns each tensor of a state dict into the smallest of:

* ``dense``: the values in their storage dtype;
* ``bitmask``: one bit per entry (``numpy.packbits``, row-major) plus the non-zero
  values, when that is smaller (density below ``1 - 1 / (8 * itemsize)``);

where the storage dtype is int8 for quantized weights (layers carrying the format
attribute of :mod:`compaudit.compress.quant_sim`; their scales and zero points are
stored beside them), float16/bfloat16 for reduced-precision models, else the tensor's
own dtype. :func:`decode_state` inverts it exactly, so the representation is lossless
for the model as it runs. :func:`write_encoded` stores it in a minimal container (a
JSON header naming each buffer's dtype, shape and offset, then the raw bytes), so the
file size is the representation's size plus a small header; :func:`read_encoded`
reads it back.

:func:`deployable_state` is the other representation :mod:`compaudit.compress.footprint`
measures: the state dict a deployment stores and loads with ``torch.save`` /
``torch.load``, every tensor dense (no bitmasks): int8 weights as int8 with their
float32 scales and int8 zero points, floating tensors of a float16/bfloat16 model in
that dtype, everything else as it is, pruning masks folded into the weights.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compaudit._atomic import atomic_path
from compaudit.compress.quant_sim import FLOAT_STORAGE_ATTR, WEIGHT_FORMAT_ATTR

__all__ = [
    "decode_state",
    "deployable_state",
    "effective_state",
    "encode_state",
    "read_encoded",
    "write_encoded",
]

_MAGIC = b"CAUDENC1"

_FLOAT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def effective_state(model: nn.Module,
                    masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU with pruning masks applied (pruned entries zero)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for name, mask in (masks or {}).items():
        if name not in state:
            raise KeyError(f"mask {name!r} names no parameter of the model")
        state[name] = state[name] * mask.detach().cpu().to(state[name].dtype)
    return state


def _int8_layers(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, Any]]:
    """``{weight key: (scale, zero_point, axis)}`` of layers holding int8 weights."""
    out = {}
    for name, module in model.named_modules():
        fmt = getattr(module, WEIGHT_FORMAT_ATTR, None)
        if fmt and fmt.get("dtype") == "int8":
            key = f"{name}.weight" if name else "weight"
            out[key] = (module.weight_scale.detach().cpu(),
                        module.weight_zero_point.detach().cpu(), fmt.get("axis"))
    return out


def _shape_for(t: torch.Tensor, like: torch.Tensor, axis: Any) -> torch.Tensor:
    if axis is None or t.ndim == 0:
        return t
    shape = [1] * like.ndim
    shape[axis] = -1
    return t.reshape(shape)


def _int8_values(value: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                 axis: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The int8 integers of a quantized (stored dequantized) weight, and its zero point
    broadcast to the weight's rank."""
    zp_b = _shape_for(zero_point, value, axis)
    q = torch.round(value.float() / _shape_for(scale, value, axis)) + zp_b
    return q.to(torch.int8), zp_b.to(torch.int8)


def _float_storage(model: nn.Module) -> torch.dtype | None:
    return _FLOAT_DTYPES.get(str(getattr(model, FLOAT_STORAGE_ATTR, "")))


def _embedded_qparams(int8: Mapping[str, Any]) -> set[str]:
    """State keys of the scales and zero points of int8 weights."""
    return {key[: -len("weight")] + suffix for key in int8
            for suffix in ("weight_scale", "weight_zero_point")}


def _fold_prune_reparametrization(state: dict[str, torch.Tensor]) -> None:
    """``torch.nn.utils.prune`` keeps ``X_orig`` and ``X_mask``; store ``X = X_orig * X_mask``."""
    for key in [k for k in state if k.endswith("_orig")]:
        name = key[: -len("_orig")]
        mask = state.get(name + "_mask")
        if mask is None or name in state:
            continue
        orig = state.pop(key)
        state[name] = orig * mask.to(orig.dtype)
        del state[name + "_mask"]


def deployable_state(model: nn.Module,
                     masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The state dict a deployment of ``model`` stores, every tensor dense.

    * Pruned weights: masks folded in (zeros stored as zeros, no mask tensors; a
      ``torch.nn.utils.prune`` ``weight_orig``/``weight_mask`` pair becomes ``weight``).
    * Int8 weights (layers carrying the format attribute of
      :mod:`compaudit.compress.quant_sim`): int8 integers, with their ``weight_scale``
      (float32) and ``weight_zero_point`` (int8) beside them, as ONNX and torch's
      quantized layers store them; biases, BatchNorm and activation quantizer
      parameters stay as the model holds them (float32; BatchNorm folded where the
      quantization folded it).
    * A float16/bfloat16 model: every floating tensor other than int8 scales in that
      dtype (integer buffers such as ``num_batches_tracked`` unchanged).
    * Everything else as ``effective_state`` gives it.
    """
    state = effective_state(model, masks)
    _fold_prune_reparametrization(state)
    int8 = _int8_layers(model)
    qparams = _embedded_qparams(int8)
    float_dtype = _float_storage(model)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in int8:
            scale, zp, axis = int8[key]
            out[key] = _int8_values(value, scale, zp, axis)[0]
        elif key in qparams:
            out[key] = value.to(torch.int8) if key.endswith("zero_point") else value
        elif float_dtype is not None and value.is_floating_point():
            out[key] = value.to(float_dtype)
        else:
            out[key] = value
    return out


def _pack(values: torch.Tensor, background: torch.Tensor | None = None) -> dict[str, Any]:
    """Dense or bitmask + entries differing from ``background`` (zeros), whichever is smaller."""
    flat = values.reshape(-1)
    nonzero = flat != (0 if background is None else background.expand_as(values).reshape(-1))
    nnz = int(nonzero.sum())
    dense_bytes = flat.numel() * flat.element_size()
    sparse_bytes = (flat.numel() + 7) // 8 + nnz * flat.element_size()
    if sparse_bytes < dense_bytes:
        bits = torch.from_numpy(np.packbits(nonzero.numpy()))
        return {"format": "bitmask", "shape": tuple(values.shape), "bitmask": bits,
                "values": flat[nonzero].clone()}
    return {"format": "dense", "values": values.clone()}


def _unpack(entry: Mapping[str, Any], background: torch.Tensor | None = None) -> torch.Tensor:
    if entry["format"] == "dense":
        return entry["values"]
    shape = tuple(entry["shape"])
    n = int(np.prod(shape)) if shape else 1
    keep = torch.from_numpy(np.unpackbits(entry["bitmask"].numpy(), count=n).astype(bool))
    dtype = entry["values"].dtype
    flat = torch.zeros(n, dtype=dtype) if background is None else \
        background.to(dtype).expand(shape).reshape(-1).clone()
    flat[keep] = entry["values"]
    return flat.reshape(shape)


def encode_state(model: nn.Module,
                 masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict[str, Any]]:
    """Encode every tensor of ``model``'s state (masks applied) in its compressed form.

    Returns
    -------
    dict
        ``{key: entry}``; an entry has ``format`` (``dense``/``bitmask``), ``values``,
        for bitmasks ``shape`` and ``bitmask``, and for int8 weights ``int8`` with
        ``scale``, ``zero_point``, ``axis`` and the original ``dtype``.
    """
    state = effective_state(model, masks)
    int8 = _int8_layers(model)
    float_dtype = _float_storage(model)
    # scales and zero points travel inside their weight's entry
    embedded = _embedded_qparams(int8)
    encoded: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        if key in embedded:
            continue
        if key in int8:
            scale, zp, axis = int8[key]
            q, zp_b = _int8_values(value, scale, zp, axis)
            # a zero weight is stored as the zero point, so sparsity is relative to it
            entry = _pack(q, zp_b)
            entry.update(int8=True, scale=scale, zero_point=zp, axis=axis,
                         dtype=str(value.dtype))
        elif float_dtype is not None and value.is_floating_point():
            entry = _pack(value.to(float_dtype))
            entry["dtype"] = str(value.dtype)
        else:
            entry = _pack(value)
        encoded[key] = entry
    return encoded


def decode_state(encoded: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Invert :func:`encode_state`: tensors in their original dtype and shape."""
    out = {}
    for key, entry in encoded.items():
        if entry.get("int8"):
            shape = entry["shape"] if entry["format"] == "bitmask" else entry["values"].shape
            like = torch.empty(shape, dtype=torch.int8)
            zp = _shape_for(entry["zero_point"], like, entry["axis"])
            q = _unpack(entry, zp.to(torch.int8))
            value = (q.float() - zp.float()) * _shape_for(entry["scale"], like, entry["axis"])
            prefix = key[: -len("weight")]
            out[prefix + "weight_scale"] = entry["scale"]
            out[prefix + "weight_zero_point"] = entry["zero_point"]
        else:
            value = _unpack(entry)
        if "dtype" in entry:
            value = value.to(getattr(torch, entry["dtype"].removeprefix("torch.")))
        out[key] = value
    return out


def write_encoded(path: str | Path, encoded: Mapping[str, Mapping[str, Any]]) -> int:
    """Write an encoded state to ``path`` (atomically); return the file size in bytes.

    Layout: 8 magic bytes, the header length (little-endian uint64), a UTF-8 JSON header
    ``{key: {field: value or {"dtype", "shape", "offset", "nbytes"}}}``, then the raw
    little-endian bytes of every tensor, back to back.
    """
    header: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    offset = 0
    for key, entry in encoded.items():
        fields: dict[str, Any] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                flat = value.detach().cpu().contiguous().reshape(-1)
                raw = flat.view(torch.uint8).numpy().tobytes()
                fields[name] = {"dtype": str(value.dtype).removeprefix("torch."),
                                "shape": list(value.shape), "offset": offset,
                                "nbytes": len(raw)}
                chunks.append(raw)
                offset += len(raw)
            else:
                fields[name] = {"value": list(value) if isinstance(value, tuple) else value}
        header[key] = fields
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(_MAGIC + struct.pack("<Q", len(head)) + head)
            for raw in chunks:
                f.write(raw)
    return Path(path).stat().st_size


def read_encoded(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a file written by :func:`write_encoded` back into an encoded state."""
    data = Path(path).read_bytes()
    if data[:8] != _MAGIC:
        raise ValueError(f"{path}: not a compaudit encoded-state file (bad magic bytes)")
    (n_head,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + n_head].decode("utf-8"))
    body = memoryview(data)[16 + n_head:]
    out: dict[str, dict[str, Any]] = {}
    for key, fields in header.items():
        entry: dict[str, Any] = {}
        for name, spec in fields.items():
            if "value" in spec:
                entry[name] = spec["value"]
                continue
            dtype = getattr(torch, spec["dtype"])
            raw = bytearray(body[spec["offset"]:spec["offset"] + spec["nbytes"]])
            flat = torch.frombuffer(raw, dtype=torch.uint8).view(dtype) if raw else \
                torch.empty(0, dtype=dtype)
            entry[name] = flat.reshape(spec["shape"])
        out[key] = entry
    return out
