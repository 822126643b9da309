"""Shared by the ImageNet loaders: listing class folders of image files, and a dataset
over a fixed list of image files with labels and ids.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._checks import check_choice, check_no_attributes, first_few, open_image
from compaudit.data.base import AuditDataset, TransformSpec, dataset_splits
from compaudit.errors import AuditInputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "check_root",
    "is_image",
    "list_class_folders",
    "scan_folder",
]

#: File endings read as images (compared in lower case).
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted (sub-folder names, file names) of ``folder``; hidden entries skipped.

    ``os.scandir`` reads the entry type from the directory listing itself, so listing
    the 50,000 validation images needs no ``stat`` call per file.
    """
    dirs: list[str] = []
    files: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith("."):
                (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(dirs), sorted(files)


def check_root(root: Path, what: str, expected: str) -> None:
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise AuditInputError(f"{what} root {root} {state}; expected {expected}")


def list_class_folders(
    root: Path, dirs: list[str], files: list[str], valid: dict[str, int], what: str,
    extras: frozenset[str],
) -> list[tuple[str, str, int]]:
    """``(wnid, file name, class index)`` for every image in the wnid folders of root.

    ``files`` are the files directly in root: only the archive's ``extras`` may be there.
    """
    problems: list[str] = []
    stray = [f for f in files if f not in extras]
    if stray:
        problems.append(
            f"{root}: {len(stray)} file(s) lie beside the wnid folders: {first_few(stray)}; "
            "expected every image inside the folder of its wnid, move or delete them"
        )
    unknown = [d for d in dirs if d not in valid]
    if unknown:
        problems.append(
            f"{root}: {len(unknown)} folder(s) are not {what} wnids: {first_few(unknown)}; "
            f"expected one folder per class named by its wnid, e.g. {first_few(list(valid))}"
        )
    items: list[tuple[str, str, int]] = []
    not_images: list[str] = []
    for wnid in (d for d in dirs if d in valid):
        sub_dirs, names = scan_folder(root / wnid)
        not_images += [f"{wnid}/{name}/" for name in sub_dirs]
        for name in names:
            if is_image(name):
                items.append((wnid, name, valid[wnid]))
            else:
                not_images.append(f"{wnid}/{name}")
    if not_images:
        problems.append(
            f"{root}: {len(not_images)} entries in class folders are not images: "
            f"{first_few(not_images)}; expected only {'/'.join(sorted(IMAGE_EXTENSIONS))} files, "
            "move or delete the others (hidden files are ignored)"
        )
    if problems:
        raise AuditInputError(problems)
    return items


class ImageFiles(AuditDataset):
    """A fixed list of image files with labels and ids (shared by both datasets)."""

    num_classes = 1000
    default_transform: ClassVar[TransformSpec] = TransformSpec()
    _shift = "clean"
    def _check_arguments(self, split: str, target: str | None, protected: object) -> None:
        """Validate the shared constructor arguments: a declared split, no attributes."""
        source = type(self).__name__
        check_choice(split, dataset_splits(type(self)) or (), field="argument split",
                     source=source)
        check_no_attributes(source, target=target, protected=protected,
                            why="labels are the ImageNet classes of the image folders")
        self.split = split

    def _set_items(self, paths: list[str], labels: list[int], ids: list[str]) -> None:
        if not paths:
            raise AuditInputError(f"{self.root}: no images found; the folder is empty")
        dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dupes:
            raise AuditInputError(
                f"{self.root}: {len(dupes)} image name(s) occur in more than one folder: "
                f"{first_few(dupes)}; expected each image once, remove the copies"
            )
        self._paths = paths
        self._labels = np.asarray(labels, dtype=np.int64)
        self._ids = ids

    def __len__(self) -> int:
        return len(self._paths)

    def _load(self, index: int) -> tuple[Image.Image, int, str]:
        return open_image(Path(self._paths[index])), int(self._labels[index]), self._ids[index]

    def examples(self) -> pd.DataFrame:
        """Rows of ``examples.parquet`` (with absolute ``path``), in index order."""
        return pd.DataFrame(
            {
                "example_id": self._ids,
                "label": self._labels,
                "split": self.split,
                "source_id": self._ids,
                "shift": self._shift,
                "severity": np.zeros(len(self._ids), dtype=np.int8),
                "path": self._paths,
            }
        )
