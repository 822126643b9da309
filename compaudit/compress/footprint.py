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
    floating tensors in that dtype (native or simulated alike), BatchNorm folded into
    its convolution as :mod:`compaudit.compress.fold` folds it (what ONNX export ships;
    the dense model is counted as it is, BatchNorm and all, so its float16 variant is
    a little under half of it: mobilenet_v2 has 17k BatchNorm channels beside 3.5M
    weights). Dense float32 and
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
* **Latency** (``latency_ms``, ``latency_kernel``): :mod:`compaudit.compress.latency`;
  ``latency_kernel`` says whether ONNX Runtime, real torch kernels or a float32
  simulation was timed (a simulated int8 or float16 time says nothing of their speed).
  The ONNX int8 shares are read by :mod:`compaudit.compress.onnx_inspect`.

A model without torch parameters (an ONNX Runtime module) is measured for size and
latency; pass ``structure=`` (the float torch model it was exported from) for its
parameter counts and MACs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compaudit._atomic import atomic_write_text
from compaudit.compress.latency import (
    _check_input_size,
    _model_device,
    _onnx_module_file,
    latency_kernel,
    measure_latency,
)
from compaudit.compress.onnx_inspect import onnx_int8_summary
from compaudit.compress.quant_sim import (
    QUANTIZABLE,
)
from compaudit.compress.storage import (
    deployable_state,
    effective_state,
    encode_state,
    write_encoded,
)
from compaudit.errors import AuditInputError
from compaudit.models.weights import read_state_dict
from compaudit.rundir import VARIANTS_SCHEMA, jsonable
from compaudit.schema import VariantRecord, Variants, dumps_variants

__all__ = [
    "VARIANTS_SCHEMA",
    "count_macs",
    "footprint",
    "variant_record",
    "write_variants_json",
]



def _key(module_name: str, leaf: str) -> str:
    return f"{module_name}.{leaf}" if module_name else leaf


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
                   family: str | None = None, axis: str | None = None,
                   bits: int | None = None, base: str | None = None,
                   **extra: Any) -> dict[str, Any]:
    """One ``variants.json`` record from a footprint and how the variant was made.

    Parameters
    ----------
    method
        ``"dense"``, or the method's name in the spec (``"gradual_magnitude"``,
        ``"int8_static"``: ``CompressedModel.info["method"]``).
    parameters
        The method's parameters (``info["parameters"]``).
    derives_from
        Name of the dense variant it was derived from (``None`` for a dense variant).
    footprint
        The result of :func:`footprint`.
    family, axis
        The method entry's operating-point family and axis (``"sparsity"``, ``"bits"``
        or ``None``; :class:`~compaudit.configs.compress.Method`); ``None`` for dense.
    bits
        Bit width of a quantizing method's weights (``info["bits"]``).
    base
        The compressed variant it was made from (a repair's base, whose family and
        sparsity it shares; ``Method.derives_from``); ``None`` for the others.
    extra
        More JSON-ready fields (e.g. ``execution``, ``pruning_penalty``).

    Returns
    -------
    dict
        The :data:`~compaudit.schema.VARIANT_FIELDS` (``sparsity`` is the footprint's
        ``weight_sparsity``; ``latency_kernel`` is ``None`` when no latency was
        measured), then ``extra``.
    """
    latency = footprint.get("latency") or {}
    return {
        "method": method,
        "family": family,
        "axis": axis,
        "bits": bits,
        "parameters": dict(parameters or {}),
        "derives_from": derives_from,
        "base": base,
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


def write_variants_json(path: str | Path,
                        variants: Mapping[str, Mapping[str, Any] | VariantRecord]) -> Path:
    """Write ``variants.json`` atomically: a :class:`~compaudit.schema.Variants` record.

    Parameters
    ----------
    path
        Target file (its folder is created).
    variants
        Variant name (``dense``, ``gmp-90``, ``int8-static``, ...) to its record: a
        :class:`~compaudit.schema.VariantRecord`, or its JSON form (every
        :data:`~compaudit.schema.VARIANT_FIELDS` key, ``None`` where not measured, e.g. from
        :func:`variant_record`); shares lie in [0, 1] and ``latency_kernel`` is one of
        :data:`~compaudit.schema.LATENCY_KERNELS`.
    """
    if not isinstance(variants, Mapping) or not variants:
        raise AuditInputError("variants.json: expected a non-empty mapping of variant name "
                              f"to record, got {variants!r}")
    problems, records = [], {}
    for name, record in variants.items():
        if not isinstance(name, str) or not name:
            problems.append(f"variants.json: variant names must be non-empty strings, got {name!r}")
        elif isinstance(record, VariantRecord):
            records[name] = record
        else:
            try:
                records[name] = VariantRecord.from_dict(
                    jsonable(record, where=f"variants.json: {name}")
                    if isinstance(record, Mapping) else record, where=f"variants.json: variant {name!r}")
            except AuditInputError as err:
                problems += err.problems
    doc = Variants(variants=records)
    problems += doc.problems("variants.json") if not problems else []
    if problems:
        raise AuditInputError(problems)
    atomic_write_text(path, dumps_variants(doc))
    return Path(path)
