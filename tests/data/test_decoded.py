"""DecodedDataset serves exactly the tensors the dataset itself serves, decoded once."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision import transforms as T

from compaudit.data.base import AuditDataset, TransformSpec
from compaudit.data.celeba import CelebA
from compaudit.data.decoded import DecodedDataset, decode_to_file
from compaudit.data.in_memory import in_memory
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


class Plain(AuditDataset):
    """Images made here, with any transform: a dataset whose items are _load + transform."""

    num_classes = 3

    def __init__(self, root: Path, *, transform=None, n: int = 12) -> None:
        super().__init__(root, transform=transform)
        rng = np.random.default_rng(0)
        # odd sizes: Resize and CenterCrop both do work
        self._images = [rng.integers(0, 256, (21 + i % 3, 27, 3), dtype=np.uint8)
                        for i in range(n)]

    def __len__(self) -> int:
        return len(self._images)

    def _load(self, index: int):
        return Image.fromarray(self._images[index]), index % 3, f"plain/{index}"

    def examples(self):
        return pd.DataFrame({"example_id": [f"plain/{i}" for i in range(len(self))]})


def _equal_items(decoded: DecodedDataset, source: AuditDataset) -> None:
    assert len(decoded) == len(source)
    for i in range(len(source)):
        image, label, example_id = decoded[i]
        ref = source[i]
        assert image.dtype == ref[0].dtype and torch.equal(image, ref[0])
        assert (label, example_id) == ref[1:]


def test_a_totensor_normalize_set_is_stored_as_uint8_pixels_at_the_crop_size(
        tmp_path: Path) -> None:
    spec = TransformSpec(resize=18, crop=16, mean=(0.485, 0.456, 0.406),
                         std=(0.229, 0.224, 0.225))
    factory = partial(Plain, tmp_path, transform=spec)
    path = decode_to_file(factory, tmp_path / "a.npy", chunk=5)
    stored = np.load(path)
    assert stored.dtype == np.uint8 and stored.shape == (12, 3, 16, 16)
    # the pixels are those of the PIL image after Resize + CenterCrop
    pil = T.CenterCrop(16)(T.Resize(18)(factory()._load(4)[0]))
    assert np.array_equal(stored[4], np.asarray(pil).transpose(2, 0, 1))
    decoded, source = DecodedDataset(factory, path), factory()
    _equal_items(decoded, source)  # bit-identical to ToTensor + Normalize per item
    reference = torch.stack([source[i][0] for i in range(len(source))])
    buffer = torch.full((5, 3, 16, 16), float("nan"))
    for start in range(0, 12, 5):
        images, labels, ids = decoded.read_batch(start, min(start + 5, 12), out=buffer)
        assert images.data_ptr() == buffer.data_ptr()  # filled in place, not allocated
        assert torch.equal(images, reference[start:start + 5])
        assert labels == [i % 3 for i in range(start, min(start + 5, 12))]
        assert ids == [f"plain/{i}" for i in range(start, min(start + 5, 12))]
    images, _, _ = decoded.read_batch(3, 9)  # no buffer: a new tensor
    assert torch.equal(images, reference[3:9])


def test_pixels_count_against_the_budget_as_uint8(tmp_path: Path) -> None:
    factory = partial(Plain, tmp_path, transform=TransformSpec(resize=16, crop=16))
    pixel_bytes = 12 * 3 * 16 * 16
    assert decode_to_file(factory, tmp_path / "a.npy", budget=pixel_bytes) is not None
    assert decode_to_file(factory, tmp_path / "b.npy", budget=pixel_bytes - 1) is None


def test_grayscale_and_in_memory_sets_are_stored_as_pixels_too(tmp_path: Path) -> None:
    gray = T.Compose([T.Resize(16), T.CenterCrop(16), T.Grayscale(), T.ToTensor(),
                      T.Normalize((0.3,), (0.7,))])
    for factory in (partial(Plain, tmp_path, transform=gray),
                    partial(in_memory, partial(Plain, tmp_path, transform=gray)),
                    partial(Plain, tmp_path, transform=T.Compose([T.Resize(16), T.CenterCrop(16),
                                                                  T.ToTensor()]))):
        path = decode_to_file(factory, tmp_path / "g.npy")
        assert np.load(path).dtype == np.uint8
        _equal_items(DecodedDataset(factory, path), factory())


def test_other_transforms_are_stored_as_the_float_tensors_they_return(tmp_path: Path) -> None:
    def scaled(image) -> torch.Tensor:  # not ToTensor: a float tensor of its own
        return torch.from_numpy(np.asarray(image, dtype=np.float32)[:16, :16]).permute(2, 0, 1) / 7

    for transform in (scaled, T.Compose([T.CenterCrop(16), T.ToTensor(),
                                         T.Lambda(lambda x: x * 2)])):
        factory = partial(Plain, tmp_path, transform=transform)
        path = decode_to_file(factory, tmp_path / "f.npy")
        assert np.load(path).dtype == np.float32
        decoded = DecodedDataset(factory, path)
        _equal_items(decoded, factory())
        reference = torch.stack([factory()[i][0] for i in range(4)])
        assert torch.equal(decoded.read_batch(0, 4)[0], reference)
