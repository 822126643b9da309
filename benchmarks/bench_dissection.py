"""Throughput and peak memory of network dissection on the synthetic faces (CPU).

Dissects the demo's ``small_cnn`` (all four blocks, 120 units) and one layer of a
``resnet18`` (small-input stem) on synthetic faces, and prints units x images per
second (both passes included: thresholds, then IoU) and the process's peak resident
memory (``ru_maxrss``) after each run; each model runs in a fresh process so the
peaks do not mix.

Run: ``python benchmarks/bench_dissection.py [--n 1000] [--size 32]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

_CHILD = """
import resource, sys, time, torch
from compaudit.dissection import DissectionConfig, SyntheticFaceConcepts, dissect
from compaudit.models.architectures import build_model
root, arch, layers = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
torch.manual_seed(0)
model = build_model(arch, num_classes=2, small_input=True)
ds = SyntheticFaceConcepts(root, split="all")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
t0 = time.perf_counter()
res = dissect(model, ds, config=DissectionConfig(layers=layers, batch_size=128))
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
units = len(res.units)
print(f"{arch:10s} layers={','.join(layers):45s} units={units:4d} images={len(ds)} "
      f"wall={wall:6.2f}s  units*images/s={units * len(ds) / wall:10.0f}  "
      f"peak_rss={peak:7.0f} MiB (before dissect {before:.0f} MiB)  "
      f"interpretable={int(res.units['interpretable'].sum())}")
"""

CASES = (
    ("small_cnn", "features.2,features.5,features.8,features.11"),
    ("resnet18", "layer3"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="synthetic faces")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    args = parser.parse_args()
    from compaudit.data.synthetic import generate_synthetic_faces

    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic_faces(tmp, n=args.n, image_size=args.size, seed=0)
        for arch, layers in CASES:
            subprocess.run([sys.executable, "-c", _CHILD, str(root), arch, layers], check=True)


if __name__ == "__main__":
    main()
