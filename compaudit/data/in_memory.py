"""Decode each image once: a dataset that keeps the transformed tensors it served.

Training reads its data once per epoch, and a variant job fine-tunes and calibrates
every replica on the same data; decoding and transforming each image again each time
cost more than the training arithmetic of a small CNN (about 70% of an epoch on the
demo). :class:`InMemoryDataset` keeps each item the first time it is read, up to a
memory budget, so later passes only index memory. It returns exactly what the wrapped
dataset returns (compaudit's transforms are deterministic), so results do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from compaudit.data.base import AuditDataset

__all__ = ["InMemoryDataset", "in_memory"]

#: Bytes of image tensors kept per dataset; items beyond it are decoded every time.
DEFAULT_BUDGET = 2 * 2**30


class InMemoryDataset(AuditDataset):
    """``dataset``, with every item kept after its first read (within ``budget`` bytes)."""

    def __init__(self, dataset: AuditDataset, *, budget: int = DEFAULT_BUDGET) -> None:
        super().__init__(dataset.root, transform=None)
        self.dataset = dataset
        self.num_classes = dataset.num_classes
        self.class_mask = dataset.class_mask
        self.budget = budget
        self._kept: list[tuple[torch.Tensor, int, str] | None] = [None] * len(dataset)
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        item = self._kept[index]
        if item is None:
            item = self.dataset[index]
            size = item[0].element_size() * item[0].nelement() if torch.is_tensor(item[0]) \
                else self.budget
            if self._bytes + size <= self.budget:
                self._kept[index] = item
                self._bytes += size
        return item

    def _load(self, index: int) -> Any:  # pragma: no cover - items come from __getitem__
        return self.dataset._load(index)

    def examples(self) -> pd.DataFrame:
        return self.dataset.examples()


def in_memory(factory: Callable[[], AuditDataset]) -> InMemoryDataset:
    """``InMemoryDataset(factory())``; ``partial(in_memory, factory)`` is a factory too."""
    return InMemoryDataset(factory())
