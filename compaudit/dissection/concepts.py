"""Concept data for network dissection: images with per-pixel concept labels.

A concept dataset returns ``(image, labels)`` per example: ``image`` is the
transformed image tensor the model expects and ``labels`` an ``(L, h, w)`` int64
tensor of *label maps*, each pixel holding a concept index (a row of
:attr:`ConceptDataset.concepts`) or ``-1`` for "no concept in this map". Several maps
per image let concepts overlap (Broden: an object, its part, its material and colour
all label the same pixel); :meth:`ConceptDataset.masks` gives the same data as
``{concept index: bool mask}``. Masks may have another size than the image (Broden
masks are half the image side); dissection upsamples activations to the mask size.

Two loaders:

* :class:`SyntheticFaceConcepts` reads the concept masks written by
  :func:`~compaudit.data.synthetic.generate_synthetic_faces` (background, face, hair,
  beard, eyes, mouth, wrinkles).
* :class:`Broden` reads the Broden layout (Bau et al., NetDissect): ``index.csv``,
  ``label.csv`` and ``images/`` holding the images and label-encoded mask PNGs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from compaudit.data._checks import first_few, open_image
from compaudit.errors import NEVER_DOWNLOADS, AuditInputError

__all__ = [
    "ConceptDataset",
    "ConceptSubset",
    "SyntheticFaceConcepts",
    "Broden",
    "BRODEN_CATEGORIES",
    "SYNTHETIC_CATEGORY",
    "decode_broden_mask",
]

_FaceSplit = Literal["train", "valid", "test", "all"]

#: Category columns of Broden's ``index.csv``; scene and texture are image-level.
BRODEN_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
_INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
_LABEL_COLUMNS = ("number", "name", "category")

#: Category of each synthetic-face concept ("part" unless listed).
SYNTHETIC_CATEGORY = {"background": "background"}


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


class ConceptDataset(Dataset):
    """Base of the concept datasets: ``dataset[i] -> (image tensor, (L, h, w) label maps)``.

    Subclasses set ``concepts`` (a frame with columns ``concept`` and ``category``; row
    position = concept index) and implement ``__len__``, ``_image(i)`` (a PIL image) and
    ``_labels(i)`` (an ``(L, h, w)`` int64 array, ``-1`` = unlabelled).
    """

    concepts: pd.DataFrame

    def __init__(self, *, transform: Callable | None = None) -> None:
        self.transform = transform

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _image(self, index: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    def _labels(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def image(self, index: int) -> torch.Tensor:
        """The transformed image of example ``index`` (no masks read)."""
        image = self._image(index)
        return self.transform(image) if self.transform is not None else _to_tensor(image)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(index), torch.from_numpy(self._labels(index))

    @property
    def categories(self) -> tuple[str, ...]:
        """Concept categories, in order of first appearance in :attr:`concepts`."""
        return tuple(dict.fromkeys(self.concepts["category"]))

    def masks(self, index: int) -> dict[int, np.ndarray]:
        """``{concept index: (h, w) bool mask}`` of the concepts present in example ``index``."""
        labels = self._labels(index)
        return {int(c): (labels == c).any(axis=0) for c in np.unique(labels) if c >= 0}


class ConceptSubset(ConceptDataset):
    """``n`` examples of a seeded permutation of ``dataset``, in their original order.

    ``n = 0`` or ``n >= len(dataset)`` keeps every example. The same ``n`` and ``seed``
    always select the same examples.
    """

    def __init__(self, dataset: ConceptDataset, *, n: int, seed: int = 0) -> None:
        super().__init__(transform=dataset.transform)
        self.dataset = dataset
        self.concepts = dataset.concepts
        order = np.random.default_rng(seed).permutation(len(dataset))
        self.indices = np.sort(order[:n]) if 0 < n < len(dataset) else np.arange(len(dataset))

    def __len__(self) -> int:
        return len(self.indices)

    def _image(self, index: int) -> Image.Image:
        return self.dataset._image(int(self.indices[index]))

    def _labels(self, index: int) -> np.ndarray:
        return self.dataset._labels(int(self.indices[index]))


class SyntheticFaceConcepts(ConceptDataset):
    """The concept masks of the synthetic faces, with their images.

    Parameters
    ----------
    root
        A folder written by ``generate_synthetic_faces(..., masks=True)``.
    split
        ``train``, ``valid``, ``test`` or ``all``.
    transform
        Applied to each PIL image (use the model's evaluation transform); default:
        RGB in [0, 1].

    Example (not run here: it needs files on disk)::

        ds = SyntheticFaceConcepts("data/synthetic-faces", split="test")
        image, labels = ds[0]  # labels: (1, H, W) concept codes
    """

    def __init__(self, root: str | Path, *, split: str = "test",
                 transform: Callable | None = None) -> None:
        from compaudit.data.celeba import CelebA
        from compaudit.data.synthetic import concept_table

        super().__init__(transform=transform)
        self.root = Path(root)
        # CelebA validates the split (a [dissection] string) and the files.
        self._faces = CelebA(self.root, split=cast(_FaceSplit, split))
        table = concept_table(self.root)
        if list(table.columns[:2]) != ["code", "concept"] or not np.array_equal(
            table["code"].to_numpy(), np.arange(len(table))
        ):
            raise AuditInputError(
                f"{self.root / 'masks' / 'concepts.csv'}: expected columns code, concept with "
                "codes 0, 1, 2, ... in order; regenerate the dataset (generate_synthetic_faces)"
            )
        names = table["concept"].astype(str)
        self.concepts = pd.DataFrame({
            "concept": names, "category": [SYNTHETIC_CATEGORY.get(n, "part") for n in names],
        })
        self.example_ids = [f"celeba/{name}" for name in self._faces._names]

    def __len__(self) -> int:
        return len(self._faces)

    def _image(self, index: int) -> Image.Image:
        return self._faces._load(index)[0]

    def _labels(self, index: int) -> np.ndarray:
        from compaudit.data.synthetic import load_concept_mask

        path = self.example_ids[index]
        codes = load_concept_mask(self.root, path)
        if codes.max(initial=0) >= len(self.concepts):
            raise AuditInputError(
                f"concept mask of {path}: code {int(codes.max())} is not in masks/concepts.csv "
                f"(codes 0-{len(self.concepts) - 1}); regenerate the dataset"
            )
        return codes.astype(np.int64)[None]


def decode_broden_mask(path: Path) -> np.ndarray:
    """Label numbers of a Broden mask PNG: ``R + 256 * G`` per pixel (0 = unlabelled)."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    except FileNotFoundError as err:
        raise AuditInputError(
            f"{path}: mask file listed in index.csv not found; restore it from the Broden "
            "archive or remove its name from index.csv"
        ) from err
    except OSError as err:
        raise AuditInputError(f"{path}: not a readable PNG mask ({err}); restore the file") from err
    return rgb[..., 0] + 256 * rgb[..., 1]


def _primary_category(field: object) -> str:
    """The category with the largest count in a label.csv field like ``object(12);part(3)``."""
    best, best_count = "", -1.0
    for item in str(field).replace(",", ";").split(";"):
        name, _, count = item.strip().partition("(")
        try:
            value = float(count.rstrip(")")) if count else 0.0
        except ValueError:
            value = 0.0
        if name and value > best_count:
            best, best_count = name, value
    return best


class Broden(ConceptDataset):
    """The Broden concept dataset of NetDissect, read from its released layout.

    ::

        root/index.csv   image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
        root/label.csv   number,name,category,frequency,coverage,syns
        root/images/...  the images and the label-encoded mask PNGs named in index.csv

    Pixel-level category cells list space-separated mask file names (label number
    ``R + 256*G``); scene and texture cells list label numbers that hold for the whole
    image (they become full-image masks, as in NetDissect). Concepts are the rows of
    ``label.csv`` other than number 0 (unlabelled); a concept's category is the one with
    the largest count in its ``category`` field. Missing files are reported when the
    dataset is built; mask contents (size, label numbers) when a mask is read, or all at
    once with :meth:`verify`.

    Parameters
    ----------
    root
        The Broden folder.
    split
        Keep rows of this ``split`` (e.g. ``"train"``, ``"val"``); ``None`` keeps all.
    categories
        Category columns to use; default all of :data:`BRODEN_CATEGORIES` present.
    transform
        Applied to each PIL image; default RGB in [0, 1].
    """

    def __init__(self, root: str | Path, *, split: str | None = None,
                 categories: Sequence[str] | None = None,
                 transform: Callable | None = None) -> None:
        super().__init__(transform=transform)
        self.root = Path(root)
        index_path, label_path = self.root / "index.csv", self.root / "label.csv"
        for path in (index_path, label_path):
            if not path.is_file():
                raise AuditInputError(
                    f"{path}: not found; expected the Broden layout (index.csv, label.csv, "
                    f"images/) in {self.root}. {NEVER_DOWNLOADS}: unpack broden1_224 "
                    "there"
                )
        index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
        labels = pd.read_csv(label_path, dtype={"name": str, "category": str},
                             keep_default_na=False)
        for path, table, needed in ((index_path, index, _INDEX_COLUMNS),
                                    (label_path, labels, _LABEL_COLUMNS)):
            missing = [c for c in needed if c not in table.columns]
            if missing:
                raise AuditInputError(f"{path}: missing columns {', '.join(missing)}; expected "
                                      f"at least {', '.join(needed)}")
        present = [c for c in BRODEN_CATEGORIES if c in index.columns]
        self.category_columns = tuple(present if categories is None else categories)
        unknown = [c for c in self.category_columns if c not in present]
        if unknown or not self.category_columns:
            raise AuditInputError(f"{index_path}: categories {unknown or '(none)'} are not "
                                  f"columns of the file; valid: {', '.join(present)}")
        if split is not None:
            index = index[index["split"] == split]
            if index.empty:
                raise AuditInputError(f"{index_path}: no rows with split {split!r}; splits "
                                      f"found: {', '.join(sorted(set(index['split'])))}")
        self._index = self._check_index(index_path, index.reset_index(drop=True))

        numbers = pd.to_numeric(labels["number"], errors="coerce")
        if numbers.isna().any() or numbers.duplicated().any():
            raise AuditInputError(f"{label_path}: column number must hold unique integers")
        keep = numbers.to_numpy() != 0
        self._numbers = numbers.to_numpy(np.int64)[keep]
        self.concepts = pd.DataFrame({
            "concept": labels["name"].to_numpy()[keep],
            "category": [_primary_category(f)
                         for f in labels["category"].to_numpy()[keep]],
            "number": self._numbers,
        })
        # Label number -> concept index; -1 for 0 (unlabelled) and -2 for unknown numbers.
        self._lookup = np.full(int(self._numbers.max(initial=0)) + 1, -2, np.int64)
        self._lookup[0] = -1
        self._lookup[self._numbers] = np.arange(len(self._numbers))
        self._check_files()

    def _check_index(self, path: Path, index: pd.DataFrame) -> pd.DataFrame:
        sizes = index[list(_INDEX_COLUMNS[2:])].apply(pd.to_numeric, errors="coerce")
        bad = sizes.isna().any(axis=1) | (sizes <= 0).any(axis=1)
        if bad.any():
            rows = (np.flatnonzero(bad) + 2).tolist()
            raise AuditInputError(f"{path}: columns ih, iw, sh, sw must be positive integers; "
                                  f"bad on lines {first_few(rows)}")
        index[list(_INDEX_COLUMNS[2:])] = sizes.astype(np.int64)
        return index

    def _cells(self, row: int, column: str) -> list[str]:
        return str(self._index.at[row, column]).split()

    def _check_files(self) -> None:
        images = self.root / "images"
        missing = [name for name in self._index["image"] if not (images / name).is_file()]
        for column in self.category_columns:
            for row in range(len(self._index)):
                for token in self._cells(row, column):
                    if not token.isdigit() and not (images / token).is_file():
                        missing.append(token)
                    elif token.isdigit() and not self._known(int(token)):
                        raise AuditInputError(
                            f"{self.root / 'index.csv'}, line {row + 2}, column {column}: "
                            f"label number {token} is not in label.csv; use the index.csv "
                            "and label.csv of the same Broden release")
        if missing:
            raise AuditInputError(
                f"{images}: {len(missing)} files named in index.csv are missing; first: "
                f"{first_few(missing)}. Restore them from the Broden archive"
            )

    def _known(self, number: int) -> bool:
        return 0 < number < len(self._lookup) and self._lookup[number] >= 0

    def __len__(self) -> int:
        return len(self._index)

    def _image(self, index: int) -> Image.Image:
        return open_image(self.root / "images" / self._index.at[index, "image"])

    def _labels(self, index: int) -> np.ndarray:
        sh, sw = int(self._index.at[index, "sh"]), int(self._index.at[index, "sw"])
        maps = []
        for column in self.category_columns:
            for token in self._cells(index, column):
                if token.isdigit():  # image-level label: the whole image
                    maps.append(np.full((sh, sw), self._lookup[int(token)], np.int64))
                    continue
                path = self.root / "images" / token
                numbers = decode_broden_mask(path)
                if numbers.shape != (sh, sw):
                    raise AuditInputError(
                        f"{path}: mask is {numbers.shape[0]}x{numbers.shape[1]} but index.csv "
                        f"(line {index + 2}) gives sh x sw = {sh}x{sw}; fix the sizes in "
                        "index.csv or restore the mask")
                lookup = np.append(self._lookup, -2)  # numbers past the table are unknown
                concept = lookup[np.minimum(numbers, len(self._lookup))]
                if (concept == -2).any():
                    bad = sorted(set(numbers[concept == -2].tolist()))
                    raise AuditInputError(
                        f"{path}: label numbers {first_few(bad)} (R + 256*G) are not in "
                        "label.csv; use the label.csv of the same Broden release")
                maps.append(concept)
        if not maps:
            return np.full((1, sh, sw), -1, np.int64)
        return np.stack(maps)

    def verify(self) -> None:
        """Read every mask once, raising on the first bad one (size or label numbers)."""
        for i in range(len(self)):
            self._labels(i)
