"""Subgroup error rates and how compression changes them.

Subgroups are: everyone (``overall``), each level of each protected attribute, and
every level combination of every intersection of two or more attributes. All counts
are computed once per *finest* cell (the full intersection) and summed into coarser
subgroups, so one pass serves every subgroup.

Binary tasks get n, base rate, selection rate, TPR, FPR, FNR, TNR and accuracy per
variant x replica x subgroup, with percentile bootstrap intervals of FPR and FNR per
replica. Many-class tasks get accuracy (and, from the PIE analysis, the PIE rate).

Change vs dense uses the *population* rate of each variant: the mean over its replicas,
which equals the rate of the replica-summed counts because every replica sees the same
examples. Its uncertainty comes from a paired bootstrap over examples: one set of
resamples, applied to the dense and the compressed predictions alike. Seed-to-seed
variation is reported separately, as the t-interval over replicas.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from compaudit.analysis.population import Population
from compaudit.analysis.stats import (
    benjamini_hochberg,
    bootstrap_sums,
    summarize_bootstrap,
    t_interval,
)

__all__ = ["SubgroupResult", "subgroup_analysis", "subgroup_cells"]

BINARY_RATES = ("base_rate", "selection_rate", "tpr", "fpr", "fnr", "tnr", "accuracy")
#: Rates whose change is tested; TPR and TNR are 1 - FNR and 1 - FPR.
BINARY_DELTA_RATES = ("fpr", "fnr", "selection_rate", "accuracy")
#: Relative and normalized changes are tested only where the dense population has at
#: least this many events and non-events per replica in the subgroup: below it a ratio
#: of rates is too unstable for a bootstrap test (a null simulation flagged 1 seed in 5).
MIN_EVENTS = 10
UNDEFINED = {
    "fpr": "no negatives in subgroup: FPR and TNR undefined",
    "tnr": "no negatives in subgroup: FPR and TNR undefined",
    "tpr": "no positives in subgroup: TPR and FNR undefined",
    "fnr": "no positives in subgroup: TPR and FNR undefined",
}


@dataclass(frozen=True)
class Cells:
    """Finest cells and the subgroups built from them."""

    codes: np.ndarray  # (N,) finest-cell index of each example
    names: list[str]  # subgroup names
    groupings: list[str]  # grouping each subgroup belongs to
    membership: np.ndarray  # (n_subgroups, n_fine) 0/1


def _level(value: object) -> str:
    return str(value)


def subgroup_cells(examples: pd.DataFrame, attributes: list[str]) -> Cells:
    """Build the subgroup definitions of ``attributes`` (names without ``attr.``)."""
    n = len(examples)
    if not attributes:
        return Cells(np.zeros(n, np.int64), ["overall"], ["overall"], np.ones((1, 1)))
    cols = [f"attr.{a}" for a in attributes]
    grouped = examples[cols].groupby(cols, observed=True, sort=True)
    codes = grouped.ngroup().to_numpy(np.int64)
    fine = grouped.size().reset_index()[cols]
    names, groupings, rows = ["overall"], ["overall"], [np.ones(len(fine))]
    for size in range(1, len(attributes) + 1):
        for subset in combinations(range(len(attributes)), size):
            sub_cols = [cols[i] for i in subset]
            grouping = " x ".join(attributes[i] for i in subset)
            by = sub_cols if len(sub_cols) > 1 else sub_cols[0]
            for levels, members in fine.groupby(by, observed=True, sort=True).groups.items():
                levels = levels if isinstance(levels, tuple) else (levels,)
                names.append(" & ".join(
                    f"{attributes[i]}={_level(lv)}" for i, lv in zip(subset, levels)))
                groupings.append(grouping)
                row = np.zeros(len(fine))
                row[np.asarray(members)] = 1.0
                rows.append(row)
    return Cells(codes, names, groupings, np.stack(rows))


@dataclass(frozen=True)
class SubgroupResult:
    """Tables of the subgroup analysis (see README for every column)."""

    per_replica: pd.DataFrame
    summary: pd.DataFrame
    deltas: pd.DataFrame
    disparity: pd.DataFrame


class _Layout:
    """Per-example feature columns: base columns, then ``n_stat`` columns per key.

    Keys are ``(variant, replica index)``, or ``(variant, None)`` for counts summed over
    a variant's replicas. Binary tasks: base [positives, negatives], stats [TP, FP].
    Many-class tasks: base [ones], stats [correct].
    """

    def __init__(self, pop: Population, positive: int, *, summed: bool) -> None:
        self.pop, self.positive = pop, positive
        self.n_base = 2 if pop.is_binary else 1
        self.n_stat = 2 if pop.is_binary else 1
        self.keys: list[tuple[str, int | None]] = [
            (name, None) if summed else (name, r)
            for name, v in pop.variants.items()
            for r in ([None] if summed else range(v.n_replicas))
        ]
        self.index = {k: i for i, k in enumerate(self.keys)}

    def columns(self):
        """Yield every feature column (float32, length N), base columns first."""
        pop = self.pop
        if pop.is_binary:
            is_pos = (pop.labels == self.positive).astype(np.float32)
            yield from (is_pos, 1.0 - is_pos)
        else:
            yield np.ones(len(pop.labels), np.float32)
        for name, r in self.keys:
            pred = pop.variants[name].pred
            pred = pred if r is None else pred[r : r + 1]
            if pop.is_binary:
                pp = (pred == self.positive).sum(axis=0).astype(np.float32)
                yield pp * is_pos
                yield pp * (1.0 - is_pos)
            else:
                yield (pred == pop.labels[None, :]).sum(axis=0).astype(np.float32)

    def matrix(self) -> np.ndarray:
        return np.stack(list(self.columns()), axis=1)

    def sums(self, arr: np.ndarray, name: str, r: int | None) -> np.ndarray:
        """Cell sums [base..., stat...] of one replica, or summed over replicas (r=None)."""
        n_rep = self.pop.variants[name].n_replicas
        if (name, r) in self.index:
            cols, reps = [self.index[(name, r)]], 1 if r is not None else n_rep
        else:  # sum the per-replica columns
            cols, reps = [self.index[(name, q)] for q in range(n_rep)], n_rep
        idx = [self.n_base + c * self.n_stat + j for c in cols for j in range(self.n_stat)]
        stat = arr[..., idx].reshape(arr.shape[:-1] + (len(cols), self.n_stat)).sum(-2)
        return np.concatenate([arr[..., : self.n_base] * reps, stat], axis=-1)


def _fine_sums(layout: _Layout, codes: np.ndarray, n_fine: int) -> np.ndarray:
    """Exact per-cell sums of every column, one bincount per column (no N x K matrix)."""
    return np.stack(
        [np.bincount(codes, weights=c, minlength=n_fine) for c in layout.columns()], axis=1
    )


def _rates(sums: np.ndarray, binary: bool) -> dict[str, np.ndarray]:
    """Rates from cell sums of shape (..., 4) = [P, N, TP, FP] or (..., 2) = [n, correct]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if not binary:
            return {"n": sums[..., 0], "accuracy": sums[..., 1] / sums[..., 0]}
        p, nn, tp, fp = (sums[..., i] for i in range(4))
        fn, tn, n = p - tp, nn - fp, p + nn
        return {
            "n": n, "positives": p, "negatives": nn,
            "base_rate": p / n, "selection_rate": (tp + fp) / n,
            "tpr": tp / p, "fpr": fp / nn, "fnr": fn / p, "tnr": tn / nn,
            "accuracy": (tp + tn) / n,
        }


def subgroup_analysis(
    pop: Population,
    attributes: list[str],
    *,
    positive_label: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    replica_intervals: bool = True,
) -> SubgroupResult:
    """Per-replica subgroup rates, their replica summary, and changes vs dense.

    ``replica_intervals=False`` skips the per-replica bootstrap intervals and resamples
    only replica-summed counts, which is much cheaper for large shift sets.
    """
    cells = subgroup_cells(pop.examples, attributes)
    n_fine = cells.membership.shape[1]
    exact = _Layout(pop, positive_label, summed=False)
    point = cells.membership @ _fine_sums(exact, cells.codes, n_fine)  # (n_sub, k)
    # Bootstrap features: per replica when per-replica intervals are wanted, else one
    # replica-summed column per variant (what the population deltas need).
    resampled = exact if replica_intervals else _Layout(pop, positive_label, summed=True)
    boot = None
    if n_boot > 0:
        order = np.argsort(cells.codes, kind="stable")
        bounds = np.searchsorted(cells.codes[order], np.arange(n_fine + 1))
        x = resampled.matrix()[order]
        fine_boot = bootstrap_sums(x, n_boot=n_boot, seed=seed, segments=bounds)
        boot = np.einsum("bfk,sf->bsk", fine_boot, cells.membership)

    def vr_sums(arr: np.ndarray, name: str, r: int | None) -> np.ndarray:
        return (resampled if arr is boot else exact).sums(arr, name, r)

    per_replica = _per_replica_table(pop, cells, point, boot, vr_sums, level,
                                     replica_intervals)
    summary = _summary_table(per_replica, pop.is_binary)
    deltas, disparity = _delta_tables(pop, cells, point, boot, vr_sums, level)
    return SubgroupResult(per_replica, summary, deltas, disparity)


def _per_replica_table(pop, cells, point, boot, vr_sums, level, replica_intervals) -> pd.DataFrame:
    frames = []
    ci_rates = ("fpr", "fnr") if pop.is_binary else ("accuracy",)
    for name, v in pop.variants.items():
        for r in range(v.n_replicas):
            rates = _rates(vr_sums(point, name, r), pop.is_binary)
            frame = pd.DataFrame({"variant": name, "replica": int(v.replicas[r]),
                                  "subgroup": cells.names, "grouping": cells.groupings})
            for key, val in rates.items():
                frame[key] = val.astype(np.int64) if key in ("n", "positives", "negatives") else val
            if boot is not None and replica_intervals:
                b_rates = _rates(vr_sums(boot, name, r), pop.is_binary)
                for key in ci_rates:
                    s = summarize_bootstrap(rates[key], b_rates[key], level=level)
                    frame[f"{key}_lo"], frame[f"{key}_hi"] = s.lo, s.hi
            frame["note"] = _notes(rates)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _notes(rates: dict[str, np.ndarray]) -> list[str]:
    notes = []
    for i in range(len(rates["n"])):
        msgs = sorted({msg for key, msg in UNDEFINED.items()
                       if key in rates and not np.isfinite(rates[key][i])})
        notes.append("; ".join(msgs))
    return notes


def _summary_table(per_replica: pd.DataFrame, binary: bool) -> pd.DataFrame:
    """Mean, std and t-interval over replicas, one row per (variant, subgroup, metric)."""
    metrics = BINARY_RATES if binary else ("accuracy",)
    rows = []
    for (name, sub), grp in per_replica.groupby(["variant", "subgroup"], sort=False):
        for metric in metrics:
            mean, std, lo, hi = t_interval(grp[metric].to_numpy())
            rows.append({"variant": name, "subgroup": sub, "grouping": grp["grouping"].iloc[0],
                         "metric": metric, "n": int(grp["n"].iloc[0]),
                         "replicas": len(grp), "mean": float(mean), "std": float(std),
                         "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows)


def _delta_tables(pop, cells, point, boot, vr_sums, level) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = BINARY_DELTA_RATES if pop.is_binary else ("accuracy",)
    n_sub = point[:, : 2 if pop.is_binary else 1].sum(axis=1).astype(np.int64)
    if pop.is_binary:
        dens = {"fpr": point[:, 1], "fnr": point[:, 0], "selection_rate": n_sub,
                "accuracy": n_sub}
    else:
        dens = {"accuracy": n_sub}
    dense_pt = _rates(vr_sums(point, pop.dense, None), pop.is_binary)
    dense_bt = _rates(vr_sums(boot, pop.dense, None), pop.is_binary) if boot is not None else None
    groupings = [g for g in dict.fromkeys(cells.groupings) if g != "overall"]
    delta_frames, disp_rows = [], []
    for name in pop.compressed:
        v_pt = _rates(vr_sums(point, name, None), pop.is_binary)
        v_bt = _rates(vr_sums(boot, name, None), pop.is_binary) if boot is not None else None
        for metric in metrics:
            frame = pd.DataFrame({"variant": name, "subgroup": cells.names,
                                  "grouping": cells.groupings, "metric": metric,
                                  "n": n_sub,
                                  "dense": dense_pt[metric], "compressed": v_pt[metric]})
            est = _changes(dense_pt[metric], v_pt[metric])
            smp = _changes(dense_bt[metric], v_bt[metric]) if boot is not None else None
            for key in ("abs_diff", "rel_change_pct", "norm_change_pct", "excess_diff"):
                frame[key] = est[key]
                if smp is not None:
                    s = summarize_bootstrap(est[key], smp[key], level=level)
                    frame[f"{key}_lo"], frame[f"{key}_hi"] = s.lo, s.hi
                    frame[f"{key}_se"] = s.se  # the gate builds corrected intervals from it
                    if key != "rel_change_pct":  # the relative test is the abs_diff test
                        frame[f"{key}_p"] = s.p
            events = dense_pt[metric] * dens[metric]
            testable = np.minimum(events, dens[metric] - events) >= MIN_EVENTS
            if smp is not None:
                frame.loc[~testable, "norm_change_pct_p"] = np.nan
                # The overall row's normalized and excess changes are 0 by construction.
                overall = frame["subgroup"] == "overall"
                frame.loc[overall, ["norm_change_pct_p", "excess_diff_p"]] = np.nan
            frame["note"] = _delta_notes(dense_pt[metric], metric, testable)
            delta_frames.append(frame)
            for grouping in groupings:
                disp_rows.append(_disparity_row(
                    name, grouping, metric, cells, dense_pt[metric], v_pt[metric],
                    None if boot is None else dense_bt[metric],
                    None if boot is None else v_bt[metric], level))
    deltas = pd.concat(delta_frames, ignore_index=True) if delta_frames else pd.DataFrame()
    disparity = pd.DataFrame(disp_rows)
    if boot is not None and not deltas.empty:
        # One family across every test of the table: all variants, subgroups and
        # metrics, absolute, normalized and excess changes together.
        tested = ("abs_diff", "norm_change_pct", "excess_diff")
        q = benjamini_hochberg(np.concatenate([deltas[f"{k}_p"].to_numpy() for k in tested]))
        for i, k in enumerate(tested):
            deltas[f"{k}_q"] = q[i * len(deltas) : (i + 1) * len(deltas)]
    if boot is not None and not disparity.empty:
        disparity["change_q"] = benjamini_hochberg(disparity["change_p"].to_numpy())
    return deltas, disparity


def _changes(dense: np.ndarray, comp: np.ndarray) -> dict[str, np.ndarray]:
    """Absolute, relative (%) and normalized (%) change; last axis = subgroups, 0 = overall."""
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = comp - dense
        rel = np.where(dense != 0, 100.0 * diff / dense, np.nan)
    norm = rel - rel[..., :1]
    # The subgroup's change beyond the model-wide change, in rate units: robust where the
    # subgroup's baseline rate differs from the overall one (relative changes are not).
    excess = diff - diff[..., :1]
    return {"abs_diff": diff, "rel_change_pct": rel, "norm_change_pct": norm,
            "excess_diff": excess}


def _delta_notes(dense: np.ndarray, metric: str, testable: np.ndarray) -> list[str]:
    out = []
    for d, ok in zip(dense, testable):
        if not np.isfinite(d):
            out.append(UNDEFINED.get(metric, "rate undefined in subgroup"))
        elif d == 0:
            out.append("dense rate is 0: relative change undefined")
        elif not ok:
            out.append(f"fewer than {MIN_EVENTS} dense events or non-events per replica: "
                       "normalized change not tested")
        else:
            out.append("")
    return out


def _disparity_row(name, grouping, metric, cells, d_pt, v_pt, d_bt, v_bt, level) -> dict:
    idx = [i for i, g in enumerate(cells.groupings) if g == grouping]

    def spread(x: np.ndarray) -> np.ndarray:
        sub = x[..., idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: undefined everywhere
            return np.nanmax(sub, axis=-1) - np.nanmin(sub, axis=-1)

    d_val, v_val = spread(d_pt), spread(v_pt)
    sub_v = v_pt[idx]
    finite = np.isfinite(sub_v)
    row = {"variant": name, "grouping": grouping, "metric": metric,
           "dense": float(d_val), "compressed": float(v_val), "change": float(v_val - d_val),
           "max_subgroup": cells.names[idx[int(np.nanargmax(sub_v))]] if finite.any() else "",
           "min_subgroup": cells.names[idx[int(np.nanargmin(sub_v))]] if finite.any() else ""}
    if d_bt is not None:
        s = summarize_bootstrap(v_val - d_val, spread(v_bt) - spread(d_bt), level=level)
        row.update({"change_lo": float(s.lo), "change_hi": float(s.hi),
                    "change_se": float(s.se), "change_p": float(s.p)})
    return row
