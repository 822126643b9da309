"""Int8 static quantization simulated in torch, laid out exactly like ONNX Runtime's QDQ model.

:func:`prepare_static` folds BatchNorm into the preceding convolutions (``torch.fx``)
and inserts an :class:`ActivationQuantizer` on every tensor ONNX Runtime quantizes when
``op_types_to_quantize = ("Conv", "Gemm", "MatMul", "Relu", "Clip")``:

* the input of every conv/linear layer;
* the output of every conv/linear layer, or, when an activation ONNX Runtime removes is
  its only consumer, that activation's output: a ReLU, or a ReLU6/Hardtanh/clamp with
  number bounds (``nn.ReLU6``, ``nn.Hardtanh``, ``F.relu6``, ``F.hardtanh``,
  ``torch.clamp``, which export as ``Clip``). ONNX Runtime's QDQ quantizer treats
  ``Relu`` and ``Clip`` alike (``QDQRemovableActivation`` in
  ``onnxruntime/quantization/registry.py``): with asymmetric activations it removes the
  node and quantizes the layer's output with the activation output's calibrated range.
  :func:`convert_static` removes the activation likewise, after calibration. This is
  exact: the range is widened to contain 0, so for a ReLU or ReLU6 (output ``[0, m]``,
  ``m <= 6``) the zero point is ``qmin`` and the quantizer's clamp to ``[qmin, qmax]``
  sends every value the activation clamps (below 0, above ``m <= 6``) to the same
  integer as the clamped value, and leaves the others as they were. One quantizer per
  Conv-BN-ReLU6 block instead of two, as int8 deployments run ReLU6 networks.

As in the QDQ graph, a quantized tensor is replaced for *all* its consumers, e.g. the
identity branch of a residual block reads the quantized block input. Pooling, flatten,
additions and unfused activations run in float on dequantized values, as ONNX Runtime
runs them. :func:`calibrate` runs the float model over calibration batches (the
quantizers observe), and :func:`convert_static` fixes the activation scales and
quantizes weights (per output channel, symmetric int8) and biases (int32 at
``s_input * s_weight``). Rounding rules are those of :mod:`compaudit.compress.qparams`.

The layouts agree for convolutional classifiers (conv/linear/ReLU/ReLU6/pooling/residual
additions, e.g. ``small_cnn``, the ResNets and MobileNetV2). A linear layer on inputs of
rank > 2 exports as ``MatMul`` + ``Add``, whose output ONNX Runtime quantizes before the
bias is added; the simulation quantizes after it, so such models may differ slightly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from compaudit.compress.observers import Observer, make_observer
from compaudit.compress.qparams import (
    QDType,
    compute_qparams,
    dequantize,
    fake_quantize,
    qrange,
    quantize,
    quantize_bias,
    weight_qparams,
)
from compaudit.compress.quant_sim import QUANTIZABLE, set_weight_format
from compaudit.errors import AuditInputError

__all__ = [
    "ActivationQuantizer",
    "StaticLayer",
    "fold_batchnorm",
    "prepare_static",
    "calibrate",
    "convert_static",
]


class ActivationQuantizer(nn.Module):
    """Observes a tensor while calibrating, then applies QuantizeLinear + DequantizeLinear.

    Parameters
    ----------
    observer
        Collects the range during calibration (dropped by :meth:`freeze`).
    dtype
        ``"uint8"`` or ``"int8"`` (affine, per tensor).
    """

    def __init__(self, observer: Observer, *, dtype: QDType) -> None:
        super().__init__()
        self.observer: Observer | None = observer
        self.pass_index = 0
        self.dtype = dtype
        rng = qrange(dtype)
        self.qmin, self.qmax = rng.qmin, rng.qmax
        self.scale: torch.Tensor
        self.zero_point: torch.Tensor
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0))
        #: Set by :func:`prepare_static` when no other value shares the input tensor
        #: (a conv output read by this quantizer only): quantized in place, without
        #: grad, saving an activation-sized tensor per call.
        self.inplace = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.observer is not None:
            self.observer.observe(x, self.pass_index)
            return x
        inplace = self.inplace and not torch.is_grad_enabled() and x.dtype == torch.float32
        return fake_quantize(x, self.scale, self.zero_point, qmin=self.qmin,
                             qmax=self.qmax, inplace=inplace).to(x.dtype)

    def freeze(self) -> None:
        """Turn the observed range into scale and zero point and start quantizing."""
        if self.observer is None:
            return
        rmin, rmax = self.observer.range()
        scale, zp = compute_qparams(rmin, rmax, dtype=self.dtype, symmetric=False)
        self.scale = scale.to(self.scale.device)
        self.zero_point = zp.to(self.zero_point.device)
        self.observer = None

    def extra_repr(self) -> str:
        state = "observing" if self.observer is not None else (
            f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}")
        return f"{self.dtype}, {state}"


@dataclass(frozen=True)
class StaticLayer:
    """A quantized conv/linear layer and the quantizers of its input and output.

    ``relu_fused``: the output quantizer sits on a ReLU/ReLU6/Hardtanh/clamp that alone
    read the layer's output (the name predates ReLU6; it is a key of the variant's info).
    """

    name: str
    input_quantizer: str
    output_quantizer: str
    relu_fused: bool


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A ``torch.fx`` copy of ``model`` in eval mode with BatchNorm folded into convolutions.

    ``model`` itself is not modified (not even its train/eval mode).

    Raises
    ------
    AuditInputError
        If ``torch.fx`` cannot trace the model (data-dependent control flow).
    """
    try:
        # fuse traces the model and returns the GraphModule; it is annotated as Module.
        return cast(fx.GraphModule, fuse(copy.deepcopy(model).eval(), inplace=True))
    except Exception as err:  # fx raises many types for untraceable code
        raise AuditInputError(
            f"int8 static quantization needs a model torch.fx can trace, but tracing "
            f"{type(model).__name__} failed ({type(err).__name__}: {err}); remove "
            "data-dependent control flow from forward, or use Int8WeightOnlyConfig"
        ) from err


_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
# exported as ONNX Clip (onnxscript's aten_hardtanh, aten_relu6, aten_clamp)
_CLIP_FUNCTIONS = (F.relu6, F.hardtanh, F.hardtanh_, torch.clamp, torch.clamp_, torch.clip,
                   torch.clip_)
_CLIP_METHODS = ("clamp", "clamp_", "clip", "clip_")


def _has_scalar_bounds(node: fx.Node) -> bool:
    """Whether a clamp's bounds are numbers or None (ONNX Clip); tensor bounds export as
    Max/Min, which ONNX Runtime does not remove."""
    bounds = [*node.args[1:], *(v for k, v in node.kwargs.items() if k != "inplace")]
    return all(b is None or isinstance(b, (int, float)) for b in bounds)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is an activation ONNX Runtime's QDQ quantizer removes: a ReLU, or a
    ReLU6/Hardtanh/clamp, which exports as ``Clip`` (both ``QDQRemovableActivation``)."""
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), (nn.ReLU, nn.Hardtanh))
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS or (
            node.target in _CLIP_FUNCTIONS and _has_scalar_bounds(node))
    return node.op == "call_method" and (node.target in ("relu", "relu_") or (
        node.target in _CLIP_METHODS and _has_scalar_bounds(node)))


def _insert_quantizer(gm: fx.GraphModule, node: fx.Node, name: str,
                      quantizer: ActivationQuantizer) -> None:
    gm.add_submodule(name, quantizer)
    with gm.graph.inserting_after(node):
        q = gm.graph.call_module(name, args=(node,))
    # every consumer reads the quantized tensor, as with a shared QDQ pair in ONNX
    node.replace_all_uses_with(q, delete_user_cb=lambda user: user is not q)


def _owns_output(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node``'s output tensor is its own: a conv/linear or quantizer output,
    or an activation of such a tensor that nothing else reads. Anything else (the
    graph's input, views, in-place sums) may share memory with a value read later."""
    if node.op != "call_module":
        return False
    module = modules[str(node.target)]
    if isinstance(module, (*QUANTIZABLE, ActivationQuantizer)):
        return True
    if isinstance(module, (nn.ReLU, nn.Hardtanh)):  # ReLU6 is a Hardtanh
        source = node.args[0]
        return not module.inplace or (isinstance(source, fx.Node) and len(source.users) == 1
                                      and _owns_output(source, modules))
    return False


def prepare_static(model: nn.Module, *, observer: str = "minmax", percentile: float = 99.999,
                   activation_dtype: QDType = "uint8",
                   ) -> tuple[fx.GraphModule, list[StaticLayer]]:
    """Fold BatchNorm and insert observing quantizers where ONNX Runtime puts QDQ pairs.

    Parameters
    ----------
    model
        The float model (not modified; it is traced and copied).
    observer, percentile
        Range observer of every activation, see :mod:`compaudit.compress.observers`.
    activation_dtype
        ``"uint8"`` or ``"int8"``.

    Returns
    -------
    graph_module, layers
        The prepared copy (float, eval mode, observing) and its quantized layers.
    """
    gm = fold_batchnorm(model)
    modules = dict(gm.named_modules())
    points: dict[fx.Node, str] = {}  # tensor -> quantizer name, in graph order
    plan = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[str(node.target)], QUANTIZABLE):
            continue
        source = node.args[0]
        users = list(node.users)
        relu = len(users) == 1 and _is_relu(users[0], modules)
        output = users[0] if relu else node
        for tensor in (source, output):
            points.setdefault(tensor, f"act_quant_{len(points)}")
        plan.append(StaticLayer(str(node.target), points[source], points[output], relu))
    if not plan:
        raise AuditInputError(
            f"{type(model).__name__} has no Conv or Linear layer to quantize; int8 static "
            "quantization applies to convolutional and linear classifiers"
        )
    for tensor, name in points.items():
        _insert_quantizer(gm, tensor, name, ActivationQuantizer(
            make_observer(observer, percentile=percentile), dtype=activation_dtype))
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[str(node.target)], ActivationQuantizer):
            source = node.args[0]
            modules[str(node.target)].inplace = isinstance(source, fx.Node) and \
                len(source.users) == 1 and _owns_output(source, modules)
    gm.graph.lint()
    gm.recompile()
    return gm, plan


def _quantizer(model: nn.Module, name: str) -> ActivationQuantizer:
    """The quantizer :func:`prepare_static` inserted as ``name``."""
    q = model.get_submodule(name)
    if not isinstance(q, ActivationQuantizer):
        raise TypeError(f"{name} is a {type(q).__name__}, not an ActivationQuantizer")
    return q


def _quantizers(model: nn.Module) -> list[ActivationQuantizer]:
    return [m for m in model.modules() if isinstance(m, ActivationQuantizer)]


@torch.no_grad()
def calibrate(model: nn.Module, batches: Callable[[], Iterable[torch.Tensor]], *,
              device: torch.device | str,
              progress: Callable[[Iterable], Iterable] = lambda it: it) -> None:
    """Run the prepared float model over the calibration batches so the quantizers observe.

    ``batches()`` must yield the same batches each time it is called (one call per pass;
    the percentile observer needs two).
    """
    quantizers = [q for q in _quantizers(model) if q.observer is not None]
    passes = max((q.observer.passes for q in quantizers if q.observer is not None), default=0)
    for pass_index in range(passes):
        for q in quantizers:
            q.pass_index = pass_index
        for x in progress(batches()):
            model(x.to(device))


def _drop_fused_activations(model: fx.GraphModule, layers: list[StaticLayer]) -> None:
    """Remove each fused activation from the graph, as ONNX Runtime removes the node: its
    quantizer then reads the layer's output directly. An activation *module* stays under
    its name as an ``nn.Identity`` after the quantizer, so a hook on it (network
    dissection hooks layers by name) sees the quantized activation the next layer reads.

    The quantizer's range is the activation's calibrated output range widened to contain 0
    (:func:`compute_qparams`). With bounds ``lo <= 0 <= hi`` (ReLU: ``[0, inf)``, ReLU6:
    ``[0, 6]``) that range lies inside ``[lo, hi]``, so the quantizer's clamp to
    ``[qmin, qmax]`` maps every input the activation clamps to the same integer as the
    clamped value (below ``lo`` both to ``qmin``, above ``hi`` both to ``qmax``) and
    leaves the others alone: the same values (a zero's sign aside), one elementwise pass
    fewer. With ``lo = 0`` the zero point is exactly ``qmin``; with ``lo < 0`` it is
    rounded, and an input below ``lo`` can land one step from ``lo``'s. Bounds that
    exclude 0 change the function; ONNX Runtime removes such a ``Clip`` all the same, and
    so does the simulation, to stay its mirror.
    """
    fused = {layer.output_quantizer for layer in layers if layer.relu_fused}
    for node in list(model.graph.nodes):
        if node.op != "call_module" or node.target not in fused:
            continue
        activation = node.args[0]
        source = activation.args[0] if activation.args else None
        if not isinstance(source, fx.Node):  # input passed by keyword: keep it, exact too
            continue
        # fusing required the activation to be the layer's only consumer, and the
        # quantizer replaced every use of the activation
        node.replace_input_with(activation, source)
        if activation.op == "call_module":
            # The module keeps its name as an identity after the quantizer: hooks on it
            # (network dissection names such layers) see the quantized activation.
            model.add_submodule(str(activation.target), nn.Identity())
            node.append(activation)
            activation.args = (node,)
            node.replace_all_uses_with(activation, delete_user_cb=lambda u: u is not activation)
        elif not activation.users:
            model.graph.erase_node(activation)
    model.graph.lint()
    model.recompile()


@torch.no_grad()
def convert_static(model: fx.GraphModule, layers: list[StaticLayer]) -> list[dict[str, Any]]:
    """Fix activation scales, quantize weights and biases; the model then runs quantized.

    Returns
    -------
    list of dict
        Per layer: name, input and output scale and zero point, whether an activation
        (ReLU, ReLU6, Hardtanh, clamp) was fused.
    """
    for quantizer in _quantizers(model):
        quantizer.freeze()
    _drop_fused_activations(model, layers)
    summary = []
    for layer in layers:
        m = model.get_submodule(layer.name)
        q_in = _quantizer(model, layer.input_quantizer)
        q_out = _quantizer(model, layer.output_quantizer)
        weight = m.get_parameter("weight")
        device = weight.device
        w_scale, w_zp = weight_qparams(weight, per_channel=True, symmetric=True, axis=0)
        q = quantize(weight, w_scale, w_zp, dtype="int8", axis=0, symmetric=True)
        weight.copy_(dequantize(q, w_scale, w_zp, axis=0).to(weight.dtype))
        if m.bias is not None:
            bias = m.get_parameter("bias")
            qb, bias_scale = quantize_bias(bias, q_in.scale.to(device), w_scale.to(device))
            bias.copy_((qb.float() * bias_scale).to(bias.dtype))  # DequantizeLinear
        set_weight_format(m, w_scale.to(device), w_zp.to(device), axis=0, symmetric=True)
        summary.append({
            "layer": layer.name,
            "input_scale": float(q_in.scale), "input_zero_point": int(q_in.zero_point),
            "output_scale": float(q_out.scale), "output_zero_point": int(q_out.zero_point),
            "relu_fused": layer.relu_fused,
        })
    return summary
