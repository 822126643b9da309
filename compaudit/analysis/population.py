"""Aligned arrays of a population's predictions, built once from the validated tables.

Every analysis works on ``Population``: per variant, an array ``pred[r, i]`` of the
top-1 class of replica ``r`` on example ``i`` in the examples table's row order. This is
the only place that joins predictions to examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from compaudit.errors import AuditInputError
from compaudit.tables import MAX_INFERRED_CLASSES, TOPK_PREFIX, attribute_columns

__all__ = ["Population", "VariantPredictions", "build_population"]


@dataclass(frozen=True)
class VariantPredictions:
    """Predictions of one variant's population, aligned to the examples.

    Attributes
    ----------
    replicas
        Sorted replica ids, shape (R,).
    pred
        Top-1 classes, shape (R, N), int32.
    p_pos
        Probability of class 1, shape (R, N), float32, or None.
    p_pred
        Probability of the predicted class (confidence), shape (R, N), or None.
    topk
        Top-k classes, shape (R, N, k), int32, or None.
    """

    name: str
    replicas: np.ndarray
    pred: np.ndarray
    p_pos: np.ndarray | None = None
    topk: np.ndarray | None = None
    p_pred: np.ndarray | None = None

    @property
    def n_replicas(self) -> int:
        return int(self.pred.shape[0])


@dataclass(frozen=True)
class Population:
    """The examples and every variant's aligned predictions."""

    examples: pd.DataFrame
    labels: np.ndarray
    num_classes: int
    dense: str
    variants: dict[str, VariantPredictions] = field(default_factory=dict)

    @property
    def compressed(self) -> list[str]:
        """Variant names other than the dense one, in table order."""
        return [v for v in self.variants if v != self.dense]

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

    @property
    def attributes(self) -> list[str]:
        """Attribute names (without the ``attr.`` prefix)."""
        return [c[len("attr."):] for c in attribute_columns(self.examples)]

    def subset(self, mask: np.ndarray) -> Population:
        """The same population restricted to the examples where ``mask`` is true."""
        idx = np.flatnonzero(mask)
        variants = {
            name: VariantPredictions(
                name=v.name,
                replicas=v.replicas,
                pred=v.pred[:, idx],
                p_pos=None if v.p_pos is None else v.p_pos[:, idx],
                topk=None if v.topk is None else v.topk[:, idx],
                p_pred=None if v.p_pred is None else v.p_pred[:, idx],
            )
            for name, v in self.variants.items()
        }
        return Population(
            examples=self.examples.iloc[idx].reset_index(drop=True),
            labels=self.labels[idx],
            num_classes=self.num_classes,
            dense=self.dense,
            variants=variants,
        )


def build_population(
    examples: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    dense: str = "dense",
    num_classes: int | None = None,
) -> Population:
    """Align validated predictions to validated examples.

    ``num_classes`` defaults to 2 when predictions carry ``p_pos`` (binary task) and
    otherwise to one more than the largest label or prediction seen.
    """
    labels = examples["label"].to_numpy(np.int64)
    n = len(examples)
    ex_pos = pd.Index(examples["example_id"]).get_indexer(
        predictions["example_id"].cat.categories
    )[predictions["example_id"].cat.codes.to_numpy()]
    if num_classes is None:
        if "p_pos" in predictions:
            num_classes = 2
        else:
            num_classes = int(max(labels.max(), predictions["pred"].max())) + 1
            if num_classes > MAX_INFERRED_CLASSES:
                raise AuditInputError(
                    f"examples/predictions: the largest class index is {num_classes - 1}; "
                    f"more than {MAX_INFERRED_CLASSES:,} classes are not inferred; pass "
                    "num_classes (--num-classes) if the task has that many classes")
    topk_cols = [c for c in predictions.columns if c.startswith(TOPK_PREFIX)]
    v_codes = predictions["variant"].cat.codes.to_numpy()
    order = [dense] + [v for v in predictions["variant"].cat.categories if v != dense]
    variants: dict[str, VariantPredictions] = {}
    for name in order:
        rows = np.flatnonzero(v_codes == predictions["variant"].cat.categories.get_loc(name))
        reps, r_idx = np.unique(predictions["replica"].to_numpy()[rows], return_inverse=True)
        shape = (len(reps), n)
        pred = np.empty(shape, np.int32)
        pred[r_idx, ex_pos[rows]] = predictions["pred"].to_numpy()[rows]
        probs: dict[str, np.ndarray | None] = {"p_pos": None, "p_pred": None}
        for col in probs:
            if col in predictions:
                values = np.empty(shape, np.float32)
                values[r_idx, ex_pos[rows]] = predictions[col].to_numpy()[rows]
                probs[col] = values
        topk = None
        if topk_cols:
            topk = np.empty(shape + (len(topk_cols),), np.int32)
            topk[r_idx, ex_pos[rows]] = predictions[topk_cols].to_numpy()[rows]
        variants[name] = VariantPredictions(name, reps, pred, probs["p_pos"], topk,
                                            probs["p_pred"])
    return Population(examples, labels, num_classes, dense, variants)
