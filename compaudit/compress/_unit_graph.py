"""Which layers' units can be pruned, found by tracing the model with ``torch.fx``.

A unit is an output channel of a convolution or an output feature of a linear layer
(the *producer*). Its activation is what the next conv or linear layer (the
*consumer*) reads in that input channel. A producer qualifies when its output reaches
exactly one consumer through operations that act on each channel alone and map a zero
channel to zero: BatchNorm (whose scale and shift for the unit are zeroed with it),
ReLU-like activations, dropout, max/average pooling, flatten and spatial means. Then
zeroing the unit's weights makes its activation exactly zero, and its mean activation
can be folded into the consumer's bias.

Residual additions, concatenations and any other branching disqualify a producer
(in a ResNet: the last conv of each block and the downsample convs); so does a
grouped consumer convolution and the classifier, which has no consumer. So does a
layer whose input does not depend on the model's input (e.g. Swin V2's
continuous-position-bias MLP, which reads a fixed table of coordinates): its units are
the same for every example, and they have no batch axis to be scored on.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from compaudit.errors import AuditInputError

__all__ = ["UnitLayer", "find_unit_layers"]


@dataclass(frozen=True)
class UnitLayer:
    """A producer whose units can be pruned, and where its units go.

    Attributes
    ----------
    producer
        Module name of the conv/linear layer whose output units are pruned.
    consumer
        Module name of the conv/linear layer that reads them.
    norms
        BatchNorm modules between the two; their scale and shift for a removed unit
        are zeroed, so the unit outputs zero in eval and training mode alike.
    flat
        True when the consumer is a linear layer reading a flattened conv output: unit
        ``k`` then occupies consumer inputs ``[k*P, (k+1)*P)``, ``P`` positions each.
        When both layers are linear the units are on the last axis of what the
        consumer reads, and any axes between the batch and that one (tokens of a
        transformer, the spatial axes of a channels-last map) are positions.
    num_units
        Output channels/features of the producer.
    """

    producer: str
    consumer: str
    norms: tuple[str, ...]
    flat: bool
    num_units: int


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Hardswish, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d,
)
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.gelu,
    F.silu, F.mish, F.tanh, torch.tanh, F.hardswish, F.hardtanh, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d,
}
_POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "tanh", "tanh_", "contiguous", "clone"}


def _arg(node: fx.Node, index: int, name: str, default: object) -> object:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _flattens_from_1(node: fx.Node, start_index: int = 1) -> bool:
    return _arg(node, start_index, "start_dim", 0) == 1 and _arg(
        node, start_index + 1, "end_dim", -1
    ) == -1


def _spatial_mean(node: fx.Node, spatial: int) -> str | None:
    """'spatial' or 'flat' when ``node`` averages over spatial dims only, else None."""
    dims = _arg(node, 1, "dim", None)
    dims = (dims,) if isinstance(dims, int) else dims
    if not isinstance(dims, (tuple, list)) or not dims or not all(isinstance(d, int) for d in dims):
        return None
    ndim = spatial + 2
    norm = {d % ndim for d in dims}
    if 0 in norm or 1 in norm:
        return None
    keepdim = _arg(node, 2, "keepdim", False)
    if keepdim:
        return "spatial"
    return "flat" if norm == set(range(2, ndim)) else None


def _step(node: fx.Node, modules: dict[str, nn.Module], layout: str, spatial: int,
          units: int, norms: list[str]) -> tuple[str | None, str]:
    """Follow one channel-preserving op. Returns (new layout or None, reason)."""
    if node.op == "call_module":
        m = modules[str(node.target)]
        if isinstance(m, _ELEMENTWISE_MODULES):
            return layout, ""
        if isinstance(m, _POOL_MODULES) and layout == "spatial":
            return layout, ""
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and layout in ("spatial", "channels"):
            if m.affine and m.num_features == units:
                norms.append(str(node.target))
                return layout, ""
            return None, f"passes through {type(m).__name__} {node.target!r} without affine parameters"
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            return ("flat" if layout == "spatial" else layout), ""
        return None, f"passes through {type(m).__name__} {node.target!r}, which mixes channels"
    if node.op == "call_function":
        if node.target in _ELEMENTWISE_FUNCTIONS:
            return layout, ""
        if node.target in _POOL_FUNCTIONS and layout == "spatial":
            return layout, ""
        if node.target is torch.flatten and _flattens_from_1(node):
            return ("flat" if layout == "spatial" else layout), ""
        if node.target is torch.mean and layout == "spatial":
            new = _spatial_mean(node, spatial)
            if new:
                return new, ""
        name = getattr(node.target, "__name__", str(node.target))
        if node.target in (operator.add, operator.iadd, torch.add, torch.cat):
            return None, f"feeds {name} (a residual sum or concatenation)"
        return None, f"passes through {name}, which is not a per-channel operation"
    if node.op == "call_method":
        if node.target in _ELEMENTWISE_METHODS:
            return layout, ""
        if node.target == "flatten" and _flattens_from_1(node, start_index=1):
            return ("flat" if layout == "spatial" else layout), ""
        if node.target in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
            return ("flat" if layout == "spatial" else layout), ""  # x.view(x.size(0), -1)
        if node.target == "mean" and layout == "spatial":
            new = _spatial_mean(node, spatial)
            if new:
                return new, ""
        return None, f"passes through .{node.target}(), which is not a per-channel operation"
    return None, f"reaches {node.op} {node.target!r}"


def _reads_shape(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return (node.op == "call_function" and node.target is getattr
            and bool(node.args[1] == "shape"))


def _follow(producer: fx.Node, modules: dict[str, nn.Module], calls: dict[str, int]
            ) -> UnitLayer | str:
    name = str(producer.target)
    module = modules[name]
    if isinstance(module, nn.modules.conv._ConvNd):
        is_conv, units, spatial = True, module.out_channels, module.weight.dim() - 2
    elif isinstance(module, nn.Linear):
        is_conv, units, spatial = False, module.out_features, 0
    else:  # find_unit_layers follows convolutions and linear layers only
        return f"is a {type(module).__name__}, not a convolution or linear layer"
    layout = "spatial" if is_conv else "channels"
    norms: list[str] = []
    if calls[name] != 1:
        return f"is called {calls[name]} times in the forward pass"
    node = producer
    while True:
        # Reading the shape (x.view(x.size(0), -1)) is not a second use of the values.
        users = [u for u in node.users if not _reads_shape(u)]
        if len(users) != 1:
            what = "its output" if node is producer else f"its activation ({node.name})"
            return (f"{what} is used by {len(users)} operations (a branch or residual "
                    "connection)" if users else f"{what} is not used")
        nxt = users[0]
        if nxt.op == "output":
            return "its output is the model output (a classifier has no next layer)"
        target = modules.get(str(nxt.target)) if nxt.op == "call_module" else None
        if isinstance(target, (nn.modules.conv._ConvNd, nn.Linear)):
            if nxt.args[0] is not node:
                return f"its activation is not the input of {nxt.target!r}"
            return _consumer(name, str(nxt.target), target, layout, norms, units, is_conv, calls)
        layout_or_none, reason = _step(nxt, modules, layout, spatial, units, norms)
        if layout_or_none is None:
            return reason
        if not nxt.args or nxt.args[0] is not node:
            return f"its activation is not the first argument of {nxt.name}"
        layout = layout_or_none
        node = nxt


def _consumer(producer: str, consumer: str, module: nn.modules.conv._ConvNd | nn.Linear,
              layout: str,
              norms: list[str], units: int, is_conv: bool, calls: dict[str, int]
              ) -> UnitLayer | str:
    if calls[consumer] != 1:
        return f"its next layer {consumer!r} is called {calls[consumer]} times"
    if isinstance(module, nn.modules.conv._ConvNd):
        if layout != "spatial":
            return f"its next layer {consumer!r} is a convolution reading a flattened input"
        if module.groups != 1 or module.in_channels != units or module.transposed:
            return f"its next layer {consumer!r} is a grouped or transposed convolution"
        return UnitLayer(producer, consumer, tuple(norms), False, units)
    if is_conv and layout != "flat":
        return f"its next layer {consumer!r} is linear but the conv output is not flattened"
    if not is_conv and module.in_features != units:
        # e.g. a token-wise linear's (N, S, U) output flattened to (N, S*U): unit k is
        # then read at every S-th input, which the masks do not describe.
        return (f"its next layer {consumer!r} reads {module.in_features} inputs, not its "
                f"{units} features (a flattened sequence of them)")
    if module.in_features % units != 0:
        return f"its next layer {consumer!r} has {module.in_features} inputs, not a multiple of {units}"
    return UnitLayer(producer, consumer, tuple(norms), is_conv, units)


def _input_dependent(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on the model's inputs, not only on its weights and
    buffers (the graph's nodes are in topological order)."""
    dependent: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    return dependent


def find_unit_layers(model: nn.Module) -> tuple[dict[str, UnitLayer], dict[str, str]]:
    """Trace ``model`` and sort its conv/linear layers into prunable and not.

    Returns
    -------
    eligible
        ``{producer name: UnitLayer}`` in forward order.
    ineligible
        ``{layer name: reason}`` for every other conv/linear layer.
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # fx raises many types; all mean "not traceable"
        raise AuditInputError(
            f"unit pruning traces the model with torch.fx to find each layer's next "
            f"layer, and tracing {type(model).__name__} failed ({err}); use a model "
            "without data-dependent control flow in forward()"
        ) from err
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    dependent = _input_dependent(graph)
    eligible: dict[str, UnitLayer] = {}
    ineligible: dict[str, str] = {}
    seen: set[str] = set()
    for node in graph.nodes:
        if node.op != "call_module" or node.target in seen:
            continue
        module = modules[str(node.target)]
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        seen.add(str(node.target))
        if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
            ineligible[str(node.target)] = "transposed convolutions are not supported"
            continue
        if not any(a in dependent for a in node.all_input_nodes):
            ineligible[str(node.target)] = (
                "its input does not depend on the model's input (a fixed table, e.g. of "
                "relative positions): its units are the same for every example")
            continue
        found = _follow(node, modules, calls)
        if isinstance(found, UnitLayer):
            eligible[found.producer] = found
        else:
            ineligible[str(node.target)] = found
    return eligible, ineligible
