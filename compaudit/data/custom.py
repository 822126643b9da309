"""Custom datasets described by a CSV manifest (registry name ``manifest``).

The manifest (``root/manifest.csv`` unless named) lists one image per row, with paths
relative to ``root``::

    path,label,split,attr.Male,attr.Skin
    img/0001.jpg,1,test,True,dark
    img/0002.jpg,0,test,False,light

Required columns are ``path`` and ``label`` (an integer >= 0); ``split``,
``example_id`` and any number of ``attr.<Name>`` columns are optional. Every problem
found in the manifest is collected and reported at once as an
:class:`~compaudit.errors.AuditInputError` naming the file, the column, the data rows
(1-based, header not counted) and the fix.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._checks import (
    check_names,
    check_no_attributes,
    first_few,
    is_absolute_path,
    open_image,
    read_string_csv,
)
from compaudit.data.base import AuditDataset, TransformSpec, clean_examples, register_dataset
from compaudit.errors import AuditInputError

__all__ = ["ManifestDataset"]

REQUIRED = ("path", "label")
_INTEGER = re.compile(r"^\d+$")
_BOOLS = {"true": True, "false": False}


def _rows(mask: np.ndarray) -> str:
    """``data rows 1, 4 (and 2 more)`` for the True entries of ``mask`` (1-based)."""
    numbers = np.flatnonzero(mask) + 1
    return f"data row{'s' if len(numbers) > 1 else ''} {first_few(numbers.tolist())}"


def _read_manifest(path: Path) -> pd.DataFrame:
    """The manifest as a frame of strings (empty cells are ``""``)."""
    table = read_string_csv(
        path, not_found="manifest file not found; expected a CSV with columns "
        "path,label[,split][,example_id][,attr.<Name>...]; check the manifest argument",
        expected="expected a header row and one comma-separated row per image")
    if table.empty:
        raise AuditInputError(
            f"{path}: the manifest lists no images; expected a header row "
            "(path,label,...) followed by one row per image"
        )
    return table


def _scan(directory: Path) -> dict[str, os.DirEntry]:
    """Entries of ``directory`` by name, from one ``os.scandir`` (empty if absent)."""
    try:
        with os.scandir(directory) as entries:
            return {entry.name: entry for entry in entries}
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return {}


def _check_columns(table: pd.DataFrame, src: str) -> None:
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise AuditInputError(
            f"{src}: missing required column(s) {', '.join(map(repr, missing))}; found "
            f"{', '.join(map(repr, table.columns))}; expected a header row with at "
            "least path,label"
        )


def _labels(table: pd.DataFrame, num_classes: object, src: str,
            problems: list[str]) -> tuple[np.ndarray, object]:
    """Labels (integers >= 0) and the number of classes (default: largest label + 1)."""
    label_text = table["label"].str.strip()
    bad = ~label_text.str.fullmatch(_INTEGER.pattern).to_numpy(dtype=bool)
    if bad.any():
        examples_bad = ", ".join(repr(v) for v in label_text[bad].head(3))
        problems.append(
            f"{src}: column 'label': {_rows(bad)} are not integers >= 0 "
            f"(found {examples_bad}); write each label as a class index 0, 1, 2, ..."
        )
        return np.zeros(len(table), np.int64), num_classes
    labels = label_text.astype(np.int64).to_numpy()
    max_label = int(labels.max())
    if num_classes is None:
        num_classes = max_label + 1
    elif (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
          or num_classes < 1):
        problems.append(f"{src}: num_classes must be a positive integer, got "
                        f"{num_classes!r}")
    elif max_label >= num_classes:
        problems.append(
            f"{src}: column 'label': {_rows(labels >= num_classes)} are outside "
            f"0..{num_classes - 1} (num_classes={num_classes}); fix the labels or "
            "raise num_classes"
        )
    return labels, num_classes


def _attribute_problems(table: pd.DataFrame, protected: tuple[str, ...], src: str) -> list[str]:
    """Protected columns that are absent, and attribute cells that are empty."""
    problems = []
    attr_cols = [c for c in table.columns if c.startswith("attr.")]
    absent = [c for c in protected if c not in table.columns]
    if absent:
        problems.append(
            f"{src}: protected attribute column(s) {', '.join(map(repr, absent))} not "
            f"found; available attribute columns: {', '.join(attr_cols) or 'none'}; "
            "add the column or fix the attribute name"
        )
    for col in attr_cols:
        empty = (table[col].str.strip() == "").to_numpy()
        if empty.any():
            problems.append(f"{src}: column {col!r}: {_rows(empty)} are empty; expected "
                            "a value (True/False or a category) for every image")
    return problems


def _optional_column_problems(table: pd.DataFrame, src: str) -> list[str]:
    """Empty ``split``/``example_id`` cells and repeated ids."""
    problems = []
    for col in ("split", "example_id"):
        if col in table.columns:
            empty = (table[col].str.strip() == "").to_numpy()
            if empty.any():
                problems.append(f"{src}: column {col!r}: {_rows(empty)} are empty; "
                                "expected a non-empty value in every row")
    if "example_id" in table.columns:
        dup = table["example_id"].duplicated(keep=False).to_numpy()
        if dup.any():
            problems.append(f"{src}: column 'example_id': {_rows(dup)} repeat an id; "
                            "expected unique ids")
    return problems


@register_dataset("manifest")
class ManifestDataset(AuditDataset):
    """Images listed in a CSV manifest, with labels and protected attributes.

    Parameters
    ----------
    root
        Folder the manifest and its image paths are relative to; no path may leave it.
    split
        ``"all"`` keeps every row; another value keeps the rows whose ``split`` column
        holds it.
    target
        Accepted for the shared constructor shape; only ``None`` (the ``label`` column
        is the target).
    protected
        Attribute names (``Male`` or ``attr.Male``) that must be present as columns.
    transform
        Callable or :class:`TransformSpec` applied to each PIL image.
    manifest
        The CSV file, relative to ``root`` or absolute.
    num_classes
        Number of classes; default the largest label + 1.

    Example (not run here: it needs files on disk)::

        ds = ManifestDataset("data/faces", manifest="manifest.csv",
                             protected=["Male"])
        ds.examples()[["example_id", "label", "attr.Male"]].head(1)
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "all",
        target: str | None = None,
        protected: Sequence[str] = (),
        transform: Callable | TransformSpec | None = None,
        manifest: str | Path = "manifest.csv",
        num_classes: int | None = None,
    ) -> None:
        super().__init__(root, transform=transform)
        self._check_arguments(split, target, protected, manifest)
        table = _read_manifest(self.manifest)
        src = str(self.manifest)
        _check_columns(table, src)
        problems: list[str] = []
        labels, classes = _labels(table, num_classes, src, problems)
        self.num_classes = int(classes) if isinstance(classes, (int, np.integer)) else 0
        problems += _attribute_problems(table, self.protected, src)
        problems += _optional_column_problems(table, src)
        raw, rel, checked = self._paths_of(table, src, problems)
        keep = self._split_rows(table, src, problems)
        self._file_problems(raw, rel, checked, keep, src, problems)
        if problems:
            raise AuditInputError(problems)
        self._store(table, labels, rel, keep)

    def _check_arguments(self, split: object, target: object, protected: object,
                         manifest: object) -> None:
        """Validate the constructor arguments; set split, protected and manifest."""
        check_no_attributes("ManifestDataset", target=target, protected=(),
                            why="the manifest's 'label' column is the target")
        names = check_names(protected, field="protected", source="ManifestDataset")
        if not isinstance(split, str) or not split:
            raise AuditInputError(f"ManifestDataset: argument split: got {split!r}; expected "
                                  "'all' or a value of the manifest's 'split' column")
        if not isinstance(manifest, (str, Path)) or not str(manifest):
            raise AuditInputError(f"ManifestDataset: argument manifest: got {manifest!r}; "
                                  "expected the CSV file, relative to root or absolute")
        self.split = split
        self.protected = tuple(p if p.startswith("attr.") else f"attr.{p}" for p in names)
        self.manifest = Path(manifest) if Path(manifest).is_absolute() else self.root / manifest

    def _paths_of(self, table: pd.DataFrame, src: str,
                  problems: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw paths, normalised relative paths, rows whose path can be checked)."""
        raw = table["path"].to_numpy(dtype=object)
        rel = np.array([os.path.normpath(p).replace(os.sep, "/") if p else "" for p in raw],
                       dtype=object)
        empty = rel == ""
        absolute = np.array([bool(p) and is_absolute_path(p) for p in raw])
        if empty.any():
            problems.append(f"{src}: column 'path': {_rows(empty)} are empty; expected a "
                            "path relative to the root folder")
        if absolute.any():
            problems.append(
                f"{src}: column 'path': {_rows(absolute)} are absolute paths (first: "
                f"{raw[absolute][0]!r}); expected paths relative to {self.root}; strip the "
                "root folder from them"
            )
        checked = ~(empty | absolute)
        dup = pd.Series(rel).duplicated(keep=False).to_numpy() & checked
        if dup.any():
            problems.append(
                f"{src}: column 'path': {_rows(dup)} repeat an image "
                f"({first_few(pd.unique(rel[dup]))}); each image must be listed once"
            )
        return raw, rel, checked

    def _split_rows(self, table: pd.DataFrame, src: str, problems: list[str]) -> np.ndarray:
        """Rows of the requested split (all rows for ``"all"``)."""
        if self.split == "all":
            return np.ones(len(table), bool)
        if "split" not in table.columns:
            problems.append(f"{src}: split={self.split!r} was requested but the manifest has "
                            "no 'split' column; add one or leave split unset ('all')")
            return np.ones(len(table), bool)
        present = sorted(set(table["split"]) - {""})
        if self.split not in present:
            problems.append(f"{src}: unknown split {self.split!r}; the manifest's 'split' "
                            f"column holds: {', '.join(present)}")
        return (table["split"] == self.split).to_numpy()

    def _file_problems(self, raw: np.ndarray, rel: np.ndarray, checked: np.ndarray,
                       keep: np.ndarray, src: str, problems: list[str]) -> None:
        """Paths escaping the root (any row) and missing files (kept rows)."""
        escapes, missing_rows = self._check_files(rel, checked, keep)
        if escapes.any():
            problems.append(
                f"{src}: column 'path': {_rows(escapes)} point outside the root folder "
                f"{self.root} (first: {raw[escapes][0]!r}), via '..' or a symbolic link; "
                "move the images under the root or choose a higher root"
            )
        if missing_rows.any():
            names = raw[missing_rows]
            problems.append(
                f"{self.root}: {len(names)} of {int(keep.sum())} images listed in {src} are "
                f"missing or not files; first missing: {first_few(names)}. Check the root "
                "folder and the paths in the manifest"
            )

    def _store(self, table: pd.DataFrame, labels: np.ndarray, rel: np.ndarray,
               keep: np.ndarray) -> None:
        """Keep the checked rows of the split: paths, labels, splits, ids, attributes."""
        base = self.root.resolve()
        self._rel = rel[keep]
        self._paths = np.array([str(base / r) for r in self._rel], dtype=object)
        self._labels = labels[keep]
        self._splits = (table["split"].to_numpy(dtype=object)[keep] if "split" in table.columns
                        else np.full(int(keep.sum()), "test", dtype=object))
        self._ids = (table["example_id"].to_numpy(dtype=object)[keep]
                     if "example_id" in table.columns
                     else np.array(["manifest/" + r for r in self._rel], dtype=object))
        self._attrs: dict[str, np.ndarray] = {}
        for col in (c for c in table.columns if c.startswith("attr.")):
            values = table[col].to_numpy(dtype=object)[keep]
            lowered = {str(v).strip().lower() for v in table[col]}
            if lowered <= set(_BOOLS):
                self._attrs[col] = np.array([_BOOLS[v.strip().lower()] for v in values], bool)
            else:
                self._attrs[col] = values

    def _check_files(self, rel: np.ndarray, checked: np.ndarray,
                     keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows escaping the root (all rows), and kept rows whose file is absent.

        One directory listing per folder; only folders and symbolic links are resolved.
        """
        base = self.root.resolve()
        escapes = np.zeros(len(rel), bool)
        missing = np.zeros(len(rel), bool)
        by_folder: dict[str, list[int]] = defaultdict(list)
        for i in np.flatnonzero(checked).tolist():
            by_folder[os.path.dirname(rel[i])].append(i)
        for folder, rows in by_folder.items():
            directory = self.root / folder
            if not directory.resolve().is_relative_to(base):
                escapes[rows] = True
                continue
            entries = _scan(directory)
            for i in rows:
                entry = entries.get(os.path.basename(rel[i]))
                if entry is not None and entry.is_symlink():
                    if not (self.root / rel[i]).resolve().is_relative_to(base):
                        escapes[i] = True
                        continue
                if keep[i] and (entry is None or not entry.is_file()):
                    missing[i] = True
        return escapes, missing

    def __len__(self) -> int:
        return len(self._paths)

    def _load(self, index: int) -> tuple[Image.Image, int, str]:
        image = open_image(Path(self._paths[index]))
        return image, int(self._labels[index]), str(self._ids[index])

    def examples(self) -> pd.DataFrame:
        """Rows of ``examples.parquet``, in manifest order."""
        return clean_examples(
            self._ids, self._labels.astype(np.int64), self._splits,
            attributes={col: values if values.dtype == bool else pd.Series(values, dtype=str)
                        for col, values in self._attrs.items()},
            paths=pd.Series(self._paths, dtype=str))
