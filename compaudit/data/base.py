"""The interface every dataset implements, and the registry that names them.

A dataset is a torch ``Dataset`` returning ``(image, label, example_id)`` and can
describe its examples as rows of the ``examples.parquet`` contract (DESIGN.md).
Audit specs refer to datasets by registry name; ``get_dataset`` builds one.

Every registered dataset class has the same constructor shape, so any of them is built
the same way::

    cls(root, *, split=<its default>, target=None, protected=(), transform=None,
        **its own keyword-only options)

A dataset without a target attribute or protected attributes (ImageNet, CIFAR-10)
accepts ``target=None`` and ``protected=()`` and rejects anything else.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin, get_type_hints

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from compaudit.errors import AuditInputError
from compaudit.registry import Registry

__all__ = [
    "AuditDataset",
    "DATASETS",
    "TransformSpec",
    "register_dataset",
    "get_dataset",
    "list_datasets",
    "dataset_length",
    "dataset_splits",
    "EXAMPLE_COLUMNS",
    "clean_examples",
]

#: Required columns of examples.parquet, in order (``attr.*`` and ``path`` follow).
EXAMPLE_COLUMNS = ("example_id", "label", "split", "source_id", "shift", "severity")


def clean_examples(ids: Any, labels: Any, splits: Any, *,
                   attributes: dict[str, Any] | None = None,
                   paths: Any = None) -> pd.DataFrame:
    """Rows of ``examples.parquet`` for images without a shift, in the given order.

    ``example_id`` (also the ``source_id``: a clean image is its own source), ``label``,
    ``split`` (one name, or one per row), ``shift = "clean"``, ``severity = 0``; then
    the ``attributes`` columns as given (``{"attr.Male": values}``) and ``path``.
    """
    ids = pd.Series(ids, dtype=str)
    frame = pd.DataFrame({
        "example_id": ids, "label": labels,
        "split": splits if isinstance(splits, str) else pd.Series(splits, dtype=str),
        "source_id": ids, "shift": "clean", "severity": np.zeros(len(ids), np.int8),
    })
    for column, values in (attributes or {}).items():
        frame[column] = values
    if paths is not None:
        frame["path"] = paths
    return frame

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformSpec:
    """How images become tensors: resize the short side, center-crop, normalize."""

    resize: int = 256
    crop: int = 224
    # One value per channel (a spec's [data].mean/std, checked there to hold three).
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

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
    #: The split an audit evaluates when ``[data].eval_split`` is not set.
    eval_split: ClassVar[str] = "test"
    #: Whether each split is a folder of its own (ImageNet), so that a spec reads its
    #: training split from ``[data].train_root``, never from the evaluation root.
    split_folders: ClassVar[bool] = False
    #: For a dataset a run generates (the synthetic faces): the function writing it,
    #: called as ``generator(root, image_size=..., seed=..., overwrite=True,
    #: **[data].options)``; ``[data].options`` are then its arguments, not the
    #: constructor's. ``None``: the dataset is read from existing files.
    generator: ClassVar[Callable[..., Any] | None] = None
    #: Checks ``[data].options`` for the generator (before anything runs): raises
    #: :class:`AuditInputError` naming what is wrong.
    check_generator_options: ClassVar[Callable[..., None] | None] = None
    #: The file whose presence shows a generated dataset is there (with its stage key).
    generated_marker: ClassVar[str] = ""
    #: The attribute predicted when ``[data].target`` is empty (attribute datasets).
    default_target: ClassVar[str] = ""

    def __init__(self, root: str | Path, *,
                 transform: Callable | TransformSpec | None = None) -> None:
        self.root = Path(root)
        self.transform = _as_transform(transform, type(self).__name__)

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


def _as_transform(transform: Callable | TransformSpec | None, source: str) -> Callable | None:
    """A callable from a :class:`TransformSpec`; callables and ``None`` pass through."""
    if isinstance(transform, TransformSpec):
        return transform.build()
    if transform is not None and not callable(transform):
        raise AuditInputError(
            f"{source}: argument transform: got {transform!r}; expected a callable "
            "applied to each PIL image, a TransformSpec, or None"
        )
    return transform


_D = TypeVar("_D", bound=type[AuditDataset])

#: Dataset classes by name; :func:`get_dataset` builds one.
DATASETS: Registry[type[AuditDataset]] = Registry("dataset")


def register_dataset(name: str) -> Callable[[_D], _D]:
    """Class decorator adding a dataset to the registry under ``name``."""
    def wrap(cls: _D) -> _D:  # keeps the class's own type for its callers
        DATASETS.add(name, cls)
        return cls

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return DATASETS.names()


def dataset_options(cls: type[AuditDataset]) -> list[str]:
    """The keyword arguments ``cls`` takes after ``root`` (``split``, ``target``, ...)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def generator_options(cls: type[AuditDataset]) -> list[str]:
    """The ``[data].options`` a generated dataset takes: its generator's keyword
    arguments, less those the spec sets elsewhere (root, image size, seed, overwrite)."""
    if cls.generator is None:
        return []
    params = inspect.signature(cls.generator).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name not in ("image_size", "seed", "overwrite")]


def dataset_splits(cls: type[AuditDataset]) -> tuple[str, ...] | None:
    """The splits ``cls`` has: the values its ``split`` argument declares
    (``Literal[...]``), or ``None`` when they come from its files (a manifest's
    ``split`` column, ImageNet-C's folders)."""
    hint = get_type_hints(cls.__init__).get("split")
    return tuple(get_args(hint)) if get_origin(hint) is Literal else None


def get_dataset(name: str, root: str | Path, **kwargs) -> AuditDataset:
    """Build the dataset registered as ``name`` from files under ``root``.

    Every dataset takes ``split``, ``target``, ``protected`` and ``transform``, plus
    its own options; an unknown name or keyword is an :class:`AuditInputError` that
    lists the valid ones.

    Example (not run here: it needs files on disk)::

        get_dataset("cifar10", "/data/cifar10", split="test")
    """
    cls = DATASETS.get(name)
    valid = dataset_options(cls)
    unknown = [key for key in kwargs if key not in valid]
    if unknown:
        raise AuditInputError(
            f"dataset {name!r}: unknown argument(s) {', '.join(unknown)}; "
            f"valid arguments: {', '.join(valid)}"
        )
    return cls(root, **kwargs)


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


def dataset_length(dataset: Any) -> int:
    """``len(dataset)`` of a non-empty map-style dataset, else an error saying which."""
    try:
        n = len(dataset)
    except TypeError as err:
        raise AuditInputError(f"dataset {type(dataset).__name__} has no length; expected a "
                              "map-style dataset") from err
    if n == 0:
        raise AuditInputError(f"dataset {type(dataset).__name__} is empty; check its root "
                              "folder and split")
    return n


def subset(factory: Callable[[], AuditDataset], n: int, seed: int = 0) -> AuditDataset:
    """Build ``factory()`` and keep ``n`` of its examples (0 keeps all); picklable via partial."""
    dataset = factory()
    return dataset if n <= 0 or n >= len(dataset) else SubsetDataset(dataset, n=n, seed=seed)
