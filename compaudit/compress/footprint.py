"""What a (compressed) model costs: parameters, sparsity, bytes on disk, MACs, latency.

:func:`footprint` measures one model; :func:`variant_record` turns a footprint into the
record of ``variants.json`` (DESIGN.md) and :func:`write_variants_json` writes that file
atomically.

Definitions
-----------
* **Sparsity**: share of zero entries, with pruning masks applied. ``sparsity`` counts
  all parameters, ``weight_sparsity`` only conv/linear weights (what pruning targets).
* **Size on disk**: bytes of files actually written to a temporary folder.
  ``size_bytes`` is ``torch.save(model.state_dict())`` (or the ``.onnx`` file of an
  ONNX Runtime model); ``compressed_size_bytes`` is the representation of
  :mod:`compaudit.compress.storage` (bitmask + non-zeros where smaller, int8 weights
  with their scales, float16/bfloat16 values) in its minimal container.
* **MACs**: multiply-accumulates of one image at ``input_size``, from
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products;
  MACs = FLOPs / 2). Element-wise ops, pooling and normalization are not counted.
* **Theoretical speedup** (survey guidance, REFERENCES.md): dense MACs over non-zero
  MACs, where each conv/linear layer's MACs are scaled by the density of its weight.
* **Latency**: median wall time of ``repeats`` forward passes of a batch of
  ``batch_size`` random images after ``warmup`` passes, in milliseconds.

A model without torch parameters (an ONNX Runtime module) is measured for size and
latency; pass ``structure=`` (the float torch model it was exported from) for its
parameter counts and MACs.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from compaudit._atomic import atomic_write_text
from compaudit.compress.quant_sim import QUANTIZABLE
from compaudit.compress.storage import effective_state, encode_state, write_encoded
from compaudit.errors import AuditInputError
from compaudit.rundir import VARIANTS_SCHEMA, jsonable

__all__ = [
    "footprint",
    "count_macs",
    "measure_latency",
    "variant_record",
    "write_variants_json",
    "VARIANT_FIELDS",
    "VARIANTS_SCHEMA",
]

#: Fields every record of ``variants.json`` has (``null`` when not measured).
VARIANT_FIELDS = (
    "method", "parameters", "derives_from", "sparsity", "parameter_count", "nonzero_count",
    "size_bytes", "compressed_size_bytes", "macs", "theoretical_speedup", "latency_ms",
    "latency_batch_size",
)


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
        ``median_ms``, ``min_ms``, ``batch_size``, ``repeats``, ``warmup``, ``device``
        and ``threads`` (torch intra-op threads).
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
            "device": str(device), "threads": torch.get_num_threads()}


def _sizes_on_disk(model: nn.Module, masks: Mapping[str, torch.Tensor] | None
                   ) -> tuple[int, int]:
    with tempfile.TemporaryDirectory(prefix="compaudit-footprint-") as tmp:
        dense, compressed = Path(tmp) / "dense.pt", Path(tmp) / "compressed.bin"
        onnx_path = getattr(model, "path", None)
        if not list(model.state_dict()) and onnx_path is not None and Path(onnx_path).is_file():
            # an ONNX Runtime module: its weights live in the .onnx file, already encoded
            shutil.copyfile(onnx_path, dense)
            return dense.stat().st_size, dense.stat().st_size
        torch.save(effective_state(model, masks), dense)
        return dense.stat().st_size, write_encoded(compressed, encode_state(model, masks))


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
) -> dict[str, Any]:
    """Measure parameters, sparsity, size on disk, MACs and latency of ``model``.

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

    Returns
    -------
    dict
        JSON-ready: ``parameter_count``, ``nonzero_count``, ``sparsity``,
        ``weight_sparsity``, ``layers`` (per module owning parameters), ``size_bytes``,
        ``compressed_size_bytes``, ``compression_ratio``, ``input_size``, ``macs``,
        ``nonzero_macs``, ``theoretical_speedup`` and ``latency``.

    Examples
    --------
    >>> layer = torch.nn.Linear(8, 4, bias=False)
    >>> fp = footprint(layer, input_size=(8,), measure_time=False)
    >>> fp["macs"], fp["parameter_count"]
    (32, 32)
    """
    size = _check_input_size(input_size)
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
    dense_bytes, compressed_bytes = _sizes_on_disk(model, masks if structure is None else None)
    latency = (measure_latency(model, input_size=size, batch_size=batch_size, repeats=repeats,
                               warmup=warmup) if measure_time else None)
    return {
        "parameter_count": total,
        "nonzero_count": nonzero,
        "sparsity": 1.0 - nonzero / total if total else 0.0,
        "weight_sparsity": 1.0 - nz_w / n_w if n_w else 0.0,
        "layers": layers,
        "size_bytes": dense_bytes,
        "compressed_size_bytes": compressed_bytes,
        "compression_ratio": dense_bytes / compressed_bytes if compressed_bytes else None,
        "input_size": list(size),
        "macs": macs,
        "nonzero_macs": nonzero_macs,
        "theoretical_speedup": macs / nonzero_macs if nonzero_macs > 0 else None,
        "latency": latency,
    }


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
        "macs": footprint.get("macs"),
        "theoretical_speedup": footprint.get("theoretical_speedup"),
        "latency_ms": latency.get("median_ms"),
        "latency_batch_size": latency.get("batch_size"),
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
        :func:`variant_record`.
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
