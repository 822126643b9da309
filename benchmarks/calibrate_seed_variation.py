"""Which interval for a population comparison holds its nominal rates when seeds vary?

Simulated populations (``compaudit.simulate.simulate_binary``), 5 replicas a side,
paired, each replica with its own logit offset of sd ``--sd`` on every error
probability. For each run, every method gives an interval for the change of FPR and FNR
(``abs_diff``) and of the excess change (``excess_diff``) of every subgroup of the
compressed variant:

- ``examples``: the example-only paired bootstrap (percentile interval; the old method);
- ``replica-boot``: resample the 5 pairs only (percentile);
- ``two-level``: resample pairs, then examples (percentile);
- ``paired-t``: the delete-one-pair jackknife (= s_d^2 / K), t with K - 1 df;
- ``chosen``: jackknife + shared example component, Satterthwaite df (compaudit's);
- ``chosen-z``: the same se with normal quantiles.

Reported: coverage of the truth by the 95% intervals (all rows), the family-wise rate of
runs where a Bonferroni-simultaneous interval (all rows of the family, two-sided 95%)
excludes the truth, and, with ``--harm``, the share of runs where the planted cell's
simultaneous interval lies above 0 (power). Run once; its table is in docs/statistics.md:

``python benchmarks/calibrate_seed_variation.py --runs 200 --sd 0.15``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as sps

from compaudit.analysis._cells import subgroup_cells
from compaudit.analysis._pair_inference import draws, infer
from compaudit.analysis._subgroup_sums import subgroup_sums
from compaudit.analysis.population import build_population
from compaudit.analysis.subgroups import _changes
from compaudit.simulate import PlantedHarm, simulate_binary
from compaudit.tables import validate_examples, validate_predictions

METHODS = ("examples", "replica-boot", "two-level", "paired-t", "chosen", "chosen-z")
CELL = {"Male": True, "Young": False}
CELL_NAME = "Male=True & Young=False"


def _intervals(dense, comp, key, level, rng):
    """{method: (est, lo, hi, half-width function of a tail prob)} for one statistic."""
    stat = lambda d, c: _changes(d, c)[key]  # noqa: E731
    est = stat(dense.point, comp.point)
    boot = stat(dense.boot, comp.boot)
    pairs_boot = stat(dense.boot_pairs, comp.boot_pairs)  # (B, K, S)
    b, k, _ = pairs_boot.shape
    # Each pair's own point statistic, from leave-one-out pooled rates: r_k = K*pool - (K-1)*loo.
    d_pair = k * dense.point - (k - 1) * dense.loo
    c_pair = k * comp.point - (k - 1) * comp.loo
    own = stat(d_pair, c_pair)  # (K, S)
    idx = rng.integers(0, k, (b, k))
    replica_boot = own[idx].mean(axis=1)  # linear statistics: pooled = mean of pairs
    two_level = np.take_along_axis(pairs_boot, idx[:, :, None], axis=1).mean(axis=1)
    s = infer(stat, dense, comp, level=level)
    v_pairs = (k - 1) / k * np.sum(((stat(dense.loo, comp.loo))
                                    - stat(dense.loo, comp.loo).mean(0)) ** 2, axis=0)
    out = {}
    for name, samples in (("examples", boot), ("replica-boot", replica_boot),
                          ("two-level", two_level)):
        sd = np.nanstd(samples, axis=0, ddof=1)
        out[name] = (samples, sd, None)
    out["paired-t"] = (None, np.sqrt(v_pairs), np.full(est.shape, k - 1.0))
    out["chosen"] = (None, s.se, s.df)
    out["chosen-z"] = (None, s.se, None)
    return est, out


def _bounds(est, spec, tail):
    samples, se, df = spec
    if samples is not None:
        lo, hi = np.nanquantile(samples, [tail, 1 - tail], axis=0)
        return lo, hi
    q = sps.norm.ppf(1 - tail) if df is None else sps.t.ppf(1 - tail, df)
    return est - q * se, est + q * se


def run(args) -> None:
    rng = np.random.default_rng(12345)
    harms = (PlantedHarm("c", CELL, "fpr", args.harm),) if args.harm else ()
    cover = {m: [] for m in METHODS}
    fwer = {m: 0 for m in METHODS}
    power = {m: 0 for m in METHODS}
    t0 = time.perf_counter()
    for run_i in range(args.runs):
        ex, pr = simulate_binary(n_examples=args.examples, n_replicas=args.replicas,
                                 variants=("dense", "c"), harms=harms,
                                 replica_logit_sd=args.sd, seed=10_000 + run_i)
        ex = validate_examples(ex)
        pop = build_population(ex, validate_predictions(pr, ex))
        cells = subgroup_cells(pop.examples, ["Male", "Young"])
        sums = subgroup_sums(pop, cells=cells, positive_label=1, n_boot=args.boot,
                             seed=run_i, per_replica_boot=True)
        dd, cd = draws(sums, variant="dense", pairs=True), draws(sums, variant="c", pairs=True)
        planted = np.array(cells.names) == CELL_NAME
        rows = []  # (est, spec, truth, is_planted_fpr_abs)
        for metric in ("fpr", "fnr"):
            for key in ("abs_diff", "excess_diff"):
                est, specs = _intervals(dd[metric], cd[metric], key, 0.95, rng)
                hit = planted & (metric == "fpr") & (key == "abs_diff")
                truth = np.where(hit, args.harm, 0.0)
                family = np.isfinite(est) & ((np.arange(len(est)) > 0) | (key == "abs_diff"))
                # With a harm, only the planted row has a known truth (the cells that
                # contain it change by a share of it).
                keep = hit if args.harm else family
                rows.append((est, specs, truth, keep, hit, family))
        m = sum(int(r[5].sum()) for r in rows)
        for meth in METHODS:
            any_out = False
            for est, specs, truth, keep, hit, _ in rows:
                lo, hi = _bounds(est, specs[meth], 0.025)
                cover[meth] += list(((lo <= truth) & (truth <= hi))[keep])
                slo, shi = _bounds(est, specs[meth], 0.025 / m)
                any_out |= bool((((slo > truth) | (shi < truth)) & keep).any())
                if hit.any():
                    power[meth] += bool((slo[hit] > 0).all())
            fwer[meth] += any_out
    took = time.perf_counter() - t0
    n = args.runs
    print(f"{n} runs x {args.examples} examples, {args.replicas} replicas a side, logit sd "
          f"{args.sd}, harm {args.harm}, B={args.boot} ({took:.0f} s)")
    print("| method | 95% coverage | family-wise error (Bonferroni, 95%) |"
          + (" power (planted cell) |" if args.harm else "")
          + ("  (with a harm: coverage and errors of the planted row only)" if args.harm
             else ""))
    print("|---|---|---|" + ("---|" if args.harm else ""))
    for meth in METHODS:
        line = f"| {meth} | {np.mean(cover[meth]):.3f} | {fwer[meth] / n:.3f} |"
        if args.harm:
            line += f" {power[meth] / n:.3f} |"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--examples", type=int, default=20000)
    ap.add_argument("--replicas", type=int, default=5)
    ap.add_argument("--sd", type=float, default=0.15)
    ap.add_argument("--harm", type=float, default=0.0)
    ap.add_argument("--boot", type=int, default=500)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
