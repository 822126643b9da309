"""ImageNet-C, and corrupted copies of other datasets written in its layout.

Released layout: ``<root>/<corruption>/<severity>/<wnid>/<file>.JPEG``; the class
index is the wnid's position in the sorted list of the 1,000 ImageNet wnids. Copies
written by :func:`compaudit.data.corrupted_copy.write_corrupted_copy` may name class
folders ``class_<label>`` instead and carry ``source_examples.parquet`` (or ``.csv``),
the clean examples table, whose attributes, splits and ids are merged in by file stem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._checks import check_names, check_no_attributes
from compaudit.data.base import AuditDataset, TransformSpec, register_dataset
from compaudit.data.corrupted_copy import SOURCE_EXAMPLES, copy_name, file_stem
from compaudit.data.corruptions import (
    ALL_CORRUPTIONS,
    SEVERITIES,
    check_corruptions,
    check_severities,
)
from compaudit.data.imagenet_classes import imagenet_wnids
from compaudit.errors import AuditInputError

__all__ = ["ImageNetC"]

_LAYOUT = "<root>/<corruption>/<severity>/<wnid or class_<label>>/<file>.JPEG"
_IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_WNID = re.compile(r"n\d{8}")
_CLASS_DIR = re.compile(r"class_(\d+)")
_MAX_PROBLEMS = 10  # enough to see the pattern without flooding the terminal
#: split of ImageNet-C images: they are corrupted ImageNet validation images.
RELEASE_SPLIT = "val"


def _subdirs(path: Path) -> list[str]:
    """Sorted names of the visible sub-folders (os.scandir: no stat per entry)."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _image_files(path: Path) -> list[str]:
    with os.scandir(path) as it:
        return sorted(
            e.name
            for e in it
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in _IMAGE_SUFFIXES
            and e.is_file()
        )


def _class_label(name: str, folder: Path, wnid_index: dict[str, int]) -> tuple[int, str]:
    """Label and kind (``wnid``/``class``) of a class folder, or an error naming it."""
    if name in wnid_index:
        return wnid_index[name], "wnid"
    match = _CLASS_DIR.fullmatch(name)
    if match:
        return int(match.group(1)), "class"
    if _WNID.fullmatch(name):
        raise AuditInputError(
            f"{folder / name}: unknown wnid {name!r}; expected one of the 1,000 "
            "ImageNet-1k wnids (compaudit.data.imagenet_classes.imagenet_wnids()); "
            "remove the folder or fix its name"
        )
    raise AuditInputError(
        f"{folder / name}: class folder name {name!r} is neither an ImageNet wnid "
        f"(n01440764) nor class_<label>; expected the layout {_LAYOUT}"
    )


def _choose_corruptions(root: Path, corruptions: Iterable[str] | None) -> tuple[str, ...]:
    present = _subdirs(root)
    unknown = [d for d in present if d not in ALL_CORRUPTIONS]
    if unknown:
        raise AuditInputError(
            [
                f"{root / d}: {d!r} is not a corruption name; valid folder names are: "
                f"{', '.join(ALL_CORRUPTIONS)}; expected the layout {_LAYOUT}"
                for d in unknown[:_MAX_PROBLEMS]
            ]
        )
    if corruptions is None:
        chosen = tuple(c for c in ALL_CORRUPTIONS if c in present)
        if not chosen:
            raise AuditInputError(
                f"{root}: no corruption folders found; expected the layout {_LAYOUT}"
            )
        return chosen
    chosen = check_corruptions(corruptions)
    absent = [c for c in chosen if c not in present]
    if absent:
        raise AuditInputError(
            f"{root}: corruptions {absent} were requested but have no folder; present "
            f"are: {', '.join(present) or 'none'}"
        )
    return chosen


def _check_severity_dirs(folder: Path, wanted: tuple[int, ...]) -> None:
    found = _subdirs(folder)
    bad = [d for d in found if d not in {str(s) for s in SEVERITIES}]
    if bad:
        raise AuditInputError(
            [f"{folder / d}: severity folder {d!r} is not one of 1, 2, 3, 4, 5" for d in bad]
        )
    missing = [s for s in wanted if str(s) not in found]
    if missing:
        raise AuditInputError(
            f"{folder}: severities {missing} have no folder (found: {', '.join(found) or 'none'}); "
            "pass severities=(...) with the ones present"
        )


def _read_source(root: Path) -> tuple[Path, pd.DataFrame] | None:
    for name in SOURCE_EXAMPLES:
        path = root / name
        if path.is_file():
            table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            missing = [c for c in ("example_id", "label") if c not in table.columns]
            if missing:
                raise AuditInputError(
                    f"{path}: lacks the columns {missing}; expected the examples.parquet "
                    "contract (example_id, label, split, ...)"
                )
            return path, table.reset_index(drop=True)
    return None


@register_dataset("imagenet-c")
class ImageNetC(AuditDataset):
    """ImageNet-C (Hendrycks & Dietterich, 2019), or a compaudit-written corrupted copy.

    Parameters
    ----------
    root
        Folder holding ``<corruption>/<severity>/<class folder>/<images>``.
    split
        ``"all"`` keeps every image; another value keeps the images of that split
        (``"val"`` for the release, the source table's splits for a copy).
    target
        Accepted for the shared constructor shape; only ``None`` (labels come from the
        class folders).
    protected
        Attribute names (``Male`` or ``attr.Male``) that must be columns of the copy's
        source table; the release has none.
    transform
        Callable or :class:`TransformSpec` applied to the PIL image.
    corruptions
        Corruptions to read; by default all present under ``root``.
    severities
        Severities to read; each must have a folder under every chosen corruption.

    Example (not run here: it needs files on disk)::

        ds = ImageNetC("/data/ImageNet-C", corruptions=["fog"], severities=[3])
        ds.examples().iloc[0]["example_id"]
        # -> 'imagenet-c/fog/3/ILSVRC2012_val_00000001'
    """

    num_classes = 1000

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "all",
        target: str | None = None,
        protected: Sequence[str] = (),
        transform: Callable | TransformSpec | None = None,
        corruptions: Iterable[str] | None = None,
        severities: Iterable[int] = SEVERITIES,
    ) -> None:
        super().__init__(root, transform=transform)
        check_no_attributes("ImageNetC", target=target, protected=(),
                            why="labels come from the class folders")
        protected = check_names(protected, field="protected", source="ImageNetC")
        self.protected = tuple(p if p.startswith("attr.") else f"attr.{p}" for p in protected)
        if not isinstance(split, str):
            raise AuditInputError(f"ImageNetC: argument split: got {split!r}; expected "
                                  "'all' or the name of a split")
        self.split = split
        if not self.root.is_dir():
            raise AuditInputError(
                f"ImageNet-C root {self.root} does not exist or is not a folder; expected "
                f"the layout {_LAYOUT}; download ImageNet-C or write a copy with "
                "compaudit.data.corrupted_copy.write_corrupted_copy"
            )
        self.corruptions = _choose_corruptions(self.root, corruptions)
        self.severities = check_severities(severities)
        self._table = self._select(self._scan())
        self._paths = self._table["path"].tolist()
        self._labels = self._table["label"].to_numpy()
        self._ids = self._table["example_id"].tolist()

    def _select(self, table: pd.DataFrame) -> pd.DataFrame:
        """Check ``protected`` against the attribute columns and keep the rows of ``split``."""
        problems = []
        attrs = [c for c in table.columns if c.startswith("attr.")]
        listed = ", ".join(attrs) or "none: attributes come from a copy's source table"
        absent = [p for p in self.protected if p not in attrs]
        if absent:
            problems.append(
                f"ImageNetC: argument protected: {', '.join(map(repr, absent))} not found "
                f"among the attribute columns of {self.root} "
                f"({listed})"
            )
        present = sorted(set(table["split"]))
        if self.split != "all" and self.split not in present:
            problems.append(f"ImageNetC: unknown split {self.split!r}; the images of "
                            f"{self.root} belong to: all, {', '.join(present)}")
        if problems:
            raise AuditInputError(problems)
        if self.split == "all":
            return table
        return table[table["split"] == self.split].reset_index(drop=True)

    def _scan(self) -> pd.DataFrame:
        wnid_index = {w: i for i, w in enumerate(imagenet_wnids())}
        cols: dict[str, list] = {k: [] for k in ("shift", "severity", "label", "stem", "path")}
        kinds: set[str] = set()
        for c in self.corruptions:
            _check_severity_dirs(self.root / c, self.severities)
            for s in self.severities:
                folder = self.root / c / str(s)
                for class_dir in _subdirs(folder):
                    label, kind = _class_label(class_dir, folder, wnid_index)
                    kinds.add(kind)
                    files = _image_files(folder / class_dir)
                    prefix = str(folder / class_dir) + os.sep
                    cols["shift"] += [c] * len(files)
                    cols["severity"] += [s] * len(files)
                    cols["label"] += [label] * len(files)
                    cols["stem"] += [os.path.splitext(f)[0] for f in files]
                    cols["path"] += [prefix + f for f in files]
        if not cols["path"]:
            raise AuditInputError(
                f"{self.root}: no images found for corruptions {list(self.corruptions)} at "
                f"severities {list(self.severities)}; expected the layout {_LAYOUT}"
            )
        if len(kinds) > 1:
            raise AuditInputError(
                f"{self.root}: class folders mix ImageNet wnids and class_<label> names; "
                "expected one kind throughout"
            )
        table = pd.DataFrame(cols)
        return self._attach_sources(table, wnids="wnid" in kinds)

    def _attach_sources(self, table: pd.DataFrame, *, wnids: bool) -> pd.DataFrame:
        """Add example_id, source_id, split and attr.* (from source_examples if present)."""
        source = _read_source(self.root)
        if source is None:
            name = "imagenet-c" if wnids else "corrupted"
            source_ids = ("imagenet/" if wnids else "") + table["stem"]
            split = RELEASE_SPLIT if wnids else "test"
            extra = pd.DataFrame({"split": [split] * len(table)})
            self.num_classes = 1000 if wnids else int(table["label"].max()) + 1
        else:
            path, src = source
            name = copy_name(src["example_id"])
            row_of = pd.Series(np.arange(len(src)), index=src["example_id"].map(file_stem))
            rows = row_of.reindex(table["stem"]).to_numpy()
            unmatched = table["path"][pd.isna(rows)].tolist()
            if unmatched:
                raise AuditInputError(
                    f"{path}: has no example for {len(unmatched)} image(s), e.g. "
                    f"{unmatched[:3]}; the copy and its source table disagree: rewrite the copy"
                )
            rows = rows.astype(np.int64)
            src_labels = src["label"].to_numpy()[rows]
            wrong = np.flatnonzero(src_labels != table["label"].to_numpy())
            if wrong.size:
                raise AuditInputError(
                    f"{path}: label of {table['path'][wrong[0]]} is {src_labels[wrong[0]]} "
                    f"there but its folder says {table['label'][wrong[0]]}; rewrite the copy"
                )
            source_ids = src["example_id"].to_numpy()[rows]
            keep = ["split"] * ("split" in src) + [c for c in src if c.startswith("attr.")]
            extra = src[keep].iloc[rows].reset_index(drop=True)
            if "split" not in extra:
                extra.insert(0, "split", "test")
            if not wnids:
                self.num_classes = int(max(src["label"].max(), table["label"].max())) + 1
        out = pd.DataFrame(
            {
                "example_id": name
                + "/"
                + table["shift"]
                + "/"
                + table["severity"].astype(str)
                + "/"
                + table["stem"],
                "label": table["label"].astype(np.int64),
                "split": extra["split"].astype(str).to_numpy(),
                "source_id": np.asarray(source_ids, dtype=object),
                "shift": table["shift"],
                "severity": table["severity"].astype(np.int8),
            }
        )
        for col in extra.columns.drop("split"):
            out[col] = extra[col]  # a Series keeps bool and category dtypes
        out["path"] = table["path"]
        if not out["example_id"].is_unique:
            dup = out["example_id"][out["example_id"].duplicated()].iloc[0]
            raise AuditInputError(
                f"{self.root}: two images share the id {dup!r} (same file stem in two "
                "class folders, or two suffixes); file stems must be unique per severity"
            )
        return out

    def __len__(self) -> int:
        return len(self._paths)

    def _load(self, index: int) -> tuple[Image.Image, int, str]:
        with Image.open(self._paths[index]) as img:
            image = img.convert("RGB")
        return image, int(self._labels[index]), self._ids[index]

    def examples(self) -> pd.DataFrame:
        """Rows of ``examples.parquet``: one per image, in index order."""
        return self._table.copy()
