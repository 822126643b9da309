"""Decode a dataset once for every job that reads it: an array file, memory-mapped.

Every training job reads the training set, and each variant job predicts every
evaluation set with its replicas (and fine-tunes or calibrates on the training set).
Decoding and transforming the images in every job cost more than the predictions
themselves on the demo (a profile of the dense and int8 jobs: 46 s of data loading
beside 21 s of model forward passes). :func:`decode_to_file` decodes each item once,
in the audit's worker processes, into one ``.npy`` array; :class:`DecodedDataset`
serves the items back (memory-mapped, so parallel jobs share the page cache).

When the dataset's transform ends in ``ToTensor()`` (and ``Normalize``), as
compaudit's own :class:`~compaudit.data.base.TransformSpec` does, the array holds the
uint8 pixels at the crop size, a quarter of float32's bytes (ImageNet val, 50,000
images at 224 px: 7.0 GiB instead of 28 GiB), and items are converted and normalised
when read, by the same float32 operations in the same order as ``ToTensor`` and
``Normalize``, so they are bit-identical to the dataset's own items (checked on the
first item while decoding; a set that differs is stored as float32).
:meth:`DecodedDataset.read_batch` converts a whole batch into a reused buffer. Other
transforms are stored as the float32 tensors the dataset returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from compaudit.data.base import AuditDataset
from compaudit.data.in_memory import InMemoryDataset
from compaudit.errors import AuditInputError

__all__ = ["DEFAULT_BUDGET", "DecodedDataset", "decode_to_file"]

#: Largest array (bytes) :func:`decode_to_file` writes by default (ImageNet val at
#: 224 px fits); bigger sets are decoded per job. The audit spec's ``[data].cache_gib``.
DEFAULT_BUDGET = 8 * 2**30


@dataclass(frozen=True)
class _Pixels:
    """A transform split into its PIL steps and the ``ToTensor``/``Normalize`` tail."""

    pil: Callable[[Any], Any] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


def _pixels_plan(dataset: AuditDataset) -> tuple[AuditDataset, _Pixels] | None:
    """The dataset whose items are ``transform(_load(i))`` and its split transform, if the
    transform ends in ``ToTensor`` (+ ``Normalize``); ``None`` otherwise."""
    from torchvision import transforms as T

    source = dataset
    while isinstance(source, InMemoryDataset):  # it serves its dataset's items
        source = source.dataset
    if not isinstance(source, AuditDataset) or \
            type(source).__getitem__ is not AuditDataset.__getitem__:
        return None
    t = source.transform
    steps = list(t.transforms) if isinstance(t, T.Compose) else [t]
    mean = std = None
    norm = steps[-1] if steps else None
    if isinstance(norm, T.Normalize):
        steps.pop()
        mean = tuple(float(v) for v in torch.as_tensor(norm.mean).flatten().tolist())
        std = tuple(float(v) for v in torch.as_tensor(norm.std).flatten().tolist())
    if not steps or not isinstance(steps[-1], T.ToTensor):
        return None
    steps.pop()
    return source, _Pixels(T.Compose(steps) if steps else None, mean, std)


def _pixels(source: AuditDataset, plan: _Pixels, index: int) -> tuple[np.ndarray | None, int, str]:
    """Item ``index`` as uint8 (C, H, W) pixels before ``ToTensor``; ``None`` if its
    image is not 8-bit RGB or grayscale."""
    from PIL import Image

    image, label, example_id = source._load(index)
    if plan.pil is not None:
        image = plan.pil(image)
    if not isinstance(image, Image.Image) or image.mode not in ("RGB", "L"):
        return None, int(label), example_id
    array = np.asarray(image)
    return (array[None] if array.ndim == 2 else array.transpose(2, 0, 1)), int(label), \
        example_id


def _to_float(pixels: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """``Normalize(ToTensor(pixels))``: the same float32 operations, in place in ``out``.

    ToTensor: ``uint8 -> float``, ``/ 255``; Normalize: ``- mean``, ``/ std`` with
    ``(C, 1, 1)`` float32 statistics (broadcast over a batch dimension too).
    """
    x = pixels.to(torch.get_default_dtype()) if out is None else out.copy_(pixels)
    x.div_(255)
    if mean is not None and std is not None:  # Normalize gives both
        x.sub_(mean).div_(std)
    return x


def _stats(values: Any) -> torch.Tensor | None:
    return None if values is None else \
        torch.as_tensor(values, dtype=torch.get_default_dtype()).view(-1, 1, 1)


def _decode_chunk(task: tuple[Callable[[], AuditDataset], str, int, int, bool]) -> tuple | None:
    """Decode items ``start:stop`` into the array; ``None`` if one is shaped otherwise."""
    factory, path, start, stop, as_pixels = task
    dataset = factory()
    out = np.load(path, mmap_mode="r+")
    labels, ids = [], []
    plan = _pixels_plan(dataset) if as_pixels else None
    if as_pixels and plan is None:
        return None
    for i in range(start, stop):
        if plan is not None:
            array, label, example_id = _pixels(*plan, i)
        else:
            image, label, example_id = dataset[i]
            array = image.numpy() if torch.is_tensor(image) else None
        if array is None or array.shape != out.shape[1:] or array.dtype != out.dtype:
            return None
        out[i] = array
        labels.append(int(label))
        ids.append(example_id)
    out.flush()
    return labels, ids


def _first_item(dataset: AuditDataset) -> tuple[np.ndarray | None, _Pixels | None]:
    """Item 0 as stored (uint8 pixels when they normalise to exactly the dataset's own
    item, else its float tensor), and the pixel plan when pixels are stored."""
    image = dataset[0][0]
    found = _pixels_plan(dataset)
    if found is not None and torch.is_tensor(image):
        source, plan = found
        pixels = _pixels(source, plan, 0)[0]
        if pixels is not None and torch.equal(
                _to_float(torch.from_numpy(pixels.copy()), _stats(plan.mean),
                          _stats(plan.std)), image):
            return pixels, plan
    return (image.numpy() if torch.is_tensor(image) else None), None


def decode_to_file(factory: Callable[[], AuditDataset], path: str | Path, *,
                   executor: Any = None, budget: int = DEFAULT_BUDGET,
                   chunk: int = 1000) -> Path | None:
    """Write every item of ``factory()`` to ``path`` (``.npy``) and ``path`` + ``.json``.

    Returns ``path``, or ``None`` when the array would exceed ``budget`` bytes or the
    items are not equally shaped tensors (the caller then decodes per job).
    ``executor`` (a :mod:`compaudit.executors` executor, e.g. the audit's own pool)
    shares the decoding out in tasks of ``chunk`` items; without one it runs here.
    """
    dataset = factory()
    n = len(dataset)
    if n == 0:
        return None
    first, plan = _first_item(dataset)
    if first is None or n * first.nbytes > budget:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.lib.format.open_memmap(path, mode="w+", dtype=first.dtype,
                              shape=(n, *first.shape)).flush()
    tasks = [(factory, str(path), s, min(s + chunk, n), plan is not None)
             for s in range(0, n, chunk)]
    if executor is None:
        parts = [_decode_chunk(t) for t in tasks]
    else:
        parts = executor.map(_decode_chunk, tasks, desc="decode")
    decoded = [part for part in parts if part is not None]
    if len(decoded) < len(parts):  # items of several shapes: decode per job
        path.unlink()
        return None
    labels = [label for part in decoded for label in part[0]]
    ids = [eid for part in decoded for eid in part[1]]
    side = {"labels": labels, "ids": ids, "pixels": plan is not None,
            "mean": plan.mean if plan else None, "std": plan.std if plan else None}
    Path(f"{path}.json").write_text(json.dumps(side))
    return path


class DecodedDataset(AuditDataset):
    """The items of ``factory()``, read from the array :func:`decode_to_file` wrote.

    ``examples()``, ``num_classes`` and ``class_mask`` come from the dataset itself.
    """

    def __init__(self, factory: Callable[[], AuditDataset], path: str | Path) -> None:
        source = factory()
        super().__init__(source.root, transform=None)
        self.source = source
        self.num_classes = source.num_classes
        self.class_mask = source.class_mask
        self.path = Path(path)
        # Copy-on-write: writable views for torch.from_numpy; nothing is ever written.
        self._array = np.load(self.path, mmap_mode="c")
        side = json.loads(Path(f"{self.path}.json").read_text())
        self._labels, self._ids = side["labels"], side["ids"]
        self._pixels = bool(side.get("pixels", False))
        self._mean, self._std = _stats(side.get("mean")), _stats(side.get("std"))
        if not len(self._array) == len(self._ids) == len(source):
            raise AuditInputError(f"{self.path}: holds {len(self._array)} items but "
                                  f"{type(source).__name__} has {len(source)}; delete the "
                                  "file to decode the set again")

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        item = torch.from_numpy(np.array(self._array[index]))
        if self._pixels:
            item = _to_float(item, self._mean, self._std)
        return item, self._labels[index], self._ids[index]

    def read_batch(self, start: int, stop: int, out: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, list[int], list[str]]:
        """Items ``start:stop`` as one batch: images (equal to stacking ``self[i][0]``),
        labels and ids. ``out``, a float tensor of at least ``stop - start`` items, is
        filled in place and a view of it returned, so a loop reuses one buffer instead
        of allocating a batch of images per step."""
        block = torch.from_numpy(self._array[start:stop])
        n, dtype = len(block), torch.get_default_dtype() if self._pixels else block.dtype
        if out is None or out.shape[0] < n or out.shape[1:] != block.shape[1:] \
                or out.dtype != dtype:
            out = torch.empty(block.shape, dtype=dtype)
        images = out[:n]
        if self._pixels:
            _to_float(block, self._mean, self._std, out=images)
        else:
            images.copy_(block)
        return images, self._labels[start:stop], self._ids[start:stop]

    def _load(self, index: int) -> Any:  # pragma: no cover - items come from __getitem__
        return self.source._load(index)

    def examples(self) -> pd.DataFrame:
        return self.source.examples()
