"""ImageNet-1k validation set (three on-disk layouts) and ImageNet-A.

Class index = position of the wnid in the shipped sorted list
(:func:`~compaudit.data.imagenet_classes.imagenet_wnids`), the order torchvision and
timm models use. Nothing is downloaded: missing files are an :class:`AuditInputError`
that says which files are expected where.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._checks import check_choice, first_few, open_image
from compaudit.data.base import AuditDataset, TransformSpec, register_dataset
from compaudit.data.imagenet_classes import (
    IMAGENET_A_INDICES,
    imagenet_a_wnids,
    imagenet_wnids,
)
from compaudit.errors import AuditInputError

__all__ = ["ImageNetVal", "ImageNetA", "IMAGE_EXTENSIONS"]

#: File endings read as images (compared in lower case).
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})

DEVKIT_DIR = "ILSVRC2012_devkit_t12"
DEVKIT_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "data/meta.mat"
LOC_CSV = "LOC_val_solution.csv"
#: Files the official archives put beside the images; never mistaken for data.
_KNOWN_EXTRAS = frozenset({LOC_CSV, f"{DEVKIT_DIR}.tar.gz", "LOC_synset_mapping.txt"})
#: The ImageNet-A archive ships a README beside its 200 class folders.
_IMAGENET_A_EXTRAS = frozenset({"README.txt"})

# A read-only copy, so no caller can change the mask every ImageNet-A dataset shares.
_IMAGENET_A_MASK = IMAGENET_A_INDICES.copy()
_IMAGENET_A_MASK.flags.writeable = False

_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
_VAL_ID = re.compile(r"ILSVRC2012_val_\d{8}")
# Kaggle nests the images four levels below LOC_val_solution.csv
# (<kaggle>/ILSVRC/Data/CLS-LOC/val), so the label search climbs that far.
_LABEL_SEARCH_DEPTH = 4

Layout = Literal["auto", "folders", "devkit", "loc"]
_LAYOUTS = ("auto", "folders", "devkit", "loc")


def _build(transform: Callable | TransformSpec | None) -> Callable | None:
    """A callable from a :class:`TransformSpec`; callables and ``None`` pass through."""
    return transform.build() if isinstance(transform, TransformSpec) else transform


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan(folder: Path) -> tuple[list[str], list[str]]:
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


def _check_root(root: Path, what: str, expected: str) -> None:
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise AuditInputError(f"{what} root {root} {state}; expected {expected}")


def _list_class_folders(
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
        sub_dirs, names = _scan(root / wnid)
        not_images += [f"{wnid}/{name}/" for name in sub_dirs]
        for name in names:
            if _is_image(name):
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


class _ImageFiles(AuditDataset):
    """A fixed list of image files with labels and ids (shared by both datasets)."""

    num_classes = 1000
    default_transform: ClassVar[TransformSpec] = TransformSpec()
    _shift = "clean"
    _split = "val"

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
                "split": self._split,
                "source_id": self._ids,
                "shift": self._shift,
                "severity": np.zeros(len(self._ids), dtype=np.int8),
                "path": self._paths,
            }
        )


@register_dataset("imagenet")
class ImageNetVal(_ImageFiles):
    """The 50,000-image ImageNet-1k (ILSVRC2012) validation set.

    Parameters
    ----------
    root
        Folder holding the validation images.
    transform
        Callable or :class:`TransformSpec` applied to each PIL image; ``None`` returns
        the PIL image. :attr:`default_transform` (resize 256, center crop 224,
        ImageNet mean/std) is the usual choice.
    layout
        ``"folders"``: one folder per wnid (``root/n01440764/*.JPEG``). ``"devkit"``:
        flat ``root/ILSVRC2012_val_00000001.JPEG ...`` labelled by the devkit's
        ``data/ILSVRC2012_validation_ground_truth.txt`` and ``data/meta.mat``.
        ``"loc"``: flat, labelled by Kaggle's ``LOC_val_solution.csv``. ``"auto"``
        picks folders when root has sub-folders, else the devkit, else the csv.
    labels
        The devkit folder or the csv; by default searched for in ``root`` and up to
        four parent folders (Kaggle keeps the csv four levels above the images).

    Examples
    --------
    >>> ds = ImageNetVal("/data/imagenet/val")  # doctest: +SKIP
    >>> image, label, example_id = ds[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        *,
        transform: Callable | TransformSpec | None = None,
        layout: Layout = "auto",
        labels: str | Path | None = None,
    ) -> None:
        transform = _build(transform)
        super().__init__(Path(os.path.abspath(root)), transform=transform)
        check_choice(layout, _LAYOUTS, field="argument layout", source="ImageNetVal")
        _check_root(self.root, "ImageNet validation", "the extracted ILSVRC2012_img_val images")
        dirs, files = _scan(self.root)
        data_dirs = [d for d in dirs if d != DEVKIT_DIR]
        if not data_dirs and not files:
            raise AuditInputError(
                f"{self.root}: no images found; the folder is empty, expected "
                "ILSVRC2012_val_*.JPEG files or one folder per wnid"
            )
        if layout == "auto":
            layout = "folders" if data_dirs else self._find_labels(labels, None)[0]
        if layout == "folders":
            self._index_folders(data_dirs, files)
        else:
            kind, where = self._find_labels(labels, layout)
            self._index_flat(data_dirs, files, kind, where)
        self.layout = layout

    def _index_folders(self, dirs: list[str], files: list[str]) -> None:
        valid = {w: i for i, w in enumerate(imagenet_wnids())}
        items = _list_class_folders(self.root, dirs, files, valid, "ImageNet-1k", _KNOWN_EXTRAS)
        root = str(self.root)
        self._set_items(
            [os.path.join(root, w, f) for w, f, _ in items],
            [label for _, _, label in items],
            [f"imagenet/{os.path.splitext(f)[0]}" for _, f, _ in items],
        )

    def _find_labels(self, labels: str | Path | None, layout: str | None) -> tuple[str, Path]:
        """(``"devkit"`` or ``"loc"``, path) of the ground truth of a flat layout."""
        if labels is not None:
            path = Path(labels)
            kind = "loc" if path.suffix.lower() == ".csv" else "devkit"
            if not path.exists():
                raise AuditInputError(
                    f"labels {path} does not exist; expected the {DEVKIT_DIR} folder or {LOC_CSV}"
                )
            if layout not in (None, kind):
                raise AuditInputError(
                    f"labels {path} is a {kind} label file but layout={layout!r}; "
                    f"pass layout={kind!r} or 'auto'"
                )
            return kind, path
        places = [self.root, *self.root.parents[:_LABEL_SEARCH_DEPTH]]
        for place in places:
            devkit = place / DEVKIT_DIR
            if layout in (None, "devkit") and (devkit / DEVKIT_GROUND_TRUTH).is_file():
                return "devkit", devkit
            if layout in (None, "loc") and (place / LOC_CSV).is_file():
                return "loc", place / LOC_CSV
        wanted = {
            None: f"{DEVKIT_DIR}/{DEVKIT_GROUND_TRUTH} (devkit) or {LOC_CSV} (Kaggle)",
            "devkit": f"{DEVKIT_DIR}/{DEVKIT_GROUND_TRUTH}",
            "loc": LOC_CSV,
        }[layout]
        raise AuditInputError(
            f"{self.root}: flat validation images need labels: expected {wanted} in "
            f"{self.root} or one of its {_LABEL_SEARCH_DEPTH} parent folders, none found; "
            "extract ILSVRC2012_devkit_t12.tar.gz there, pass labels=, or sort the images "
            "into one folder per wnid"
        )

    def _index_flat(self, dirs: list[str], files: list[str], kind: str, where: Path) -> None:
        problems = [
            f"{self.root}: sub-folder {d}/ in a flat layout; expected only images" for d in dirs
        ]
        names = [f for f in files if f not in _KNOWN_EXTRAS]
        bad = [f for f in names if not _VAL_FILE.fullmatch(f)]
        if bad:
            problems.append(
                f"{self.root}: {len(bad)} file(s) are not ImageNet validation images: "
                f"{first_few(bad)}; expected names like ILSVRC2012_val_00000001.JPEG "
                "(hidden files are ignored)"
            )
        if problems:
            raise AuditInputError(problems)
        truth = _read_devkit(where) if kind == "devkit" else _read_loc(where)
        source = where / DEVKIT_GROUND_TRUTH if kind == "devkit" else where
        present = {f[:-5]: f for f in names}  # id without ".JPEG"
        absent = sorted(set(truth) - set(present))
        unlabelled = sorted(set(present) - set(truth))
        if absent:
            problems.append(
                f"{source}: {len(absent)} image(s) listed in the ground truth are missing from "
                f"{self.root}: {first_few([a + '.JPEG' for a in absent])}; expected the complete "
                "validation set (50,000 images), re-extract ILSVRC2012_img_val.tar"
            )
        if unlabelled:
            problems.append(
                f"{source}: ground truth has {len(truth)} entries for {len(present)} images; "
                f"{len(unlabelled)} image(s) have no label: "
                f"{first_few([present[u] for u in unlabelled])}; "
                "expected one entry per image, the ground-truth file may be truncated"
            )
        if problems:
            raise AuditInputError(problems)
        ids = sorted(present)
        root = str(self.root)
        self._set_items(
            [os.path.join(root, present[i]) for i in ids],
            [truth[i] for i in ids],
            [f"imagenet/{i}" for i in ids],
        )


def _read_devkit(devkit: Path) -> dict[str, int]:
    """Map ``ILSVRC2012_val_XXXXXXXX`` to class index from the devkit.

    The ground-truth file holds ILSVRC2012_IDs (1..1000, the devkit's own order,
    not the sorted-wnid index); ``meta.mat`` maps each ID to its wnid.
    """
    import scipy.io  # imported here: only the devkit layout needs scipy

    truth_file, meta_file = devkit / DEVKIT_GROUND_TRUTH, devkit / DEVKIT_META
    missing = [str(p) for p in (truth_file, meta_file) if not p.is_file()]
    if missing:
        raise AuditInputError(
            f"devkit {devkit}: missing {', '.join(missing)}; expected the extracted "
            f"{DEVKIT_DIR}.tar.gz with {DEVKIT_GROUND_TRUTH} and {DEVKIT_META}"
        )
    try:
        synsets = scipy.io.loadmat(meta_file, squeeze_me=True)["synsets"]
        synsets = np.atleast_1d(synsets)
        ids = [int(x) for x in synsets["ILSVRC2012_ID"]]
        wnids = [str(x) for x in synsets["WNID"]]
    except (scipy.io.matlab.MatReadError, OSError, ValueError, KeyError, TypeError) as err:
        raise AuditInputError(
            f"{meta_file}: cannot read field synsets.ILSVRC2012_ID/WNID ({err!r}); expected "
            f"the official devkit {DEVKIT_META}, re-extract {DEVKIT_DIR}.tar.gz"
        ) from err
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    id_to_class = {i: index[w] for i, w in zip(ids, wnids) if w in index}
    truth: dict[str, int] = {}
    with open(truth_file, encoding="ascii", errors="replace") as f:
        lines = f.read().rstrip().splitlines()  # trailing blank lines are harmless
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text.isdigit() or int(text) not in id_to_class:
            raise AuditInputError(
                f"{truth_file}, line {line_no}: {text!r} is not an ILSVRC2012_ID of one of "
                f"the 1,000 classes in {meta_file}; expected one integer 1..1000 per line"
            )
        truth[f"ILSVRC2012_val_{line_no:08d}"] = id_to_class[int(text)]
    return truth


def _read_loc(csv_file: Path) -> dict[str, int]:
    """Map ``ILSVRC2012_val_XXXXXXXX`` to class index from Kaggle's solution csv."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    truth: dict[str, int] = {}
    with open(csv_file, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != ["ImageId", "PredictionString"]:
            raise AuditInputError(
                f"{csv_file}: header is {header}; expected ImageId,PredictionString "
                "(Kaggle's LOC_val_solution.csv)"
            )
        for row_no, row in enumerate(rows, start=2):
            wnid = row[1].split()[0] if len(row) == 2 and row[1].split() else ""
            if len(row) != 2 or not _VAL_ID.fullmatch(row[0]) or wnid not in index:
                raise AuditInputError(
                    f"{csv_file}, line {row_no}: {','.join(row)!r}; expected ImageId "
                    "ILSVRC2012_val_XXXXXXXX and a PredictionString starting with an ImageNet wnid"
                )
            if row[0] in truth:
                raise AuditInputError(
                    f"{csv_file}, line {row_no}: ImageId {row[0]} occurs twice; expected once"
                )
            truth[row[0]] = index[wnid]
    return truth


@register_dataset("imagenet-a")
class ImageNetA(_ImageFiles):
    """ImageNet-A: 7,500 natural adversarial images of 200 ImageNet classes.

    Labels are indices into the 1,000 ImageNet classes; predictions are restricted
    to :attr:`class_mask` (the 200 classes) before taking the argmax.

    Parameters
    ----------
    root
        The extracted ``imagenet-a`` folder (200 wnid folders and ``README.txt``).
    transform
        Callable or :class:`TransformSpec`; ``None`` returns the PIL image.

    Examples
    --------
    >>> ds = ImageNetA("/data/imagenet-a")  # doctest: +SKIP
    >>> pred = ds.class_mask[logits[:, ds.class_mask].argmax(1)]  # doctest: +SKIP
    """

    class_mask = _IMAGENET_A_MASK
    _shift = "imagenet-a"
    _split = "test"

    def __init__(
        self, root: str | Path, *, transform: Callable | TransformSpec | None = None
    ) -> None:
        transform = _build(transform)
        super().__init__(Path(os.path.abspath(root)), transform=transform)
        _check_root(self.root, "ImageNet-A", "the imagenet-a folder with 200 wnid folders")
        dirs, files = _scan(self.root)
        if not dirs and not files:
            raise AuditInputError(
                f"{self.root}: no images found; the folder is empty, expected 200 wnid folders"
            )
        valid = {w: int(i) for w, i in zip(imagenet_a_wnids(), IMAGENET_A_INDICES)}
        items = _list_class_folders(
            self.root, dirs, files, valid, "ImageNet-A (200-class subset)", _IMAGENET_A_EXTRAS
        )
        root = str(self.root)
        self._set_items(
            [os.path.join(root, w, f) for w, f, _ in items],
            [label for _, _, label in items],
            [f"imagenet-a/{w}/{f}" for w, f, _ in items],
        )
