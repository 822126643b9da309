"""Post-training quantization methods: configs registered with :func:`compress`.

* :class:`Float16Config` (method ``float16``, ``info["bits"] = 16``): float16 weights
  and activations.
* :class:`BFloat16Config` (``bfloat16``, 16 bits): bfloat16 weights and activations.
* :class:`Int8WeightOnlyConfig` (``int8_weight_only``, 8 bits): int8 weights per output
  channel, float32 activations.
* :class:`Int8StaticConfig` (``int8_static``, 8 bits): int8 weights, uint8/int8
  activations calibrated on training images.

Float16/bfloat16 run natively on CUDA and are simulated in float32 on the CPU (see
:mod:`compaudit.compress.quant_sim`); ``execution`` forces either. Both fold BatchNorm
into its convolution first, as deployed float16 models are (``info``:
``batchnorm_folded`` pairs, ``batchnorm_fold_graph`` ``"fx"`` or ``"sequential"`` when
the model could not be traced, then ``batchnorm_trace_error``). Int8 static has two
backends that agree by construction: ``"simulated"`` (fake-quant in torch, any device)
and ``"onnxruntime"`` (ONNX Runtime's QDQ quantizer and int8 CPU kernels, the optional
extra ``onnx``). The original model is never modified.

Examples
--------
>>> from compaudit.compress.registry import compress, CompressionContext
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
>>> out = compress(model, Int8WeightOnlyConfig(), context=CompressionContext())
>>> out.info["method"], out.info["bits"]
('int8_weight_only', 8)
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from compaudit.compress.quant_onnx import onnx_static_int8
from compaudit.compress.quant_sim import (
    FOLDED_BATCHNORM_ATTR,
    cast_float_precision,
    quantize_weights_int8,
    round_float_precision,
)
from compaudit.compress.quant_static import calibrate, convert_static, prepare_static
from compaudit.compress.registry import CompressedModel, CompressionContext
from compaudit.configs.compress import (
    BFloat16Config,
    Float16Config,
    Int8StaticConfig,
    Int8WeightOnlyConfig,
)
from compaudit.errors import AuditInputError

__all__ = [
    "Float16Config",
    "BFloat16Config",
    "Int8WeightOnlyConfig",
    "Int8StaticConfig",
    "calibration_batches",
]

Execution = Literal["auto", "native", "simulated"]
_EXECUTIONS = ("auto", "native", "simulated")


def _method_info(config: Any, *, bits: int, **extra: Any) -> dict[str, Any]:
    """``CompressedModel.info``: parameters and the weights' bit width (:func:`compress`
    adds the method's name)."""
    return {"parameters": dataclasses.asdict(config), "bits": bits, **extra}


def _copy_for(model: nn.Module, device: str) -> nn.Module:
    return copy.deepcopy(model).eval().to(device)


def _reduced_precision(model: nn.Module, config: Float16Config, context: CompressionContext,
                       *, dtype: torch.dtype) -> CompressedModel:
    device = torch.device(context.device)
    execution = config.execution
    if execution == "auto":
        execution = "native" if device.type == "cuda" else "simulated"
    out = _copy_for(model, context.device)
    if execution == "native":
        cast_float_precision(out, dtype)
    else:
        round_float_precision(out, dtype)
    fold = getattr(out, FOLDED_BATCHNORM_ATTR)
    return CompressedModel(model=out, info=_method_info(
        config, bits=dtype.itemsize * 8, execution=execution,
        dtype=str(dtype).removeprefix("torch."), batchnorm_folded=len(fold.pairs),
        batchnorm_fold_graph=fold.graph,
        **({"batchnorm_trace_error": fold.trace_error} if fold.trace_error else {})))


def _float16(model: nn.Module, config: Float16Config,
             context: CompressionContext) -> CompressedModel:
    return _reduced_precision(model, config, context, dtype=torch.float16)


def _bfloat16(model: nn.Module, config: BFloat16Config,
              context: CompressionContext) -> CompressedModel:
    return _reduced_precision(model, config, context, dtype=torch.bfloat16)


def _int8_weight_only(model: nn.Module, config: Int8WeightOnlyConfig,
                      context: CompressionContext) -> CompressedModel:
    out = _copy_for(model, context.device)
    layers = quantize_weights_int8(out, per_channel=config.per_channel,
                                   symmetric=config.symmetric)
    if not layers:
        raise AuditInputError(
            f"{type(model).__name__} has no Conv or Linear layer; Int8WeightOnlyConfig "
            "quantizes the weights of convolutional and linear layers"
        )
    return CompressedModel(model=out, info=_method_info(
        config, bits=8, execution="simulated", quantized_layers=layers))


def calibration_batches(dataset: Any, *, n_images: int, batch_size: int,
                        seed: int) -> list[torch.Tensor]:
    """A seeded random subset of ``n_images`` images of ``dataset`` in batches, in memory.

    The same dataset, size and seed always give the same batches, so the simulated and
    the ONNX Runtime backends calibrate on identical data. Datasets smaller than
    ``n_images`` are used whole.
    """
    n_total = len(dataset)
    if n_total == 0:
        raise AuditInputError("the calibration dataset is empty; int8 static quantization "
                              "needs images to calibrate activation ranges")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n_total, generator=gen)[: min(n_images, n_total)].tolist()
    # disable=None: a bar on terminals only, none in logs and CI
    images = [dataset[i][0] for i in tqdm(order, desc="calibration images", disable=None)]
    if not all(isinstance(im, torch.Tensor) for im in images):
        raise AuditInputError("calibration dataset items must be (image tensor, label, id); "
                              "give the dataset a transform that returns tensors")
    return [torch.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]


def _calibration_dataset(context: CompressionContext) -> Any:
    dataset = context.calibration_dataset
    if dataset is None:
        dataset = context.train_dataset
    if dataset is None:
        raise AuditInputError(
            "Int8StaticConfig calibrates activation ranges on images, but the "
            "CompressionContext has neither calibration_dataset nor train_dataset; pass "
            "CompressionContext(calibration_dataset=...) (training images, not test images)"
        )
    return dataset


def _int8_static(model: nn.Module, config: Int8StaticConfig,
                 context: CompressionContext) -> CompressedModel:
    batches = calibration_batches(
        _calibration_dataset(context), n_images=config.calibration_images,
        batch_size=config.calibration_batch_size, seed=context.seed)
    n_images = sum(len(b) for b in batches)
    info = _method_info(config, bits=8, calibration_images_used=n_images)
    if config.backend == "onnxruntime":
        if config.activation_observer == "percentile" and len({len(b) for b in batches}) > 1:
            raise AuditInputError(
                f"Int8StaticConfig: ONNX Runtime's percentile calibration needs equal "
                f"batches, but {n_images} images do not split into batches of "
                f"{config.calibration_batch_size}; make calibration_images a multiple of "
                "calibration_batch_size"
            )
        out_dir = config.onnx_dir or tempfile.mkdtemp(prefix="compaudit-int8-")
        module, ort_info = onnx_static_int8(
            model, batches, out_dir=out_dir, activation_dtype=config.activation_dtype,
            observer=config.activation_observer, percentile=config.percentile,
            opset=config.opset, num_threads=config.num_threads,
        )
        return CompressedModel(model=module, info={**info, "execution": "onnxruntime",
                                                   **ort_info})
    device = torch.device(context.device)
    gm, plan = prepare_static(_copy_for(model, context.device),
                              observer=config.activation_observer,
                              percentile=config.percentile,
                              activation_dtype=config.activation_dtype)
    gm.to(device)
    calibrate(gm, lambda: batches, device=device,
              progress=lambda it: tqdm(it, desc="calibrating", total=len(batches),
                                       disable=not context.progress))
    layers = convert_static(gm, plan)
    return CompressedModel(model=gm, info={**info, "execution": "simulated", "layers": layers})
