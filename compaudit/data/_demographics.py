"""What the demographic face datasets (FairFace, UTKFace) share.

Both label faces with age, gender and race. One of them is the target (the label is
its class index), the others are protected attributes written as ``attr.age``,
``attr.gender`` and ``attr.race`` string columns. Ages use the same bins in both so
audits are comparable:

- ``age_groups="fine"`` (default): FairFace's nine published bins :data:`AGE_BINS`
  ``0-2, 3-9, 10-19, 20-29, 30-39, 40-49, 50-59, 60-69, more than 70`` (an age in
  years of 70 or more falls in ``more than 70``);
- ``age_groups="coarse"``: four groups :data:`COARSE_AGE_GROUPS`
  ``0-19, 20-39, 40-59, 60+``, unions of whole fine bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from compaudit import config
from compaudit.data._checks import check_choice, check_names, open_image
from compaudit.data.base import AuditDataset, clean_examples
from compaudit.errors import AuditInputError

__all__ = [
    "AGE_BINS",
    "AGE_GROUPINGS",
    "COARSE_AGE_GROUPS",
    "DemographicFaces",
    "age_classes",
    "bin_ages",
    "coarsen_ages",
]

#: FairFace's published age bins, youngest first (label order of an age target).
AGE_BINS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69",
            "more than 70")
#: Lower bound in years of each bin of :data:`AGE_BINS` after the first.
_BIN_STARTS = (3, 10, 20, 30, 40, 50, 60, 70)
#: The coarse age groups (label order of an age target with ``age_groups="coarse"``).
COARSE_AGE_GROUPS = ("0-19", "20-39", "40-59", "60+")
_COARSE_OF_BIN = dict(zip(AGE_BINS, ("0-19",) * 3 + ("20-39",) * 2 + ("40-59",) * 2
                          + ("60+",) * 2))
#: Values of the ``age_groups`` option.
AGE_GROUPINGS = ("fine", "coarse")
#: The attributes every demographic face dataset carries, in ``attr.*`` column order.
ATTRIBUTES = ("age", "gender", "race")


def age_classes(age_groups: str) -> tuple[str, ...]:
    """The age classes, in label order, of an ``age_groups`` setting."""
    return AGE_BINS if age_groups == "fine" else COARSE_AGE_GROUPS


def bin_ages(years: np.ndarray) -> np.ndarray:
    """The :data:`AGE_BINS` name of each age in whole years (70 and over: ``more than 70``)."""
    return np.asarray(AGE_BINS, dtype=object)[np.digitize(years, _BIN_STARTS)]


def coarsen_ages(bins: np.ndarray) -> np.ndarray:
    """The :data:`COARSE_AGE_GROUPS` name of each :data:`AGE_BINS` name."""
    return np.array([_COARSE_OF_BIN[b] for b in bins], dtype=object)


def check_attribute_arguments(
    target: object, protected: object, age_groups: object, *, default_target: str,
    source: str,
) -> tuple[str, tuple[str, ...], str]:
    """Checked ``(target, protected, age_groups)``; every mistake in one error.

    ``target=None`` means ``default_target``; ``protected=None`` means every attribute
    other than the target; ``()`` means none.
    """
    target = default_target if target is None else target
    problems = []
    problem = config.check_choice(f"{source}: argument target", target, ATTRIBUTES)
    if problem:
        problems.append(problem)
    names: tuple[str, ...]
    if protected is None:
        names = tuple(a for a in ATTRIBUTES if a != target)
    else:
        try:
            names = check_names(protected, field="protected", source=source)
        except AuditInputError as err:
            problems += err.problems
            names = ()
        unknown = [p for p in names if p not in ATTRIBUTES]
        if unknown:
            problems.append(
                f"{source}: argument protected: unknown attribute(s) "
                f"{', '.join(map(repr, unknown))}; valid attributes: "
                f"{', '.join(map(repr, ATTRIBUTES))}"
            )
    problem = config.check_choice(f"{source}: argument age_groups", age_groups, AGE_GROUPINGS)
    if problem:
        problems.append(problem + " (fine: the nine FairFace bins, coarse: 0-19, 20-39, "
                                  "40-59, 60+)")
    if problems:
        raise AuditInputError(problems)
    # Both strings now: check_choice accepted them among ATTRIBUTES and AGE_GROUPINGS.
    return str(target), tuple(dict.fromkeys(names)), str(age_groups)


class DemographicFaces(AuditDataset):
    """Face images with age, gender and race; one is the label, others ``attr.*``.

    Subclasses check their files, then call :meth:`_keep` with each image's path
    relative to ``root``, its split and its attribute values (class names).
    ``classes`` maps each attribute to its class names in label order;
    ``class_names`` are those of the target.
    """

    #: First part of every ``example_id`` (``fairface``, ``utkface``).
    prefix: str
    classes: Mapping[str, tuple[str, ...]]

    def _setup(self, split: str, splits: Sequence[str], target: object, protected: object,
               age_groups: object, *, default_target: str) -> None:
        """Check the shared arguments and set ``split``, ``target``, ``protected``."""
        source = type(self).__name__
        self.split = check_choice(split, splits, field="argument split", source=source)
        self.target, self.protected, self.age_groups = check_attribute_arguments(
            target, protected, age_groups, default_target=default_target, source=source)

    def _keep(self, rel: np.ndarray, splits: np.ndarray,
              values: Mapping[str, np.ndarray]) -> None:
        """Store the examples: paths relative to root, splits, attribute class names."""
        self._rel = np.asarray(rel, dtype=object)
        self._splits = np.asarray(splits, dtype=object)
        self._values = {name: np.asarray(values[name], dtype=object)
                        for name in dict.fromkeys(self.protected)}
        names = self.classes[self.target]
        self.class_names = names
        self.num_classes = len(names)
        index = {name: i for i, name in enumerate(names)}
        self._labels = np.fromiter((index[v] for v in values[self.target]), np.int64,
                                   count=len(self._rel))

    def __len__(self) -> int:
        return len(self._rel)

    def _load(self, index: int) -> tuple[Image.Image, int, str]:
        rel = self._rel[index]
        return open_image(self.root / rel), int(self._labels[index]), f"{self.prefix}/{rel}"

    def examples(self) -> pd.DataFrame:
        """Rows of ``examples.parquet`` in index order; ``attr.<name>`` hold class names."""
        rel = pd.Series(self._rel, dtype=str)
        return clean_examples(
            f"{self.prefix}/" + rel, self._labels, self._splits,
            attributes={f"attr.{name}": pd.Series(self._values[name], dtype=str)
                        for name in self.protected},
            paths=str(Path(self.root).resolve()) + "/" + rel)
