"""Pruning masks: which weights may be pruned, exact-k masks, applying and reporting them.

A mask set is a ``dict[str, torch.Tensor]`` from parameter names (as in
``model.named_parameters()``) to bool tensors of the parameter's shape. **True keeps
a weight, False prunes it** (the convention of ``torch.nn.utils.prune`` and of
TensorFlow's model_pruning): :func:`apply_masks` sets the False entries to zero.

Every mask builder prunes *exactly* ``k = round(sparsity * n)`` entries (Python's
``round``: halves go to the even integer), ``n`` being the size of each tensor
(``scope="layer"``) or of all tensors together (``scope="global"``). Ties in the
score are broken by position: scores are ranked with a stable sort of the flattened
tensor (tensors concatenated in the order given for the global scope), so among equal
scores the entry with the lower index is pruned first. The same inputs therefore give
the same mask on every run and device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from compaudit.errors import AuditInputError

__all__ = [
    "Scope",
    "prunable_parameters",
    "masks_from_scores",
    "magnitude_masks",
    "random_masks",
    "apply_masks",
    "MaskCallback",
    "LayerSparsity",
    "SparsityReport",
    "sparsity_report",
]

Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = ("global", "layer")

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def prunable_parameters(
    model: nn.Module,
    *,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
    include_norm: bool = False,
) -> dict[str, nn.Parameter]:
    """The weights a pruning method may zero, by parameter name, in module order.

    Conv and linear weights are prunable; biases never are, and norm-layer weights
    (BatchNorm, GroupNorm, LayerNorm scales) only with ``include_norm=True``.

    Parameters
    ----------
    model
        The network.
    exclude_first_conv
        Keep the first convolution (in ``named_modules`` order, which is the input stem
        for torchvision models) dense; it holds few weights and every feature flows
        through it.
    exclude_classifier
        Keep the last ``nn.Linear`` (in ``named_modules`` order) dense.
    include_norm
        Also return the scale (``weight``) of norm layers.

    Returns
    -------
    dict
        ``{name: parameter}``, names as in ``model.named_parameters()``.
    """
    convs: list[str] = []
    linears: list[str] = []
    norms: list[str] = []
    for name, module in model.named_modules():
        if getattr(module, "weight", None) is None:
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            convs.append(name)
        elif isinstance(module, nn.Linear):
            linears.append(name)
        elif include_norm and isinstance(module, _NORM_TYPES):
            norms.append(name)
    excluded = set()
    if exclude_first_conv and convs:
        excluded.add(convs[0])
    if exclude_classifier and linears:
        excluded.add(linears[-1])
    chosen = {m for m in convs + linears + norms if m not in excluded}
    wanted = {(f"{m}.weight" if m else "weight") for m in chosen}
    # named_parameters() drops duplicates of shared parameters, so each is listed once.
    return {n: p for n, p in model.named_parameters() if n in wanted}


def _check_sparsity(sparsity: float, where: str) -> None:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise AuditInputError(
            f"{where}: sparsity must be a number in [0, 1), got {sparsity!r}; "
            "it is the fraction of weights set to zero, e.g. 0.9"
        )
    if not 0.0 <= float(sparsity) < 1.0:
        raise AuditInputError(
            f"{where}: sparsity must lie in [0, 1), got {sparsity!r}; "
            "it is the fraction of weights set to zero, e.g. 0.9"
        )


def _check_scope(scope: str, where: str) -> None:
    if scope not in SCOPES:
        raise AuditInputError(
            f"{where}: unknown scope {scope!r}; valid values are 'global' (one threshold "
            "across all prunable tensors) and 'layer' (each tensor pruned to the sparsity)"
        )


def _n_pruned(sparsity: float, n: int) -> int:
    return int(round(float(sparsity) * n))


def _prune_lowest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Bool keep-mask of ``flat`` with exactly its ``k`` lowest entries False."""
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        # Stable sort: equal scores keep index order, so the lowest indices go first.
        order = torch.sort(flat, stable=True).indices
        keep[order[:k]] = False
    return keep


def masks_from_scores(
    scores: Mapping[str, torch.Tensor], *, sparsity: float, scope: Scope
) -> dict[str, torch.Tensor]:
    """Prune exactly the lowest-scoring entries: the building block of every mask.

    Parameters
    ----------
    scores
        ``{name: tensor}``; higher scores are kept.
    sparsity
        Fraction in [0, 1) of entries to prune (per tensor or over all of them).
    scope
        ``"layer"``: each tensor loses ``round(sparsity * numel)`` entries;
        ``"global"``: ``round(sparsity * total)`` entries are pruned across all
        tensors by one ranking.

    Returns
    -------
    dict
        Bool keep-masks shaped like the scores, on the scores' devices.
    """
    _check_sparsity(sparsity, "masks_from_scores")
    _check_scope(scope, "masks_from_scores")
    if scope == "layer":
        return {
            name: _prune_lowest(s.detach().flatten().float(), _n_pruned(sparsity, s.numel()))
            .reshape(s.shape)
            for name, s in scores.items()
        }
    if not scores:
        return {}
    names = list(scores)
    device = scores[names[0]].device
    flat = torch.cat([scores[n].detach().flatten().float().to(device) for n in names])
    keep = _prune_lowest(flat, _n_pruned(sparsity, flat.numel()))
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name in names:
        s = scores[name]
        out[name] = keep[start : start + s.numel()].reshape(s.shape).to(s.device)
        start += s.numel()
    return out


def magnitude_masks(
    params: Mapping[str, torch.Tensor],
    *,
    sparsity: float,
    scope: Scope,
    keep_pruned: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Keep-masks pruning the smallest ``|w|``, exactly ``round(sparsity * n)`` entries.

    Parameters
    ----------
    params
        ``{name: weight}``, e.g. from :func:`prunable_parameters`.
    sparsity
        Fraction in [0, 1) to prune.
    scope
        ``"layer"`` (each tensor at ``sparsity``) or ``"global"`` (one threshold).
    keep_pruned
        Earlier masks whose pruned entries must stay pruned (iterative pruning): they
        rank below every live weight, so a growing sparsity only adds to them.

    Returns
    -------
    dict
        Bool keep-masks.

    Examples
    --------
    >>> w = {"w": torch.tensor([0.3, -0.1, 0.2, 0.1])}
    >>> magnitude_masks(w, sparsity=0.5, scope="layer")["w"].tolist()
    [True, False, True, False]
    """
    scores = {}
    for name, w in params.items():
        s = w.detach().abs().float()
        if keep_pruned is not None and name in keep_pruned:
            # |w| >= 0, so -1 ranks previously pruned entries first.
            s = torch.where(keep_pruned[name].to(s.device), s, torch.full_like(s, -1.0))
        scores[name] = s
    return masks_from_scores(scores, sparsity=sparsity, scope=scope)


def random_masks(
    params: Mapping[str, torch.Tensor], *, sparsity: float, scope: Scope, seed: int
) -> dict[str, torch.Tensor]:
    """Keep-masks pruning a uniformly random set of exactly ``round(sparsity * n)`` entries.

    The control for magnitude pruning: same sparsity, no information in the choice.
    Random scores are drawn on the CPU from a generator seeded with ``seed``, so the
    mask does not depend on the device.
    """
    gen = torch.Generator().manual_seed(int(seed))
    scores = {
        name: torch.rand(w.shape, generator=gen).to(w.device) for name, w in params.items()
    }
    return masks_from_scores(scores, sparsity=sparsity, scope=scope)


def _check_masks(named: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    problems = []
    for name, mask in masks.items():
        if name not in named:
            valid = ", ".join(list(named)[:8]) + (", ..." if len(named) > 8 else "")
            problems.append(
                f"mask for {name!r} names no parameter of the model; parameter names look "
                f"like: {valid}"
            )
        elif tuple(mask.shape) != tuple(named[name].shape):
            problems.append(
                f"mask for {name!r} has shape {tuple(mask.shape)} but the parameter has "
                f"shape {tuple(named[name].shape)}; build masks from this model's weights"
            )
        elif mask.dtype != torch.bool:
            problems.append(
                f"mask for {name!r} has dtype {mask.dtype}; expected torch.bool "
                "(True keeps a weight); convert with mask.bool()"
            )
    if problems:
        raise AuditInputError(problems)


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero, in place, every weight whose mask entry is False.

    Raises :class:`~compaudit.errors.AuditInputError` when a mask names no parameter
    or does not match its shape or dtype.
    """
    named = dict(model.named_parameters())
    _check_masks(named, masks)
    for name, mask in masks.items():
        p = named[name]
        p.masked_fill_(~mask.to(p.device), 0.0)


class MaskCallback:
    """Step callback re-applying fixed masks after every optimizer step.

    Pass it in ``train(..., step_callbacks=[MaskCallback(masks)])`` or to a
    ``fine_tune`` function: pruned weights receive gradient (and momentum) during the
    step and are set back to zero right after it.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks = dict(masks)
        self._bound: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def _pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # Look the parameters up once per model, not on every step.
        if self._bound is None or self._bound[0] != id(model):
            named = dict(model.named_parameters())
            _check_masks(named, self.masks)
            pairs: list[tuple[torch.Tensor, torch.Tensor]] = [
                (named[n], ~m.to(named[n].device)) for n, m in self.masks.items()]
            self._bound = (id(model), pairs)
        return self._bound[1]

    @torch.no_grad()
    def __call__(self, step: int, model: nn.Module) -> None:
        for param, pruned in self._pairs(model):
            if pruned.device != param.device:  # the model moved since binding
                pruned = pruned.to(param.device)
            param.masked_fill_(pruned, 0.0)


@dataclass(frozen=True)
class LayerSparsity:
    """Pruned entries of one masked tensor."""

    numel: int
    pruned: int

    @property
    def sparsity(self) -> float:
        """Fraction of the tensor's entries that are pruned."""
        return self.pruned / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Achieved sparsity of a mask set, overall and per tensor.

    Attributes
    ----------
    pruned, prunable
        Pruned entries and all entries of the masked tensors.
    model_params
        Parameter count of the whole model (pruned, unmasked and biases included).
    layers
        ``{parameter name: LayerSparsity}`` in mask order.
    """

    pruned: int
    prunable: int
    model_params: int
    layers: dict[str, LayerSparsity] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Pruned fraction of the masked tensors."""
        return self.pruned / self.prunable if self.prunable else 0.0

    @property
    def model_sparsity(self) -> float:
        """Pruned fraction of all model parameters."""
        return self.pruned / self.model_params if self.model_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, as stored in ``CompressedModel.info``."""
        return {
            "sparsity": self.sparsity,
            "model_sparsity": self.model_sparsity,
            "pruned": self.pruned,
            "prunable": self.prunable,
            "model_params": self.model_params,
            "layers": {
                n: {"numel": s.numel, "pruned": s.pruned, "sparsity": s.sparsity}
                for n, s in self.layers.items()
            },
        }


def sparsity_report(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> SparsityReport:
    """Sparsity of ``masks`` on ``model``: overall, over the whole model and per tensor.

    Counts come from the masks (False entries), not from zeros that happen to occur
    in the weights.
    """
    named = dict(model.named_parameters())
    _check_masks(named, masks)
    layers = {
        name: LayerSparsity(numel=int(m.numel()), pruned=int((~m).sum().item()))
        for name, m in masks.items()
    }
    return SparsityReport(
        pruned=sum(s.pruned for s in layers.values()),
        prunable=sum(s.numel for s in layers.values()),
        model_params=sum(p.numel() for p in named.values()),
        layers=layers,
    )
