"""Do the intervals hold their nominal rates for both estimands, inside their ranges?

Two simulations with a known truth, each run ``--runs`` times:

- ``models``: fixed models (``compaudit.simulate.simulate_fixed_models``): 3 dense
  models that differ a lot (error 5%, 15%, 30%) and their compressed models (+10 pp FNR
  on men, 5% of other predictions flipped); each run draws a new test set from the
  infinite population. Analysed with ``about = "models"`` (the paired example bootstrap
  pooled over the pairs); the truth is the population change of the pooled rate.
- ``procedure``: ``simulate_binary`` populations with seed-to-seed variation (5 pairs,
  logit sd 0.15, no planted harm: truth 0), analysed with ``about = "procedure"``
  (the paired-replica interval, on Fisher's z scale since this version).
- ``near-bound``: the ``models`` setting with a harm of 90 pp (changes near +1), where a
  Wald interval would leave [-1, 1].

Reported per setting: coverage of the 95% intervals of ``abs_diff`` of FPR and FNR in
the 9 subgroups of Male x Young, the family-wise error of the gate's Bonferroni-
simultaneous intervals over those 18 rows (built as the gate builds them:
``stats.bounded_interval`` with the row's se and df), and the share of intervals that
leave [-1, 1] (must be 0). Run once; the table is in docs/statistics.md:

``python benchmarks/calibrate_estimands.py --runs 300``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as sps

from compaudit.analysis.population import build_population
from compaudit.analysis.stats import RATE_CHANGE, bounded_interval
from compaudit.analysis.subgroups import subgroup_analysis
from compaudit.simulate import simulate_binary, simulate_fixed_models
from compaudit.tables import validate_examples, validate_predictions


def _setting(name: str, run: int):
    """(examples, predictions, truth by (rate, subgroup), about) of one simulated run."""
    if name == "procedure":
        ex, pr = simulate_binary(n_examples=20000, n_replicas=5, variants=("dense", "c"),
                                 replica_logit_sd=0.15, seed=run)
        return ex, pr, None, "procedure"
    harm = 0.9 if name == "near-bound" else 0.10
    ex, pr, truth = simulate_fixed_models(n_examples=4000, harm=harm, flip=0.05, seed=run,
                                          dense_error=(0.02, 0.04, 0.06) if harm > 0.5
                                          else (0.05, 0.15, 0.30))
    return ex, pr, truth, "models"


def _one(name: str, run: int, n_boot: int) -> tuple[float, bool, float]:
    ex, pr, truth, about = _setting(name, run)
    ex = validate_examples(ex)
    pop = build_population(ex, validate_predictions(pr, ex), dense="dense")
    res = subgroup_analysis(pop, ["Male", "Young"], n_boot=n_boot, seed=run, about=about,
                            replica_intervals=False)
    d = res.deltas[res.deltas["metric"].isin(["fpr", "fnr"])]
    tr = (np.zeros(len(d)) if truth is None
          else np.array([truth[(m, s)] for m, s in zip(d["metric"], d["subgroup"])]))
    covered = (d["abs_diff_lo"] <= tr) & (tr <= d["abs_diff_hi"])
    tail = 0.05 / (2 * len(d))
    df = d["abs_diff_df"].to_numpy(float)
    crit = np.where(np.isfinite(df), sps.t.ppf(1 - tail, np.where(np.isfinite(df), df, 1)),
                    sps.norm.ppf(1 - tail))
    lo, hi = bounded_interval(d["abs_diff"].to_numpy(float), d["abs_diff_se"].to_numpy(float),
                              crit, RATE_CHANGE)
    outside = np.mean((d["abs_diff_lo"] < -1) | (d["abs_diff_hi"] > 1) | (lo < -1) | (hi > 1))
    return float(covered.mean()), bool(np.any((lo > tr) | (tr > hi))), float(outside)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--settings", default="models,near-bound,procedure")
    args = ap.parse_args()
    print("| setting | runs | 95% coverage | family-wise error (18 rows) | outside range |")
    print("|---|---|---|---|---|")
    for name in args.settings.split(","):
        start = time.perf_counter()
        out = [_one(name, run, args.bootstrap) for run in range(args.runs)]
        cov, fwe, outside = (np.mean([o[i] for o in out]) for i in range(3))
        print(f"| {name} | {args.runs} | {cov:.3f} | {fwe:.3f} | {outside:.3f} |"
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
