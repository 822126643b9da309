"""Dissection compared across variants: what compression does to interpretable units.

As in Frankle & Bau's figures: per (variant, replica) the number of interpretable units
and of distinct concepts they detect (overall and by concept category), and against the
dense replica it derives from (replica k of a variant pairs with dense replica k) the
share of the dense model's interpretable units that are still interpretable, and the
share still detecting the same concept, and the relative drop of the interpretable-unit
and distinct-concept counts (``1 - variant / dense``, the quantity the gate bounds).
Across replicas: mean, standard deviation (ddof 1), count and a t-interval. Pandas and
scipy only; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from compaudit.dissection.dissect import UNIT_COLUMNS, DissectionResult
from compaudit.errors import AuditInputError

__all__ = ["units_frame", "compare_dissections", "comparison_metrics", "REPLICA_METRICS"]

#: Numeric columns of the ``replicas`` table, summarised across replicas.
REPLICA_METRICS = ("units", "interpretable_units", "interpretable_share", "distinct_concepts",
                   "retained_interpretable", "retained_concept", "interpretable_drop",
                   "concept_drop")


def units_frame(results: Mapping[tuple[str, int], DissectionResult]) -> pd.DataFrame:
    """Stack per-unit tables keyed by ``(variant, replica)`` into one frame."""
    frames = [r.units.assign(variant=v, replica=int(k)) for (v, k), r in results.items()]
    if not frames:
        raise AuditInputError("dissection results: expected at least one (variant, replica)")
    return pd.concat(frames, ignore_index=True)[["variant", "replica", *UNIT_COLUMNS]]


def _check(units: pd.DataFrame, dense: str) -> None:
    missing = [c for c in ("variant", "replica", *UNIT_COLUMNS) if c not in units.columns]
    if missing:
        raise AuditInputError(f"dissection units: missing columns {', '.join(missing)}; build "
                              "the frame with units_frame()")
    if dense not in set(units["variant"]):
        raise AuditInputError(f"dissection units: no rows of the dense variant {dense!r}; "
                              f"variants found: {', '.join(sorted(set(units['variant'])))}")
    if units.duplicated(["variant", "replica", "layer", "unit"]).any():
        raise AuditInputError("dissection units: a (variant, replica, layer, unit) appears "
                              "more than once")


def compare_dissections(units: pd.DataFrame, *, dense: str = "dense",
                        level: float = 0.95) -> dict[str, pd.DataFrame]:
    """Interpretable-unit counts per variant and replica, and retention against dense.

    Parameters
    ----------
    units
        Rows of :func:`units_frame`: ``variant, replica`` plus the per-unit columns.
    dense
        Name of the dense variant.
    level
        Confidence level of the t-intervals across replicas.

    Returns
    -------
    dict
        ``replicas``: one row per (variant, replica) with :data:`REPLICA_METRICS`
        (retention and drops are NaN without a dense replica of the same index, or when
        that replica has no interpretable unit); ``categories``: per (variant, replica,
        category) interpretable units and distinct concepts; ``summary``: per variant and
        metric ``mean, std, n, lo, hi`` (``lo, hi``: two-sided t-interval at ``level``
        over the replicas with a value; NaN with fewer than two).
    """
    _check(units, dense)
    key = ["layer", "unit"]
    dense_units = {r: g.set_index(key) for r, g in units[units["variant"] == dense]
                   .groupby("replica")}
    rows, cat_rows = [], []
    for (variant, replica), group in units.groupby(["variant", "replica"], sort=False):
        hit = group[group["interpretable"]]
        row: dict[str, Any] = {
            "variant": variant, "replica": int(replica), "units": len(group),
            "interpretable_units": len(hit),
            "interpretable_share": len(hit) / len(group) if len(group) else math.nan,
            "distinct_concepts": hit["concept"].nunique(),
        }
        base = dense_units.get(replica)
        retained = concept = unit_drop = concept_drop = math.nan
        if base is not None:
            base_hit = base[base["interpretable"]]
            now = group.set_index(key).reindex(base_hit.index)
            if len(base_hit):
                still = now["interpretable"].fillna(False).astype(bool).to_numpy()
                same = still & (now["concept"].to_numpy() == base_hit["concept"].to_numpy())
                retained, concept = still.mean(), same.mean()
                # Undefined (NaN) when the dense replica has no interpretable unit.
                unit_drop = 1.0 - len(hit) / len(base_hit)
                concept_drop = 1.0 - hit["concept"].nunique() / base_hit["concept"].nunique()
        row.update(retained_interpretable=retained, retained_concept=concept,
                   interpretable_drop=unit_drop, concept_drop=concept_drop)
        rows.append(row)
        for category, cat_hit in hit.groupby("category"):
            cat_rows.append({"variant": variant, "replica": int(replica), "category": category,
                             "interpretable_units": len(cat_hit),
                             "distinct_concepts": cat_hit["concept"].nunique()})
    replicas = pd.DataFrame(rows)
    categories = pd.DataFrame(cat_rows, columns=["variant", "replica", "category",
                                                 "interpretable_units", "distinct_concepts"])
    long = replicas.melt(id_vars=["variant", "replica"], value_vars=list(REPLICA_METRICS),
                         var_name="metric")
    long["value"] = long["value"].astype(float)
    summary = (long.groupby(["variant", "metric"], sort=False)["value"]
               .agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index())
    n = summary["n"].to_numpy()
    half = np.full(len(summary), np.nan)
    ok = n >= 2
    half[ok] = (sps.t.ppf(0.5 + level / 2, n[ok] - 1) * summary["std"].to_numpy()[ok]
                / np.sqrt(n[ok]))
    summary["lo"] = summary["mean"] - half
    summary["hi"] = summary["mean"] + half
    return {"replicas": replicas, "categories": categories, "summary": summary}


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def comparison_metrics(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """JSON-ready ``{variant: {metric: {mean, std, n, lo, hi}, "by_category": {...}}}``
    (NaN -> None).

    ``by_category`` holds, per category, the mean over replicas of interpretable units and
    distinct concepts (a replica without any in a category counts as 0).
    """
    out: dict[str, Any] = {}
    for row in tables["summary"].itertuples(index=False):
        out.setdefault(row.variant, {})[row.metric] = {
            "mean": _number(row.mean), "std": _number(row.std), "n": int(row.n),
            "lo": _number(row.lo), "hi": _number(row.hi)}
    replicas = tables["replicas"][["variant", "replica"]]
    cats = tables["categories"]
    for category in sorted(set(cats["category"])):
        full = replicas.merge(cats[cats["category"] == category], how="left",
                              on=["variant", "replica"]).fillna(
            {"interpretable_units": 0, "distinct_concepts": 0})
        for variant, g in full.groupby("variant", sort=False):
            entry = out[variant].setdefault("by_category", {})
            entry[category] = {
                "interpretable_units": float(np.mean(g["interpretable_units"])),
                "distinct_concepts": float(np.mean(g["distinct_concepts"]))}
    return out
