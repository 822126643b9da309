"""UTKFace read from its official files (registry name ``utkface``).

Expected layout: the images under ``root`` (searched recursively, so ``root`` may be the
``UTKFace/`` folder of aligned and cropped faces or a folder holding the in-the-wild
``part1/`` .. ``part3/``), each named::

    [age]_[gender]_[race]_[date&time].jpg.chip.jpg   # aligned & cropped (UTKFace/)
    [age]_[gender]_[race]_[date&time].jpg            # in-the-wild crops

with age an integer 0-116, gender 0=male 1=female, race 0=White 1=Black 2=Asian
3=Indian 4=Others. Files not ending in ``.jpg`` and names starting with ``.`` are
ignored; ``example_id`` is ``utkface/<path relative to root>``. Point ``root`` at one
of the two sets: with both under it, every photo is counted twice.

Labels: the target (default ``gender``) is one attribute; the label is its class index
(:data:`UTKFACE_CLASSES`): gender Male=0, Female=1 and race White=0 .. Others=4, the
dataset's own codes (note: FairFace's gender order is Female=0, Male=1); age is binned
into FairFace's published bins 0-2=0, 3-9=1, 10-19=2, 20-29=3, 30-39=4, 40-49=5,
50-59=6, 60-69=7, more than 70=8 (70 years and over), or with ``age_groups="coarse"``
into 0-19=0, 20-39=1, 40-59=2, 60+=3, so UTKFace and FairFace audits share age groups.
Protected attributes (default: the two that are not the target) become ``attr.age``,
``attr.gender`` (``Male``/``Female``, as in FairFace) and ``attr.race`` string columns.

Splits: UTKFace publishes none. ``all`` (default) keeps every image. ``train`` and
``test`` split by a stable hash: an image is in ``test`` when the first 8 bytes of
``sha256("<split_seed>/<age>_<gender>_<race>_<date&time>")``, read as a fraction of
2**64, are below ``test_fraction`` (default 0.2). The assignment depends on the name
alone: it does not change when other files are added or removed, the aligned and the
in-the-wild crop of one photo fall on the same side, and ``split_seed`` draws another
split. The fraction is met in expectation, not exactly. UTKFace has no identity
labels, so one person may appear on both sides. With ``all`` the ``split`` column still
says which side each image is on.

Malformed names (the release has a few with a missing field, such as
``39_1_20170116174525125.jpg.chip.jpg``, which has no race) are skipped with a
:class:`UTKFaceNameWarning` giving their count and the first few with the reason;
they are kept in ``malformed`` (path relative to root -> reason). They are an
:class:`~compaudit.errors.AuditInputError` instead when ``strict=True`` or when every
image is malformed. The count covers every image under ``root``, whatever the split.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from compaudit.data._checks import first_few
from compaudit.data._demographics import (
    AGE_BINS,
    COARSE_AGE_GROUPS,
    DemographicFaces,
    bin_ages,
    coarsen_ages,
)
from compaudit.data.base import TransformSpec, register_dataset
from compaudit.errors import NEVER_DOWNLOADS, AuditInputError

__all__ = ["UTKFACE_CLASSES", "UTKFace", "UTKFaceNameWarning", "parse_utkface_name"]

#: Class names of each attribute, in label order (gender and race: the official codes).
UTKFACE_CLASSES: dict[str, tuple[str, ...]] = {
    "age": AGE_BINS,
    "gender": ("Male", "Female"),
    "race": ("White", "Black", "Asian", "Indian", "Others"),
}
SPLITS = ("all", "train", "test")
#: The label when ``target`` is left unset.
DEFAULT_TARGET = "gender"
MAX_AGE = 116
PATTERN = "[age]_[gender]_[race]_[date&time].jpg[.chip.jpg]"
_SUFFIX = re.compile(r"\.jpg(\.chip\.jpg)?$", re.IGNORECASE)
_INTEGER = re.compile(r"\d+")


class UTKFaceNameWarning(UserWarning):
    """Some UTKFace file names do not follow the official pattern and were skipped."""


def parse_utkface_name(name: str) -> tuple[str, int, int, int] | str:
    """``(stem, age, gender, race)`` of an image file name, or why it is malformed.

    Examples
    --------
    >>> parse_utkface_name("26_1_3_20170119181256735.jpg.chip.jpg")
    ('26_1_3_20170119181256735', 26, 1, 3)
    >>> parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg")
    '3 fields, expected 4'
    """
    stem = _SUFFIX.sub("", name)
    fields = stem.split("_")
    if len(fields) != 4:
        return f"{len(fields)} field{'s' * (len(fields) != 1)}, expected 4"
    age, gender, race, stamp = fields
    if not _INTEGER.fullmatch(age) or int(age) > MAX_AGE:
        return f"age {age!r} is not an integer 0-{MAX_AGE}"
    if gender not in ("0", "1"):
        return f"gender {gender!r} is not 0 (male) or 1 (female)"
    if not _INTEGER.fullmatch(race) or int(race) >= len(UTKFACE_CLASSES["race"]):
        return f"race {race!r} is not 0-4"
    if not stamp.strip():
        return "date&time is empty"
    return stem, int(age), int(gender), int(race)


def _scan(root: Path) -> list[str]:
    """Paths relative to ``root`` of every ``.jpg`` file under it, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        for name in files:
            if not name.startswith(".") and name.lower().endswith(".jpg"):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(found)


def _test_side(stems: Sequence[str], seed: int, fraction: float) -> np.ndarray:
    """True for the stems whose seeded hash falls in the test fraction."""
    draws = [int.from_bytes(hashlib.sha256(f"{seed}/{s}".encode()).digest()[:8], "big")
             for s in stems]
    return np.array(draws, dtype=np.float64) / 2.0**64 < fraction


def _check_split_options(test_fraction: object, split_seed: object) -> None:
    problems = []
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
            or not 0 < test_fraction < 1):
        problems.append(f"UTKFace: argument test_fraction: got {test_fraction!r}; expected "
                        "a number strictly between 0 and 1 (e.g. 0.2)")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)):
        problems.append(f"UTKFace: argument split_seed: got {split_seed!r}; expected an "
                        "integer")
    if problems:
        raise AuditInputError(problems)


@register_dataset("utkface")
class UTKFace(DemographicFaces):
    """UTKFace faces with a gender, race or age target and the others protected.

    Parameters
    ----------
    root
        Folder searched recursively for the images.
    split
        ``all`` (default), ``train`` or ``test`` (a stable hash split, see the module).
    target
        ``gender`` (default), ``race`` or ``age``; the label is the class index in
        :data:`UTKFACE_CLASSES` order (age: its bin).
    protected
        Attributes written as ``attr.<name>`` string columns; ``None`` (default): the
        attributes other than the target; ``()``: none.
    transform
        Callable or :class:`TransformSpec` applied to each PIL image.
    age_groups
        ``fine`` (FairFace's nine bins) or ``coarse`` (0-19, 20-39, 40-59, 60+).
    test_fraction
        Expected share of images in ``test``.
    split_seed
        Seed of the hash split.
    strict
        Make malformed file names an error instead of a warning.

    Example (not run here: it needs files on disk)::

        ds = UTKFace("data/UTKFace", split="test", target="race")
        ds.malformed
        # -> {'39_1_20170116174525125.jpg.chip.jpg': '3 fields, expected 4', ...}
    """

    prefix = "utkface"

    def __init__(
        self,
        root: str | Path,
        *,
        split: Literal["all", "train", "test"] = "all",
        target: str | None = None,
        protected: Sequence[str] | None = None,
        transform: Callable | TransformSpec | None = None,
        age_groups: Literal["fine", "coarse"] = "fine",
        test_fraction: float = 0.2,
        split_seed: int = 0,
        strict: bool = False,
    ) -> None:
        super().__init__(root, transform=transform)
        self._setup(split, SPLITS, target, protected, age_groups,
                    default_target=DEFAULT_TARGET)
        _check_split_options(test_fraction, split_seed)
        self.test_fraction, self.split_seed = float(test_fraction), int(split_seed)
        self.classes = dict(UTKFACE_CLASSES)
        if self.age_groups == "coarse":
            self.classes["age"] = COARSE_AGE_GROUPS
        rel, parsed = self._read_names(strict)
        stems = [p[0] for p in parsed]
        test = _test_side(stems, self.split_seed, self.test_fraction)
        sides = np.where(test, "test", "train").astype(object)
        keep = np.ones(len(rel), bool) if split == "all" else sides == split
        ages = bin_ages(np.array([p[1] for p in parsed], np.int64))
        values = {
            "age": coarsen_ages(ages) if self.age_groups == "coarse" else ages,
            "gender": np.asarray(UTKFACE_CLASSES["gender"], dtype=object)[[p[2] for p in parsed]],
            "race": np.asarray(UTKFACE_CLASSES["race"], dtype=object)[[p[3] for p in parsed]],
        }
        self._keep(np.asarray(rel, dtype=object)[keep], sides[keep],
                   {name: v[keep] for name, v in values.items()})

    def _read_names(self, strict: bool) -> tuple[list[str], list[tuple[str, int, int, int]]]:
        """The well-formed images (relative paths, parsed names); malformed ones reported."""
        if not self.root.is_dir():
            raise AuditInputError(
                f"{self.root}: UTKFace folder not found; expected a folder of images named "
                f"{PATTERN}; {NEVER_DOWNLOADS}, unpack UTKFace.tar.gz (or the "
                "in-the-wild parts) there"
            )
        names = _scan(self.root)
        if not names:
            raise AuditInputError(
                f"{self.root}: no .jpg images found (searched recursively); expected UTKFace "
                f"images named {PATTERN}, e.g. 26_1_3_20170119181256735.jpg.chip.jpg"
            )
        rel, parsed, malformed = [], [], {}
        for name in names:
            result = parse_utkface_name(name.rsplit("/", 1)[-1])
            if isinstance(result, str):
                malformed[name] = result
            else:
                rel.append(name)
                parsed.append(result)
        self.malformed = malformed
        if malformed:
            shown = first_few(f"{n} ({why})" for n, why in malformed.items())
            message = (f"{self.root}: {len(malformed)} of {len(names)} image names do not "
                       f"follow {PATTERN}: {shown}")
            if strict or not rel:
                why = "every image is malformed" if not rel else "strict=True"
                raise AuditInputError(f"{message}; {why}: rename or remove them")
            warnings.warn(f"{message}; skipped (strict=True makes this an error)",
                          UTKFaceNameWarning, stacklevel=3)
        return rel, parsed
