"""Subgroup analysis at CelebA's shape: 40 binary attributes, pairs, B = 1000.

Workload (issue "Safe at the door"): 20,000 examples with 40 binary protected attributes
(CelebA's count; Male and Young from the simulated CelebA joint, 38 more drawn with
prevalences between 5% and 50%), 5 replicas x 3 variants (dense + 2 compressed),
intersections up to order 2 (the default beyond 4 attributes): 1 + 80 + 3,120 subgroups.
Times one :func:`~compaudit.analysis.subgroups.subgroup_analysis` call: per-replica
rates with bootstrap intervals, replica summaries, paired deltas vs dense with p and q,
and disparity per grouping.

Run: ``python benchmarks/bench_subgroups_celeba.py [--examples 20000 --boot 1000]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from compaudit.analysis.population import build_population
from compaudit.analysis.subgroups import subgroup_analysis
from compaudit.simulate import simulate_binary
from compaudit.tables import validate_examples, validate_predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20000)
    ap.add_argument("--replicas", type=int, default=5)
    ap.add_argument("--attributes", type=int, default=40)
    ap.add_argument("--order", type=int, default=2)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()

    ex, pr = simulate_binary(n_examples=args.examples, n_replicas=args.replicas,
                             variants=("dense", "gmp-50", "gmp-90"), seed=0)
    rng = np.random.default_rng(1)
    for a in range(args.attributes - 2):
        ex[f"attr.A{a:02d}"] = rng.random(len(ex)) < rng.uniform(0.05, 0.5)
    ex = validate_examples(ex)
    pop = build_population(ex, validate_predictions(pr, ex))
    attributes = pop.attributes

    t0 = time.perf_counter()
    res = subgroup_analysis(pop, attributes, n_boot=args.boot, seed=0, max_order=args.order)
    wall = time.perf_counter() - t0

    cells = res.per_replica["subgroup"].nunique()
    print(f"workload: {args.examples} examples, {len(attributes)} binary attributes, order "
          f"{res.max_order}, {args.replicas} replicas x 3 variants, B={args.boot}")
    print(f"subgroups: {cells} analysed ({len(res.skipped)} skipped), "
          f"{res.deltas.shape[0]} delta rows, {res.disparity.shape[0]} disparity rows")
    print(f"subgroup_analysis wall time: {wall:.1f} s")


if __name__ == "__main__":
    main()
