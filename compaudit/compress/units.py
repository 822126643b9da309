"""Unit (channel/neuron) pruning, with and without mean replacement.

After "Mean Replacement Pruning" (Evci et al., ICLR 2019 submission). For each chosen
layer: measure its units' activations ``a`` (what the next layer reads in the unit's
input channel) and the loss gradient ``g = dL/da`` on a fixed sample of training data,
score the units, remove the lowest-scoring ones, and with ``mean_replacement`` fold each
removed unit's mean activation ``ā`` (over the sample and over spatial positions) into
the next layer's bias, ``b <- b + ā * w_out``.

Two orders (``UnitPruningConfig.order``):

* ``"simultaneous"`` (default): one forward and one backward per batch, with a hook on
  every chosen layer's consumer, give every layer's ``a`` and ``g`` on the unpruned
  network (:func:`unit_statistics_all`); then all layers are pruned, in forward order.
  The cost grows with the number of batches, not with layers x batches. The loss
  before pruning comes from the scoring pass (its forward is the same eval-mode
  forward) and the loss after from one more forward per batch, so only the total
  ``pruning_penalty`` is measured; per layer, ``info["units"][name]["pruning_penalty"]``
  is ``None`` and ``estimated_penalty`` is the first-order estimate of the layer's own
  share, the sum of the removed units' ``mrs`` (``rs`` without mean replacement).
* ``"sequential"``: the reference's procedure. Layer by layer in forward order, each
  scored (:func:`unit_statistics`) on the network its predecessors left, pruned, and its
  own penalty measured: two forwards and a backward per batch per layer. Use it to
  replicate the paper's per-layer penalties. With one chosen layer the two orders
  remove the same units and give the same masks.

Details:

* **Removing a unit** zeroes its incoming weights and bias, the scale and shift of any
  BatchNorm between it and the next layer (otherwise an eval-mode BatchNorm would
  output the constant ``beta - gamma * mu / sigma`` instead of 0), and the next
  layer's weights that read it. All of these are recorded in the masks.
* **Conv -> conv**: the next layer's bias gets ``ā_k * sum over kernel positions of
  w_out[:, k]``, and a bias is created when the layer has none (its ``state_dict``
  gains a ``bias`` entry). This is exact away from the borders; where zero padding
  overlaps the kernel the replaced input was 0, not ``ā``, which the fold ignores.
* **Conv -> pooling/flatten -> linear**: ``ā_k`` is the mean over the sample and over
  the flattened positions of channel ``k``; the bias gets ``ā_k`` times the sum of the
  weights of those positions (for global average pooling that is one weight per unit).
* **Scores** are first-order (Taylor) estimates of the change of the mean loss over the
  sample when a unit's activation is replaced, with ``g`` the gradient of each
  example's own loss and positions summed: ``rs = E[g * (0 - a)] = -E[g a]`` (replace by
  zero) and ``mrs = E[g * (ā - a)]`` (replace by the mean). ``abs_rs`` and ``abs_mrs``
  are their absolute values, which equal the reference's ``|E[g a]|`` and
  ``|E[g (ā - a)]|``; ``l2`` is the norm of the unit's incoming weights; ``random`` is
  a seeded draw. The units with the **lowest** score are removed, for every score (the
  signed ``rs`` is written as the loss change so that this holds for it too).
* **Positions**: a conv unit's positions are its spatial map; when a linear layer
  reads another's features, as in a transformer's MLP on ``(N, tokens, U)`` or a
  ConvNeXt block on a channels-last ``(N, H, W, U)`` map, units are the last axis and
  the axes between are positions.
* The model is scored in eval mode (BatchNorm running statistics, no dropout), the mode
  in which the pruned model is evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from compaudit.compress._common import (
    Batch,
    draw_sample,
    mean_loss,
    pruning_info,
    require_train_dataset,
)
from compaudit.compress._unit_graph import UnitLayer, find_unit_layers
from compaudit.compress.registry import CompressedModel, CompressionContext
from compaudit.configs.head import Head
from compaudit.configs.pruning import UNIT_SCORES, UnitPruningConfig, UnitScore
from compaudit.errors import AuditInputError

__all__ = [
    "UnitPruningConfig",
    "UnitStatistics",
    "UnitLayer",
    "find_unit_layers",
    "unit_statistics",
    "unit_statistics_all",
    "unit_scores",
    "remove_units",
    "UNIT_SCORES",
]


@dataclass(frozen=True)
class UnitStatistics:
    """Per-unit statistics of one layer on a sample (float64, on the CPU).

    Attributes
    ----------
    mean
        ``ā``: mean activation over examples and positions.
    rs
        ``-E[g a]``: first-order change of the mean loss when the unit is set to 0.
    mrs
        ``E[g (ā - a)]``: the same when the unit is set to its mean.
    positions
        Positions per unit (spatial size, or flattened positions; 1 for features).
    examples
        Examples in the sample.
    """

    mean: torch.Tensor
    rs: torch.Tensor
    mrs: torch.Tensor
    positions: int
    examples: int


def unit_statistics(
    model: nn.Module, layer: UnitLayer, batches: Sequence[Batch], *, device: str | torch.device,
    head: Head | None = None,
) -> UnitStatistics:
    """Measure ``ā``, ``rs`` and ``mrs`` of every unit of ``layer`` over ``batches``.

    The activations are taken at the input of ``layer.consumer`` with a forward
    pre-hook; the loss is each example's cross-entropy (summed over the batch, so the
    gradient of an example's activation is the gradient of that example's own loss),
    or its binary cross-entropy on the task's logit with a sigmoid ``head``.
    One forward and one backward per batch; :func:`unit_statistics_all` measures many
    layers in the same passes.
    """
    return _scoring_pass(model, [layer], batches, device=device, head=head)[0][layer.producer]


def unit_statistics_all(
    model: nn.Module, layers: Sequence[UnitLayer], batches: Sequence[Batch], *,
    device: str | torch.device, head: Head | None = None,
) -> dict[str, UnitStatistics]:
    """:func:`unit_statistics` of every layer in ``layers``, in one pass per batch.

    Every consumer gets a pre-hook; one forward and one backward per batch give each
    layer's ``a`` and ``g = dL/da`` on the network as it is, so the result equals
    :func:`unit_statistics` called layer by layer on the same network, at the cost of
    a single call. Returns ``{producer name: UnitStatistics}`` in the order of ``layers``.
    """
    return _scoring_pass(model, layers, batches, device=device, head=head)[0]


def _units_last(model: nn.Module, layer: UnitLayer) -> bool:
    """True when the consumer reads the units on its input's last axis (linear -> linear)."""
    return isinstance(model.get_submodule(layer.consumer), nn.Linear) and not layer.flat


def _scoring_pass(
    model: nn.Module, layers: Sequence[UnitLayer], batches: Sequence[Batch], *,
    device: str | torch.device, head: Head | None = None,
) -> tuple[dict[str, UnitStatistics], float]:
    """Statistics of ``layers`` and the mean loss, from one forward + backward per batch."""
    by_consumer = {layer.consumer: layer for layer in layers}
    last = {layer.consumer: _units_last(model, layer) for layer in layers}
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            if not captured or not x.requires_grad:
                # The first activation reached needs no gradient further back: cut the
                # graph there (a later one keeps it, so earlier ones get their dL/da).
                x = x.detach().requires_grad_(True)
                captured[name] = x
                return (x, *args[1:])
            captured[name] = x
            return None
        return hook

    sums = {c: [torch.zeros(l.num_units, dtype=torch.float64) for _ in range(3)]
            for c, l in by_consumer.items()}
    positions = dict.fromkeys(by_consumer, 0)
    n, loss_total = 0, 0.0
    was_training = model.training
    model.eval()
    handles = [model.get_submodule(c).register_forward_pre_hook(hook_for(c))
               for c in by_consumer]
    try:
        for x, y in batches:
            captured.clear()
            with torch.enable_grad():
                logits = model(x.to(device))
                loss = (head or Head()).loss(logits.float(), y.to(device), reduction="sum")
                names = list(captured)
                grads = torch.autograd.grad(loss, [captured[c] for c in names],
                                            allow_unused=True)
            loss_total += float(loss.detach())
            for c, grad in zip(names, grads):
                a = captured[c].detach()
                g = torch.zeros_like(a) if grad is None else grad
                u = by_consumer[c].num_units
                # (N, ..., U) for tokens or channels-last maps; else (N, U, positions)
                # for conv maps and channel-major flattened maps alike.
                shape, dims = ((len(y), -1, u), (0, 1)) if last[c] else ((len(y), u, -1), (0, 2))
                a, g = a.reshape(shape).double(), g.reshape(shape).double()
                positions[c] = a.numel() // (len(y) * u)
                s_a, s_g, s_ga = sums[c]
                s_a += a.sum(dim=dims).cpu()
                s_g += g.sum(dim=dims).cpu()
                s_ga += (g * a).sum(dim=dims).cpu()
            n += len(y)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    stats = {}
    for c, layer in by_consumer.items():
        s_a, s_g, s_ga = sums[c]
        mean = s_a / (n * positions[c])
        stats[layer.producer] = UnitStatistics(
            mean=mean, rs=-s_ga / n, mrs=(mean * s_g - s_ga) / n, positions=positions[c],
            examples=n)
    return stats, loss_total / n


def unit_scores(
    stats: UnitStatistics,
    *,
    score: UnitScore,
    weight: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Score every unit; the lowest scores are removed first.

    Parameters
    ----------
    stats
        From :func:`unit_statistics`.
    score
        One of :data:`UNIT_SCORES`.
    weight
        The producer's weight (units along dim 0), for ``"l2"``.
    generator
        CPU generator for ``"random"``.
    """
    if score == "random":
        return torch.rand(stats.mean.numel(), generator=generator, dtype=torch.float64)
    if score == "l2":
        return weight.detach().reshape(weight.shape[0], -1).double().norm(dim=1).cpu()
    values = {"abs_rs": stats.rs.abs(), "abs_mrs": stats.mrs.abs(), "rs": stats.rs,
              "mrs": stats.mrs}
    if score not in values:
        raise AuditInputError(f"unknown unit score {score!r}; valid values are {', '.join(UNIT_SCORES)}")
    return values[score]


@torch.no_grad()
def remove_units(
    model: nn.Module,
    layer: UnitLayer,
    units: Sequence[int],
    *,
    mean: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Remove ``units`` of ``layer`` in place; with ``mean``, fold ``ā`` into the next bias.

    Returns the keep-masks of every tensor touched (producer weight and bias, BatchNorm
    scale and shift, consumer weight), so :func:`~compaudit.compress.masks.apply_masks`
    can keep the units removed during fine-tuning.
    """
    modules = dict(model.named_modules())
    producer, consumer = modules[layer.producer], modules[layer.consumer]
    idx = torch.as_tensor(list(units), dtype=torch.long)
    w_out = consumer.weight
    # Consumer weights as (out, unit, positions); positions = kernel taps or flat slots.
    per_unit = w_out.shape[1] // layer.num_units  # read for flat layers only
    cons_mask = torch.ones(w_out.shape, dtype=torch.bool, device=w_out.device)
    cons_view = (cons_mask.view(w_out.shape[0], layer.num_units, per_unit) if layer.flat
                 else cons_mask.view(w_out.shape[0], w_out.shape[1], -1))
    if mean is not None and len(idx):
        w3 = (w_out.reshape(w_out.shape[0], layer.num_units, per_unit) if layer.flat
              else w_out.reshape(w_out.shape[0], w_out.shape[1], -1))
        taps = w3[:, idx.to(w_out.device)].double().sum(dim=2)  # (out, removed)
        delta = taps @ mean[idx].double().to(w_out.device)
        if consumer.bias is None:
            consumer.bias = nn.Parameter(torch.zeros(w_out.shape[0], dtype=w_out.dtype,
                                                     device=w_out.device))
        consumer.bias += delta.to(consumer.bias.dtype)
    cons_view[:, idx.to(cons_mask.device)] = False
    masks = {f"{layer.consumer}.weight": cons_mask}

    def unit_mask(t: torch.Tensor) -> torch.Tensor:
        m = torch.ones(t.shape, dtype=torch.bool, device=t.device)
        m[idx.to(t.device)] = False
        return m

    owners = [(layer.producer, producer)] + [(n, modules[n]) for n in layer.norms]
    for owner_name, owner in owners:
        for pname in ("weight", "bias"):
            p = getattr(owner, pname, None)
            if p is not None:
                m = unit_mask(p)
                key = f"{owner_name}.{pname}"
                masks[key] = masks[key] & m if key in masks else m
    named = dict(model.named_parameters())
    for key, m in masks.items():
        named[key].masked_fill_(~m, 0.0)
    return masks


def _choose_layers(config: UnitPruningConfig, eligible: dict[str, UnitLayer],
                   ineligible: dict[str, str]) -> list[str]:
    if config.layers is None:
        if not eligible:
            raise AuditInputError(
                "UnitPruningConfig: the model has no layer whose units can be pruned; "
                + "; ".join(f"{n}: {r}" for n, r in list(ineligible.items())[:5])
            )
        return list(eligible)
    problems = []
    for name in config.layers:
        if name in ineligible:
            problems.append(f"UnitPruningConfig.layers: {name!r} cannot be unit-pruned: "
                            f"{ineligible[name]}; eligible layers: {', '.join(eligible)}")
        elif name not in eligible:
            problems.append(f"UnitPruningConfig.layers: {name!r} is not a conv or linear "
                            f"layer of the model; eligible layers: {', '.join(eligible)}")
    if problems:
        raise AuditInputError(problems)
    # Forward order, so each layer is scored on the network its predecessors left.
    return [n for n in eligible if n in set(config.layers)]


def _n_remove(config: UnitPruningConfig, layer: UnitLayer) -> int:
    if config.count is not None:
        k = config.count
    else:
        assert config.fraction is not None  # UnitPruningConfig holds one of the two
        k = int(round(config.fraction * layer.num_units))
    if k >= layer.num_units:
        raise AuditInputError(
            f"UnitPruningConfig: removing {k} of the {layer.num_units} units of "
            f"{layer.producer!r} would leave none; use a smaller fraction or count"
        )
    return k


def _choose_units(config: UnitPruningConfig, layer: UnitLayer, stats: UnitStatistics,
                  weight: torch.Tensor, count: int, gen: torch.Generator
                  ) -> tuple[list[int], float]:
    """The units to remove and the first-order estimate of the loss change they cause."""
    scores = unit_scores(stats, score=config.score, weight=weight, generator=gen)
    removed = sorted(torch.sort(scores, stable=True).indices[:count].tolist())
    change = stats.mrs if config.mean_replacement else stats.rs
    return removed, float(change[removed].sum())


def _unit_pruning(
    model: nn.Module, config: UnitPruningConfig, context: CompressionContext
) -> CompressedModel:
    require_train_dataset("UnitPruningConfig", context)
    eligible, ineligible = find_unit_layers(model)
    chosen = _choose_layers(config, eligible, ineligible)
    counts = {name: _n_remove(config, eligible[name]) for name in chosen}
    batches = draw_sample(context.train_dataset, n_batches=config.n_batches,
                          batch_size=config.batch_size, seed=context.seed)
    run = _simultaneous if config.order == "simultaneous" else _sequential
    masks: dict[str, torch.Tensor] = {}
    loss_before, loss_after, per_layer = run(model, config, context, batches,
                                             [eligible[n] for n in chosen], counts, masks)
    info = pruning_info(
        config, model, masks,
        loss_before=loss_before, loss_after_pruning=loss_after,
        pruning_penalty=loss_after - loss_before, units=per_layer,
        sample_examples=sum(len(y) for _, y in batches),
    )
    return CompressedModel(model=model, masks=masks, info=info)


def _merge(masks: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> None:
    for key, m in new.items():
        masks[key] = masks[key] & m if key in masks else m


def _simultaneous(model: nn.Module, config: UnitPruningConfig, context: CompressionContext,
                 batches: list[Batch], layers: list[UnitLayer], counts: dict[str, int],
                 masks: dict[str, torch.Tensor]) -> tuple[float, float, dict[str, dict]]:
    """Score every layer in one pass per batch, then remove all their units."""
    stats, loss_before = _scoring_pass(model, layers, batches, device=context.device,
                                       head=context.head)
    gen = torch.Generator().manual_seed(int(context.seed))
    # Every layer is scored (l2 included) on the unpruned network, before any removal.
    picks = {layer.producer: _choose_units(
        config, layer, stats[layer.producer],
        model.get_submodule(layer.producer).get_parameter("weight"),
        counts[layer.producer], gen) for layer in layers}
    per_layer = {}
    # Forward order: a mean folded into a bias that is also a pruned producer's is zeroed
    # for that producer's removed units afterwards.
    for layer in layers:
        removed, estimate = picks[layer.producer]
        _merge(masks, remove_units(
            model, layer, removed,
            mean=stats[layer.producer].mean if config.mean_replacement else None))
        per_layer[layer.producer] = {
            "consumer": layer.consumer, "num_units": layer.num_units,
            "removed_units": removed, "pruning_penalty": None, "estimated_penalty": estimate}
    return loss_before, mean_loss(model, batches, device=context.device, head=context.head), per_layer


def _sequential(model: nn.Module, config: UnitPruningConfig, context: CompressionContext,
               batches: list[Batch], layers: list[UnitLayer], counts: dict[str, int],
               masks: dict[str, torch.Tensor]) -> tuple[float, float, dict[str, dict]]:
    """Score, remove and measure one layer at a time, each on what its predecessors left."""
    gen = torch.Generator().manual_seed(int(context.seed))
    loss_before = current = mean_loss(model, batches, device=context.device, head=context.head)
    per_layer = {}
    for layer in tqdm(layers, desc="unit pruning", disable=None, leave=False):
        stats = unit_statistics(model, layer, batches, device=context.device, head=context.head)
        removed, estimate = _choose_units(config, layer, stats,
                                          model.get_submodule(layer.producer).get_parameter(
                                              "weight"),
                                          counts[layer.producer], gen)
        _merge(masks, remove_units(model, layer, removed,
                                   mean=stats.mean if config.mean_replacement else None))
        after = mean_loss(model, batches, device=context.device, head=context.head)
        per_layer[layer.producer] = {
            "consumer": layer.consumer, "num_units": layer.num_units,
            "removed_units": removed, "pruning_penalty": after - current,
            "estimated_penalty": estimate}
        current = after
    return loss_before, current, per_layer
