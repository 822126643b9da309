"""Which subgroups an analysis reports, bounded before anything large is allocated.

A subgroup is everyone (``overall``), a level of one protected attribute, or a level
combination of an intersection of attributes. Intersections stop at a maximum *order*
(number of attributes), so 40 CelebA attributes give 1 + 80 + 3,120 subgroups at order 2
instead of 2**40 cells. The count is checked against a limit before any per-subgroup
array exists, and subgroups smaller than a minimum size are set aside as *skipped*.

Every subgroup is a signed sum of *base* subgroups, those whose attributes all sit at a
non-reference level (the reference is each attribute's first level): ``Male=False`` is
``overall - Male=True``. Sums are exact integers, so the identity costs nothing in
precision, while resampling only the base subgroups cuts the bootstrap work by up to
2**order for binary attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations, product
from math import comb
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from compaudit.errors import AuditInputError

__all__ = ["Cells", "DEFAULT_MAX_CELLS", "cell_label", "default_order", "subgroup_cells"]


def cell_label(pairs: Iterable[tuple[str, Any]]) -> str:
    """The name of a subgroup cell from its ``(attribute, value)`` pairs, in the order given.

    The one spelling of a cell across tables, metrics.json, gate checks and the report.

    Examples
    --------
    >>> cell_label([("Male", True), ("Young", False)])
    'Male=True & Young=False'
    >>> cell_label([])
    ''
    """
    return " & ".join(f"{name}={value}" for name, value in pairs)


#: Up to this many protected attributes, every intersection is analysed by default.
ALL_ORDERS_UP_TO = 4
#: Default maximum order beyond :data:`ALL_ORDERS_UP_TO` attributes.
DEFAULT_ORDER = 2
#: Default limit on the number of subgroups (overall included) of one analysis.
DEFAULT_MAX_CELLS = 5000

SKIPPED_COLUMNS = ["subgroup", "grouping", "order", "n"]

TOO_MANY_CELLS = (
    "{source}: {n_attributes} protected attributes up to order {order} make {count} "
    "subgroups, more than max_cells = {max_cells:,}; lower the order (--max-order N, "
    "spec [analysis].max_intersection_order, AnalysisOptions.max_intersection_order), "
    "protect fewer attributes (--protected), or raise AnalysisOptions.max_cells"
)


def default_order(n_attributes: int) -> int:
    """Every order for up to 4 attributes, else 2 (single attributes and pairs)."""
    return n_attributes if n_attributes <= ALL_ORDERS_UP_TO else DEFAULT_ORDER


@dataclass(frozen=True)
class Cells:
    """Reported subgroups of a population, as sums of base subgroups of finest cells.

    Attributes
    ----------
    codes
        (n_examples,) finest cell (full intersection) of each example.
    names, groupings
        Name of each reported subgroup and the grouping it belongs to.
    sizes
        (n_subgroups,) examples in each subgroup.
    base
        (n_fine, n_base) 0/1 float32: which finest cells make each base subgroup.
    expand
        (n_subgroups, n_base) sparse matrix of -1/0/1: each subgroup as a signed sum of
        base subgroups.
    skipped
        Subgroups below the minimum size: columns subgroup, grouping, order, n.
    max_order
        The largest intersection order enumerated.
    """

    codes: np.ndarray
    names: list[str]
    groupings: list[str]
    sizes: np.ndarray
    base: np.ndarray
    expand: sparse.csr_matrix
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))
    max_order: int = 0

    @property
    def membership(self) -> np.ndarray:
        """(n_subgroups, n_fine) 0/1 float64: the finest cells of each subgroup."""
        return np.asarray(self.expand @ self.base.T.astype(np.float64))

    def sum_fine(self, values: np.ndarray) -> np.ndarray:
        """Per-subgroup sums of per-finest-cell ``values`` (n_fine, ...)."""
        return np.asarray(self.expand @ (self.base.T.astype(np.float64) @ values))


def _factorize(fine: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, list[list[str]]]:
    """Level index (in sort order) of every attribute of every finest cell."""
    level_codes = np.empty((len(fine), len(cols)), np.int64)
    names = []
    for j, col in enumerate(cols):
        codes, uniques = pd.factorize(fine[col], sort=True)
        level_codes[:, j] = codes
        names.append([str(v) for v in uniques])
    return level_codes, names


def _combined(level_codes: np.ndarray, subset: tuple[int, ...], radix: np.ndarray) -> np.ndarray:
    """One integer per finest cell for its levels on ``subset``, in sort order."""
    size = np.prod(radix[list(subset)].astype(float))
    if size < 2.0**62:
        key = np.zeros(len(level_codes), np.int64)
        for a in subset:
            key = key * radix[a] + level_codes[:, a]
        if size <= 2**20:  # dense renumbering without a sort
            present = np.bincount(key, minlength=int(size)) > 0
            return (np.cumsum(present) - 1)[key]
        return np.unique(key, return_inverse=True)[1]
    return np.unique(level_codes[:, list(subset)], axis=0, return_inverse=True)[1].ravel()


def _too_many(source: str, n_attributes: int, order: int, count: str,
              max_cells: int) -> AuditInputError:
    return AuditInputError(TOO_MANY_CELLS.format(
        source=source, n_attributes=n_attributes, order=order, count=count,
        max_cells=max_cells))


def subgroup_cells(
    examples: pd.DataFrame,
    attributes: list[str],
    *,
    max_order: int | None = None,
    min_size: int = 1,
    max_cells: int = DEFAULT_MAX_CELLS,
    source: str = "examples",
) -> Cells:
    """Enumerate the subgroups of ``attributes`` (names without ``attr.``).

    Parameters
    ----------
    examples
        The examples table (``attr.*`` columns).
    attributes
        Protected attributes.
    max_order
        Largest intersection order; ``None``: :func:`default_order`.
    min_size
        Subgroups (other than ``overall``) with fewer examples are skipped: listed in
        ``Cells.skipped`` instead of being analysed.
    max_cells
        Limit on the number of subgroups enumerated (skipped ones included).
    source
        Name of the examples table in error messages.

    Raises
    ------
    AuditInputError
        When the subgroups would number more than ``max_cells``; raised before any
        per-subgroup array is allocated.
    """
    n = len(examples)
    if not attributes:
        return Cells(np.zeros(n, np.int64), ["overall"], ["overall"], np.array([n]),
                     np.ones((1, 1), np.float32), sparse.csr_matrix(np.ones((1, 1))))
    n_attr = len(attributes)
    order = default_order(n_attr) if max_order is None else min(max_order, n_attr)
    n_groupings = sum(comb(n_attr, j) for j in range(order + 1))
    if n_groupings > max_cells:  # every grouping holds at least one subgroup
        raise _too_many(source, n_attr, order, f"at least {n_groupings:,}", max_cells)
    cols = [f"attr.{a}" for a in attributes]
    grouped = examples[cols].groupby(cols, observed=True, sort=True)
    codes = grouped.ngroup().to_numpy(np.int64)
    fine_sizes = grouped.size()
    counts = fine_sizes.to_numpy(np.int64)
    level_codes, level_names = _factorize(fine_sizes.reset_index()[cols], cols)
    radix = np.array([len(v) for v in level_names], np.int64)

    # Count the level combinations of every grouping; keep the base subgroups' cells.
    groups: list[tuple[tuple[int, ...], np.ndarray]] = []
    base_index: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {((), ()): 0}
    base_cols = [np.arange(len(counts))]
    total = 1
    for size in range(1, order + 1):
        for subset in combinations(range(n_attr), size):
            inverse = _combined(level_codes, subset, radix)
            first = np.unique(inverse, return_index=True)[1]
            total += len(first)
            if total > max_cells:
                raise _too_many(source, n_attr, order, f"more than {max_cells:,}", max_cells)
            levels = level_codes[first][:, list(subset)]
            groups.append((subset, levels))
            for j in np.flatnonzero((levels > 0).all(axis=1)):
                base_index[(subset, tuple(int(v) for v in levels[j]))] = len(base_cols)
                base_cols.append(np.flatnonzero(inverse == j))
    base = np.zeros((len(counts), len(base_cols)), np.float32)
    for b, members in enumerate(base_cols):
        base[members, b] = 1.0

    names, groupings, orders, rows, cols_e, vals = ["overall"], ["overall"], [0], [0], [0], [1.0]
    for subset, levels in groups:
        grouping = " x ".join(attributes[a] for a in subset)
        for lv in levels:
            s = len(names)
            names.append(cell_label((attributes[a], level_names[a][v])
                                    for a, v in zip(subset, lv)))
            groupings.append(grouping)
            orders.append(len(subset))
            for b, sign in _expansion(subset, lv, radix, base_index):
                rows.append(s)
                cols_e.append(b)
                vals.append(sign)
    expand = sparse.csr_matrix((vals, (rows, cols_e)), shape=(len(names), len(base_cols)))
    expand.sum_duplicates()
    sizes = np.rint(expand @ (base.T.astype(np.float64) @ counts)).astype(np.int64)
    keep = sizes >= min_size
    keep[0] = True
    skipped = pd.DataFrame({"subgroup": np.array(names, object)[~keep],
                            "grouping": np.array(groupings, object)[~keep],
                            "order": np.array(orders)[~keep], "n": sizes[~keep]},
                           columns=SKIPPED_COLUMNS)
    kept = np.flatnonzero(keep)
    return Cells(codes, [names[i] for i in kept], [groupings[i] for i in kept], sizes[kept],
                 base, expand[kept], skipped.reset_index(drop=True), order)


def _expansion(subset: tuple[int, ...], levels: np.ndarray, radix: np.ndarray,
               base_index: dict[tuple[tuple[int, ...], tuple[int, ...]], int],
               ) -> list[tuple[int, float]]:
    """A subgroup as signed base subgroups: ``1[a=ref] = 1 - sum of 1[a=l], l != ref``."""
    ref = [i for i, v in enumerate(levels) if v == 0]
    terms = []
    for size in range(len(ref) + 1):
        for chosen in combinations(ref, size):
            kept = [i for i in range(len(subset)) if levels[i] != 0 or i in chosen]
            choices = [range(1, radix[subset[i]]) if i in chosen else (int(levels[i]),)
                       for i in kept]
            for assignment in product(*choices):
                key = (tuple(subset[i] for i in kept), tuple(int(v) for v in assignment))
                b = base_index.get(key)  # unobserved combinations sum to zero
                if b is not None:
                    terms.append((b, -1.0 if size % 2 else 1.0))
    return terms
