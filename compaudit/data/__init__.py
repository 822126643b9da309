"""Datasets: each yields images for models and rows of ``examples.parquet``.

Importing this package registers every loader, so ``get_dataset(name, root)`` knows
them all: ``celeba``, ``fairface``, ``utkface``, ``imagenet``, ``imagenet-a``,
``imagenet-c``, ``cifar10``, ``cifar10-c`` and ``manifest`` (custom datasets).
"""

from compaudit.data import (  # noqa: F401
    celeba,
    cifar10,
    custom,
    fairface,
    imagenet,
    imagenet_a,
    imagenet_c,
    utkface,
)
from compaudit.data.base import (
    DATASETS,
    AuditDataset,
    SubsetDataset,
    TransformSpec,
    get_dataset,
    list_datasets,
    register_dataset,
)
from compaudit.data.corrupted_copy import write_corrupted_copy
from compaudit.data.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, Corrupt, corrupt
from compaudit.data.synthetic import generate_synthetic_faces

__all__ = [
    "ALL_CORRUPTIONS",
    "AuditDataset",
    "DATASETS",
    "CORRUPTIONS",
    "Corrupt",
    "SubsetDataset",
    "TransformSpec",
    "corrupt",
    "generate_synthetic_faces",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "write_corrupted_copy",
]
