"""Does slice discovery find a planted slice, and stay quiet when nothing was planted?

Simulated populations (``compaudit.simulate.simulate_slices``): Gaussian-cluster
embeddings, a binary task with realistic dense error, K paired replicas with seed noise,
and one planted cluster (a share ``size`` of the examples) whose compressed replicas err
``effect`` more often (0: the null, compression changes nothing anywhere). Each run calls
:func:`compaudit.analysis.slices.find_slices` with its defaults (8 slices, half the
examples to discover, half to test) and scores its top slice (slice 0):

- precision and recall of its members (all examples, by embedding) against the planted
  membership;
- ``significant``: the share of runs where the top slice has q < 0.05 and change > 0;
- ``any slice``: the share of runs where *any* slice has q < 0.05 (under the null, the
  false-slice rate; its target is <= 0.05).

Prints a markdown table (the one in docs/statistics.md, "Slices compression breaks"):

``python benchmarks/calibrate_slices.py --runs 100 --bootstrap 200``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from compaudit.analysis.slices import SliceOptions, find_slices
from compaudit.simulate import simulate_slices


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _one(size: float, effect: float, seed: int, args: argparse.Namespace) -> dict[str, float]:
    pop, emb, planted = simulate_slices(
        n_examples=args.examples, size=size, effect=effect, n_replicas=args.replicas,
        replica_logit_sd=args.seed_sd, separation=args.separation, seed=seed)
    res = find_slices(pop, emb, bootstrap=args.bootstrap, options=SliceOptions(seed=seed))
    top = res.members.loc[res.members["slice"] == 0, "example_id"]
    hit = top.isin(pop.examples["example_id"][planted])
    row = res.table.iloc[0]
    return {"precision": float(hit.mean()), "recall": float(hit.sum() / planted.sum()),
            "significant": float(row["q"] < 0.05 and row["change"] > 0),
            "any": float((res.table["q"] < 0.05).any()),
            "top_change": float(row["change"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per setting")
    parser.add_argument("--sizes", type=_floats, default=[0.02, 0.05, 0.10])
    parser.add_argument("--effects", type=_floats, default=[0.0, 0.10, 0.30])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--seed-sd", type=float, default=0.15,
                        help="sd of each replica's logit offset (seed noise)")
    parser.add_argument("--separation", type=float, default=6.0,
                        help="mean distance between cluster centres, in within-cluster sd")
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"{args.runs} runs per setting; {args.examples} examples, {args.replicas} replica "
          f"pair(s), seed sd {args.seed_sd}, separation {args.separation}, B = "
          f"{args.bootstrap}; slices at their defaults ({SliceOptions()})\n")
    print("| size | effect | precision | recall | top slice significant | any slice "
          "significant | top slice change |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=1):
        for size in args.sizes:
            for effect in args.effects:
                runs = [_one(size, effect, 1000 * i + 7, args) for i in range(args.runs)]
                mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
                print(f"| {size:.0%} | {effect:+.0%} | {mean['precision']:.2f} | "
                      f"{mean['recall']:.2f} | {mean['significant']:.2f} | "
                      f"{mean['any']:.2f} | {mean['top_change']:+.3f} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
