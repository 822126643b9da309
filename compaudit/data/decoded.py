"""Decode a dataset once for every job that reads it: an array file, memory-mapped.

Every training job reads the training set, and each variant job predicts every
evaluation set with its replicas (and fine-tunes or calibrates on the training set).
Decoding and transforming the images in every job cost more than the predictions
themselves on the demo (a profile of the dense and int8 jobs: 46 s of data loading
beside 21 s of model forward passes). :func:`decode_to_file` runs the dataset's own ``__getitem__`` once per
item, in the audit's worker processes, into one ``.npy`` array; :class:`DecodedDataset`
serves those tensors back (memory-mapped, so parallel jobs share the page cache). Items
are the tensors the dataset itself returns, so predictions do not change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from compaudit.data.base import AuditDataset
from compaudit.errors import AuditInputError

__all__ = ["DEFAULT_BUDGET", "DecodedDataset", "decode_to_file"]

#: Largest array (bytes) :func:`decode_to_file` writes; bigger sets are decoded per job.
DEFAULT_BUDGET = 2 * 2**30


def _decode_chunk(task: tuple[Callable[[], AuditDataset], str, int, int]) -> tuple | None:
    """Decode items ``start:stop`` into the array; ``None`` if one is shaped otherwise."""
    factory, path, start, stop = task
    dataset = factory()
    out = np.load(path, mmap_mode="r+")
    labels, ids = [], []
    for i in range(start, stop):
        image, label, example_id = dataset[i]
        if not torch.is_tensor(image) or tuple(image.shape) != out.shape[1:]:
            return None
        out[i] = image.numpy()
        labels.append(int(label))
        ids.append(example_id)
    out.flush()
    return labels, ids


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
    first = dataset[0][0]
    if not torch.is_tensor(first) or n * first.element_size() * first.nelement() > budget:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.lib.format.open_memmap(path, mode="w+", dtype=first.numpy().dtype,
                              shape=(n, *first.shape)).flush()
    tasks = [(factory, str(path), s, min(s + chunk, n)) for s in range(0, n, chunk)]
    if executor is None:
        parts = [_decode_chunk(t) for t in tasks]
    else:
        parts = executor.map(_decode_chunk, tasks, desc="decode")
    if any(part is None for part in parts):  # items of several shapes: decode per job
        path.unlink()
        return None
    labels = [label for part in parts for label in part[0]]
    ids = [eid for part in parts for eid in part[1]]
    Path(f"{path}.json").write_text(json.dumps({"labels": labels, "ids": ids}))
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
        self._array = np.load(self.path, mmap_mode="r")
        side = json.loads(Path(f"{self.path}.json").read_text())
        self._labels, self._ids = side["labels"], side["ids"]
        if not len(self._array) == len(self._ids) == len(source):
            raise AuditInputError(f"{self.path}: holds {len(self._array)} items but "
                                  f"{type(source).__name__} has {len(source)}; delete the "
                                  "file to decode the set again")

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        return torch.from_numpy(np.array(self._array[index])), self._labels[index], \
            self._ids[index]

    def _load(self, index: int) -> Any:  # pragma: no cover - items come from __getitem__
        return self.source._load(index)

    def examples(self) -> pd.DataFrame:
        return self.source.examples()
