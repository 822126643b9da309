"""ImageNet-1k validation set (three on-disk layouts); ImageNet-A lives in ``imagenet_a``.

Class index = position of the wnid in the shipped sorted list
(:func:`~compaudit.data.imagenet_classes.imagenet_wnids`), the order torchvision and
timm models use. Nothing is downloaded: missing files are an :class:`AuditInputError`
that says which files are expected where.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from compaudit.data._checks import check_choice, first_few
from compaudit.data._image_folders import (
    IMAGE_EXTENSIONS,
    ImageFiles,
    check_root,
    list_class_folders,
    scan_folder,
)
from compaudit.data.base import TransformSpec, register_dataset
from compaudit.data.imagenet_a import ImageNetA  # re-exported: its old import path
from compaudit.data.imagenet_classes import imagenet_wnids
from compaudit.errors import AuditInputError

__all__ = ["ImageNetVal", "ImageNetA", "IMAGE_EXTENSIONS"]

DEVKIT_DIR = "ILSVRC2012_devkit_t12"
DEVKIT_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "data/meta.mat"
LOC_CSV = "LOC_val_solution.csv"
#: Files the official archives put beside the images; never mistaken for data.
_KNOWN_EXTRAS = frozenset({LOC_CSV, f"{DEVKIT_DIR}.tar.gz", "LOC_synset_mapping.txt"})
_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
_VAL_ID = re.compile(r"ILSVRC2012_val_\d{8}")
# Kaggle nests the images four levels below LOC_val_solution.csv
# (<kaggle>/ILSVRC/Data/CLS-LOC/val), so the label search climbs that far.
_LABEL_SEARCH_DEPTH = 4

Layout = Literal["auto", "folders", "devkit", "loc"]
_LAYOUTS = ("auto", "folders", "devkit", "loc")


@register_dataset("imagenet")
class ImageNetVal(ImageFiles):
    """The 50,000-image ImageNet-1k (ILSVRC2012) validation set (or the training images).

    Parameters
    ----------
    root
        Folder holding the validation images.
    split
        ``"val"`` (the default), or ``"train"``: the training images, one folder per
        wnid, in a root of their own (``[data].train_root`` of a spec) for
        fine-tuning and calibration.
    target, protected
        Accepted for the shared constructor shape; only ``None`` and ``()`` (the images
        have class labels and no attributes).
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

    Example (not run here: it needs files on disk)::

        ds = ImageNetVal("/data/imagenet/val")
        image, label, example_id = ds[0]
    """

    eval_split: ClassVar[str] = "val"
    #: Each split is a folder of its own: a spec's training split needs its train_root.
    split_folders: ClassVar[bool] = True

    def __init__(
        self,
        root: str | Path,
        *,
        split: Literal["val", "train"] = "val",
        target: str | None = None,
        protected: Sequence[str] = (),
        transform: Callable | TransformSpec | None = None,
        layout: Layout = "auto",
        labels: str | Path | None = None,
    ) -> None:
        super().__init__(Path(os.path.abspath(root)), transform=transform)
        self._check_arguments(split, target, protected)
        check_choice(layout, _LAYOUTS, field="argument layout", source="ImageNetVal")
        check_root(self.root, "ImageNet validation", "the extracted ILSVRC2012_img_val images")
        dirs, files = scan_folder(self.root)
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
        items = list_class_folders(self.root, dirs, files, valid, "ImageNet-1k", _KNOWN_EXTRAS)
        root = str(self.root)
        self._set_items(
            [os.path.join(root, w, f) for w, f, _ in items],
            [label for _, _, label in items],
            [f"imagenet/{os.path.splitext(f)[0]}" for _, f, _ in items],
        )

    def _find_labels(self, labels: str | Path | None,
                     layout: str | None) -> tuple[Literal["devkit", "loc"], Path]:
        """(``"devkit"`` or ``"loc"``, path) of the ground truth of a flat layout."""
        if labels is not None:
            path = Path(labels)
            kind: Literal["devkit", "loc"] = "loc" if path.suffix.lower() == ".csv" else "devkit"
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
