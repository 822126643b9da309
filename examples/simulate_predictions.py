"""Write a simulated CelebA-like population (examples + predictions) to try `compaudit analyze`.

The gmp-90 variant carries a planted false-positive harm for older men, the rare
subgroup; gmp-50 carries none. Usage:

    python examples/simulate_predictions.py --out runs/sim
    compaudit analyze --examples runs/sim/examples.parquet \
        --predictions runs/sim/predictions.parquet --out runs/sim/analysis
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compaudit.simulate import PlantedHarm, simulate_binary
from compaudit.tables import write_examples, write_predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/sim"))
    ap.add_argument("--examples", type=int, default=20000)
    ap.add_argument("--replicas", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    harm = PlantedHarm("gmp-90", {"Male": True, "Young": False}, "fpr", 0.1)
    ex, pr = simulate_binary(n_examples=args.examples, n_replicas=args.replicas,
                             harms=(harm,), seed=args.seed)
    write_examples(ex, args.out / "examples.parquet")
    write_predictions(pr, args.out / "predictions.parquet", examples=ex)
    print(f"wrote {args.out / 'examples.parquet'} ({len(ex)} rows) and "
          f"{args.out / 'predictions.parquet'} ({len(pr)} rows)")


if __name__ == "__main__":
    main()
