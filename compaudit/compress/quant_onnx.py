"""Real int8: export to ONNX, quantize statically with ONNX Runtime (QDQ), run on its CPU kernels.

Steps of :func:`onnx_static_int8`:

1. Fold BatchNorm into convolutions with ``torch.fx`` (the same folded float model the
   simulation in :mod:`compaudit.compress.quant_sim` quantizes).
2. Export with ``torch.onnx.export(..., dynamo=True)`` (the default exporter since torch
   2.9; it needs ``onnxscript``) at opset :data:`DEFAULT_OPSET`, batch dimension dynamic.
3. ``onnxruntime.quantization.quant_pre_process`` (shape inference, graph clean-up).
4. ``onnxruntime.quantization.quantize_static`` with ``QuantFormat.QDQ``, per-channel
   symmetric int8 weights, uint8 or int8 affine activations, MinMax (or Percentile)
   calibration over the given batches, and ``op_types_to_quantize`` limited to
   :data:`ORT_OP_TYPES` so the placement of quantize/dequantize pairs is the one the
   simulation reproduces. ONNX Runtime fuses the QDQ pairs into ``QLinearConv`` and
   ``QGemm`` integer kernels when it loads the model.
5. Open the result as an :class:`~compaudit.models.onnx_runtime.OnnxModule` (CPU).

onnx, onnxruntime and onnxscript are the optional extra ``onnx``; they are imported
when these functions run, and a missing one is reported with the install command.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compaudit._atomic import atomic_path
from compaudit.compress.qparams import QDType
from compaudit.compress.quant_static import fold_batchnorm
from compaudit.configs.compress import DEFAULT_OPSET
from compaudit.errors import AuditInputError
from compaudit.models.onnx_runtime import OnnxModule

__all__ = [
    "DEFAULT_OPSET",
    "ORT_OP_TYPES",
    "ONNX_EXTRA_MESSAGE",
    "require_onnx_extra",
    "export_onnx",
    "quantize_onnx_static",
    "onnx_static_int8",
    "onnx_versions",
]

#: ONNX opset of exported models (torch 2.15's dynamo exporter writes 20 natively).
#: Operators ONNX Runtime quantizes; the simulation mirrors exactly these.
ORT_OP_TYPES = ("Conv", "Gemm", "MatMul", "Relu", "Clip")
ONNX_EXTRA_MESSAGE = (
    "int8 static quantization with backend='onnxruntime' needs onnx, onnxruntime and "
    "onnxscript, the optional extra 'onnx'; install it with pip install -e \".[onnx]\" "
    "(or pip install \"compaudit[onnx]\"), or use backend='simulated'"
)

_log = logging.getLogger(__name__)


def require_onnx_extra() -> Any:
    """Import and return ``onnxruntime.quantization``; a clear error names the extra if missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime.quantization as ortq
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise AuditInputError(f"{ONNX_EXTRA_MESSAGE} (missing: {err.name})") from err
    return ortq


def onnx_versions() -> dict[str, str]:
    """Versions of torch and the ONNX stack, for the record of a quantized variant."""
    # The optional 'onnx' extra, present: called after require_onnx_extra.
    import onnx
    import onnxruntime
    import onnxscript

    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxscript": onnxscript.__version__}


@contextlib.contextmanager
def _quiet() -> Any:
    # The exporter and the quantizer print progress lines; keep them out of audit logs.
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    if sink.getvalue():
        _log.debug("%s", sink.getvalue())


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *,
                opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` (eval mode, CPU) to ``path`` with a dynamic batch dimension.

    Parameters
    ----------
    model
        A float32 model taking one (N, C, H, W) tensor.
    example
        An example batch; at least 2 images so the batch dimension stays symbolic.
    path
        The ``.onnx`` file to write (atomically; weights inside the file).
    opset
        ONNX opset version, >= 17.
    """
    require_onnx_extra()
    if example.shape[0] < 2:
        example = torch.cat([example, example])
    model = model.eval().cpu()
    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        program = torch.onnx.export(
            model, (example.cpu().float(),), dynamo=True, opset_version=opset,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: batch},), verbose=False,
        )
    with atomic_path(path) as tmp:
        # With dynamo=True, export returns an ONNXProgram; torch's annotation allows None.
        program.save(str(tmp), external_data=False)  # type: ignore[union-attr]
    return Path(path)


def _reader(ortq: Any, input_name: str, batches: Sequence[np.ndarray]) -> Any:
    class _Batches(ortq.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    return _Batches()


def quantize_onnx_static(
    float_path: str | Path,
    out_path: str | Path,
    batches: Sequence[np.ndarray],
    *,
    activation_dtype: QDType = "uint8",
    observer: str = "minmax",
    percentile: float = 99.999,
) -> Path:
    """Quantize a float ONNX model to int8 QDQ with ONNX Runtime's static quantizer.

    Parameters
    ----------
    float_path, out_path
        The float model and where to write the quantized one.
    batches
        Calibration batches, float32 NCHW arrays (all the same size for ``percentile``).
    activation_dtype
        ``"uint8"`` (QUInt8) or ``"int8"`` (QInt8) affine activations.
    observer
        ``"minmax"`` (CalibrationMethod.MinMax) or ``"percentile"`` (symmetric
        CalibrationMethod.Percentile at ``percentile`` %).
    """
    ortq = require_onnx_extra()
    import onnx  # the optional 'onnx' extra, present: require_onnx_extra checked

    out_path = Path(out_path)
    pre_path = out_path.with_name(out_path.stem + ".pre.onnx")
    with _quiet():
        try:
            ortq.quant_pre_process(str(float_path), str(pre_path))
        except Exception:  # noqa: BLE001 - ONNX Runtime's symbolic shape inference
            # fails on some exported graphs (Swin V2: an Expand of unknown shape, a
            # TypeError inside onnxruntime.tools.symbolic_shape_infer). ONNX's own shape
            # inference and the graph optimisation still run without it.
            ortq.quant_pre_process(str(float_path), str(pre_path), skip_symbolic_shape=True)
    input_name = onnx.load(str(pre_path), load_external_data=False).graph.input[0].name
    method = {"minmax": ortq.CalibrationMethod.MinMax,
              "percentile": ortq.CalibrationMethod.Percentile}[observer]
    extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if observer == "percentile":
        extra.update(CalibPercentile=float(percentile), CalibTensorRangeSymmetric=True)
    act_type = ortq.QuantType.QUInt8 if activation_dtype == "uint8" else ortq.QuantType.QInt8
    with atomic_path(out_path) as tmp, _quiet():
        ortq.quantize_static(
            str(pre_path), str(tmp), _reader(ortq, input_name, batches),
            quant_format=ortq.QuantFormat.QDQ, op_types_to_quantize=list(ORT_OP_TYPES),
            per_channel=True, reduce_range=False,
            weight_type=ortq.QuantType.QInt8, activation_type=act_type,
            calibrate_method=method, extra_options=extra,
        )
    pre_path.unlink(missing_ok=True)
    return out_path


def onnx_static_int8(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    *,
    out_dir: str | Path,
    activation_dtype: QDType = "uint8",
    observer: str = "minmax",
    percentile: float = 99.999,
    opset: int = DEFAULT_OPSET,
    num_threads: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fold, export, quantize and open ``model`` as an int8 ONNX Runtime module.

    Parameters
    ----------
    model
        The float model (not modified).
    batches
        Calibration batches (float NCHW tensors).
    out_dir
        Folder for ``model.fp32.onnx`` and ``model.int8.onnx``.
    activation_dtype, observer, percentile
        See :func:`quantize_onnx_static`.
    opset
        Export opset.
    num_threads
        ONNX Runtime intra-op threads (``None``: its default).

    Returns
    -------
    module, info
        The :class:`~compaudit.models.onnx_runtime.OnnxModule` and a dict with the file
        paths, opset, operator types and library versions.
    """
    require_onnx_extra()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folded = fold_batchnorm(model).cpu()
    float_path = export_onnx(folded, batches[0][:2], out_dir / "model.fp32.onnx", opset=opset)
    arrays = [b.detach().cpu().float().numpy() for b in batches]
    int8_path = quantize_onnx_static(
        float_path, out_dir / "model.int8.onnx", arrays, activation_dtype=activation_dtype,
        observer=observer, percentile=percentile,
    )
    module = OnnxModule(int8_path, num_threads=num_threads)
    info = {
        "onnx_path": str(int8_path),
        "onnx_float_path": str(float_path),
        "opset": opset,
        "quant_format": "QDQ",
        "op_types_to_quantize": list(ORT_OP_TYPES),
        "versions": onnx_versions(),
    }
    return module, info
