"""Top-1 / top-k accuracy and per-class recall, per variant and replica."""

from __future__ import annotations

import numpy as np
import pandas as pd

from compaudit.analysis.population import Population, VariantPredictions
from compaudit.analysis.stats import RATE, t_interval

__all__ = ["accuracy_table", "accuracy_summary", "per_class_recall"]


def correct(v: VariantPredictions, labels: np.ndarray) -> np.ndarray:
    """Boolean (R, N): replica r predicted example i correctly."""
    return np.asarray(v.pred == labels[None, :])


def accuracy_table(pop: Population) -> pd.DataFrame:
    """One row per (variant, replica): n, top1 and, where top-k exists, top5."""
    rows = []
    for name, v in pop.variants.items():
        top1 = correct(v, pop.labels).mean(axis=1)
        topk = None
        if v.topk is not None:
            topk = (v.topk == pop.labels[None, :, None]).any(axis=2).mean(axis=1)
        for r, rep in enumerate(v.replicas):
            row = {"variant": name, "replica": int(rep), "n": len(pop.labels),
                   "top1": float(top1[r])}
            if topk is not None:
                row["top5"] = float(topk[r])
            rows.append(row)
    return pd.DataFrame(rows)


def accuracy_summary(table: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Mean, std and 95% t-interval over replicas of top1 (and top5), per variant."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name, grp in table.groupby("variant", sort=False):
        entry: dict[str, float | int | None] = {"replicas": len(grp)}
        for metric in ("top1", "top5"):
            if metric in grp and grp[metric].notna().any():
                mean, std, lo, hi = t_interval(grp[metric].to_numpy(), bounds=RATE)
                entry.update({f"{metric}_mean": float(mean), f"{metric}_std": float(std),
                              f"{metric}_lo": float(lo), f"{metric}_hi": float(hi)})
        out[str(name)] = entry
    return out


def per_class_recall(
    v: VariantPredictions, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recall of every class for every replica.

    Returns
    -------
    recall
        (R, C) float; NaN for classes with no examples.
    counts
        (C,) number of examples per class.
    """
    n_rep = v.pred.shape[0]
    counts = np.bincount(labels, minlength=num_classes)
    hits = correct(v, labels)
    keys = (np.arange(n_rep)[:, None] * num_classes + labels[None, :])[hits]
    per = np.bincount(keys, minlength=n_rep * num_classes).reshape(n_rep, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = per / counts[None, :]
    return np.where(counts[None, :] > 0, recall, np.nan), counts
