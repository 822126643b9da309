"""Settings of network dissection: the dissection itself and the spec's ``[dissection]``.

This module imports no torch, so an audit spec with a ``[dissection]`` section is
validated without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from compaudit.config import Checked, setting

__all__ = ["DEFAULT_LAYERS", "DissectionConfig", "DissectionSpec"]

#: Layers dissected by default per architecture of ``compaudit.models``: every block of
#: the small CNN (after its ReLU), the last two stages of the ResNets.
DEFAULT_LAYERS: dict[str, tuple[str, ...]] = {
    "small_cnn": ("features.2", "features.5", "features.8", "features.11"),
    "resnet18": ("layer3", "layer4"),
    "resnet50": ("layer3", "layer4"),
}


@dataclass(frozen=True, kw_only=True)
class DissectionConfig(Checked):
    """What to dissect and how.

    Parameters
    ----------
    layers
        Module names (as in ``model.named_modules()``) whose outputs are ``(B, K, h, w)``.
        In a spec, empty means the architecture's :data:`DEFAULT_LAYERS`.
    quantile
        Top share of activations above the threshold: ``P(a_k > T_k) = quantile``.
    iou_threshold
        A unit is interpretable when its best IoU exceeds this (paper: 0.05).
    batch_size, num_workers, device
        How the dataset is streamed.
    cache_bytes
        Activations of the first pass are kept for the second while they fit in this
        many bytes (then the second pass reads only masks and runs no forward pass);
        beyond it the model runs again. Memory is bounded by this, not by the dataset.
        0 always recomputes.
    """

    layers: tuple[str, ...] = ()
    quantile: float = setting(0.005, gt=0, lt=1)
    iou_threshold: float = setting(0.04, ge=0, lt=1)
    batch_size: int = setting(128, ge=1)
    num_workers: int = setting(0, ge=0)
    device: str = "cpu"
    cache_bytes: int = setting(256 * 2**20, ge=0)


@dataclass(frozen=True, kw_only=True)
class DissectionSpec(DissectionConfig):
    """The spec's optional ``[dissection]``: the settings above plus the concept data.

    ``concepts``: the synthetic faces' concept masks (default root: ``[data].root``) or
    a Broden folder (``root`` required). ``split``: ``train``/``valid``/``test``/``all``
    for the synthetic faces, a value of the ``split`` column of Broden's ``index.csv``
    (empty: all rows). ``max_images``: a seeded subset (0: all).
    """

    concepts: Literal["synthetic-faces", "broden"] = "synthetic-faces"
    root: str = ""
    split: str = "test"
    max_images: int = setting(1000, ge=0)

    def _problems(self):
        if self.concepts == "broden" and not self.root:
            yield "root", ("missing; expected the Broden folder (index.csv, label.csv, "
                           "images/) with concepts = 'broden'")
