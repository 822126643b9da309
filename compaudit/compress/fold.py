"""Fold eval-mode BatchNorm into the convolution that feeds it, in place.

Deployed float16 and int8 models have no BatchNorm: ONNX export in eval mode folds
``Conv -> BatchNorm`` into one convolution (weight scaled per output channel, a bias
added), and ONNX Runtime, TensorRT and TFLite round or quantize that folded weight.
:func:`fold_batchnorm_` does the same to a torch model while keeping its modules and
their names: the convolution's weight and bias become the folded ones (float32, as
:func:`torch.nn.utils.fusion.fuse_conv_bn_weights` computes them) and the BatchNorm is
replaced by :class:`torch.nn.Identity`, so the model's own ``forward`` still runs.

Which convolution feeds which BatchNorm is read from the model's ``torch.fx`` graph: a
conv whose output only a BatchNorm reads, each called once (this finds ResNet's
``conv1``/``bn1`` attributes as well as torchvision's ``Conv2dNormActivation``). When
``torch.fx`` cannot trace the model (data-dependent control flow), only a conv followed
directly by a BatchNorm in a plain ``nn.Sequential`` is folded (the Sequential passes
one's output to the other and to nothing else); :attr:`FoldReport.graph` says which.

:mod:`compaudit.compress.quant_static` folds with ``torch.fx``'s own ``fuse`` on a
traced copy (it needs the graph anyway); the arithmetic is the same.

Examples
--------
>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
>>> report = fold_batchnorm_(model)
>>> report.pairs, report.graph, type(model[1]).__name__
([('0', '1')], 'fx', 'Identity')
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["FoldReport", "fold_batchnorm_"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_batchnorm_` folded.

    Attributes
    ----------
    pairs
        ``(conv name, batchnorm name)`` per folded pair, in module order.
    graph
        ``"fx"`` when the pairs come from the ``torch.fx`` graph, ``"sequential"`` when
        tracing failed and only ``nn.Sequential`` neighbours were considered.
    trace_error
        Why tracing failed (``"sequential"`` only), one line.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    graph: Literal["fx", "sequential"] = "fx"
    trace_error: str | None = None


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """A plain (not transposed, not reparametrized) conv and an eval-mode BatchNorm with
    running statistics of the conv's width."""
    return (isinstance(conv, _CONVS) and isinstance(norm, _NORMS) and not norm.training
            and norm.running_mean is not None and norm.running_var is not None
            and conv.out_channels == norm.num_features
            and isinstance(conv._parameters.get("weight"), nn.Parameter)
            and not getattr(conv, "parametrizations", None))


def _pairs_from_graph(model: nn.Module) -> list[tuple[str, str]]:
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(str(n.target) for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), _CONVS):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (node,):
            continue
        conv, norm = str(node.target), str(users[0].target)
        if calls[conv] == 1 and calls[norm] == 1 and _foldable(modules[conv], modules[norm]):
            pairs.append((conv, norm))
    return pairs


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential) and type(seq).forward is nn.Sequential.forward:
            children = list(seq.named_children())
            for (a, conv), (b, norm) in zip(children, children[1:]):
                if _foldable(conv, norm):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def _shared(model: nn.Module) -> set[int]:
    """Ids of modules reachable under more than one name (folding one use folds all)."""
    seen = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    return {k for k, v in seen.items() if v > 1}


@torch.no_grad()
def fold_batchnorm_(model: nn.Module) -> FoldReport:
    """Fold every eval-mode BatchNorm into the convolution that alone feeds it, in place.

    BatchNorms in training mode, after a transposed or reparametrized (pruning hook)
    convolution, or whose input is read elsewhere too, are left as they are.

    Parameters
    ----------
    model
        The model to modify (callers pass a copy), normally in eval mode.

    Returns
    -------
    FoldReport
        The folded pairs and how they were found.
    """
    graph: Literal["fx", "sequential"] = "fx"
    error = None
    try:
        pairs = _pairs_from_graph(model)
    except Exception as err:  # fx raises many types for untraceable code
        first = str(err).splitlines()[0] if str(err) else ""
        pairs, graph, error = (_pairs_from_sequentials(model), "sequential",
                               f"{type(err).__name__}: {first}")
    shared = _shared(model)
    done = []
    for conv_name, norm_name in pairs:
        conv = cast(_ConvNd, model.get_submodule(conv_name))
        norm = cast(_BatchNorm, model.get_submodule(norm_name))
        mean, var = norm.running_mean, norm.running_var
        if id(conv) in shared or id(norm) in shared or mean is None or var is None:
            continue  # (statistics checked by _foldable; repeated for the type checker)
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, mean, var, norm.eps,
                                            norm.weight, norm.bias)
        conv.weight, conv.bias = weight, bias
        parent, _, attr = norm_name.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Identity())
        done.append((conv_name, norm_name))
    return FoldReport(pairs=done, graph=graph, trace_error=error)
