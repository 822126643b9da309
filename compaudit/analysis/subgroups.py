"""Subgroup error rates and how compression changes them.

Subgroups are: everyone (``overall``), each level of each protected attribute, and
every level combination of every intersection of two or more attributes up to a
maximum order (every order for up to 4 attributes, pairs beyond; see
:mod:`compaudit.analysis._cells`). Subgroups smaller than ``min_cell_size`` are
skipped: listed in :attr:`SubgroupResult.skipped`, not analysed. All counts are
computed once per *finest* cell (the full intersection) or base subgroup and summed
into the others, so one pass serves every subgroup.

Binary tasks get n, base rate, selection rate, TPR, FPR, FNR, TNR and accuracy per
variant x replica x subgroup, with percentile bootstrap intervals of FPR and FNR per
replica. Many-class tasks get accuracy (and, from the PIE analysis, the PIE rate).

Change vs dense uses the *population* rate of each variant: the mean over its replicas,
which equals the rate of the replica-summed counts because every replica sees the same
examples. Its uncertainty covers both random draws behind it, the seeds and the
examples (:mod:`compaudit.analysis._pair_inference`): a delete-one-pair jackknife over
the replica pairs (dense k, compressed k) plus the example-sampling variance the pairs
share, from a paired bootstrap over examples (one set of resamples, applied to every
model alike), with a Satterthwaite t quantile. With one replica a side the example-only
bootstrap is used and the result is about that one model (:attr:`SubgroupResult.method`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from compaudit.analysis._cells import (
    DEFAULT_MAX_CELLS,
    SKIPPED_COLUMNS,
    Cells,
    subgroup_cells,
)
from compaudit.analysis._pair_inference import (
    EXAMPLES,
    MODELS,
    PAIRED,
    Draws,
    draws,
    infer,
    mde,
)
from compaudit.analysis._subgroup_sums import SubgroupSums, subgroup_sums
from compaudit.analysis.population import Population
from compaudit.analysis.stats import (
    GROWTH_PCT,
    RATE,
    RATE_CHANGE,
    RATE_CHANGE_DIFF,
    benjamini_hochberg,
    summarize_bootstrap,
    t_interval,
)

__all__ = ["DEFAULT_MAX_CELLS", "SubgroupResult", "subgroup_analysis", "subgroup_cells"]

BINARY_RATES = ("base_rate", "selection_rate", "tpr", "fpr", "fnr", "tnr", "accuracy")
#: Rates whose change is tested; TPR and TNR are 1 - FNR and 1 - FPR. Balanced
#: accuracy (the mean of TPR and TNR) is what the gate's accuracy check reads.
BINARY_DELTA_RATES = ("fpr", "fnr", "selection_rate", "accuracy", "balanced_accuracy")
#: Fewer replica pairs than this make the "procedure" intervals wide (t with K - 1 df).
MIN_PROCEDURE_PAIRS = 5
#: Where each change lies: intervals stay inside (see ``stats.bounded_interval``).
CHANGE_BOUNDS = {"abs_diff": RATE_CHANGE, "rel_change_pct": GROWTH_PCT,
                 "norm_change_pct": (None, None), "excess_diff": RATE_CHANGE_DIFF}
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
class SubgroupResult:
    """Tables of the subgroup analysis (see README for every column).

    ``skipped`` lists the subgroups below the minimum size (subgroup, grouping, order,
    n), which the other tables leave out; ``max_order`` is the largest intersection
    order enumerated; ``method`` says how the changes' uncertainty was computed:
    ``{"kind", "replicas", "note"}`` (see :func:`comparison_method`).
    """

    per_replica: pd.DataFrame
    summary: pd.DataFrame
    deltas: pd.DataFrame
    disparity: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))
    max_order: int = 0
    method: dict[str, Any] = field(default_factory=dict)


def comparison_method(pop: Population, about: str = "procedure") -> dict[str, Any]:
    """How the changes vs dense are inferred: ``kind``, ``about``, ``replicas`` (pairs),
    ``note`` (one sentence a reviewer reads) and ``warning`` (``""`` or why few pairs
    limit what the checks can find; the detectable size is added by the analysis).

    ``about = "procedure"`` with paired replicas (the same replica ids on both sides, at
    least two) gives :data:`~compaudit.analysis._pair_inference.PAIRED`: the intervals
    cover seed-to-seed variation. ``about = "models"``, one replica a side, or replicas
    that cannot be paired give the paired example bootstrap, pooled over the given
    pairs: the intervals describe the very models analysed.
    """
    dense = pop.variants[pop.dense].replicas
    others = [pop.variants[v].replicas for v in pop.compressed]
    paired = bool(others) and all(np.array_equal(dense, r) for r in others)
    k = len(dense)
    pairs = f"{k} replica pair{'s' if k != 1 else ''}"
    if about == "models":
        return {"kind": MODELS, "about": "models", "replicas": k, "warning": "",
                "note": f"About the models at hand: the {pairs} are taken as fixed "
                        "artifacts, as a team ships them, so the intervals cover the "
                        "sampling of test examples (a paired bootstrap over examples), "
                        "not what retraining with another seed would give"}
    if paired and k > 1:
        warning = "" if k >= MIN_PROCEDURE_PAIRS else (
            f"only {k} replica pairs: intervals about the procedure have about {k - 1} "
            f"degrees of freedom; train {MIN_PROCEDURE_PAIRS} or more replicas, or set "
            "[analysis] about = \"models\" to judge the models at hand")
        return {"kind": PAIRED, "about": "procedure", "replicas": k, "warning": warning,
                "note": f"About the compression procedure: the intervals cover both the "
                        f"test examples and the seed-to-seed variation of {pairs}, so "
                        "they say what compressing another model trained the same way "
                        "would do"}
    if k == 1 and all(len(r) == 1 for r in others):
        note = ("About one model: one replica a side, so the intervals cover the examples "
                "only, not seed-to-seed variation; train more replicas to judge the "
                "compression procedure")
    else:
        note = ("About the models at hand: replica ids differ between dense and "
                "compressed variants, so they cannot be paired, and the intervals cover "
                "the examples only, not seed-to-seed variation")
    return {"kind": EXAMPLES, "about": "models", "replicas":
            int(min([k] + [len(r) for r in others])), "warning": "", "note": note}


def subgroup_analysis(
    pop: Population,
    attributes: list[str],
    *,
    positive_label: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    replica_intervals: bool = True,
    max_order: int | None = None,
    min_cell_size: int = 1,
    max_cells: int = DEFAULT_MAX_CELLS,
    about: str = "procedure",
) -> SubgroupResult:
    """Per-replica subgroup rates, their replica summary, and changes vs dense.

    Parameters
    ----------
    pop
        The population.
    attributes
        Protected attributes (names without ``attr.``).
    positive_label
        The positive class of binary tasks.
    n_boot, seed
        Bootstrap resamples (0: no intervals or p-values) and their seed.
    level
        Confidence level of every interval.
    replica_intervals
        ``False`` skips the per-replica bootstrap intervals and resamples only
        replica-summed counts, which is much cheaper for large shift sets.
    max_order
        Largest intersection order (``None``: every order for up to 4 attributes, else 2).
    min_cell_size
        Subgroups with fewer examples are skipped (``SubgroupResult.skipped``).
    max_cells
        More subgroups than this raise :class:`~compaudit.errors.AuditInputError`
        before anything large is allocated.
    about
        ``"procedure"``: intervals of paired populations cover the seeds too;
        ``"models"``: the models at hand are fixed, intervals cover the examples
        (:func:`comparison_method`).
    """
    cells = subgroup_cells(pop.examples, attributes, max_order=max_order,
                           min_size=min_cell_size, max_cells=max_cells)
    method = comparison_method(pop, about)
    pairs = method["kind"] == PAIRED
    sums = subgroup_sums(pop, cells=cells, positive_label=positive_label, n_boot=n_boot,
                         seed=seed, per_replica_boot=replica_intervals or pairs)
    per_replica = _per_replica_table(pop=pop, cells=cells, sums=sums, level=level,
                                     with_intervals=replica_intervals)
    summary = _summary_table(per_replica, binary=pop.is_binary)
    deltas, disparity = _delta_tables(pop=pop, cells=cells, sums=sums, level=level,
                                      pairs=pairs, replicas=method["replicas"])
    return SubgroupResult(per_replica, summary, deltas, disparity, cells.skipped,
                          cells.max_order, method)


def _per_replica_table(*, pop: Population, cells: Cells, sums: SubgroupSums, level: float,
                       with_intervals: bool) -> pd.DataFrame:
    """One row per (variant, replica, subgroup): counts, rates, bootstrap intervals."""
    frames = []
    interval_rates = ("fpr", "fnr") if pop.is_binary else ("accuracy",)
    counts = ("n", "positives", "negatives")
    for name, variant in pop.variants.items():
        for r in range(variant.n_replicas):
            rates = sums.rates(variant=name, replica=r)
            frame = pd.DataFrame({"variant": name, "replica": int(variant.replicas[r]),
                                  "subgroup": cells.names, "grouping": cells.groupings})
            for key, val in rates.items():
                frame[key] = val.astype(np.int64) if key in counts else val
            boot_rates = sums.boot_rates(variant=name, replica=r) if with_intervals else None
            if boot_rates is not None:
                for key in interval_rates:
                    s = summarize_bootstrap(rates[key], boot_rates[key], level=level)
                    frame[f"{key}_lo"], frame[f"{key}_hi"] = s.lo, s.hi
            frame["note"] = _notes(rates)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _notes(rates: dict[str, np.ndarray]) -> list[str]:
    """Why rates are undefined, per subgroup ("" where every rate is defined)."""
    undefined: dict[str, np.ndarray] = {}
    for key, msg in UNDEFINED.items():
        if key in rates:
            missing = ~np.isfinite(rates[key])
            undefined[msg] = undefined[msg] | missing if msg in undefined else missing
    masks = [(msg, undefined[msg]) for msg in sorted(undefined)]
    return ["; ".join(msg for msg, mask in masks if mask[i]) for i in range(len(rates["n"]))]


def _summary_table(per_replica: pd.DataFrame, *, binary: bool) -> pd.DataFrame:
    """Mean, std and t-interval over replicas, one row per (variant, subgroup, metric).

    ``per_replica`` holds, per variant, one block of subgroups per replica in the same
    order, so each variant's rates reshape to (subgroups, replicas).
    """
    metrics = BINARY_RATES if binary else ("accuracy",)
    variants = per_replica["variant"].to_numpy()
    frames = []
    for name in pd.unique(variants):
        block = per_replica.iloc[np.flatnonzero(variants == name)]
        n_replicas = block["replica"].nunique()
        n_sub = len(block) // n_replicas
        first = block.iloc[:n_sub]
        stats = {}
        for metric in metrics:
            values = np.ascontiguousarray(block[metric].to_numpy(float)
                                          .reshape(n_replicas, n_sub).T)
            stats[metric] = t_interval(values, axis=1, bounds=RATE)
        frames.append(pd.DataFrame({
            "variant": name, "subgroup": np.repeat(first["subgroup"].to_numpy(), len(metrics)),
            "grouping": np.repeat(first["grouping"].to_numpy(), len(metrics)),
            "metric": np.tile(np.array(metrics, object), n_sub),
            "n": np.repeat(first["n"].to_numpy(np.int64), len(metrics)),
            "replicas": n_replicas,
            **{col: np.stack([stats[m][i] for m in metrics], axis=1).ravel().astype(float)
               for i, col in enumerate(("mean", "std", "lo", "hi"))}}))
    return pd.concat(frames, ignore_index=True)


def _delta_tables(*, pop: Population, cells: Cells, sums: SubgroupSums, level: float,
                  pairs: bool, replicas: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Changes of the population rates vs dense per subgroup, and of their spread."""
    metrics = BINARY_DELTA_RATES if pop.is_binary else ("accuracy",)
    n_shared = sums.point_layout.n_shared
    subgroup_n = sums.point[:, :n_shared].sum(axis=1).astype(np.int64)
    # Examples each rate is a share of: negatives for FPR, positives for FNR, else all.
    denominators = ({"fpr": sums.point[:, 1], "fnr": sums.point[:, 0],
                     "selection_rate": subgroup_n, "accuracy": subgroup_n,
                     "balanced_accuracy": np.minimum(sums.point[:, 0], sums.point[:, 1])}
                    if pop.is_binary else {"accuracy": subgroup_n})
    dense_draws = _with_balanced(draws(sums, variant=pop.dense, pairs=pairs))
    members: dict[str, list[int]] = {}
    for i, g in enumerate(cells.groupings):
        members.setdefault(g, []).append(i)
    groupings = [g for g in members if g != "overall"]
    delta_frames, disparity_rows = [], []
    for name in pop.compressed:
        variant_draws = _with_balanced(draws(sums, variant=name, pairs=pairs))
        for metric in metrics:
            pair = {"dense": dense_draws[metric], "compressed": variant_draws[metric]}
            delta_frames.append(_delta_frame(
                variant=name, metric=metric, cells=cells, subgroup_n=subgroup_n,
                denominator=denominators[metric], level=level, replicas=replicas, **pair))
            disparity_rows += [_disparity_row(variant=name, grouping=grouping, metric=metric,
                                              cells=cells, idx=members[grouping], level=level,
                                              **pair)
                               for grouping in groupings]
    deltas = pd.concat(delta_frames, ignore_index=True) if delta_frames else pd.DataFrame()
    disparity = pd.DataFrame(disparity_rows)
    if sums.boot is not None:
        _add_q_values(deltas, disparity)
    return deltas, disparity


def _with_balanced(rates: dict[str, Draws]) -> dict[str, Draws]:
    """Add balanced accuracy, ``1 - (FPR + FNR) / 2``, to a binary task's rates (every
    part of the draws alike, so its inference is paired like the others')."""
    if "fpr" not in rates:
        return rates
    fpr, fnr = rates["fpr"], rates["fnr"]

    def bal(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        return None if a is None or b is None else 1.0 - (a + b) / 2.0

    return {**rates, "balanced_accuracy": Draws(
        1.0 - (fpr.point + fnr.point) / 2.0, bal(fpr.loo, fnr.loo), bal(fpr.boot, fnr.boot),
        bal(fpr.boot_pairs, fnr.boot_pairs))}


def _delta_frame(*, variant: str, metric: str, cells: Cells, subgroup_n: np.ndarray,
                 denominator: np.ndarray, dense: Draws, compressed: Draws, level: float,
                 replicas: int) -> pd.DataFrame:
    """One row per subgroup: the changes of one rate, their intervals and p-values."""
    dense_rate = dense.point
    frame = pd.DataFrame({"variant": variant, "subgroup": cells.names,
                          "grouping": cells.groupings, "metric": metric, "n": subgroup_n,
                          "replicas": replicas, "dense": dense_rate,
                          "compressed": compressed.point})
    resampled = dense.boot is not None and compressed.boot is not None
    cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def changes(d: np.ndarray, c: np.ndarray, key: str) -> np.ndarray:
        """One key of :func:`_changes`, computed once per pair of rate arrays."""
        if (id(d), id(c)) not in cache:
            cache[(id(d), id(c))] = _changes(d, c)
        return cache[(id(d), id(c))][key]

    for key in ("abs_diff", "rel_change_pct", "norm_change_pct", "excess_diff"):
        s = infer(partial(changes, key=key), dense, compressed, level=level,
                  bounds=CHANGE_BOUNDS[key])
        frame[key] = s.estimate
        if resampled:
            frame[f"{key}_lo"], frame[f"{key}_hi"] = s.lo, s.hi
            frame[f"{key}_se"] = s.se  # the gate builds corrected intervals from it
            frame[f"{key}_df"] = s.df  # and takes t quantiles with these df (NaN: normal)
            if key != "rel_change_pct":  # the relative test is the abs_diff test
                frame[f"{key}_p"] = s.p
            if key == "abs_diff":
                # A change of a rate is at most 1: a larger one cannot be detected (NaN).
                size = mde(s.se, s.df, level=level)
                frame["mde"] = np.where(size <= RATE_CHANGE[1], size, np.nan)
    events = dense_rate * denominator
    testable = np.minimum(events, denominator - events) >= MIN_EVENTS
    if resampled:
        frame.loc[~testable, "norm_change_pct_p"] = np.nan
        # The overall row's normalized and excess changes are 0 by construction.
        overall = frame["subgroup"] == "overall"
        frame.loc[overall, ["norm_change_pct_p", "excess_diff_p"]] = np.nan
    frame["note"] = _delta_notes(dense_rate, metric=metric, testable=testable)
    return frame


def _add_q_values(deltas: pd.DataFrame, disparity: pd.DataFrame) -> None:
    """Benjamini-Hochberg q-values, in place."""
    if not deltas.empty:
        # One family across every test of the table: all variants, subgroups and
        # metrics, absolute, normalized and excess changes together.
        tested = ("abs_diff", "norm_change_pct", "excess_diff")
        q = benjamini_hochberg(np.concatenate([deltas[f"{k}_p"].to_numpy() for k in tested]))
        for i, k in enumerate(tested):
            deltas[f"{k}_q"] = q[i * len(deltas) : (i + 1) * len(deltas)]
    if not disparity.empty:
        disparity["change_q"] = benjamini_hochberg(disparity["change_p"].to_numpy())


def _changes(dense: np.ndarray, compressed: np.ndarray) -> dict[str, np.ndarray]:
    """Absolute, relative (%) and normalized (%) change; last axis = subgroups, 0 = overall."""
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = compressed - dense
        rel = np.where(dense != 0, 100.0 * diff / dense, np.nan)
    norm = rel - rel[..., :1]
    # The subgroup's change beyond the model-wide change, in rate units: robust where the
    # subgroup's baseline rate differs from the overall one (relative changes are not).
    excess = diff - diff[..., :1]
    return {"abs_diff": diff, "rel_change_pct": rel, "norm_change_pct": norm,
            "excess_diff": excess}


def _delta_notes(dense: np.ndarray, *, metric: str, testable: np.ndarray) -> list[str]:
    out = []
    for rate, ok in zip(dense, testable):
        if not np.isfinite(rate):
            out.append(UNDEFINED.get(metric, "rate undefined in subgroup"))
        elif rate == 0:
            out.append("dense rate is 0: relative change undefined")
        elif not ok:
            out.append(f"fewer than {MIN_EVENTS} dense events or non-events per replica: "
                       "normalized change not tested")
        else:
            out.append("")
    return out


def _disparity_row(*, variant: str, grouping: str, metric: str, cells: Cells, idx: list[int],
                   dense: Draws, compressed: Draws, level: float) -> dict[str, Any]:
    """Spread (max - min over a grouping's subgroups) of a rate, dense vs compressed."""
    def spread(x: np.ndarray) -> np.ndarray:
        sub = x[..., idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: undefined everywhere
            return np.asarray(np.nanmax(sub, axis=-1) - np.nanmin(sub, axis=-1))

    dense_spread, variant_spread = spread(dense.point), spread(compressed.point)
    in_grouping = compressed.point[idx]
    finite = np.isfinite(in_grouping)
    row = {"variant": variant, "grouping": grouping, "metric": metric,
           "dense": float(dense_spread), "compressed": float(variant_spread),
           "change": float(variant_spread - dense_spread),
           "max_subgroup": cells.names[idx[int(np.nanargmax(in_grouping))]] if finite.any() else "",
           "min_subgroup": cells.names[idx[int(np.nanargmin(in_grouping))]] if finite.any() else ""}
    if dense.boot is not None and compressed.boot is not None:
        s = infer(lambda d, c: spread(c) - spread(d), dense, compressed, level=level,
                  bounds=RATE_CHANGE)
        row.update({"change_lo": float(s.lo), "change_hi": float(s.hi),
                    "change_se": float(s.se), "change_df": float(s.df),
                    "change_p": float(s.p)})
    return row
