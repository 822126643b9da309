"""InMemoryDataset serves exactly what the wrapped dataset serves, decoding each item once."""

from __future__ import annotations

import torch

from compaudit.data.base import AuditDataset
from compaudit.data.in_memory import InMemoryDataset


class Counting(AuditDataset):
    """Five 2x2 images; counts how often each is decoded."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__(".", transform=None)
        self.reads = [0] * 5

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index):
        self.reads[index] += 1
        return torch.full((1, 2, 2), float(index)), index % 2, f"id{index}"

    def examples(self):
        raise NotImplementedError


def test_items_are_identical_and_decoded_once():
    source = Counting()
    cached = InMemoryDataset(source)
    fresh = Counting()
    for _ in range(3):
        for i in range(5):
            image, label, example_id = cached[i]
            ref = fresh[i]
            assert torch.equal(image, ref[0]) and (label, example_id) == ref[1:]
    assert source.reads == [1] * 5 and fresh.reads == [3] * 5
    assert len(cached) == 5 and cached.num_classes == 2


def test_items_beyond_the_budget_are_decoded_again():
    source = Counting()
    one_item = 4 * 4  # a 1x2x2 float32 image
    cached = InMemoryDataset(source, budget=2 * one_item)
    for _ in range(2):
        for i in range(5):
            cached[i]
    assert source.reads == [1, 1, 2, 2, 2]
