"""How long a forward pass takes, and on which kernels (``latency_ms``, ``latency_kernel``).

Median wall time of ``repeats`` forward passes of a batch of
``batch_size`` random images after ``warmup`` passes, in milliseconds.
``latency_kernel`` (:func:`latency_kernel`) says what was timed:

- ``"onnxruntime"``: ONNX Runtime's CPU execution provider on the ONNX file (real
  int8 kernels for an int8 model, e.g. ``int8_static`` with ``backend="onnxruntime"``);
- ``"torch"``: real torch kernels in the model's own dtype: dense and pruned
  float32 (pruned zeros are multiplied like any weight: no sparse speedup), and
  float16/bfloat16 with ``execution="native"`` (the default on CUDA);
- ``"simulated"``: fake-quant arithmetic in float32 torch: ``int8-weight-only``,
  ``int8_static`` with ``backend="simulated"``, float16/bfloat16 with
  ``execution="simulated"`` (the default on CPU). The time is that of float32
  kernels plus rounding; it does **not** reflect int8 or half-precision speed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compaudit.compress.quant_sim import FLOAT_STORAGE_ATTR, WEIGHT_FORMAT_ATTR
from compaudit.compress.quant_static import ActivationQuantizer
from compaudit.errors import AuditInputError

__all__ = ["LATENCY_KERNELS", "latency_kernel", "measure_latency"]

#: Values of ``latency_kernel`` (see the module docstring).
LATENCY_KERNELS = ("onnxruntime", "torch", "simulated")


def _check_input_size(input_size: object) -> tuple[int, ...]:
    if not (isinstance(input_size, (tuple, list)) and len(input_size) >= 1
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                    for v in input_size)):
        raise AuditInputError(
            f"footprint: input_size must be the shape of one image without the batch "
            f"dimension, e.g. (3, 224, 224); got {input_size!r}"
        )
    return tuple(input_size)


def _model_device(model: nn.Module) -> torch.device:
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


@torch.inference_mode()
def measure_latency(model: nn.Module, *, input_size: Sequence[int], batch_size: int = 1,
                    repeats: int = 20, warmup: int = 3, seed: int = 0) -> dict[str, Any]:
    """Median forward time of a random batch, after warm-up runs.

    Returns
    -------
    dict
        ``median_ms``, ``min_ms``, ``batch_size``, ``repeats``, ``warmup``, ``device``,
        ``threads`` (torch intra-op threads) and ``kernel`` (:func:`latency_kernel`).
    """
    size = _check_input_size(input_size)
    for name, value, low in (("batch_size", batch_size, 1), ("repeats", repeats, 1),
                             ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise AuditInputError(f"footprint: {name} must be an integer >= {low}, got {value!r}")
    device = _model_device(model)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *size, generator=gen).to(device)
    model.eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": statistics.median(times), "min_ms": min(times),
            "batch_size": batch_size, "repeats": repeats, "warmup": warmup,
            "device": str(device), "threads": torch.get_num_threads(),
            "kernel": latency_kernel(model)}


def _onnx_module_file(model: nn.Module) -> Path | None:
    """The ``.onnx`` file an ONNX Runtime module (or a wrapper of one) runs, if any."""
    from compaudit.models.onnx_runtime import OnnxModule

    if list(model.state_dict()):
        return None  # torch parameters: a torch model, whatever else it holds
    for module in model.modules():
        path = getattr(module, "path", None)
        onnx_run = isinstance(module, OnnxModule) or str(path).lower().endswith(".onnx")
        if onnx_run and path is not None and Path(path).is_file():
            return Path(path)
    return None


def latency_kernel(model: nn.Module) -> str:
    """What a forward pass of ``model`` runs on: ``"onnxruntime"``, ``"torch"`` or
    ``"simulated"`` (see the module docstring).

    Examples
    --------
    >>> latency_kernel(torch.nn.Linear(2, 2))
    'torch'
    """
    from compaudit.models.onnx_runtime import OnnxModule

    modules = list(model.modules())
    if any(isinstance(m, OnnxModule) for m in modules) or _onnx_module_file(model):
        return "onnxruntime"
    if any(getattr(m, WEIGHT_FORMAT_ATTR, None) or isinstance(m, ActivationQuantizer)
           for m in modules):
        return "simulated"
    storage = getattr(model, FLOAT_STORAGE_ATTR, None)
    if storage:
        dtype = getattr(torch, str(storage), None)
        floats = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
        if any(t.dtype != dtype for t in floats):
            return "simulated"  # float32 tensors rounded through the dtype
    return "torch"
