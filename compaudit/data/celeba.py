"""CelebA read from its official files, for the Blond_Hair subgroup audit.

Expected layout (the released one, or torchvision's with everything under ``celeba/``)::

    root/img_align_celeba/000001.jpg ...
    root/list_attr_celeba.txt        # count; 40 attribute names; "name v1 .. v40" (-1/1)
    root/list_eval_partition.txt     # "name partition", 0=train 1=valid 2=test

compaudit never downloads: the files are read where the user put them, and every
mistake found in them is reported as an :class:`~compaudit.errors.AuditInputError`
naming the file, the line and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._checks import (
    check_choice,
    check_files_present,
    check_names,
    first_few,
    open_image,
)
from compaudit.data.base import AuditDataset, TransformSpec, clean_examples, register_dataset
from compaudit.errors import NEVER_DOWNLOADS, AuditInputError

__all__ = ["CelebA", "CELEBA_ATTRIBUTES", "CELEBA_SPLITS", "find_celeba_root", "read_celeba_tables"]

#: The 40 attribute names of ``list_attr_celeba.txt``, in the official order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)  # fmt: skip

#: Partition codes of ``list_eval_partition.txt``.
CELEBA_SPLITS = {0: "train", 1: "valid", 2: "test"}
#: The label when ``target`` is left unset: the Blond_Hair benchmark of the audits.
DEFAULT_TARGET = "Blond_Hair"

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
_FIX_FILES = (
    f"{NEVER_DOWNLOADS}; get img_align_celeba.zip, list_attr_celeba.txt and "
    "list_eval_partition.txt from the CelebA site and unpack them there"
)


def find_celeba_root(root: Path) -> Path:
    """The folder holding the CelebA files: ``root`` or torchvision's ``root/celeba``."""
    needed = (IMAGE_DIR, ATTR_FILE, PARTITION_FILE)
    for base in (root, root / "celeba"):
        if all((base / name).exists() for name in needed):
            return base
    # Name what is missing in the layout the user seems to have started on.
    base = root / "celeba" if (root / "celeba").is_dir() else root
    missing = [name for name in needed if not (base / name).exists()]
    raise AuditInputError(
        f"{root}: CelebA files not found; missing {', '.join(missing)} in {base}. "
        f"Expected {IMAGE_DIR}/, {ATTR_FILE} and {PARTITION_FILE} directly in {root} "
        f"or in {root / 'celeba'} (torchvision layout); {_FIX_FILES}"
    )


def _bad_field_count(path: Path, n_fields: int, first_line: int) -> AuditInputError:
    """Locate the first row with the wrong number of fields (error path only)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if number >= first_line and fields and len(fields) != n_fields:
                return AuditInputError(
                    f"{path}, line {number}: expected {n_fields} whitespace-separated "
                    f"fields (image name and {n_fields - 1} values), found {len(fields)}; "
                    "the file is damaged, replace it with the original"
                )
    return AuditInputError(f"{path}: could not be parsed as a whitespace-separated table")


def _read_table(path: Path, n_fields: int, skip: int) -> pd.DataFrame:
    """Read a whitespace-separated table whose rows all have ``n_fields`` fields."""
    try:
        # na_filter=False: a cell such as "nan" is a bad value to report with its line,
        # not a missing field.
        table = pd.read_csv(path, sep=r"\s+", header=None, skiprows=skip, dtype={0: str},
                            na_filter=False)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=range(n_fields))
    except pd.errors.ParserError as err:
        raise _bad_field_count(path, n_fields, skip + 1) from err
    # A short row leaves NaNs (pandas pads it); a long first row widens the table.
    if table.shape[1] != n_fields or (table == "").to_numpy().any() or table.isna().to_numpy().any():
        raise _bad_field_count(path, n_fields, skip + 1)
    return table


def _check_values(path: Path, table: pd.DataFrame, allowed: Sequence[int], first_line: int,
                  what: str) -> np.ndarray:
    """Return the value columns as an int array, raising on any value not in ``allowed``."""
    values = table.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isin(values, allowed)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raw = table.iat[row, col + 1]
        raise AuditInputError(
            f"{path}, line {row + first_line}: {what} {table.columns[col + 1]!s} has value "
            f"{raw!r}; expected one of {', '.join(map(str, allowed))} "
            f"({int(bad.sum())} bad values in all); replace the file with the original"
        )
    return values.astype(np.int8)


def _check_unique(path: Path, names: pd.Series) -> None:
    duplicated = names[names.duplicated()]
    if len(duplicated):
        raise AuditInputError(
            f"{path}: {len(duplicated)} image names appear more than once "
            f"(first: {first_few(duplicated.unique())}); each image must be listed once"
        )


def read_celeba_tables(base: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Read and check the attribute and partition files of a CelebA folder.

    Parameters
    ----------
    base
        The folder holding ``list_attr_celeba.txt`` and ``list_eval_partition.txt``.

    Returns
    -------
    attributes
        Boolean frame indexed by image name, one column per attribute, file order.
    partition
        Split name (``train``/``valid``/``test``) per image name, same order.
    """
    attr_path, part_path = base / ATTR_FILE, base / PARTITION_FILE
    with open(attr_path, encoding="utf-8-sig", errors="replace") as handle:
        count_line, names_line = handle.readline().strip(), handle.readline().split()
    if not count_line.isdigit():
        raise AuditInputError(
            f"{attr_path}, line 1: expected the number of images, found {count_line[:40]!r}"
        )
    if not names_line:
        raise AuditInputError(f"{attr_path}, line 2: expected the attribute names, found none")
    table = _read_table(attr_path, 1 + len(names_line), skip=2)
    if len(table) != int(count_line):
        raise AuditInputError(
            f"{attr_path}: line 1 announces {int(count_line)} images but the file has "
            f"{len(table)} rows; the file looks truncated, replace it with the original"
        )
    table.columns = ["image", *names_line]
    values = _check_values(attr_path, table, (-1, 1), 3, "attribute")
    _check_unique(attr_path, table["image"])
    attributes = pd.DataFrame(values == 1, columns=names_line, index=pd.Index(table["image"]))

    part = _read_table(part_path, 2, skip=0)
    codes = _check_values(part_path, part, tuple(CELEBA_SPLITS), 1, "column")[:, 0]
    _check_unique(part_path, part[0])
    partition = pd.Series(np.array(list(CELEBA_SPLITS.values()))[codes], index=part[0])

    only_part = partition.index.difference(attributes.index, sort=False)
    only_attr = attributes.index.difference(partition.index, sort=False)
    if len(only_part) or len(only_attr):
        raise AuditInputError(
            f"{attr_path} and {part_path} list different images: {len(only_part)} only in "
            f"{PARTITION_FILE} (first: {first_few(only_part) or '-'}), {len(only_attr)} only "
            f"in {ATTR_FILE} (first: {first_few(only_attr) or '-'}); use the original files"
        )
    return attributes, partition.reindex(attributes.index)


@register_dataset("celeba")
class CelebA(AuditDataset):
    """CelebA aligned faces with a binary target attribute and protected attributes.

    Parameters
    ----------
    root
        Folder holding the official CelebA files, directly or under ``celeba/``.
    split
        ``train``, ``valid``, ``test`` or ``all``.
    target
        Attribute used as the label (1 when present); ``None`` means
        :data:`DEFAULT_TARGET` (``Blond_Hair``).
    protected
        Attributes audited for subgroup harm; become ``attr.<Name>`` columns.
    transform
        Callable or :class:`TransformSpec` applied to each PIL image.
    attributes
        Further attributes to describe examples with (also ``attr.<Name>``).

    Example (not run here: it needs files on disk)::

        ds = CelebA("data/celeba", split="test", protected=("Male",))
        ds.examples()[["example_id", "label", "attr.Male"]].head(1)
    """

    num_classes = 2
    default_target = DEFAULT_TARGET

    def __init__(
        self,
        root: str | Path,
        *,
        split: Literal["train", "valid", "test", "all"] = "test",
        target: str | None = None,
        protected: Sequence[str] = (),
        transform: Callable | TransformSpec | None = None,
        attributes: Sequence[str] = (),
    ) -> None:
        super().__init__(root, transform=transform)
        self.split = check_choice(split, ("train", "valid", "test", "all"),
                                  field="split", source="CelebA")
        target = DEFAULT_TARGET if target is None else target
        if not isinstance(target, str):
            raise AuditInputError(f"CelebA: argument target: got {target!r}; expected an "
                                  f"attribute name such as {DEFAULT_TARGET!r}")
        self.target = target
        self.protected = check_names(protected, field="protected", source="CelebA")
        attributes = check_names(attributes, field="attributes", source="CelebA")
        self.attributes = tuple(dict.fromkeys([*self.protected, *attributes]))
        self.base = find_celeba_root(self.root)
        table, partition = read_celeba_tables(self.base)
        for name in (target, *self.attributes):
            if name not in table.columns:
                raise AuditInputError(
                    f"{self.base / ATTR_FILE}: unknown attribute {name!r}; valid "
                    f"attributes are: {', '.join(table.columns)}"
                )
        keep = np.ones(len(table), bool) if split == "all" else (partition == split).to_numpy()
        self.image_dir = self.base / IMAGE_DIR
        self._names = table.index[keep].to_numpy(dtype=object)
        self._splits = partition.to_numpy(dtype=object)[keep]
        self._labels = table[target].to_numpy()[keep].astype(np.int64)
        self._attrs = table.loc[keep, list(self.attributes)].reset_index(drop=True)
        check_files_present(
            self.image_dir, self._names, listed_in=f"{ATTR_FILE} (split {split!r})",
            fix=f"Unpack img_align_celeba.zip into {self.image_dir} ({NEVER_DOWNLOADS}).",
        )

    def __len__(self) -> int:
        return len(self._names)

    def _load(self, index: int) -> tuple[Image.Image, int, str]:
        name = self._names[index]
        return open_image(self.image_dir / name), int(self._labels[index]), f"celeba/{name}"

    def examples(self) -> pd.DataFrame:
        """Rows of ``examples.parquet``, in index order (file order of the split)."""
        names = pd.Series(self._names, dtype=str)
        return clean_examples(
            "celeba/" + names, self._labels, self._splits,
            attributes={f"attr.{name}": self._attrs[name].to_numpy(dtype=bool)
                        for name in self.attributes},
            paths=str(self.image_dir.resolve()) + "/" + names)
