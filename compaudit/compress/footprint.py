"""What a (compressed) model costs: parameters, sparsity, bytes on disk, MACs, latency.

:func:`footprint` measures one model; :func:`variant_record` turns a footprint into the
record of ``variants.json`` (DESIGN.md, ``docs/outputs.md``) and
:func:`write_variants_json` writes that file atomically.

Definitions
-----------
* **Sparsity**: share of zero entries, with pruning masks applied. ``sparsity`` counts
  all parameters, ``weight_sparsity`` only conv/linear weights (what pruning targets).
* **Size on disk**: bytes of files actually written (to a temporary folder) or read.

  ``size_bytes`` is the *deployable artifact*: what a team ships and a runtime loads,
  every tensor dense.

  - A torch model: ``torch.save`` of
    :func:`~compaudit.compress.storage.deployable_state`: pruning masks folded into
    the weights (no ``weight_orig``/mask pairs); int8 weights as int8 with a float32
    scale and an int8 zero point per channel (int8 weight-only, and int8 static
    simulated, whose BatchNorm is folded as the simulation folds it); biases, BatchNorm
    and activation scales as the model holds them (float32); a float16/bfloat16 model's
    floating tensors in that dtype (native or simulated alike). Dense float32 and
    pruned models are therefore the float32 state dict, float16 about half of it, int8
    about a quarter for conv/linear-heavy models, plus ``torch.save``'s container:
    about 300 bytes per tensor (its name, pickle and zip records, 64-byte alignment),
    which matters only for small models (``small_cnn``: 8 KiB of 107 KiB).
  - An ONNX Runtime model (an :class:`~compaudit.models.onnx_runtime.OnnxModule`,
    e.g. ``Int8StaticConfig(backend="onnxruntime")``): its ``.onnx`` file, plus the
    external data files it names.
  - ``artifact=FILE``: that file (plus external data for an ``.onnx`` file), e.g. the
    loaded model a team ships; whatever the model in memory is.

  ``compressed_size_bytes`` is the minimal compact container of
  :mod:`compaudit.compress.storage` (:func:`~compaudit.compress.storage.encode_state`
  in :func:`~compaudit.compress.storage.write_encoded`): the same dtypes, but each
  tensor as a bitmask + its non-zeros where that is smaller, so it shrinks with
  sparsity and is what compression could save at best; no runtime loads it. For an
  ONNX Runtime model it is its files, as ``size_bytes`` (already encoded). ``compression_ratio`` is
  ``size_bytes / compressed_size_bytes``.
* **Int8 shares**: ``int8_weight_share`` is the share of conv/linear weight elements
  the artifact stores as 8-bit integers (0..1; ``None`` without conv/linear weights).
  For ONNX: the constant weight inputs of Conv, MatMul and Gemm nodes and of their
  integer forms (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, QGemm), int8
  or uint8 initializers directly or through a DequantizeLinear (QDQ format).
  ``int8_op_share`` (ONNX only, ``None`` for torch models, whose simulated int8 runs
  in float32) is the share of those nodes that run in int8: the integer forms, and
  Conv/MatMul/Gemm whose weight is a DequantizeLinear of an 8-bit initializer (ONNX
  Runtime fuses these QDQ nodes into integer kernels). Only the main graph is read
  (``onnx.load(load_external_data=False)``); a missing ``onnx`` package leaves both
  ``None``. For ``artifact=`` a torch file, ``int8_weight_share`` is read from the
  file's tensors (``None`` when they do not name the model's layers).
* **MACs**: multiply-accumulates of one image at ``input_size``, from
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products;
  MACs = FLOPs / 2). Element-wise ops, pooling and normalization are not counted.
* **Theoretical speedup** (survey guidance, REFERENCES.md): dense MACs over non-zero
  MACs, where each conv/linear layer's MACs are scaled by the density of its weight.
* **Latency**: median wall time of ``repeats`` forward passes of a batch of
  ``batch_size`` random images after ``warmup`` passes, in milliseconds.
  ``latency_kernel`` (:func:`latency_kernel`) says what was timed:

  - ``"onnxruntime"``: ONNX Runtime's CPU execution provider on the ONNX file (real
    int8 kernels for an int8 model, e.g. ``int8-static`` with ``backend="onnxruntime"``);
  - ``"torch"``: real torch kernels in the model's own dtype: dense and pruned
    float32 (pruned zeros are multiplied like any weight: no sparse speedup), and
    float16/bfloat16 with ``execution="native"`` (the default on CUDA);
  - ``"simulated"``: fake-quant arithmetic in float32 torch: ``int8-weight-only``,
    ``int8-static`` with ``backend="simulated"``, float16/bfloat16 with
    ``execution="simulated"`` (the default on CPU). The time is that of float32
    kernels plus rounding; it does **not** reflect int8 or half-precision speed.

A model without torch parameters (an ONNX Runtime module) is measured for size and
latency; pass ``structure=`` (the float torch model it was exported from) for its
parameter counts and MACs.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compaudit._atomic import atomic_write_text
from compaudit.compress.quant_sim import (
    FLOAT_STORAGE_ATTR,
    QUANTIZABLE,
    WEIGHT_FORMAT_ATTR,
)
from compaudit.compress.quant_static import ActivationQuantizer
from compaudit.compress.storage import (
    deployable_state,
    effective_state,
    encode_state,
    write_encoded,
)
from compaudit.errors import AuditInputError
from compaudit.rundir import VARIANTS_SCHEMA, jsonable

__all__ = [
    "LATENCY_KERNELS",
    "VARIANTS_SCHEMA",
    "VARIANT_FIELDS",
    "count_macs",
    "footprint",
    "latency_kernel",
    "measure_latency",
    "onnx_int8_summary",
    "variant_record",
    "write_variants_json",
]

#: Fields every record of ``variants.json`` has (``null`` when not measured).
VARIANT_FIELDS = (
    "method", "parameters", "derives_from", "sparsity", "parameter_count", "nonzero_count",
    "size_bytes", "compressed_size_bytes", "int8_weight_share", "int8_op_share", "macs",
    "theoretical_speedup", "latency_ms", "latency_batch_size", "latency_kernel",
)
_log = logging.getLogger(__name__)

#: Values of ``latency_kernel`` (see the module docstring).
LATENCY_KERNELS = ("onnxruntime", "torch", "simulated")


def _check_input_size(input_size: object) -> tuple[int, ...]:
    ok = (isinstance(input_size, (tuple, list)) and len(input_size) >= 1
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size))
    if not ok:
        raise AuditInputError(
            f"footprint: input_size must be the shape of one image without the batch "
            f"dimension, e.g. (3, 224, 224); got {input_size!r}"
        )
    return tuple(input_size)  # type: ignore[arg-type]


def _key(module_name: str, leaf: str) -> str:
    return f"{module_name}.{leaf}" if module_name else leaf


def _model_device(model: nn.Module) -> torch.device:
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def count_macs(model: nn.Module, *, input_size: Sequence[int]) -> tuple[int, dict[str, int]]:
    """MACs of one image through ``model``: the total and per conv/linear layer name.

    Counted by ``FlopCounterMode`` on a zero input (FLOPs / 2). A layer called several
    times counts every call.
    """
    size = _check_input_size(input_size)
    x = torch.zeros(1, *size, device=_model_device(model))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(x)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_layer = {}
    for name, module in model.named_modules():
        if isinstance(module, QUANTIZABLE):
            # FlopCounterMode names modules "<root class>.<qualified name>"
            flops = sum(counts.get(f"{root}.{name}" if name else root, {}).values())
            per_layer[name] = int(flops) // 2
    return int(counter.get_total_flops()) // 2, per_layer


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


# --- ONNX inspection ----------------------------------------------------------------------

#: Float compute nodes and the inputs that may hold their (constant) weight, in order.
_ONNX_FLOAT_OPS = {"Conv": (1,), "Gemm": (1, 0), "MatMul": (1, 0)}
#: Integer compute nodes (ONNX QOperator format, ONNX Runtime's com.microsoft QGemm).
_ONNX_INT8_OPS = {"QLinearConv": (3,), "QLinearMatMul": (3, 0), "ConvInteger": (1,),
                  "MatMulInteger": (1, 0), "QGemm": (3, 0)}
#: Nodes a weight may pass through unchanged in value.
_ONNX_PASS_THROUGH = frozenset({"Identity", "Transpose", "Reshape", "Flatten", "Squeeze",
                                "Unsqueeze"})


def _onnx_constants(onnx: Any, graph: Any) -> dict[str, tuple[int, int]]:
    """``{tensor name: (ONNX element type, element count)}`` of initializers and Constants."""
    out = {t.name: (t.data_type, math.prod(t.dims)) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    out[node.output[0]] = (attr.t.data_type, math.prod(attr.t.dims))
    return out


def _onnx_weight(name: str, constants: Mapping[str, tuple[int, int]],
                 producers: Mapping[str, Any]) -> tuple[int, int, bool] | None:
    """``(element type, count, dequantized)`` of the constant behind tensor ``name``:
    through pass-through nodes, and through one DequantizeLinear (``dequantized``)."""
    dequantized = False
    for _ in range(64):  # a chain longer than this is no weight
        if name in constants:
            dtype, count = constants[name]
            return dtype, count, dequantized
        node = producers.get(name)
        if node is None or not node.input:
            return None
        if node.op_type == "DequantizeLinear" and not dequantized:
            dequantized = True
        elif node.op_type not in _ONNX_PASS_THROUGH:
            return None
        name = node.input[0]
    return None


def onnx_int8_summary(path: str | Path) -> dict[str, Any] | None:
    """Int8 weights and compute nodes of an ONNX model, and its external data files.

    Reads the graph with ``onnx.load(load_external_data=False)`` (the weights' bytes
    are not loaded). See the module docstring for what counts.

    Returns
    -------
    dict or None
        ``int8_weight_share``, ``int8_op_share`` (``None`` without such weights or
        nodes), ``weight_elements``, ``int8_weight_elements``, ``compute_nodes``,
        ``int8_compute_nodes``, ``op_types`` (count per node type of the main graph)
        and ``external_data`` (existing external data files, resolved paths);
        ``None`` when the ``onnx`` package is not installed or cannot read the file
        (ONNX Runtime may still run it, e.g. an ``.ort`` file).
    """
    try:
        import onnx
    except ImportError:
        return None
    path = Path(path)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # noqa: BLE001 - protobuf and I/O errors: sized, not inspected
        _log.warning("%s: cannot read the ONNX graph (%s: %s); its int8 shares are not "
                     "recorded", path, type(err).__name__, err)
        return None
    constants = _onnx_constants(onnx, graph)
    producers = {out: node for node in graph.node for out in node.output}
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    n_w = n_w8 = n_ops = n_ops8 = 0
    op_types: dict[str, int] = {}
    for node in graph.node:
        op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
        integer = node.op_type in _ONNX_INT8_OPS
        slots = _ONNX_INT8_OPS.get(node.op_type) or _ONNX_FLOAT_OPS.get(node.op_type)
        if slots is None:
            continue
        n_ops += 1
        weight = next((w for i in slots if i < len(node.input) and node.input[i]
                       for w in [_onnx_weight(node.input[i], constants, producers)]
                       if w is not None), None)
        if weight is not None:
            dtype, count, dequantized = weight
            n_w += count
            n_w8 += count if dtype in eight_bit else 0
            integer = integer or (dequantized and dtype in eight_bit)
        n_ops8 += int(integer)
    external = set()
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}.get("location")
            file = (path.parent / location).resolve() if location else None
            if file is not None and file.is_file():
                external.add(file)
    return {
        "int8_weight_share": n_w8 / n_w if n_w else None,
        "int8_op_share": n_ops8 / n_ops if n_ops else None,
        "weight_elements": n_w, "int8_weight_elements": n_w8,
        "compute_nodes": n_ops, "int8_compute_nodes": n_ops8,
        "op_types": op_types, "external_data": sorted(map(str, external)),
    }


# --- size on disk -------------------------------------------------------------------------

_INT8_TORCH_DTYPES = (torch.int8, torch.uint8, torch.qint8, torch.quint8)


def _weight_keys(model: nn.Module) -> list[str]:
    """State keys of the conv/linear weights of ``model``."""
    return [_key(n, "weight") for n, m in model.named_modules()
            if isinstance(m, QUANTIZABLE) and getattr(m, "weight", None) is not None]


def _int8_share(state: Mapping[str, torch.Tensor], keys: Sequence[str]) -> float | None:
    """Share of the elements of the tensors ``keys`` of ``state`` stored as 8-bit integers."""
    if not keys or any(k not in state for k in keys):
        return None
    total = sum(state[k].numel() for k in keys)
    int8 = sum(state[k].numel() for k in keys if state[k].dtype in _INT8_TORCH_DTYPES)
    return int8 / total if total else None


def _torch_file_int8_share(path: Path, keys: Sequence[str]) -> float | None:
    from compaudit.models.weights import read_state_dict

    try:
        state = read_state_dict(path)
    except AuditInputError:
        return None
    return _int8_share(state, keys)


def _onnx_artifact(path: Path) -> dict[str, Any]:
    summary = onnx_int8_summary(path)
    extra = (summary or {}).get("external_data", [])
    return {"size_bytes": path.stat().st_size + sum(Path(f).stat().st_size for f in extra),
            "int8_weight_share": (summary or {}).get("int8_weight_share"),
            "int8_op_share": (summary or {}).get("int8_op_share")}


def _sizes_on_disk(model: nn.Module, masks: Mapping[str, torch.Tensor] | None,
                   artifact: Path | None, structure: nn.Module) -> dict[str, Any]:
    """``size_bytes``, ``compressed_size_bytes``, ``int8_weight_share``, ``int8_op_share``."""
    onnx_path = _onnx_module_file(model)
    if onnx_path is not None:
        # an ONNX Runtime module: its weights live in the .onnx file, already encoded
        out = _onnx_artifact(onnx_path)
        out["compressed_size_bytes"] = out["size_bytes"]
    else:
        keys = _weight_keys(model)
        with tempfile.TemporaryDirectory(prefix="compaudit-footprint-") as tmp:
            deploy, compressed = Path(tmp) / "model.pt", Path(tmp) / "compressed.bin"
            state = deployable_state(model, masks)
            torch.save(state, deploy)
            out = {"size_bytes": deploy.stat().st_size,
                   "compressed_size_bytes": write_encoded(compressed,
                                                          encode_state(model, masks)),
                   "int8_weight_share": _int8_share(state, keys), "int8_op_share": None}
    if artifact is not None:
        if artifact.suffix.lower() == ".onnx":
            out.update(_onnx_artifact(artifact))
        else:
            out.update(size_bytes=artifact.stat().st_size, int8_op_share=None,
                       int8_weight_share=_torch_file_int8_share(
                           artifact, _weight_keys(structure)))
    return out


def _layer_table(model: nn.Module, state: Mapping[str, torch.Tensor],
                 macs: Mapping[str, int]) -> list[dict[str, Any]]:
    rows = []
    for name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        keys = [_key(name, n) for n in own]
        total = sum(state[k].numel() for k in keys)
        nonzero = sum(int((state[k] != 0).sum()) for k in keys)
        w = state.get(_key(name, "weight"))
        density = float((w != 0).float().mean()) if w is not None and w.numel() else 1.0
        layer_macs = macs.get(name, 0)
        rows.append({
            "name": name, "type": type(module).__name__,
            "parameter_count": total, "nonzero_count": nonzero,
            "sparsity": 1.0 - nonzero / total if total else 0.0,
            "weight_sparsity": 1.0 - density,
            "macs": layer_macs, "nonzero_macs": layer_macs * density,
        })
    return rows


def footprint(
    model: nn.Module,
    *,
    input_size: Sequence[int],
    masks: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    structure: nn.Module | None = None,
    measure_time: bool = True,
    artifact: str | Path | None = None,
) -> dict[str, Any]:
    """Measure parameters, sparsity, size on disk, int8 shares, MACs and latency of ``model``.

    Parameters
    ----------
    model
        The model as it will run (a compressed copy); it is not modified.
    input_size
        One image's shape without the batch dimension, e.g. ``(3, 224, 224)``.
    masks
        Pruning keep-masks (parameter name -> bool tensor); masked entries count as zero.
    batch_size, repeats, warmup
        Latency measurement: images per forward pass, timed passes, untimed passes.
    structure
        The torch model whose parameters and MACs ``model`` executes, for models without
        torch parameters such as ONNX Runtime modules (default: ``model``).
    measure_time
        Set ``False`` to skip the latency measurement (``latency`` is then ``None``).
    artifact
        The file that is deployed for ``model`` (e.g. the loaded ``.onnx`` or state-dict
        file a team ships): ``size_bytes`` is its size (with an ``.onnx`` file's
        external data) and the int8 shares are read from it. Default: the artifact
        compaudit writes for ``model`` (see the module docstring).

    Returns
    -------
    dict
        JSON-ready: ``parameter_count``, ``nonzero_count``, ``sparsity``,
        ``weight_sparsity``, ``layers`` (per module owning parameters), ``size_bytes``,
        ``compressed_size_bytes``, ``compression_ratio``, ``int8_weight_share``,
        ``int8_op_share``, ``input_size``, ``macs``, ``nonzero_macs``,
        ``theoretical_speedup``, ``latency_kernel`` (what the forward pass runs on,
        timed or not) and ``latency`` (:func:`measure_latency`'s dict, or ``None``).

    Examples
    --------
    >>> layer = torch.nn.Linear(8, 4, bias=False)
    >>> fp = footprint(layer, input_size=(8,), measure_time=False)
    >>> fp["macs"], fp["parameter_count"]
    (32, 32)
    """
    size = _check_input_size(input_size)
    if artifact is not None:
        artifact = Path(artifact)
        if not artifact.is_file():
            raise AuditInputError(f"footprint: artifact {str(artifact)!r} is not a file; "
                                  "pass the model file that is deployed, or None")
    if masks is not None and not isinstance(masks, Mapping):
        raise AuditInputError("footprint: masks must map parameter names to bool tensors, "
                              f"got {type(masks).__name__}")
    source = structure if structure is not None else model
    names = {n for n, _ in source.named_parameters()}
    unknown = sorted(set(masks or {}) - names)
    if unknown:
        raise AuditInputError(
            f"footprint: masks name parameters the model does not have: {unknown[:5]}; "
            "masks must use the names of model.named_parameters()")
    state = effective_state(source, masks)
    params = {n: state[n] for n in names if n in state}
    total = sum(t.numel() for t in params.values())
    nonzero = sum(int((t != 0).sum()) for t in params.values())
    weights = [state[_key(n, "weight")] for n, m in source.named_modules()
               if isinstance(m, QUANTIZABLE) and _key(n, "weight") in state]
    n_w = sum(w.numel() for w in weights)
    nz_w = sum(int((w != 0).sum()) for w in weights)
    macs, layer_macs = count_macs(source, input_size=size)
    layers = _layer_table(source, state, layer_macs)
    pruned_macs = sum(row["macs"] - row["nonzero_macs"] for row in layers)
    nonzero_macs = macs - pruned_macs
    sizes = _sizes_on_disk(model, masks if structure is None else None, artifact, source)
    dense_bytes, compressed_bytes = sizes["size_bytes"], sizes["compressed_size_bytes"]
    latency = (measure_latency(model, input_size=size, batch_size=batch_size, repeats=repeats,
                               warmup=warmup) if measure_time else None)
    counted = {
        "parameter_count": total,
        "nonzero_count": nonzero,
        "sparsity": 1.0 - nonzero / total if total else 0.0,
        "weight_sparsity": 1.0 - nz_w / n_w if n_w else 0.0,
        "layers": layers,
        "size_bytes": dense_bytes,
        "compressed_size_bytes": compressed_bytes,
        "compression_ratio": dense_bytes / compressed_bytes if compressed_bytes else None,
        "int8_weight_share": sizes["int8_weight_share"],
        "int8_op_share": sizes["int8_op_share"],
        "input_size": list(size),
        "macs": macs,
        "nonzero_macs": nonzero_macs,
        "theoretical_speedup": macs / nonzero_macs if nonzero_macs > 0 else None,
        "latency_kernel": latency["kernel"] if latency else latency_kernel(model),
        "latency": latency,
    }
    if not names:  # an ONNX model without its torch structure: nothing to count, not zero
        counted.update(dict.fromkeys(("parameter_count", "nonzero_count", "sparsity",
                                      "weight_sparsity", "macs", "nonzero_macs"), None))
    return counted


def variant_record(*, method: str, parameters: Mapping[str, Any] | None,
                   derives_from: str | None, footprint: Mapping[str, Any],
                   **extra: Any) -> dict[str, Any]:
    """One ``variants.json`` record from a footprint and how the variant was made.

    Parameters
    ----------
    method
        E.g. ``"dense"``, ``"gmp"``, ``"int8-static"`` (``CompressedModel.info["method"]``).
    parameters
        The method's parameters (``info["parameters"]``).
    derives_from
        Name of the dense variant it was derived from (``None`` for a dense variant).
    footprint
        The result of :func:`footprint`.
    extra
        More JSON-ready fields (e.g. ``execution``, ``pruning_penalty``).

    Returns
    -------
    dict
        The :data:`VARIANT_FIELDS` (``sparsity`` is the footprint's
        ``weight_sparsity``; ``latency_kernel`` is ``None`` when no latency was
        measured), then ``extra``.
    """
    latency = footprint.get("latency") or {}
    return {
        "method": method,
        "parameters": dict(parameters or {}),
        "derives_from": derives_from,
        "sparsity": footprint.get("weight_sparsity"),
        "parameter_count": footprint.get("parameter_count"),
        "nonzero_count": footprint.get("nonzero_count"),
        "size_bytes": footprint.get("size_bytes"),
        "compressed_size_bytes": footprint.get("compressed_size_bytes"),
        "int8_weight_share": footprint.get("int8_weight_share"),
        "int8_op_share": footprint.get("int8_op_share"),
        "macs": footprint.get("macs"),
        "theoretical_speedup": footprint.get("theoretical_speedup"),
        "latency_ms": latency.get("median_ms"),
        "latency_batch_size": latency.get("batch_size"),
        # what latency_ms was measured on: null when it was not measured
        "latency_kernel": (latency.get("kernel") or footprint.get("latency_kernel")
                           if latency.get("median_ms") is not None else None),
        **extra,
    }


def write_variants_json(path: str | Path, variants: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``variants.json`` atomically: ``{"schema": ..., "variants": {name: record}}``.

    Parameters
    ----------
    path
        Target file (its folder is created).
    variants
        Variant name (``dense``, ``gmp-90``, ``int8-static``, ...) to record; every record
        has the :data:`VARIANT_FIELDS` (``None`` where not measured), e.g. from
        :func:`variant_record`; shares lie in [0, 1] and ``latency_kernel`` is one of
        :data:`LATENCY_KERNELS`.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise AuditInputError("variants.json: expected a non-empty mapping of variant name "
                              f"to record, got {variants!r}")
    problems = []
    for name, record in variants.items():
        if not isinstance(name, str) or not name:
            problems.append(f"variants.json: variant names must be non-empty strings, got {name!r}")
        elif not isinstance(record, Mapping):
            problems.append(f"variants.json: variant {name!r} must be a dict, got "
                            f"{type(record).__name__}")
        else:
            missing = [f for f in VARIANT_FIELDS if f not in record]
            if missing:
                problems.append(f"variants.json: variant {name!r} lacks {', '.join(missing)}; "
                                "build records with variant_record() (None where not measured)")
            for field in ("int8_weight_share", "int8_op_share"):
                share = record.get(field)
                if share is not None and not (isinstance(share, (int, float))
                                              and not isinstance(share, bool)
                                              and 0.0 <= share <= 1.0):
                    problems.append(f"variants.json: variant {name!r} {field} must be a "
                                    f"share in [0, 1] or null, got {share!r}")
            kernel = record.get("latency_kernel")
            if kernel is not None and kernel not in LATENCY_KERNELS:
                problems.append(f"variants.json: variant {name!r} latency_kernel must be one "
                                f"of {', '.join(LATENCY_KERNELS)} or null, got {kernel!r}")
            derives = record.get("derives_from")
            if derives is not None and derives not in variants:
                problems.append(f"variants.json: variant {name!r} derives_from {derives!r}, "
                                f"which is not a variant; valid: {', '.join(map(str, variants))}")
    if problems:
        raise AuditInputError(problems)
    document = {"schema": VARIANTS_SCHEMA,
                "variants": jsonable(dict(variants), where="variants.json: variants")}
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")
    return Path(path)
