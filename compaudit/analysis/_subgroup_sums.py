"""Counts behind every subgroup rate: per-example feature columns summed per subgroup.

Every rate of :mod:`compaudit.analysis.subgroups` is a ratio of sums over the examples
of a subgroup. The sums are taken once per *finest* cell (the full intersection of the
protected attributes) and mapped to every subgroup by a 0/1 membership matrix; the
bootstrap resamples the same feature columns (one matrix product per chunk of
resamples, :func:`~compaudit.analysis.stats.bootstrap_sums`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from compaudit.analysis.population import Population
from compaudit.analysis.stats import bootstrap_sums

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
        per_model = sums[..., idx].reshape(sums.shape[:-1] + (len(models), self.n_per_model))
        return np.concatenate([sums[..., : self.n_shared] * weight, per_model.sum(-2)], axis=-1)


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


def subgroup_sums(pop: Population, *, codes: np.ndarray, membership: np.ndarray,
                  positive_label: int, n_boot: int, seed: int,
                  per_replica_boot: bool) -> SubgroupSums:
    """Exact and bootstrap sums per subgroup.

    Parameters
    ----------
    pop
        The population.
    codes
        (n_examples,) finest-cell index of each example.
    membership
        (n_subgroups, n_cells) 0/1 matrix: which finest cells make each subgroup.
    positive_label
        The positive class of binary tasks.
    n_boot, seed
        Bootstrap resamples (0: none) and their seed.
    per_replica_boot
        Resample every replica's columns (for per-replica intervals); else only the
        replica-summed columns of each variant, which the population deltas need.
    """
    n_cells = membership.shape[1]
    point_layout = FeatureLayout(pop, positive_label=positive_label, sum_replicas=False)
    # Exact per-cell sums, one bincount per column (no n_examples x n_features matrix).
    cell_sums = np.stack([np.bincount(codes, weights=c, minlength=n_cells)
                          for c in point_layout.columns()], axis=1)
    boot_layout = (point_layout if per_replica_boot
                   else FeatureLayout(pop, positive_label=positive_label, sum_replicas=True))
    boot = None
    if n_boot > 0:
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(n_cells + 1))
        cell_boot = bootstrap_sums(boot_layout.matrix()[order], n_boot=n_boot, seed=seed,
                                   segments=bounds)
        boot = np.einsum("bfk,sf->bsk", cell_boot, membership)
    return SubgroupSums(point=membership @ cell_sums, point_layout=point_layout, boot=boot,
                        boot_layout=boot_layout, binary=pop.is_binary)
