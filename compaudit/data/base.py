"""The interface every dataset implements, and the registry that names them.

A dataset is a torch ``Dataset`` returning ``(image, label, example_id)`` and can
describe its examples as rows of the ``examples.parquet`` contract (DESIGN.md).
Audit specs refer to datasets by registry name; ``get_dataset`` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, TypeVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from compaudit.errors import AuditInputError

__all__ = [
    "AuditDataset",
    "TransformSpec",
    "register_dataset",
    "get_dataset",
    "list_datasets",
    "EXAMPLE_COLUMNS",
]

#: Required columns of examples.parquet, in order (``attr.*`` and ``path`` follow).
EXAMPLE_COLUMNS = ("example_id", "label", "split", "source_id", "shift", "severity")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformSpec:
    """How images become tensors: resize the short side, center-crop, normalize."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def build(self) -> Callable:
        """Return a torchvision transform implementing this spec."""
        from torchvision import transforms as T

        return T.Compose(
            [
                T.Resize(self.resize),
                T.CenterCrop(self.crop),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )


class AuditDataset(Dataset):
    """Base class of every compaudit dataset.

    Subclasses set ``num_classes`` and implement ``__len__``, ``_load(i)`` returning
    ``(PIL image, label, example_id)`` and ``examples()``. ``class_mask`` is the
    sorted array of class indices predictions are restricted to (ImageNet-A), or
    ``None`` for all classes.
    """

    num_classes: int
    class_mask: np.ndarray | None = None

    def __init__(self, root: str | Path, *, transform: Callable | None = None) -> None:
        self.root = Path(root)
        self.transform = transform

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, index: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        image, label, example_id = self._load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(label), example_id

    def examples(self) -> pd.DataFrame:  # pragma: no cover - abstract
        """Rows of ``examples.parquet`` for this dataset, in index order."""
        raise NotImplementedError


_D = TypeVar("_D", bound=type[AuditDataset])
_REGISTRY: dict[str, type[AuditDataset]] = {}


def register_dataset(name: str) -> Callable[[_D], _D]:
    """Class decorator adding a dataset to the registry under ``name``."""

    def wrap(cls: _D) -> _D:
        if name in _REGISTRY:
            raise ValueError(f"dataset name {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return sorted(_REGISTRY)


def get_dataset(name: str, root: str | Path, **kwargs) -> AuditDataset:
    """Build the dataset registered as ``name`` from files under ``root``."""
    if name not in _REGISTRY:
        raise AuditInputError(
            f"unknown dataset {name!r}; valid names are: {', '.join(list_datasets())}"
        )
    return _REGISTRY[name](root, **kwargs)


class SubsetDataset(AuditDataset):
    """The first ``n`` examples of a seeded permutation of ``dataset`` (all when n >= len)."""

    def __init__(self, dataset: AuditDataset, *, n: int, seed: int = 0) -> None:
        super().__init__(dataset.root, transform=dataset.transform)
        self.dataset = dataset
        self.num_classes = dataset.num_classes
        self.class_mask = dataset.class_mask
        order = np.random.default_rng(seed).permutation(len(dataset))
        self.indices = np.sort(order[: min(n, len(dataset))])

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, index: int):
        return self.dataset._load(int(self.indices[index]))

    def examples(self) -> pd.DataFrame:
        return self.dataset.examples().iloc[self.indices].reset_index(drop=True)


def subset(factory: Callable[[], AuditDataset], n: int, seed: int = 0) -> AuditDataset:
    """Build ``factory()`` and keep ``n`` of its examples (0 keeps all); picklable via partial."""
    dataset = factory()
    return dataset if n <= 0 or n >= len(dataset) else SubsetDataset(dataset, n=n, seed=seed)
