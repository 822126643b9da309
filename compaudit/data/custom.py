"""Custom datasets described by a CSV manifest (registry name ``manifest``).

The manifest lists one image per row, with paths relative to ``root``::

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
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._checks import first_few, open_image
from compaudit.data.base import AuditDataset, register_dataset
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
    if not path.is_file():
        raise AuditInputError(
            f"{path}: manifest file not found; expected a CSV with columns "
            "path,label[,split][,example_id][,attr.<Name>...]; check the manifest argument"
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise AuditInputError(
            f"{path}: cannot be parsed as CSV ({err}); expected a header row and one "
            "comma-separated row per image"
        ) from err
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


def _is_absolute(text: str) -> bool:
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or (
        PureWindowsPath(text).drive != ""
    )


@register_dataset("manifest")
class ManifestDataset(AuditDataset):
    """Images listed in a CSV manifest, with labels and protected attributes.

    Parameters
    ----------
    root
        Folder the manifest's paths are relative to; no path may leave it.
    manifest
        The CSV file; a relative path is looked up under ``root`` first, then the
        working directory.
    split
        Keep only rows whose ``split`` column has this value; ``None`` keeps all.
    protected
        Attribute names (``Male`` or ``attr.Male``) that must be present as columns.
    num_classes
        Number of classes; default the largest label + 1.
    transform
        Applied to each PIL image.

    Examples
    --------
    >>> ds = ManifestDataset("data/faces", manifest="manifest.csv",
    ...                      protected=["Male"])  # doctest: +SKIP
    >>> ds.examples()[["example_id", "label", "attr.Male"]].head(1)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        *,
        manifest: str | Path,
        split: str | None = None,
        protected: Sequence[str] = (),
        num_classes: int | None = None,
        transform: Callable | None = None,
    ) -> None:
        super().__init__(root, transform=transform)
        manifest = Path(manifest)
        if not manifest.is_absolute() and (self.root / manifest).is_file():
            manifest = self.root / manifest
        self.manifest = manifest
        self.split = split
        self.protected = tuple(p if p.startswith("attr.") else f"attr.{p}" for p in protected)
        table = _read_manifest(manifest)
        src = str(manifest)
        problems: list[str] = []

        missing = [c for c in REQUIRED if c not in table.columns]
        if missing:
            raise AuditInputError(
                f"{src}: missing required column(s) {', '.join(map(repr, missing))}; found "
                f"{', '.join(map(repr, table.columns))}; expected a header row with at "
                "least path,label"
            )
        attr_cols = [c for c in table.columns if c.startswith("attr.")]

        # Labels: integers >= 0.
        label_text = table["label"].str.strip()
        bad = ~label_text.str.fullmatch(_INTEGER.pattern).to_numpy(dtype=bool)
        if bad.any():
            examples_bad = ", ".join(repr(v) for v in label_text[bad].head(3))
            problems.append(
                f"{src}: column 'label': {_rows(bad)} are not integers >= 0 "
                f"(found {examples_bad}); write each label as a class index 0, 1, 2, ..."
            )
            labels = np.zeros(len(table), np.int64)
        else:
            labels = label_text.astype(np.int64).to_numpy()
            max_label = int(labels.max())
            if num_classes is None:
                num_classes = max_label + 1
            elif not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
                problems.append(f"{src}: num_classes must be a positive integer, got "
                                f"{num_classes!r}")
            elif max_label >= num_classes:
                problems.append(
                    f"{src}: column 'label': {_rows(labels >= num_classes)} are outside "
                    f"0..{num_classes - 1} (num_classes={num_classes}); fix the labels or "
                    "raise num_classes"
                )
        self.num_classes = int(num_classes) if isinstance(num_classes, (int, np.integer)) else 0

        # Protected and descriptive attributes.
        absent = [c for c in self.protected if c not in table.columns]
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

        # Optional columns.
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

        # Paths: relative, inside root, unique.
        raw = table["path"].to_numpy(dtype=object)
        rel = np.array([os.path.normpath(p).replace(os.sep, "/") if p else "" for p in raw],
                       dtype=object)
        empty = rel == ""
        absolute = np.array([bool(p) and _is_absolute(p) for p in raw])
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
        if split is not None:
            if "split" not in table.columns:
                problems.append(f"{src}: split={split!r} was requested but the manifest has "
                                "no 'split' column; add one or leave split unset")
            else:
                present = sorted(set(table["split"]) - {""})
                if split not in present:
                    problems.append(f"{src}: unknown split {split!r}; the manifest's 'split' "
                                    f"column holds: {', '.join(present)}")
        keep = np.ones(len(table), bool)
        if split is not None and "split" in table.columns:
            keep = (table["split"] == split).to_numpy()
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
        if problems:
            raise AuditInputError(problems)

        # Store the kept rows.
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
        for col in attr_cols:
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
        for i in np.flatnonzero(checked):
            by_folder[os.path.dirname(rel[i])].append(int(i))
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
        ids = pd.Series(self._ids, dtype=str)
        frame = pd.DataFrame(
            {
                "example_id": ids,
                "label": self._labels.astype(np.int64),
                "split": pd.Series(self._splits, dtype=str),
                "source_id": ids,
                "shift": "clean",
                "severity": np.zeros(len(self), np.int8),
            }
        )
        for col, values in self._attrs.items():
            frame[col] = values if values.dtype == bool else pd.Series(values, dtype=str)
        frame["path"] = pd.Series(self._paths, dtype=str)
        return frame
