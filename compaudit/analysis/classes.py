"""Classes hit harder than the model as a whole (Hooker et al.).

For class c and replica k the shifted recall is ``recall_c(k) - top1(k)``. Per class,
a two-sided Welch t-test compares the compressed and the dense samples of shifted
recall; the normalized recall difference is the compressed mean minus the dense mean.
The paper counts classes with p <= 0.05 and applies no correction; both the raw count
and the Benjamini-Hochberg count (q <= 0.05, per variant) are reported.

With a single replica on either side there is no variance to test, so the test falls
back to a per-example test of the class's recall change: exact McNemar on the
discordant examples when the variant's replica was derived from the dense one (same
replica id), else Fisher's exact test of the two recalls. The ``test`` column says which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from compaudit.analysis.accuracy import correct, per_class_recall
from compaudit.analysis.population import Population
from compaudit.analysis.stats import (
    benjamini_hochberg,
    fisher_exact_2x2,
    mcnemar_exact,
    welch_ttest,
)

__all__ = ["class_table", "class_summary"]


def _paired(pop: Population, name: str) -> bool:
    d, v = pop.variants[pop.dense], pop.variants[name]
    return len(np.intersect1d(d.replicas, v.replicas)) == min(len(d.replicas), len(v.replicas))


def _fallback(pop: Population, name: str, counts: np.ndarray) -> tuple[np.ndarray, str]:
    """Per-class p-values from one dense and one compressed replica."""
    c = pop.num_classes
    d_ok = correct(pop.variants[pop.dense], pop.labels)[0]
    v_ok = correct(pop.variants[name], pop.labels)[0]
    if _paired(pop, name):
        b = np.bincount(pop.labels[d_ok & ~v_ok], minlength=c)
        cc = np.bincount(pop.labels[~d_ok & v_ok], minlength=c)
        p = mcnemar_exact(b, cc)
        test = "mcnemar-exact"
    else:
        hit_d = np.bincount(pop.labels[d_ok], minlength=c)
        hit_v = np.bincount(pop.labels[v_ok], minlength=c)
        tables = np.stack([[hit_v, counts - hit_v], [hit_d, counts - hit_d]]).transpose(2, 0, 1)
        present = counts > 0
        p = np.full(c, np.nan)
        p[present] = fisher_exact_2x2(tables[present])[1]
        test = "fisher-exact"
    return np.where(counts > 0, p, np.nan), test


def class_table(pop: Population, *, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (compressed variant, class) with the test results.

    Columns: variant, class, n, dense_recall, variant_recall, dense_shifted,
    variant_shifted, normalized_recall_difference, t, df, p_value, q_value,
    significant_raw, significant_bh, test.
    """
    dense = pop.variants[pop.dense]
    rec_d, counts = per_class_recall(dense, pop.labels, pop.num_classes)
    top1_d = correct(dense, pop.labels).mean(axis=1)
    s_d = rec_d - top1_d[:, None]
    frames = []
    present = counts > 0
    for name in pop.compressed:
        v = pop.variants[name]
        rec_v, _ = per_class_recall(v, pop.labels, pop.num_classes)
        s_v = rec_v - correct(v, pop.labels).mean(axis=1)[:, None]
        t = np.full(pop.num_classes, np.nan)
        df = np.full(pop.num_classes, np.nan)
        if v.n_replicas >= 2 and dense.n_replicas >= 2:
            p = np.full(pop.num_classes, np.nan)
            t[present], df[present], p[present] = welch_ttest(s_v[:, present], s_d[:, present])
            test = "welch"
        else:
            p, test = _fallback(pop, name, counts)
        q = benjamini_hochberg(p)
        frames.append(pd.DataFrame({
                "variant": name,
                "class": np.arange(pop.num_classes),
                "n": counts,
                "dense_recall": _colmean(rec_d),
                "variant_recall": _colmean(rec_v),
                "dense_shifted": _colmean(s_d),
                "variant_shifted": _colmean(s_v),
                "normalized_recall_difference": _colmean(s_v) - _colmean(s_d),
                "t": t,
                "df": df,
                "p_value": p,
                "q_value": q,
                "significant_raw": p <= alpha,
                "significant_bh": q <= alpha,
                "test": test,
            }))
    if not frames:
        return pd.DataFrame()
    return pd.DataFrame(pd.concat(frames, ignore_index=True)).query("n > 0").reset_index(drop=True)


def _colmean(x: np.ndarray) -> np.ndarray:
    """Column means that leave all-NaN columns (absent classes) NaN without warnings."""
    n = np.isfinite(x).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(x, axis=0) / n, np.nan)


def class_summary(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per variant: classes tested, significant counts (raw and BH), the test used,
    and the most harmed classes by normalized recall difference."""
    out: dict[str, dict[str, Any]] = {}
    if table.empty:
        return out
    for name, grp in table.groupby("variant", sort=False):
        worst = grp.nsmallest(5, "normalized_recall_difference")
        out[str(name)] = {
            "classes_tested": int(grp["p_value"].notna().sum()),
            "significant_raw": int(grp["significant_raw"].sum()),
            "significant_bh": int(grp["significant_bh"].sum()),
            "test": str(grp["test"].iloc[0]),
            "most_harmed": [
                {"class": int(r["class"]),
                 "normalized_recall_difference": float(r["normalized_recall_difference"])}
                for _, r in worst.iterrows()
            ],
        }
    return out
