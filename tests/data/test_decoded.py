"""DecodedDataset serves exactly the tensors the dataset itself serves, decoded once."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from compaudit.data.base import AuditDataset, TransformSpec
from compaudit.data.celeba import CelebA
from compaudit.data.decoded import DecodedDataset, decode_to_file
from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.executors import LocalExecutor


class Ragged(AuditDataset):
    """Items of two shapes: not one array."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__(".", transform=None)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        return torch.zeros(1, 2 + index // 2, 2), index % 2, f"id{index}"


def test_items_equal_the_dataset_items_whichever_process_decoded_them(tmp_path: Path) -> None:
    root = generate_synthetic_faces(tmp_path / "faces", n=120, image_size=24, masks=False,
                                    split_fractions=(0.2, 0.1, 0.7))
    spec = TransformSpec(resize=20, crop=16, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    factory = partial(CelebA, root, split="test", transform=spec)
    with LocalExecutor(max_workers=2, progress=False) as pool:
        path = decode_to_file(factory, tmp_path / "run" / "eval-0.npy", executor=pool, chunk=30)
    assert path is not None
    decoded, source = DecodedDataset(factory, path), factory()
    assert len(decoded) == len(source) > 60
    for i in range(len(source)):
        image, label, example_id = decoded[i]
        ref = source[i]
        assert torch.equal(image, ref[0]) and (label, example_id) == ref[1:]
    assert decoded.examples().equals(source.examples())
    assert decoded.num_classes == source.num_classes


def test_sets_over_the_budget_or_of_mixed_shapes_are_not_written(tmp_path: Path) -> None:
    assert decode_to_file(Ragged, tmp_path / "a.npy", chunk=2) is None
    assert not (tmp_path / "a.npy").exists()
    root = generate_synthetic_faces(tmp_path / "faces", n=40, image_size=16, masks=False)
    factory = partial(CelebA, root, split="train", transform=TransformSpec(resize=16, crop=16))
    assert decode_to_file(factory, tmp_path / "b.npy", budget=1000) is None
    assert not (tmp_path / "b.npy").exists()
