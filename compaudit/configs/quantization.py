"""The quantization methods' configs: float16, bfloat16, int8 weights and int8 static
(simulated in torch or run by ONNX Runtime), each registered in
:data:`~compaudit.configs.methods.METHODS`. This module imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compaudit.config import Checked, setting
from compaudit.configs.methods import HANDLERS, method

__all__ = ["Float16Config", "BFloat16Config", "Int8WeightOnlyConfig", "Int8StaticConfig",
           "DEFAULT_OPSET"]

Execution = Literal["auto", "native", "simulated"]
#: ONNX opset of the ONNX Runtime int8 backend.
DEFAULT_OPSET = 20


# revision 2: BatchNorm folded into its conv before rounding (compress/fold.py).
@method("float16", handler=HANDLERS + "quantization:_float16", quantizes=True, axis="bits",
        revision=2)
@dataclass(frozen=True, kw_only=True)
class Float16Config(Checked):
    """Cast to float16 (IEEE half).

    Parameters
    ----------
    execution
        ``"native"`` casts the model and runs float16 kernels; ``"simulated"`` rounds
        weights and every layer's output through float16 but computes in float32;
        ``"auto"`` (default) is native on CUDA and simulated on the CPU, where float16
        kernels are slow.
    """

    execution: Execution = "auto"


@method("bfloat16", handler=HANDLERS + "quantization:_bfloat16", quantizes=True, axis="bits",
        revision=2)
@dataclass(frozen=True, kw_only=True)
class BFloat16Config(Float16Config):
    """Cast to bfloat16 (8-bit exponent, 7-bit mantissa); ``execution`` as for float16."""


@method("int8_weight_only", handler=HANDLERS + "quantization:_int8_weight_only",
        quantizes=True, axis="bits")
@dataclass(frozen=True, kw_only=True)
class Int8WeightOnlyConfig(Checked):
    """int8 weights of every conv and linear layer; activations stay float32.

    Parameters
    ----------
    per_channel
        One scale per output channel (default) or one per tensor.
    symmetric
        Scale ``max|w| / 127`` and zero point 0 (default), else an affine range
        ``[-128, 127]`` from the tensor's min and max.
    """

    per_channel: bool = True
    symmetric: bool = True


def _runs_in_torch(config: Int8StaticConfig) -> bool:
    return config.backend != "onnxruntime"


# revision 2: ReLU6/Hardtanh/clamp (ONNX Clip) fused into the conv/linear output's quantizer,
# as ReLU was, in the simulation and ONNX Runtime's op_types_to_quantize alike.
@method("int8_static", handler=HANDLERS + "quantization:_int8_static", reads_training_set=True,
        quantizes=True, axis="bits", torch_layers=_runs_in_torch, revision=2)
@dataclass(frozen=True, kw_only=True)
class Int8StaticConfig(Checked):
    """int8 weights (per channel, symmetric) and activations (per tensor) calibrated on data.

    Parameters
    ----------
    calibration_images
        How many images of the calibration dataset (a seeded random subset) set the
        activation ranges; a few hundred training images are usual.
    calibration_batch_size
        Images per calibration batch.
    backend
        ``"simulated"`` (torch fake-quant, any device) or ``"onnxruntime"`` (ONNX export
        and ONNX Runtime int8 kernels on the CPU; needs the ``onnx`` extra).
    activation_observer
        ``"minmax"`` (full observed range) or ``"percentile"`` (symmetric percentile of
        ``|x|``, clipping outliers; ``calibration_images`` must then be a multiple of
        ``calibration_batch_size`` with the ONNX Runtime backend).
    activation_dtype
        ``"uint8"`` (default, ONNX Runtime's CPU recommendation) or ``"int8"``.
    percentile
        Percentile of the ``"percentile"`` observer, in (0, 100], e.g. 99.999.
    opset
        ONNX opset for the ONNX Runtime backend (>= 17: the exporter and ONNX
        Runtime's quantizer need it).
    onnx_dir
        Where the ONNX Runtime backend writes its ``.onnx`` files; a new temporary folder
        when ``None``. Keep it on shared storage when models travel between machines.
    num_threads
        ONNX Runtime intra-op threads (``None``: its default).
    """

    calibration_images: int = setting(512, ge=1)
    calibration_batch_size: int = setting(32, ge=1)
    backend: Literal["simulated", "onnxruntime"] = "simulated"
    activation_observer: Literal["minmax", "percentile"] = "minmax"
    activation_dtype: Literal["uint8", "int8"] = "uint8"
    percentile: float = setting(99.999, gt=0, le=100)
    opset: int = setting(DEFAULT_OPSET, ge=17)
    onnx_dir: str | None = None
    num_threads: int | None = setting(None, ge=1)
