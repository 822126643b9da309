"""Network dissection (Bau et al.; Frankle & Bau for pruned networks) of chosen layers.

Two streaming passes over a :class:`~compaudit.dissection.concepts.ConceptDataset`,
with forward hooks and no gradients:

1. **Thresholds.** Per unit ``k`` the ``1 - quantile`` quantile ``T_k`` of its
   activations over every spatial position of every image (at the layer's own
   resolution, as NetDissect), so that ``P(a_k > T_k) = quantile`` (0.005). It is
   *exact*: only the top ``quantile`` share of values decides it, so the pass keeps per
   unit the ``m = M - floor((M - 1) * (1 - quantile))`` largest values seen so far
   (``M`` = images x positions), merging each batch with ``torch.topk``, then
   interpolates linearly between the two order statistics around ``(M - 1)(1 - q)``
   exactly like ``numpy.quantile(..., method="linear")``. Memory of this pass is
   ``units x m`` floats, i.e. about ``quantile`` (0.5%) of the layer's activations over
   the dataset: 512 units x 7x7 positions x 50,000 images -> 25 MB.
2. **IoU.** Each activation map is upsampled (bilinear, half-pixel centres) to the
   mask size and thresholded at ``T_k``; intersections ``|A_k ∩ M_c|`` and the
   union terms are summed over the dataset in ``units x concepts`` and ``units x
   categories`` accumulators, so memory does not grow with the dataset. As in
   NetDissect, an image counts towards the union of concept ``c`` only when it has
   some label of ``c``'s category (every image does, for the synthetic faces):
   ``IoU = Σ|A ∩ M_c| / Σ_{x: cat(c) labelled in x} |A ∪ M_c|``. While the first
   pass's activations fit in ``cache_bytes`` (256 MiB) they are kept and this pass reads
   only the masks; beyond that the model runs again, so memory stays bounded.

A unit's concept is its highest-IoU concept (ties: the lower concept index); it is
*interpretable* when that IoU exceeds ``iou_threshold`` (0.04; the paper states 0.05).
Note the bound ``IoU <= min(q / coverage(c), coverage(c) / q)`` (``q`` = quantile,
``coverage`` = the concept's share of the pixels): a concept covering 15% of all pixels
(hair of the synthetic faces) cannot pass 0.04 at ``q = 0.005``. The result's concept
table reports each concept's coverage and bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from compaudit.dissection.concepts import ConceptDataset
from compaudit.dissection.config import DEFAULT_LAYERS, DissectionConfig
from compaudit.errors import AuditInputError

__all__ = ["DissectionConfig", "DissectionResult", "dissect", "UNIT_COLUMNS", "DEFAULT_LAYERS"]

#: Columns of :attr:`DissectionResult.units`.
UNIT_COLUMNS = ("layer", "unit", "threshold", "concept", "category", "iou", "interpretable")
# Images per matmul chunk: keeps chunk * pixels below 2**24 so float32 counts are exact.
_EXACT = 2**24




@dataclass(frozen=True)
class DissectionResult:
    """Per-unit outcome of :func:`dissect`.

    Attributes
    ----------
    units
        One row per (layer, unit): :data:`UNIT_COLUMNS`.
    iou
        ``{layer: (units, concepts) float64 array}`` of every IoU.
    concepts
        The dataset's concept table (``concept``, ``category``; row = IoU column) with
        ``coverage``, the concept's share of the pixels of the images that label its
        category, and ``iou_bound = min(q / coverage, coverage / q)`` (``q`` the
        quantile): a unit active on a ``q`` share of the pixels cannot reach a higher IoU
        with the concept (about: upsampling moves the active share a little), so a
        concept whose bound is at or below ``iou_threshold`` makes hardly any unit
        interpretable.
    n_images
        Images streamed.
    config
        The configuration used.
    """

    units: pd.DataFrame
    iou: dict[str, np.ndarray]
    concepts: pd.DataFrame
    n_images: int
    config: DissectionConfig = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts per layer and overall (interpretable units, distinct concepts)."""
        def counts(frame: pd.DataFrame) -> dict[str, Any]:
            hit = frame[frame["interpretable"]]
            return {
                "units": int(len(frame)), "interpretable_units": int(len(hit)),
                "distinct_concepts": int(hit["concept"].nunique()),
                "concepts_by_category": {str(k): int(v) for k, v in
                                         hit.groupby("category")["concept"].nunique().items()},
            }
        return {"config": asdict(self.config), "n_images": self.n_images,
                "all": counts(self.units),
                "layers": {layer: counts(g) for layer, g in self.units.groupby("layer", sort=False)}}


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]):
    images = torch.stack([image for image, _ in batch])
    return images, [labels for _, labels in batch]


def _check_inputs(model: nn.Module, dataset: ConceptDataset, config: DissectionConfig) -> None:
    if not isinstance(config, DissectionConfig):
        raise AuditInputError(f"config: expected a DissectionConfig, got {type(config).__name__}")
    if not config.layers:
        raise AuditInputError("config.layers: got (); expected a non-empty list of module names")
    if not isinstance(model, nn.Module):
        raise AuditInputError(f"model: expected a torch nn.Module (an ONNX Runtime model has no "
                              f"layers to hook), got {type(model).__name__}")
    names = dict(model.named_modules())
    unknown = [name for name in config.layers if name not in names or name == ""]
    if unknown:
        raise AuditInputError(f"dissection layers: {', '.join(map(repr, unknown))} are not "
                              f"modules of the model; valid names include: "
                              f"{', '.join(list(n for n in names if n)[:40])}")
    if len(dataset) == 0:
        raise AuditInputError("dissection dataset: it has no images")


class _Hooks:
    """Forward hooks keeping a copy of each chosen layer's output."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[n].register_forward_hook(self._keep(n)) for n in layers]

    def _keep(self, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
                raise AuditInputError(f"dissection layer {name!r}: output is {shape}; expected "
                                      "a (batch, units, height, width) feature map")
            # A copy: a following in-place ReLU would otherwise change it under us.
            self.outputs[name] = output.detach().float().clone()
        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


class _ImagesOnly(torch.utils.data.Dataset):
    """The images of a concept dataset without reading masks (threshold pass)."""

    def __init__(self, dataset: ConceptDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset.image(index), torch.empty(0)


class _LabelsOnly(torch.utils.data.Dataset):
    """The label maps of a concept dataset without its images (IoU pass from the cache)."""

    def __init__(self, dataset: ConceptDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return torch.empty(0), torch.from_numpy(self.dataset._labels(index))


def _loader(dataset, config, progress: bool, desc: str):
    """Batches of ``dataset`` in order, with a progress bar if asked."""
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False,
                        num_workers=config.num_workers, collate_fn=_collate)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(loader, desc=desc, unit="batch")
    return loader


def _cached_stream(cache, dataset, config, progress: bool):
    """Pass 2 from the activations kept by pass 1: read the masks only."""
    loader = _loader(_LabelsOnly(dataset), config, progress, "dissection IoU")
    for (_, labels), outputs in zip(loader, cache):  # loader first: its bar completes
        yield outputs, labels


def _stream(model, dataset, config, progress: bool, desc: str, *, labels: bool = True):
    loader = _loader(dataset if labels else _ImagesOnly(dataset), config, progress, desc)
    hooks = _Hooks(model, config.layers)
    try:
        with torch.no_grad():
            for images, labels in loader:
                model(images.to(config.device))
                yield {k: v.cpu() for k, v in hooks.outputs.items()}, labels
    finally:
        hooks.close()


def _thresholds(
    model: nn.Module, dataset: ConceptDataset, config: DissectionConfig, progress: bool,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]] | None]:
    """Pass 1: the exact per-unit (1 - quantile) quantiles (see the module docstring).

    Returns the thresholds and the batches' activations when they fitted in
    ``config.cache_bytes`` (else ``None``).
    """
    q, n = config.quantile, len(dataset)
    top: dict[str, torch.Tensor] = {}
    sizes: dict[str, tuple[int, int]] = {}
    cache: list[dict[str, torch.Tensor]] | None = []
    cached = 0
    for outputs, _ in _stream(model, dataset, config, progress, "dissection thresholds",
                              labels=False):
        if cache is not None:
            cached += sum(a.numel() * a.element_size() for a in outputs.values())
            if cached <= config.cache_bytes:
                cache.append(outputs)
            else:
                cache = None  # too big to keep: pass 2 runs the model again
        for name, act in outputs.items():
            b, k, h, w = act.shape
            if name not in top:
                sizes[name] = (h, w)
                total = n * h * w
                keep = total - math.floor((total - 1) * (1 - q))
                top[name] = torch.full((k, keep), -math.inf)
            elif (h, w) != sizes[name]:
                raise AuditInputError(f"dissection layer {name!r}: feature maps of {h}x{w} and "
                                      f"{sizes[name][0]}x{sizes[name][1]}; give every image "
                                      "the same size (a resizing transform)")
            values = torch.cat([top[name], act.permute(1, 0, 2, 3).reshape(k, -1)], dim=1)
            top[name] = torch.topk(values, top[name].shape[1], dim=1, sorted=True).values
    thresholds: dict[str, torch.Tensor] = {}
    for name, desc_values in top.items():
        total = n * sizes[name][0] * sizes[name][1]
        pos = (total - 1) * (1 - q)
        lo = math.floor(pos)
        frac = pos - lo
        values = desc_values.double()
        low = values[:, total - 1 - lo]
        high = values[:, total - 2 - lo] if lo + 1 <= total - 1 else low
        thresholds[name] = low + frac * (high - low)
    return thresholds, cache


class _Accumulator:
    """Intersections and union terms of one layer, summed over images."""

    def __init__(self, units: int, concept_category: np.ndarray, n_categories: int) -> None:
        n_concepts = len(concept_category)
        self.category = torch.from_numpy(concept_category)
        self.n_categories = n_categories
        self.inter = torch.zeros(units, n_concepts, dtype=torch.float64)
        self.label_pixels = torch.zeros(n_concepts, dtype=torch.float64)
        self.act_pixels = torch.zeros(units, n_categories, dtype=torch.float64)
        self.category_pixels = torch.zeros(n_categories, dtype=torch.float64)

    def add(self, active: torch.Tensor, labels: torch.Tensor) -> None:
        """``active``: (B, K, H, W) bool; ``labels``: (B, L, H, W) int64 concept maps."""
        b, k = active.shape[:2]
        n_concepts = len(self.category)
        pixels = active.shape[2] * active.shape[3]
        step = max(1, _EXACT // pixels)
        for start in range(0, b, step):
            act = active[start:start + step].reshape(-1, k, pixels)
            lab = labels[start:start + step].reshape(act.shape[0], -1, pixels)
            # bincount, not torch.unique: no sort of every pixel.
            present = torch.nonzero(torch.bincount(lab[lab >= 0], minlength=n_concepts))[:, 0]
            # Compact one-hot over the concepts of this chunk; slot len(present) = none.
            slot = torch.full((n_concepts + 1,), len(present), dtype=torch.long)
            slot[present] = torch.arange(len(present))
            onehot = torch.zeros(act.shape[0], pixels, len(present) + 1)
            index = slot[torch.where(lab >= 0, lab, n_concepts)].transpose(1, 2)
            onehot.scatter_(2, index, 1.0)  # a pixel labelled c in several maps counts once
            onehot = onehot[..., :-1]
            actf = act.float()
            self.inter[:, present] += torch.einsum("bkp,bpc->kc", actf, onehot).double()
            self.label_pixels[present] += onehot.sum((0, 1)).double()
            # An image adds its active pixels to the union of the categories it labels.
            to_category = torch.zeros(len(present), self.n_categories)
            to_category[torch.arange(len(present)), self.category[present]] = 1.0
            has_category = ((onehot.amax(1) @ to_category) > 0).float()  # (B, categories)
            self.act_pixels += (actf.sum(2).T @ has_category).double()
            self.category_pixels += has_category.sum(0).double() * pixels

    def coverage(self) -> np.ndarray:
        """Per concept: its labelled pixels over all pixels of images labelling its category."""
        total = self.category_pixels[self.category]
        return torch.where(total > 0, self.label_pixels / total.clamp(min=1),
                           torch.zeros_like(total)).numpy()

    def iou(self) -> np.ndarray:
        union = self.act_pixels[:, self.category] + self.label_pixels[None, :] - self.inter
        iou = torch.where(union > 0, self.inter / union.clamp(min=1), torch.zeros_like(union))
        return iou.numpy()


def dissect(model: nn.Module, dataset: ConceptDataset, *, config: DissectionConfig,
            progress: bool = False) -> DissectionResult:
    """Dissect ``config.layers`` of ``model`` on the concept masks of ``dataset``.

    Parameters
    ----------
    model
        A torch module (put in eval mode here; its weights are not changed).
    dataset
        A :class:`~compaudit.dissection.concepts.ConceptDataset`; its transform must
        produce the inputs the model was trained on, at one size.
    config
        Layers, quantile, IoU threshold, batching.
    progress
        Show tqdm progress bars.

    Returns
    -------
    DissectionResult
        Per-unit thresholds, best concepts, IoUs and interpretability.

    Example (not run here: it needs files on disk)::

        cfg = DissectionConfig(layers=("features.11",))
        dissect(model, SyntheticFaceConcepts(root), config=cfg).units.head()
    """
    _check_inputs(model, dataset, config)
    was_training = model.training
    model.eval()
    try:
        thresholds, cache = _thresholds(model, dataset, config, progress)
        categories = list(dict.fromkeys(dataset.concepts["category"]))
        concept_category = np.array([categories.index(c) for c in dataset.concepts["category"]],
                                    dtype=np.int64)
        accumulators = {name: _Accumulator(len(t), concept_category, len(categories))
                        for name, t in thresholds.items()}
        batches = (_cached_stream(cache, dataset, config, progress) if cache is not None
                   else _stream(model, dataset, config, progress, "dissection IoU"))
        for outputs, labels in batches:
            for name, act in outputs.items():
                t = thresholds[name].float()[None, :, None, None]
                for group, maps in _same_size_groups(labels):
                    size = maps.shape[-2:]
                    up = F.interpolate(act[group], size=size, mode="bilinear",
                                       align_corners=False)
                    accumulators[name].add(up > t, maps)
    finally:
        model.train(was_training)

    rows, ious = [], {}
    concepts = dataset.concepts.copy()
    coverage = accumulators[config.layers[0]].coverage()
    concepts["coverage"] = coverage
    with np.errstate(divide="ignore"):
        ratio = config.quantile / coverage
    concepts["iou_bound"] = np.where(coverage > 0, np.minimum(ratio, 1.0 / ratio), 0.0)
    names = dataset.concepts["concept"].to_numpy()
    cats = dataset.concepts["category"].to_numpy()
    for name in config.layers:
        iou = accumulators[name].iou()
        ious[name] = iou
        best = iou.argmax(axis=1)  # first maximum: ties go to the lower concept index
        best_iou = iou[np.arange(len(best)), best]
        rows.append(pd.DataFrame({
            "layer": name, "unit": np.arange(len(best), dtype=np.int64),
            "threshold": thresholds[name].numpy(), "concept": names[best],
            "category": cats[best], "iou": best_iou,
            "interpretable": best_iou > config.iou_threshold,
        }))
    units = pd.concat(rows, ignore_index=True)[list(UNIT_COLUMNS)]
    return DissectionResult(units=units, iou=ious, concepts=concepts,
                            n_images=len(dataset), config=config)


def _same_size_groups(labels: list[torch.Tensor]):
    """Yield ``(image indices, (B, L, H, W) maps)`` per mask size, maps padded with -1."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, maps in enumerate(labels):
        height, width = maps.shape[-2:]
        by_size.setdefault((height, width), []).append(i)
    for size, members in by_size.items():
        depth = max(labels[i].shape[0] for i in members)
        stacked = torch.full((len(members), depth, *size), -1, dtype=torch.long)
        for j, i in enumerate(members):
            stacked[j, : labels[i].shape[0]] = labels[i]
        yield torch.tensor(members), stacked
