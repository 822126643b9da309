"""Pruning Identified Exemplars (Hooker et al.) and how they over-index on subgroups.

An example is a PIE for a compressed variant when the modal prediction of the
compressed population differs from the modal prediction of the dense population.

Tie rule: when several classes share the highest count, the modal prediction is the
**largest** tied class index. This follows the paper's public code so that counts are
comparable; the rule is arbitrary, and the ``*_mode_share`` columns let a reader spot
examples whose mode is a tie.

The taxicab score (Hooker et al. 2020) is the L1 distance between the two populations'
normalized label histograms of an example, from 0 (identical) to 2 (disjoint).

Over-index comes in two forms. :func:`overindex_table` is the paper's Table 1: cells are
the label crossed with the protected attributes, so PIEs that concentrate on one class
(the hard class, whatever the group) make every cell of that class look over-indexed.
:func:`overindex_within_label` compares each attribute cell with the rest *of the same
label*: per-label tables in Table 1 form, and across labels the Mantel-Haenszel pooled
risk ratio of the cell's share among PIEs to its share among non-PIEs (the Table 1 ratio
``relative growth + 1``, adjusted for the label), with the Greenland-Robins variance of
its log and the Cochran-Mantel-Haenszel test of no association given the label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from compaudit.analysis.accuracy import correct
from compaudit.analysis.population import Population
from compaudit.analysis.stats import benjamini_hochberg, fisher_exact_2x2

__all__ = [
    "modal_prediction",
    "taxicab_distance",
    "pie_table",
    "pie_summary",
    "overindex_table",
    "overindex_from_counts",
    "overindex_within_label",
    "mantel_haenszel_rr",
]


def modal_prediction(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent class per column of ``pred`` (R, N); ties go to the largest class.

    Returns the modes (N,) and their counts (N,). Runs in O(R N) after one sort along
    the replica axis, with no Python loop over examples.
    """
    s = np.sort(pred, axis=0)
    run = np.ones(s.shape[1], dtype=np.int64)
    best_count = run.copy()
    best = s[0].astype(np.int64)
    for j in range(1, s.shape[0]):
        same = s[j] == s[j - 1]
        run = np.where(same, run + 1, 1)
        # ">=" keeps the later (larger) class on a tied count: the documented tie rule.
        take = run >= best_count
        best = np.where(take, s[j], best)
        best_count = np.where(take, run, best_count)
    return best, best_count


def taxicab_distance(pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    """L1 distance between the normalized label histograms of two populations, per example.

    ``pred_a`` is (Ra, N), ``pred_b`` is (Rb, N). Computed with exact integer weights
    (Rb per vote of a, -Ra per vote of b) and divided by Ra*Rb at the end.
    """
    ra, rb = pred_a.shape[0], pred_b.shape[0]
    values = np.concatenate([pred_a, pred_b], axis=0)
    weights = np.concatenate(
        [np.full(ra, rb, np.int64), np.full(rb, -ra, np.int64)]
    )[:, None].repeat(values.shape[1], axis=1)
    order = np.argsort(values, axis=0, kind="stable")
    v = np.take_along_axis(values, order, axis=0)
    w = np.take_along_axis(weights, order, axis=0)
    total = np.zeros(values.shape[1], np.int64)
    run = w[0].copy()
    for j in range(1, v.shape[0]):
        same = v[j] == v[j - 1]
        total += np.where(same, 0, np.abs(run))
        run = np.where(same, run + w[j], w[j])
    total += np.abs(run)
    return np.asarray(total / (ra * rb))


def pie_table(pop: Population) -> pd.DataFrame:
    """One row per (compressed variant, example).

    Columns: variant, example_id, label, dense_mode, variant_mode, dense_mode_share,
    variant_mode_share, is_pie, taxicab, dense_accuracy, variant_accuracy (share of each
    population's replicas that are correct on the example).
    """
    dense = pop.variants[pop.dense]
    d_mode, d_count = modal_prediction(dense.pred)
    d_acc = correct(dense, pop.labels).mean(axis=0)
    frames = []
    for name in pop.compressed:
        v = pop.variants[name]
        v_mode, v_count = modal_prediction(v.pred)
        frames.append(pd.DataFrame({
            "variant": name,
            "example_id": pop.examples["example_id"].to_numpy(),
            "label": pop.labels,
            "dense_mode": d_mode,
            "variant_mode": v_mode,
            "dense_mode_share": d_count / dense.n_replicas,
            "variant_mode_share": v_count / v.n_replicas,
            "is_pie": v_mode != d_mode,
            "taxicab": taxicab_distance(dense.pred, v.pred),
            "dense_accuracy": d_acc,
            "variant_accuracy": correct(v, pop.labels).mean(axis=0),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def pie_summary(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per variant: PIE count and rate, and top-1 of both populations on PIEs,
    non-PIEs and all examples (mean over replicas)."""
    out: dict[str, dict[str, float | None]] = {}
    if table.empty:
        return out
    for name, grp in table.groupby("variant", sort=False):
        pie = grp["is_pie"].to_numpy()
        entry: dict[str, float | None] = {"n_examples": int(len(grp)), "n_pie": int(pie.sum()),
                 "pie_rate": float(pie.mean())}
        for subset, mask in (("pie", pie), ("non_pie", ~pie), ("all", np.ones_like(pie))):
            for side in ("dense", "variant"):
                acc = grp[f"{side}_accuracy"].to_numpy()[mask]
                entry[f"{side}_top1_{subset}"] = float(acc.mean()) if mask.any() else None
        out[str(name)] = entry
    return out


def _katz(pie: np.ndarray, non: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log ratio of each cell's PIE share to its non-PIE share, and its Katz standard
    error ``sqrt(1/a - 1/n1 + 1/c - 1/n2)`` (a, c: the cell's PIEs and non-PIEs; n1, n2:
    all of them); NaN where the cell has no PIE or no non-PIE."""
    a, c = pie.astype(float), non.astype(float)
    n1, n2 = a.sum(), c.sum()
    ok = (a > 0) & (c > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rr = np.where(ok, np.log((a / n1) / (c / n2)), np.nan)
        se = np.where(ok, np.sqrt(1 / a - 1 / n1 + 1 / c - 1 / n2), np.nan)
    return log_rr, se


def overindex_from_counts(
    cells: pd.DataFrame, *, round_shares: int | None = None
) -> pd.DataFrame:
    """Add shares, relative growth and a Fisher exact test to per-cell PIE counts.

    Parameters
    ----------
    cells
        One row per attribute combination with integer columns ``n_non_pie`` and
        ``n_pie`` (and any descriptive columns, kept).
    round_shares
        Round the percentage shares to this many decimals before computing the
        relative growth, as the paper's Table 1 did. ``None`` uses exact shares.

    Returns
    -------
    The table with ``non_pie_pct``, ``pie_pct``, ``relative_growth_pct`` (PIE share /
    non-PIE share - 1, in %), ``log_rr`` and ``log_rr_se`` (log of that ratio of shares,
    from exact counts, and its Katz standard error; NaN unless the cell has PIEs and
    non-PIEs), ``odds_ratio``, ``p_value`` (two-sided Fisher exact test of the cell
    against all other cells) and ``q_value`` (Benjamini-Hochberg over cells).
    """
    out = cells.copy()
    pie = out["n_pie"].to_numpy(np.int64)
    non = out["n_non_pie"].to_numpy(np.int64)
    # Shares are undefined when a variant has no PIEs (or only PIEs): NaN, not 0 or -100%.
    pie_pct = 100.0 * pie / pie.sum() if pie.sum() > 0 else np.full(len(pie), np.nan)
    non_pct = 100.0 * non / non.sum() if non.sum() > 0 else np.full(len(non), np.nan)
    if round_shares is not None:
        pie_pct, non_pct = np.round(pie_pct, round_shares), np.round(non_pct, round_shares)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.where(non_pct > 0, 100.0 * (pie_pct / non_pct - 1.0), np.nan)
    odds = p = np.full(len(pie), np.nan)
    tables = np.stack(
        [np.stack([pie, pie.sum() - pie], 1), np.stack([non, non.sum() - non], 1)], 1
    )
    if pie.sum() > 0 and non.sum() > 0:
        odds, p = fisher_exact_2x2(tables)
    out["non_pie_pct"] = non_pct
    out["pie_pct"] = pie_pct
    out["relative_growth_pct"] = growth
    out["log_rr"], out["log_rr_se"] = _katz(pie, non)
    out["odds_ratio"] = odds
    out["p_value"] = p
    out["q_value"] = benjamini_hochberg(p)
    return out


def overindex_table(pop: Population, pies: pd.DataFrame, attributes: list[str]) -> pd.DataFrame:
    """Over-index of PIEs per attribute combination, per compressed variant.

    Cells are the target label crossed with the protected attributes for binary tasks
    (as in the paper's Table 1), and the protected attributes alone for many-class tasks.
    """
    if pies.empty or not attributes:
        return pd.DataFrame()
    keys = [f"attr.{a}" for a in attributes]
    base = pop.examples[keys].copy()
    if pop.is_binary:
        base.insert(0, "label", pop.labels)
    by = list(base.columns)
    frames = []
    for name, grp in pies.groupby("variant", sort=False):
        cell = base.assign(is_pie=grp["is_pie"].to_numpy())
        counts = (
            cell.groupby(by, observed=True)["is_pie"]
            .agg(n_pie="sum", n="size")
            .reset_index()
        )
        counts["n_non_pie"] = counts["n"] - counts["n_pie"]
        counts = counts.drop(columns="n")
        counts.insert(0, "variant", name)
        frames.append(overindex_from_counts(counts))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["variant", "relative_growth_pct"], ascending=[True, False],
                           kind="stable").reset_index(drop=True)


def mantel_haenszel_rr(tables: np.ndarray) -> dict[str, float]:
    """Mantel-Haenszel pooled risk ratio of a stack of 2x2 tables, with its test.

    Parameters
    ----------
    tables
        Shape (K, 2, 2), one table per stratum: rows exposed / unexposed, columns event /
        no event (``[[a, b], [c, d]]``). Here the rows are PIE / non-PIE and the event is
        membership in the attribute cell, so the ratio is the cell's share among PIEs over
        its share among non-PIEs.

    Returns
    -------
    ``rr`` = sum(a (c + d) / n) / sum(c (a + b) / n); ``log_se``, the Greenland-Robins
    (1985) standard error of log rr, ``sqrt(sum((a+b)(c+d)(a+c) - a c n) / n^2) / (R S))``
    with R and S the two sums of ``rr``; ``chi2`` and ``p_value``, the Cochran-Mantel-
    Haenszel test of no association in any stratum (1 df, no continuity correction).
    Strata with fewer than 2 observations carry no information and are dropped; an
    undefined quantity (no strata, R or S zero) is NaN, except ``rr = 0`` when only R is.

    Examples
    --------
    >>> t = np.array([[[2, 8], [1, 9]], [[3, 7], [2, 8]]])
    >>> round(mantel_haenszel_rr(t)["rr"], 4)
    1.6667
    """
    t = np.asarray(tables, dtype=float).reshape(-1, 2, 2)
    n = t.sum(axis=(1, 2))
    t, n = t[n >= 2], n[n >= 2]
    a, b, c, d = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]
    n1, n0, m1, m0 = a + b, c + d, a + c, b + d
    r, s = np.sum(a * n0 / n), np.sum(c * n1 / n)
    out = {"rr": np.nan, "log_se": np.nan, "chi2": np.nan, "p_value": np.nan}
    if len(n) == 0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rr"] = float(r / s) if s > 0 else np.nan
        if r > 0 and s > 0:
            var = np.sum((n1 * n0 * m1 - a * c * n) / n**2) / (r * s)
            out["log_se"] = float(np.sqrt(var))
        expected = n1 * m1 / n
        variance = np.sum(n1 * n0 * m1 * m0 / (n**2 * (n - 1)))
    if variance > 0:
        chi2 = float((a.sum() - expected.sum()) ** 2 / variance)
        out["chi2"], out["p_value"] = chi2, float(sps.chi2.sf(chi2, 1))
    return out


def overindex_within_label(
    pop: Population, pies: pd.DataFrame, attributes: list[str], *, level: float = 0.95
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Over-index of PIEs per attribute cell within each true label, and pooled over labels.

    Parameters
    ----------
    pop, pies
        The population and its :func:`pie_table`.
    attributes
        Protected attributes; cells are their combinations (the label is never a cell
        key, it is the stratum).
    level
        Confidence level of the pooled intervals (unadjusted; the gate widens its own).

    Returns
    -------
    per_label
        ``overindex_within_label.csv``: per (variant, label, cell) the counts and the
        Table 1 columns of :func:`overindex_from_counts`, computed among that label's
        examples only (q: Benjamini-Hochberg over the cells of one variant and label).
    pooled
        ``overindex_mh.csv``: per (variant, cell) the counts summed over labels
        (``n_pie_fixed``: the PIEs on which the variant's modal prediction is the true
        label, corrections of the dense population's modal error),
        ``strata`` (labels with both PIEs and non-PIEs), ``rr_mh`` (Mantel-Haenszel
        pooled ratio of the cell's share among PIEs to its share among non-PIEs),
        ``relative_growth_pct`` = 100 (rr_mh - 1), ``log_rr_se`` (Greenland-Robins),
        ``lo`` and ``hi`` (its Wald interval on the log scale, in % growth), ``cmh_chi2``,
        ``p_value`` (CMH test) and ``q_value`` (Benjamini-Hochberg over the variant's cells).
    """
    if pies.empty or not attributes:
        return pd.DataFrame(), pd.DataFrame()
    keys = [f"attr.{a}" for a in attributes]
    base = pop.examples[keys].copy()
    base.insert(0, "label", pop.labels)
    z = float(sps.norm.ppf(0.5 + level / 2))
    per_label, pooled = [], []
    for name, grp in pies.groupby("variant", sort=False):
        is_pie = grp["is_pie"].to_numpy()
        # A PIE on which the variant's modal prediction is the label: a correction of the
        # dense population's modal error, not a new error.
        # (none for flags that are not a variant's PIEs: the risk screen's.)
        fixed = (is_pie & (grp["variant_mode"].to_numpy() == grp["label"].to_numpy())
                 if "variant_mode" in grp else np.zeros_like(is_pie))
        cell = base.assign(is_pie=is_pie, fixed=fixed)
        counts = (cell.groupby(["label", *keys], observed=True)
                  .agg(n_pie=("is_pie", "sum"), n=("is_pie", "size"),
                       n_pie_fixed=("fixed", "sum")).reset_index())
        counts["n_non_pie"] = counts["n"] - counts["n_pie"]
        counts = counts.drop(columns="n")
        for label, rows in counts.groupby("label", sort=True):
            per_label.append(overindex_from_counts(rows.drop(columns="n_pie_fixed"))
                             .assign(variant=name))
        totals = counts.groupby("label")[["n_pie", "n_non_pie"]].transform("sum")
        counts["a"], counts["c"] = counts["n_pie"], counts["n_non_pie"]
        counts["b"] = totals["n_pie"] - counts["a"]
        counts["d"] = totals["n_non_pie"] - counts["c"]
        rows = []
        for key, strata in counts.groupby(keys, observed=True, sort=True):
            tables = strata[["a", "b", "c", "d"]].to_numpy().reshape(-1, 2, 2)
            mh = mantel_haenszel_rr(tables)
            informative = (strata[["a", "b"]].sum(axis=1) > 0) & (strata[["c", "d"]].sum(axis=1) > 0)
            row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            row.update(variant=name, n_pie=int(strata["a"].sum()),
                       n_pie_fixed=int(strata["n_pie_fixed"].sum()),
                       n_non_pie=int(strata["c"].sum()), strata=int(informative.sum()),
                       rr_mh=mh["rr"], relative_growth_pct=100 * (mh["rr"] - 1),
                       log_rr_se=mh["log_se"], lo=np.nan, hi=np.nan, cmh_chi2=mh["chi2"],
                       p_value=mh["p_value"])
            if np.isfinite(mh["log_se"]):
                log = np.log(mh["rr"])
                row["lo"] = 100 * (np.exp(log - z * mh["log_se"]) - 1)
                row["hi"] = 100 * (np.exp(log + z * mh["log_se"]) - 1)
            rows.append(row)
        table = pd.DataFrame(rows)
        table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy(float))
        pooled.append(table)
    per = pd.concat(per_label, ignore_index=True)
    per = per[["variant"] + [c for c in per.columns if c != "variant"]]
    mh = pd.concat(pooled, ignore_index=True)
    mh = mh[["variant", *keys] + [c for c in mh.columns if c not in ("variant", *keys)]]
    per = per.sort_values(["variant", "label", "relative_growth_pct"],
                          ascending=[True, True, False], kind="stable").reset_index(drop=True)
    mh = mh.sort_values(["variant", "relative_growth_pct"], ascending=[True, False],
                        kind="stable").reset_index(drop=True)
    return per, mh
