"""What an ONNX graph stores and runs in int8 (``int8_weight_share``, ``int8_op_share``).

Only the main graph is read (``onnx.load(load_external_data=False)``); the definitions
of both shares are in :mod:`compaudit.compress.footprint`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["onnx_int8_summary"]

_log = logging.getLogger(__name__)

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

