"""Counts behind every subgroup rate: per-example feature columns summed per subgroup.

Every rate of :mod:`compaudit.analysis.subgroups` is a ratio of sums over the examples
of a subgroup. The sums are taken once per *finest* cell (the full intersection of the
protected attributes) and mapped to every subgroup by a 0/1 membership matrix; the
bootstrap resamples the same feature columns (one matrix product per chunk of
resamples, :func:`~compaudit.analysis.stats.bootstrap_sums`).

When the finest cells are nearly as many as the examples (dozens of attributes), the
per-cell route would multiply a (B, n_cells, k) array by an (n_subgroups, n_cells)
matrix; the sums are then taken per *base* subgroup straight from the examples (one
product per feature column and chunk of resamples) and expanded to every subgroup with
:attr:`~compaudit.analysis._cells.Cells.expand`. Both routes add the same integers in
the same resamples, so they give identical numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from compaudit.analysis._cells import Cells
from compaudit.analysis.population import Population
from compaudit.analysis.stats import _CHUNK, bootstrap_sums, bootstrap_weights

__all__ = ["FeatureLayout", "SubgroupSums", "rates_from_sums", "subgroup_sums"]


class FeatureLayout:
    """Per-example feature columns: shared columns, then ``n_per_model`` columns per model.

    A model is ``(variant, replica index)``, or ``(variant, None)`` for the counts of a
    variant summed over its replicas (``sum_replicas=True``). Binary tasks: shared
    columns [is positive, is negative], per model [true positives, false positives].
    Many-class tasks: shared [one], per model [correct].
    """

    def __init__(self, pop: Population, *, positive_label: int, sum_replicas: bool) -> None:
        self.pop, self.positive_label = pop, positive_label
        self.n_shared = 2 if pop.is_binary else 1
        self.n_per_model = 2 if pop.is_binary else 1
        self.models: list[tuple[str, int | None]] = [
            (name, replica)
            for name, variant in pop.variants.items()
            for replica in ([None] if sum_replicas else range(variant.n_replicas))
        ]
        self.position = {model: i for i, model in enumerate(self.models)}

    def columns(self) -> Iterator[np.ndarray]:
        """Yield every feature column (float32, one value per example), shared ones first."""
        pop = self.pop
        if pop.is_binary:
            is_positive = (pop.labels == self.positive_label).astype(np.float32)
            yield from (is_positive, 1.0 - is_positive)
        else:
            yield np.ones(len(pop.labels), np.float32)
        for name, replica in self.models:
            pred = pop.variants[name].pred
            pred = pred if replica is None else pred[replica : replica + 1]
            if pop.is_binary:
                predicted_positive = (pred == self.positive_label).sum(axis=0).astype(np.float32)
                yield predicted_positive * is_positive
                yield predicted_positive * (1.0 - is_positive)
            else:
                yield (pred == pop.labels[None, :]).sum(axis=0).astype(np.float32)

    def matrix(self) -> np.ndarray:
        """All feature columns as one (n_examples, n_features) float32 matrix."""
        return np.stack(list(self.columns()), axis=1)

    def model_sums(self, sums: np.ndarray, *, variant: str, replica: int | None) -> np.ndarray:
        """Sums ``[shared..., per model...]`` of one replica, or of all (``replica=None``).

        ``sums`` has the feature columns on its last axis; the result has
        ``n_shared + n_per_model`` there. Shared columns are counted once per replica,
        so summed counts are those of the replicas' pooled predictions.
        """
        n_replicas = self.pop.variants[variant].n_replicas
        if (variant, replica) in self.position:
            models = [self.position[(variant, replica)]]
            weight = 1 if replica is not None else n_replicas
        else:  # per-replica columns, summed here
            models = [self.position[(variant, r)] for r in range(n_replicas)]
            weight = n_replicas
        idx = [self.n_shared + m * self.n_per_model + j
               for m in models for j in range(self.n_per_model)]
        # Resampled sums may be stored as float32 (exact integers); rates use float64.
        per_model = sums[..., idx].astype(np.float64, copy=False)
        per_model = per_model.reshape(sums.shape[:-1] + (len(models), self.n_per_model))
        shared = sums[..., : self.n_shared].astype(np.float64, copy=False)
        return np.concatenate([shared * weight, per_model.sum(-2)], axis=-1)


def rates_from_sums(sums: np.ndarray, *, binary: bool) -> dict[str, np.ndarray]:
    """Rates from sums of shape (..., 4) = [P, N, TP, FP] or (..., 2) = [n, correct]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if not binary:
            return {"n": sums[..., 0], "accuracy": sums[..., 1] / sums[..., 0]}
        positives, negatives, true_pos, false_pos = (sums[..., i] for i in range(4))
        false_neg, true_neg = positives - true_pos, negatives - false_pos
        n = positives + negatives
        return {
            "n": n, "positives": positives, "negatives": negatives,
            "base_rate": positives / n, "selection_rate": (true_pos + false_pos) / n,
            "tpr": true_pos / positives, "fpr": false_pos / negatives,
            "fnr": false_neg / positives, "tnr": true_neg / negatives,
            "accuracy": (true_pos + true_neg) / n,
        }


@dataclass(frozen=True)
class SubgroupSums:
    """Per-subgroup feature sums, exact and per bootstrap resample.

    Attributes
    ----------
    point
        (n_subgroups, n_features) exact sums of ``point_layout``'s columns.
    point_layout
        Per-replica layout of ``point``.
    boot
        (B, n_subgroups, n_features) resampled sums of ``boot_layout``'s columns, or
        ``None`` without a bootstrap.
    boot_layout
        Layout of ``boot``: per replica, or summed over each variant's replicas.
    binary
        Whether the task is binary.
    """

    point: np.ndarray
    point_layout: FeatureLayout
    boot: np.ndarray | None
    boot_layout: FeatureLayout
    binary: bool

    def rates(self, *, variant: str, replica: int | None) -> dict[str, np.ndarray]:
        """Exact rates per subgroup of one replica, or of the pooled replicas (``None``)."""
        counts = self.point_layout.model_sums(self.point, variant=variant, replica=replica)
        return rates_from_sums(counts, binary=self.binary)

    def boot_rates(self, *, variant: str, replica: int | None) -> dict[str, np.ndarray] | None:
        """Resampled rates (B, n_subgroups), like :meth:`rates`; ``None`` without bootstrap."""
        if self.boot is None:
            return None
        counts = self.boot_layout.model_sums(self.boot, variant=variant, replica=replica)
        return rates_from_sums(counts, binary=self.binary)


def subgroup_sums(pop: Population, *, cells: Cells, positive_label: int, n_boot: int,
                  seed: int, per_replica_boot: bool) -> SubgroupSums:
    """Exact and bootstrap sums per subgroup.

    Parameters
    ----------
    pop
        The population.
    cells
        The subgroups (:func:`~compaudit.analysis._cells.subgroup_cells`).
    positive_label
        The positive class of binary tasks.
    n_boot, seed
        Bootstrap resamples (0: none) and their seed.
    per_replica_boot
        Resample every replica's columns (for per-replica intervals); else only the
        replica-summed columns of each variant, which the population deltas need.
    """
    codes = cells.codes
    n_cells, n_base = cells.base.shape
    point_layout = FeatureLayout(pop, positive_label=positive_label, sum_replicas=False)
    boot_layout = (point_layout if per_replica_boot
                   else FeatureLayout(pop, positive_label=positive_label, sum_replicas=True))
    per_cell = _per_cell_route(n_cells=n_cells, n_subgroups=len(cells.names),
                               n_examples=len(codes), n_base=n_base)
    if per_cell:
        membership = cells.membership
        # Exact per-cell sums, one bincount per column (no n_examples x n_features matrix).
        cell_sums = np.stack([np.bincount(codes, weights=c, minlength=n_cells)
                              for c in point_layout.columns()], axis=1)
        point = membership @ cell_sums
    else:
        examples_base = cells.base[codes].astype(np.float64)
        point = cells.expand @ (examples_base.T @ point_layout.matrix().astype(np.float64))
    boot = None
    if n_boot > 0:
        order = np.argsort(codes, kind="stable")
        features = boot_layout.matrix()[order]
        if per_cell:
            bounds = np.searchsorted(codes[order], np.arange(n_cells + 1))
            cell_boot = bootstrap_sums(features, n_boot=n_boot, seed=seed, segments=bounds)
            boot = np.einsum("bfk,sf->bsk", cell_boot, membership)
        else:
            boot = _base_bootstrap(features, cells.base[codes[order]], cells.expand,
                                   n_boot=n_boot, seed=seed)
    return SubgroupSums(point=point, point_layout=point_layout, boot=boot,
                        boot_layout=boot_layout, binary=pop.is_binary)


def _per_cell_route(*, n_cells: int, n_subgroups: int, n_examples: int, n_base: int) -> bool:
    """Whether summing per finest cell costs less than summing per base subgroup."""
    return n_cells * n_subgroups <= n_examples * n_base


def _base_bootstrap(features: np.ndarray, base: np.ndarray, expand: sparse.csr_matrix, *,
                    n_boot: int,
                    seed: int) -> np.ndarray:
    """(B, n_subgroups, k) resampled sums via the base subgroups of each example.

    ``features`` (n, k) and ``base`` (n, n_base) are in the row order the resampling
    weights apply to (the same weights as :func:`bootstrap_sums` with this seed).
    Stored as float32 while every sum stays an exactly representable integer.
    """
    n, k = features.shape
    # A resampled sum is at most n * the largest feature value.
    dtype = np.float32 if n * float(features.max(initial=0)) < 2.0**24 else np.float64
    out = np.empty((n_boot, expand.shape[0], k), dtype)
    nonzero = [np.flatnonzero(features[:, j]) for j in range(k)]
    rng = np.random.default_rng(seed)
    start = 0
    for w in bootstrap_weights(n, n_boot, rng, _CHUNK):
        b = len(w)
        per_base = np.empty((expand.shape[1], b, k), np.float32)
        for j, rows in enumerate(nonzero):  # most columns are sparse (errors, positives)
            per_base[:, :, j] = ((w[:, rows] * features[rows, j]) @ base[rows]).T
        full = expand @ per_base.reshape(expand.shape[1], b * k)
        out[start : start + b] = np.asarray(full).reshape(-1, b, k).transpose(1, 0, 2)
        start += b
    return out
