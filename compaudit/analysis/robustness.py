"""Robustness under distribution shift: corruption error, ImageNet-A, and subgroup harm.

- **Corruption error** (Hendrycks & Dietterich). For a corruption c,
  ``CE_c = sum_s E_{s,c} / sum_s E^ref_{s,c}`` and the relative version
  ``sum_s (E_{s,c} - E_clean) / sum_s (E^ref_{s,c} - E^ref_clean)``; mCE is the mean over
  corruptions. The sums run over the severities present, for the model and the reference
  alike. For ImageNet-C (1,000 classes) the reference is AlexNet with its published
  errors at each severity (REFERENCES.md, :mod:`compaudit.references`); otherwise it is the dense population of this audit,
  so the dense CE is 100% by construction and a compressed CE above 100% means the
  variant is less robust than its dense model.
- **ImageNet-A**: top-1 of predictions already restricted to the 200 classes, RMS
  calibration error with adaptive bins of 100 examples, and AURRA (area under the
  response-rate accuracy curve).
- **Accuracy against severity**: mean top-1 over replicas with its t-interval per
  (variant, shift, severity), the points of the report's severity curves.
- **Subgroups under shift**: the subgroup deltas of :mod:`compaudit.analysis.subgroups`
  on each shift's examples (pooled over severities), with the same inference: replica
  pairs and examples (``*_se``, ``*_df``), or the examples alone with one replica a side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compaudit.analysis.population import Population
from compaudit.analysis.stats import RATE, t_interval
from compaudit.analysis.subgroups import DEFAULT_MAX_CELLS, subgroup_analysis

__all__ = [
    "ALEXNET_ERRORS",
    "ALEXNET_CLEAN_ERROR",
    "IMAGENET_C_CORRUPTIONS",
    "corruption_errors",
    "accuracy_by_severity",
    "rms_calibration_error",
    "aurra",
    "shifted_population_metrics",
    "subgroups_under_shift",
]

from compaudit.references import (  # noqa: E402
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    ALEXNET_ERRORS_BY_SEVERITY,
)

IMAGENET_C_CORRUPTIONS = tuple(ALEXNET_ERRORS)


def corruption_errors(accuracy: pd.DataFrame, *, dense: str, alexnet: bool) -> pd.DataFrame:
    """CE and relative CE per (variant, corruption), plus rows ``corruption == "mCE"``.

    Parameters
    ----------
    accuracy
        Rows of ``accuracy.csv``: variant, replica, shift, severity, top1.
    dense
        The reference variant when ``alexnet`` is false.
    alexnet
        Normalize by AlexNet's published ImageNet-C errors at the same severities (only
        corruptions and severities 1-5 it lists).

    Returns
    -------
    Columns variant, corruption, severities, error (mean over severities), ce,
    relative_ce (in %; NaN where the reference's degradation is 0).
    """
    err = (1.0 - accuracy.groupby(["variant", "shift", "severity"], sort=False)["top1"].mean())
    err = err.rename("error").reset_index()
    clean = err[err["shift"] == "clean"].set_index("variant")["error"]
    corr = err[(err["shift"] != "clean") & (err["severity"] > 0)]
    if alexnet:
        corr = corr[corr["shift"].isin(ALEXNET_ERRORS) & corr["severity"].between(1, 5)]
    rows = []
    for (variant, shift), grp in corr.groupby(["variant", "shift"], sort=False):
        n_sev = len(grp)
        e_sum = grp["error"].sum()
        e_clean = clean.get(variant, np.nan)
        if alexnet:
            # The errors at the severities evaluated: AlexNet's error grows with severity,
            # so its 5-severity average would misstate a subset's reference.
            by_sev = ALEXNET_ERRORS_BY_SEVERITY[shift]
            ref_sum = sum(by_sev[int(s) - 1] for s in grp["severity"])
            ref_clean = ALEXNET_CLEAN_ERROR
        else:
            ref = corr[(corr["variant"] == dense) & (corr["shift"] == shift)]
            ref = ref[ref["severity"].isin(grp["severity"])]
            ref_sum, ref_clean = ref["error"].sum(), clean.get(dense, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            ce = 100.0 * e_sum / ref_sum
            rel_den = ref_sum - n_sev * ref_clean
            rel = 100.0 * (e_sum - n_sev * e_clean) / rel_den if rel_den != 0 else np.nan
        rows.append({"variant": variant, "corruption": shift, "severities": n_sev,
                     "error": e_sum / n_sev, "ce": ce, "relative_ce": rel})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    means = (table.groupby("variant", sort=False)[["error", "ce", "relative_ce"]].mean()
             .reset_index().assign(corruption="mCE", severities=0))
    return pd.concat([table, means[table.columns]], ignore_index=True)


def accuracy_by_severity(accuracy: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Mean top-1 over replicas and its t-interval per (variant, shift, severity).

    Parameters
    ----------
    accuracy
        Rows of ``accuracy.csv``: variant, replica, shift, severity, top1.
    level
        Confidence level of the t-intervals.

    Returns
    -------
    Columns variant, shift, severity, replicas (finite top-1 values), mean, std (sample
    standard deviation over replicas), lo, hi; one row per (variant, shift, severity) in
    the order of ``accuracy``. With one replica, std, lo and hi are NaN.

    Examples
    --------
    >>> acc = pd.DataFrame({"variant": "v", "replica": [0, 1], "shift": "fog",
    ...                     "severity": 1, "top1": [0.5, 0.7]})
    >>> row = accuracy_by_severity(acc).iloc[0]
    >>> int(row["replicas"]), round(float(row["mean"]), 3)
    (2, 0.6)
    >>> round(float(row["lo"]), 3), round(float(row["hi"]), 3)  # t_1 stays inside [0, 1]
    (0.007, 0.997)
    """
    cols = ["variant", "shift", "severity", "replicas", "mean", "std", "lo", "hi"]
    rows = []
    for (variant, shift, severity), grp in accuracy.groupby(["variant", "shift", "severity"],
                                                            sort=False):
        top1 = grp["top1"].to_numpy(float)
        mean, std, lo, hi = t_interval(top1, level=level, bounds=RATE)
        rows.append({"variant": variant, "shift": shift, "severity": int(severity),
                     "replicas": int(np.isfinite(top1).sum()), "mean": float(mean),
                     "std": float(std), "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows, columns=cols)


def rms_calibration_error(confidence: np.ndarray, correct: np.ndarray, *, bin_size: int = 100) -> float:
    """RMS calibration error with adaptive bins of ``bin_size`` examples.

    Examples are sorted by confidence and cut into consecutive bins of ``bin_size`` (the
    last bin takes the remainder); the error is ``sqrt(sum_b n_b/N (conf_b - acc_b)^2)``.
    Hendrycks et al.'s reference code leaves the last bin out of the sum; here every
    example counts.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    order = np.argsort(conf, kind="stable")
    conf, ok = conf[order], ok[order]
    n = len(conf)
    n_bins = max(n // bin_size, 1)
    edges = np.arange(n_bins + 1) * bin_size
    edges[-1] = n
    sizes = np.diff(edges)
    conf_b = np.add.reduceat(conf, edges[:-1]) / sizes
    acc_b = np.add.reduceat(ok, edges[:-1]) / sizes
    return float(np.sqrt(np.sum(sizes / n * (conf_b - acc_b) ** 2)))


def aurra(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the response-rate accuracy curve.

    Sort by confidence (descending); at each response rate k/N the accuracy of the k most
    confident answers; AURRA is the mean of that curve.
    """
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    hits = np.cumsum(np.asarray(correct, dtype=float)[order])
    return float(np.mean(hits / np.arange(1, len(hits) + 1)))


def shifted_population_metrics(pop: Population, shift: str) -> pd.DataFrame:
    """Top-1, RMS calibration error and AURRA per (variant, replica) on one shift.

    Confidence is the probability of the predicted class: ``p_pred`` when predictions
    carry it, else ``max(p_pos, 1 - p_pos)`` for binary tasks; without either the
    calibration columns are NaN.
    """
    mask = pop.examples["shift"].to_numpy() == shift
    sub = pop.subset(mask)
    rows = []
    for name, v in sub.variants.items():
        conf = v.p_pred
        if conf is None and v.p_pos is not None:
            conf = np.maximum(v.p_pos, 1.0 - v.p_pos)
        for r in range(v.n_replicas):
            ok = v.pred[r] == sub.labels
            row = {"variant": name, "replica": int(v.replicas[r]), "shift": shift,
                   "n": int(mask.sum()), "top1": float(ok.mean()),
                   "rms_calibration_error": np.nan, "aurra": np.nan}
            if conf is not None:
                row["rms_calibration_error"] = rms_calibration_error(conf[r], ok)
                row["aurra"] = aurra(conf[r], ok)
            rows.append(row)
    return pd.DataFrame(rows)


def subgroups_under_shift(
    pop: Population,
    attributes: list[str],
    *,
    positive_label: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_order: int | None = None,
    min_cell_size: int = 1,
    max_cells: int = DEFAULT_MAX_CELLS,
    about: str = "procedure",
) -> pd.DataFrame:
    """Subgroup deltas (compressed vs dense) on every non-clean shift, severities pooled.

    ``max_order``, ``min_cell_size`` and ``max_cells`` bound the subgroups, and
    ``about`` chooses the estimand, as in
    :func:`~compaudit.analysis.subgroups.subgroup_analysis`. Returns the rows of
    ``deltas.csv`` with a leading ``shift`` column.
    """
    frames = []
    shifts = [s for s in pd.unique(pop.examples["shift"]) if s != "clean"]
    for shift in shifts:
        sub = pop.subset(pop.examples["shift"].to_numpy() == shift)
        res = subgroup_analysis(sub, attributes, positive_label=positive_label, n_boot=n_boot,
                                seed=seed, level=level, replica_intervals=False,
                                max_order=max_order, min_cell_size=min_cell_size,
                                max_cells=max_cells, about=about)
        frames.append(res.deltas.assign(shift=shift))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["shift"] + [c for c in out.columns if c != "shift"]]
