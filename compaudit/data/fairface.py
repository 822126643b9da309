"""FairFace read from its official files (registry name ``fairface``).

Expected layout (the released image zip unpacked next to the two label files)::

    root/fairface_label_train.csv   # file,age,gender,race,service_test
    root/fairface_label_val.csv
    root/train/1.jpg ...            # ``file`` is relative to root: train/1.jpg
    root/val/1.jpg ...

Splits: ``train`` and ``val`` (one label file each), ``test`` (an alias of ``val``:
FairFace publishes no test labels and its paper evaluates on ``val``; the ``split``
column of the examples still says ``val``), and ``all`` (both files, train first).

Labels: the target (default ``gender``) is one of the attribute columns and the label
is its class index in this fixed order (:data:`FAIRFACE_CLASSES`):

- ``gender``: Female=0, Male=1;
- ``race``: White=0, Black=1, Latino_Hispanic=2, East Asian=3, Southeast Asian=4,
  Indian=5, Middle Eastern=6;
- ``age``: the published bins 0-2=0, 3-9=1, 10-19=2, 20-29=3, 30-39=4, 40-49=5,
  50-59=6, 60-69=7, more than 70=8; with ``age_groups="coarse"`` the bins are merged
  into 0-19=0, 20-39=1, 40-59=2, 60+=3 (see :mod:`compaudit.data._demographics`).

Protected attributes (default: the two attributes that are not the target) become
``attr.age``, ``attr.gender``, ``attr.race`` string columns holding the class names
(e.g. ``attr.race = "East Asian"``). ``service_test`` is accepted and not used.

compaudit never downloads: every problem found in the label files (missing file or
column, a value outside the published set, a repeated or unsafe path, images that are
absent) is collected and reported at once as an
:class:`~compaudit.errors.AuditInputError` naming the file, the column, the data rows
(1-based, header not counted) and what was expected.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from compaudit._table_columns import _rows
from compaudit.data._checks import first_few, is_absolute_path, list_names, read_string_csv
from compaudit.data._demographics import (
    AGE_BINS,
    COARSE_AGE_GROUPS,
    DemographicFaces,
    coarsen_ages,
)
from compaudit.data.base import TransformSpec, register_dataset
from compaudit.errors import NEVER_DOWNLOADS, AuditInputError

__all__ = ["FAIRFACE_CLASSES", "FAIRFACE_LABEL_FILES", "FairFace", "read_fairface_labels"]

#: Class names of each attribute column, in label order.
FAIRFACE_CLASSES: dict[str, tuple[str, ...]] = {
    "age": AGE_BINS,
    "gender": ("Female", "Male"),
    "race": ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian",
             "Indian", "Middle Eastern"),
}
#: The label file of each split.
FAIRFACE_LABEL_FILES = {"train": "fairface_label_train.csv", "val": "fairface_label_val.csv"}
SPLITS = ("train", "val", "test", "all")
#: The label when ``target`` is left unset.
DEFAULT_TARGET = "gender"
REQUIRED_COLUMNS = ("file", "age", "gender", "race")
_FIX = (f"{NEVER_DOWNLOADS}; get the FairFace images (train/ and val/) and "
        "fairface_label_train.csv / fairface_label_val.csv and put them in")


def _read_csv(path: Path) -> pd.DataFrame:
    """The label file as a frame of stripped strings, or an error naming the file."""
    table = read_string_csv(
        path, not_found=("FairFace label file not found; expected a CSV with header "
                         f"file,age,gender,race,service_test; {_FIX} {path.parent}"),
        expected=("expected the original FairFace label file (header "
                  "file,age,gender,race,service_test)"))
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise AuditInputError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; found "
            f"{', '.join(map(repr, table.columns)) or 'no header'}; expected the header "
            "file,age,gender,race,service_test of the original label file"
        )
    if table.empty:
        raise AuditInputError(f"{path}: the label file lists no images; expected one row "
                              "per image after the header")
    return table[list(REQUIRED_COLUMNS)].apply(lambda col: col.str.strip())


def _unsafe(file: str) -> bool:
    """True for a path that is absolute or leaves the root with ``..``."""
    return is_absolute_path(file) or ".." in PurePosixPath(file.replace("\\", "/")).parts


def _row_problems(table: pd.DataFrame, path: Path) -> list[str]:
    """Bad ``file`` cells and values outside the published classes, per column."""
    problems = []
    files = table["file"]
    empty = (files == "").to_numpy()
    unsafe = np.array([bool(f) and _unsafe(f) for f in files])
    if empty.any():
        problems.append(f"{path}: column 'file': {_rows(empty)} are empty; expected an "
                        "image path relative to the root, such as train/1.jpg")
    if unsafe.any():
        problems.append(
            f"{path}: column 'file': {_rows(unsafe)} are absolute or contain '..' (first: "
            f"{files[unsafe].iloc[0]!r}); expected paths relative to the root, such as "
            "train/1.jpg"
        )
    dup = (files.duplicated(keep=False) & ~pd.Series(empty)).to_numpy()
    if dup.any():
        problems.append(f"{path}: column 'file': {_rows(dup)} repeat an image "
                        f"({first_few(files[dup].unique())}); each image must be listed once")
    for column, valid in FAIRFACE_CLASSES.items():
        bad = ~table[column].isin(valid).to_numpy()
        if bad.any():
            found = ", ".join(map(repr, table[column][bad].unique()[:5]))
            problems.append(
                f"{path}: column {column!r}: {_rows(bad)} hold a value outside the "
                f"published set (found {found}); expected one of "
                f"{', '.join(map(repr, valid))}"
            )
    return problems


def read_fairface_labels(root: Path, splits: Sequence[str]) -> pd.DataFrame:
    """Read and check the label files of ``splits`` (``train``/``val``) under ``root``.

    Returns one frame with columns ``file``, ``age``, ``gender``, ``race`` (the file's
    strings) and ``split``, in file order; raises one error listing every problem.
    """
    frames, problems = [], []
    for split in splits:
        path = root / FAIRFACE_LABEL_FILES[split]
        try:
            table = _read_csv(path)
        except AuditInputError as err:
            problems += err.problems
            continue
        problems += _row_problems(table, path)
        frames.append(table.assign(split=split))
    if problems:
        raise AuditInputError(problems)
    table = pd.concat(frames, ignore_index=True)
    across = table["file"].duplicated(keep=False).to_numpy()
    if across.any():
        raise AuditInputError(
            f"{root}: {FAIRFACE_LABEL_FILES['train']} and {FAIRFACE_LABEL_FILES['val']} "
            f"both list {first_few(table['file'][across].unique())}; each image belongs "
            "to one split, use the original files"
        )
    return table


def _check_images(root: Path, table: pd.DataFrame) -> None:
    """Raise, naming every label file concerned, if listed images are absent."""
    by_folder: dict[str, list[int]] = defaultdict(list)
    files = table["file"].tolist()
    for i, file in enumerate(files):
        by_folder[os.path.dirname(file)].append(i)
    missing = np.zeros(len(files), bool)
    for folder, rows in by_folder.items():
        present = list_names(root / folder)
        missing[rows] = [os.path.basename(files[i]) not in present for i in rows]
    problems = []
    for split, rows in table.groupby("split", sort=False).indices.items():
        absent = [files[i] for i in rows if missing[i]]
        if absent:
            problems.append(
                f"{root}: {len(absent)} of {len(rows)} images listed in "
                f"{FAIRFACE_LABEL_FILES[split]} are missing; first missing: "
                f"{first_few(absent)}. Unpack the FairFace images so that column 'file' "
                f"resolves against {root} ({_FIX} {root})"
            )
    if problems:
        raise AuditInputError(problems)


@register_dataset("fairface")
class FairFace(DemographicFaces):
    """FairFace faces with an age, gender or race target and the others protected.

    Parameters
    ----------
    root
        Folder holding the two label CSVs and the ``train/`` and ``val/`` images.
    split
        ``train``, ``val`` (default), ``test`` (alias of ``val``) or ``all``.
    target
        ``gender`` (default), ``race`` or ``age``; the label is the class index in
        :data:`FAIRFACE_CLASSES` order.
    protected
        Attributes written as ``attr.<name>`` string columns; ``None`` (default): the
        attributes other than the target; ``()``: none.
    transform
        Callable or :class:`TransformSpec` applied to each PIL image.
    age_groups
        ``fine`` (the nine published bins) or ``coarse`` (0-19, 20-39, 40-59, 60+);
        applies to the age label and ``attr.age``.

    Example (not run here: it needs files on disk)::

        ds = FairFace("data/fairface", split="val", target="race")
        ds.examples()[["example_id", "label", "attr.gender"]].head(1)
    """

    prefix = "fairface"

    def __init__(
        self,
        root: str | Path,
        *,
        split: Literal["train", "val", "test", "all"] = "val",
        target: str | None = None,
        protected: Sequence[str] | None = None,
        transform: Callable | TransformSpec | None = None,
        age_groups: Literal["fine", "coarse"] = "fine",
    ) -> None:
        super().__init__(root, transform=transform)
        self._setup(split, SPLITS, target, protected, age_groups,
                    default_target=DEFAULT_TARGET)
        self.classes = dict(FAIRFACE_CLASSES)
        if self.age_groups == "coarse":
            self.classes["age"] = COARSE_AGE_GROUPS
        files = ("train", "val") if split == "all" else ("val",) if split == "test" else (split,)
        table = read_fairface_labels(self.root, files)
        _check_images(self.root, table)
        values = {name: table[name].to_numpy(dtype=object) for name in FAIRFACE_CLASSES}
        if self.age_groups == "coarse":
            values["age"] = coarsen_ages(values["age"])
        self._keep(table["file"].to_numpy(dtype=object), table["split"].to_numpy(dtype=object),
                   values)
