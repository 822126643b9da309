"""Pre-compression risk screen: which examples and groups compression will likely hurt.

Computed from the dense population alone, before any compute goes into compression.
Iofinova et al. (CVPR 2023, "Bias in Pruned Vision Models") link compression harm to the
dense model's output uncertainty; we score each example three ways:

- ``entropy``: entropy (nats) of the dense replicas' mean predicted distribution. For
  binary tasks the distribution is exact (``p_pos``); for many-class tasks only the
  predicted class's probability ``p_pred`` is known, so each replica contributes
  ``p_pred`` to its predicted class and the rest to one "other" bucket (without
  ``p_pred``: the histogram of the replicas' votes). Needs no label.
- ``disagreement``: share of dense replicas that do not vote for the modal prediction
  (0 when all agree). Needs no label, but takes only R distinct values for R replicas.
- ``margin``: minus the mean over replicas of the true-class probability margin
  ``p_true - max_{c != y} p_c`` (binary: ``2 p_true - 1``; many-class: ``p_true - p_pred``
  when the replica is wrong, the bound ``2 p_true - 1`` when it is right). Needs labels.

The **risk score** is ``entropy``. On the demo (5 dense replicas, synthetic faces) its
AUROC for gmp-90's PIEs was 0.972 against 0.961 for the margin and 0.647 for the
disagreement (coarse with 5 replicas); the sum of the entropy and disagreement ranks did
no better (0.971), so one interpretable score is kept. Every analysis with compressed
variants reports all three AUROCs, so the choice can be revisited on other data.

An example is **at risk** when its score is in the top ``top`` fraction (ties at the
boundary broken by the examples' order). Per attribute cell the screen reports the
at-risk rate, its ratio to the overall rate, and the expected over-index: the
within-label Mantel-Haenszel over-index of :func:`~compaudit.analysis.pie.
overindex_within_label` with "at risk" in place of "PIE", the prediction of the measured
PIE over-index.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from compaudit._atomic import atomic_path, atomic_write_text
from compaudit.analysis._cells import cell_label
from compaudit.analysis.pie import modal_prediction, overindex_within_label
from compaudit.analysis.population import Population, build_population
from compaudit.errors import AuditInputError
from compaudit.rundir import jsonable, make_folder
from compaudit.tables import read_examples, read_predictions

__all__ = [
    "CANDIDATES",
    "RISK_SCORE",
    "ScreenResult",
    "dense_p_true",
    "format_screen",
    "precision_at",
    "roc_auc",
    "screen_files",
    "screen_population",
    "validate_screen",
]

#: The candidate scores, every one "higher = more at risk".
CANDIDATES = ("entropy", "disagreement", "margin")
#: The candidate used as the risk score (see the module docstring for why).
RISK_SCORE = "entropy"
#: Fractions of examples whose precision the validation reports.
PRECISION_AT = {"precision_at_1pct": 0.01, "precision_at_5pct": 0.05}


@dataclass
class ScreenResult:
    """Per-example scores and the per-cell expected-harm summary.

    Attributes
    ----------
    scores
        ``screen_scores.csv``: example_id, label, the ``attr.*`` columns, ``risk``, each
        candidate score, ``risk_rank`` (1 = most at risk) and ``at_risk``.
    groups
        ``screen_groups.csv``: per attribute cell n, n_at_risk, at_risk_rate, rate_ratio
        (to the overall at-risk rate), mean_risk, and the expected within-label
        over-index (``expected_growth_pct`` with ``lo``/``hi``, Mantel-Haenszel over labels).
    summary
        ``metrics.json["screen_summary"]``: the score used, ``top``, counts.
    """

    scores: pd.DataFrame
    groups: pd.DataFrame
    summary: dict[str, Any]

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``screen_scores.csv``, ``screen_groups.csv`` and ``screen.json``."""
        out = Path(out_dir)
        make_folder(out, what="screen output folder")
        paths = {"scores": out / "screen_scores.csv", "groups": out / "screen_groups.csv",
                 "summary": out / "screen.json"}
        for key in ("scores", "groups"):
            with atomic_path(paths[key]) as tmp:
                getattr(self, key).to_csv(tmp, index=False)
        doc = {**self.summary, "groups": jsonable(self.groups.to_dict(orient="records"))}
        atomic_write_text(paths["summary"],
                          json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n")
        return paths


def dense_p_true(pop: Population, predictions: pd.DataFrame) -> np.ndarray:
    """The dense replicas' true-class probabilities, shape (R, N), aligned to ``pop``."""
    dense = pop.variants[pop.dense]
    rows = predictions[predictions["variant"].astype(str) == pop.dense]
    col = pd.Index(pop.examples["example_id"].astype(str)).get_indexer(
        rows["example_id"].astype(str))
    keep = col >= 0
    rep = np.searchsorted(dense.replicas, rows["replica"].to_numpy()[keep])
    out = np.full(dense.pred.shape, np.nan)
    out[rep, col[keep]] = rows["p_true"].to_numpy(float)[keep]
    return out


def _entropy(q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(-np.where(q > 0, q * np.log(q), 0.0))


def _mean_entropy(pop: Population) -> np.ndarray:
    dense = pop.variants[pop.dense]
    if dense.p_pos is not None:
        q = dense.p_pos.astype(float).mean(axis=0)
        return np.asarray(_entropy(q) + _entropy(1.0 - q))
    r = dense.n_replicas
    mass = (dense.p_pred.astype(float) if dense.p_pred is not None
            else np.ones(dense.pred.shape))
    order = np.argsort(dense.pred, axis=0, kind="stable")
    v = np.take_along_axis(dense.pred, order, axis=0)
    w = np.take_along_axis(mass, order, axis=0) / r
    total = np.zeros(v.shape[1])
    run = w[0].copy()
    for j in range(1, r):
        same = v[j] == v[j - 1]
        total += np.where(same, 0.0, _entropy(run))
        run = np.where(same, run + w[j], w[j])
    total += _entropy(run)
    other = np.clip(1.0 - mass.mean(axis=0), 0.0, 1.0)
    return np.asarray(total + _entropy(other))


def _candidates(pop: Population, p_true: np.ndarray) -> dict[str, np.ndarray]:
    dense = pop.variants[pop.dense]
    _, count = modal_prediction(dense.pred)
    right = dense.pred == pop.labels[None, :]
    if dense.p_pos is not None:
        margin = 2.0 * p_true - 1.0
    else:
        p_pred = dense.p_pred.astype(float) if dense.p_pred is not None else p_true
        margin = np.where(right, 2.0 * p_true - 1.0, p_true - p_pred)
    return {"entropy": _mean_entropy(pop),
            "disagreement": 1.0 - count / dense.n_replicas,
            "margin": -np.nanmean(margin, axis=0)}


def _check_top(top: float) -> None:
    if not (isinstance(top, (int, float)) and 0 < top <= 1):
        raise AuditInputError(f"screen option top: got {top!r}; expected a fraction in (0, 1] "
                              "(0.05 flags the 5% of examples most at risk)")


def screen_population(pop: Population, p_true: np.ndarray, attributes: list[str], *,
                      top: float = 0.05, level: float = 0.95) -> ScreenResult:
    """Score every example of ``pop`` from its dense population alone.

    Parameters
    ----------
    pop
        A population; only its dense variant is read.
    p_true
        The dense replicas' true-class probabilities (R, N), see :func:`dense_p_true`.
    attributes
        Protected attributes whose cells the summary covers (may be empty).
    top
        Fraction of examples flagged as at risk (highest risk first).
    level
        Confidence level of the expected over-index intervals.
    """
    _check_top(top)
    n = len(pop.labels)
    cand = _candidates(pop, p_true)
    risk = cand[RISK_SCORE]
    order = np.argsort(-risk, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(1, n + 1)
    k = max(1, math.ceil(top * n))
    keys = [f"attr.{a}" for a in attributes]
    scores = pd.DataFrame({"example_id": pop.examples["example_id"].to_numpy(),
                           "label": pop.labels})
    for key in keys:
        scores[key] = pop.examples[key].to_numpy()
    scores["risk"] = risk
    for name, values in cand.items():
        scores[name] = values
    scores["risk_rank"] = rank
    scores["at_risk"] = rank <= k
    groups = _groups(pop, scores, attributes, level=level)
    summary = {"score": RISK_SCORE, "candidates": list(CANDIDATES), "top": top,
               "n_examples": n, "n_at_risk": int(k), "replicas": pop.variants[pop.dense].n_replicas}
    return ScreenResult(scores=scores, groups=groups, summary=summary)


def screen_files(examples: str | Path, predictions: str | Path, *, dense: str = "dense",
                 protected: tuple[str, ...] | None = None, top: float = 0.05,
                 shift: str = "clean", level: float = 0.95) -> ScreenResult:
    """Read, validate and screen a dense population (``compaudit screen``).

    Rows of other variants are validated with the table, then ignored: the screen reads
    only ``dense``, so it runs before any compression. ``summary["ignored_variants"]``
    names them. ``protected`` defaults to every ``attr.*`` column; ``shift`` picks the
    examples scored.
    """
    _check_top(top)  # before reading: a bad option fails fast
    ex = read_examples(examples)
    pr = read_predictions(predictions, ex, dense=dense)
    variant = pr["variant"].astype(str)
    ignored = sorted(set(variant.unique()) - {dense})
    pr = pr[(variant == dense).to_numpy()].reset_index(drop=True)
    pr["variant"] = pr["variant"].cat.remove_unused_categories()
    pop = build_population(ex, pr, dense=dense)
    attributes = list(protected) if protected is not None else pop.attributes
    unknown = [a for a in attributes if a not in pop.attributes]
    if unknown:
        raise AuditInputError(
            f"examples: protected attribute(s) {', '.join(map(repr, unknown))} not found; "
            f"the examples table has {', '.join(map(repr, pop.attributes)) or 'no attr.* columns'}")
    mask = pop.examples["shift"].to_numpy() == shift
    if not mask.any():
        raise AuditInputError(f"examples: no rows with shift {shift!r}; found "
                              f"{', '.join(sorted(pop.examples['shift'].unique()))}")
    pop = pop.subset(mask) if not mask.all() else pop
    result = screen_population(pop, dense_p_true(pop, pr), attributes, top=top, level=level)
    result.summary.update(dense=dense, shift=shift, ignored_variants=ignored)
    return result


def format_screen(result: ScreenResult, *, limit: int = 12) -> str:
    """Terminal summary: the score, the flagged count, the cells most at risk."""
    s = result.summary
    lines = [f"screen: {s['n_at_risk']} of {s['n_examples']} examples at risk (top "
             f"{100 * s['top']:g}% by {s['score']} of the mean prediction of "
             f"{s['replicas']} dense replicas)"]
    if s.get("ignored_variants"):
        lines.append(f"ignored (not dense): {', '.join(s['ignored_variants'])}")
    g = result.groups
    if not g.empty:
        keys = [c for c in g.columns if c.startswith("attr.")]
        lines.append(f"{'cell':<34}{'n':>8}{'at risk':>9}{'rate ratio':>12}"
                     f"{'expected within-label growth':>34}")
        for r in g.head(limit).to_dict("records"):
            cell = cell_label((k.removeprefix("attr."), r[k]) for k in keys)
            growth = (f"{r['expected_growth_pct']:+.0f}% [{r['lo']:+.0f}, {r['hi']:+.0f}]"
                      if np.isfinite(r["expected_growth_pct"]) else "n/a")
            lines.append(f"{cell[:33]:<34}{r['n']:>8}{r['n_at_risk']:>9}"
                         f"{r['rate_ratio']:>12.2f}{growth:>34}")
    return "\n".join(lines)


def _groups(pop: Population, scores: pd.DataFrame, attributes: list[str], *,
            level: float) -> pd.DataFrame:
    if not attributes:
        return pd.DataFrame()
    keys = [f"attr.{a}" for a in attributes]
    overall = scores["at_risk"].mean()
    groups = (scores.groupby(keys, observed=True, sort=True)
              .agg(n=("risk", "size"), n_at_risk=("at_risk", "sum"), mean_risk=("risk", "mean"))
              .reset_index())
    groups["at_risk_rate"] = groups["n_at_risk"] / groups["n"]
    groups["rate_ratio"] = groups["at_risk_rate"] / overall
    flagged = pd.DataFrame({"variant": "screen", "is_pie": scores["at_risk"].to_numpy()})
    _, mh = overindex_within_label(pop, flagged, attributes, level=level)
    mh = mh[keys + ["relative_growth_pct", "lo", "hi", "q_value"]].rename(
        columns={"relative_growth_pct": "expected_growth_pct", "q_value": "expected_q"})
    out = groups.merge(mh, on=keys, how="left")
    return out.sort_values("expected_growth_pct", ascending=False, kind="stable",
                           na_position="last").reset_index(drop=True)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n1 n0), ties counted half); NaN
    without both classes."""
    y = np.asarray(y, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = sps.rankdata(score)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def precision_at(y: np.ndarray, score: np.ndarray, fraction: float) -> float:
    """Share of positives among the ``ceil(fraction * N)`` highest scores (ties broken by
    order)."""
    y = np.asarray(y, bool)
    k = max(1, math.ceil(fraction * len(y)))
    top = np.argsort(-np.asarray(score, float), kind="stable")[:k]
    return float(y[top].mean())


def validate_screen(result: ScreenResult, pies: pd.DataFrame,
                    overindex_mh: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """The screen against each compressed variant's measured PIEs.

    Returns ``{variant: {...}}`` with ``n_pie``, ``pie_rate``, ``auroc`` (of the risk
    score), ``precision_at_1pct``, ``precision_at_5pct``, ``recall_at_top`` (share of PIEs
    among the at-risk examples), ``auroc_<candidate>`` for each candidate, and
    ``cell_spearman``: the rank correlation across attribute cells of the expected
    over-index with the measured within-label over-index (``overindex_mh``).
    """
    scores = result.scores
    out: dict[str, dict[str, Any]] = {}
    if pies.empty:
        return out
    index = pd.Index(scores["example_id"].astype(str))
    for name, grp in pies.groupby("variant", sort=False):
        pos = index.get_indexer(grp["example_id"].astype(str))
        y = np.zeros(len(scores), bool)
        y[pos[pos >= 0]] = grp["is_pie"].to_numpy(bool)[pos >= 0]
        risk = scores["risk"].to_numpy(float)
        entry = {"score": RISK_SCORE, "n_pie": int(y.sum()), "pie_rate": float(y.mean()),
                 "auroc": roc_auc(y, risk)}
        for key, fraction in PRECISION_AT.items():
            entry[key] = precision_at(y, risk, fraction) if y.any() else math.nan
        at_risk = scores["at_risk"].to_numpy(bool)
        entry["recall_at_top"] = float(y[at_risk].sum() / y.sum()) if y.any() else math.nan
        for cand in CANDIDATES:
            entry[f"auroc_{cand}"] = roc_auc(y, scores[cand].to_numpy(float))
        entry["cell_spearman"] = _cell_agreement(result.groups, overindex_mh, str(name))
        out[str(name)] = entry
    return out


def _cell_agreement(groups: pd.DataFrame, mh: pd.DataFrame | None, variant: str) -> float:
    if groups.empty or mh is None or mh.empty:
        return math.nan
    keys = [c for c in groups.columns if c.startswith("attr.")]
    measured = mh[mh["variant"] == variant][keys + ["relative_growth_pct"]]
    both = groups.merge(measured, on=keys).dropna(
        subset=["expected_growth_pct", "relative_growth_pct"])
    if len(both) < 3:
        return math.nan
    rho = sps.spearmanr(both["expected_growth_pct"], both["relative_growth_pct"]).statistic
    return float(rho) if np.isfinite(rho) else math.nan
