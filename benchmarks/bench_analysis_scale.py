"""ImageNet-scale analysis: 50,000 examples x 1,000 classes x 30 replicas x 6 variants.

Writes the two tables (9M prediction rows with top-5) to a temporary folder, then runs
``compaudit analyze`` on them in a fresh process and reports its wall time and peak
resident memory (targets from issue 2: under 60 s and 4 GiB on a 2-core machine). The
class and PIE steps are also timed alone on in-memory arrays.

Run: ``python benchmarks/bench_analysis_scale.py [--keep DIR]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from compaudit.analysis.classes import class_table
from compaudit.analysis.pie import pie_table
from compaudit.analysis.population import Population, VariantPredictions
from compaudit.simulate import simulate_multiclass

_CHILD = """
import resource, sys, time
from compaudit.cli import main
t0 = time.perf_counter()
code = main(sys.argv[1:])
wall = time.perf_counter() - t0
print(f"BENCH wall={wall:.2f} rss_gib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} code={code}")
"""


def write_tables(root: Path, examples, preds, top5) -> None:
    pq.write_table(pa.Table.from_pandas(examples.assign(split="val", source_id=examples.example_id,
                                                        shift="clean", severity=np.int8(0)),
                                        preserve_index=False), root / "examples.parquet")
    ids = examples["example_id"].to_numpy()
    writer = None
    for name, pred in preds.items():
        r, n = pred.shape
        k = top5[name].shape[-1]
        table = pa.table({
            "variant": pa.array([name] * (r * n)).dictionary_encode(),
            "replica": pa.array(np.repeat(np.arange(r, dtype=np.int32), n)),
            "example_id": pa.array(np.tile(ids, r)),
            "pred": pa.array(pred.ravel().astype(np.int64)),
            "p_true": pa.array(np.full(r * n, 0.5, np.float32)),
            "top5": pa.FixedSizeListArray.from_arrays(top5[name].ravel(), k).cast(
                pa.list_(pa.int32())),
        })
        table = table.cast(table.schema.set(0, pa.field("variant", pa.string())))
        writer = writer or pq.ParquetWriter(root / "predictions.parquet", table.schema)
        writer.write_table(table)
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="write the tables here and keep them")
    args = ap.parse_args()
    examples, preds, top5 = simulate_multiclass()
    n_rows = sum(p.size for p in preds.values())

    variants = {k: VariantPredictions(k, np.arange(p.shape[0]), p, None, top5[k])
                for k, p in preds.items()}
    pop = Population(examples, examples["label"].to_numpy(), 1000, "dense", variants)
    t0 = time.perf_counter()
    classes = class_table(pop)
    t_cls = time.perf_counter() - t0
    t0 = time.perf_counter()
    pies = pie_table(pop)
    t_pie = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        write_tables(root, examples, preds, top5)
        size = (root / "predictions.parquet").stat().st_size / 2**20
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, "analyze", "--examples", str(root / "examples.parquet"),
             "--predictions", str(root / "predictions.parquet"), "--out", str(root / "out"),
             "--num-classes", "1000", "--no-progress"],
            capture_output=True, text=True, check=True)
    bench = [line for line in proc.stdout.splitlines() if line.startswith("BENCH")][0]
    print(f"workload: 50,000 examples x 1,000 classes x 30 replicas x {len(preds)} variants "
          f"= {n_rows:,} prediction rows ({size:.0f} MiB Parquet with top-5)")
    print(f"in memory: class tests {t_cls:.2f} s ({len(classes)} rows), "
          f"PIE + taxicab {t_pie:.2f} s ({int(pies['is_pie'].sum())} PIEs over "
          f"{len(preds) - 1} variants)")
    print(f"compaudit analyze, from Parquet to metrics.json (fresh process): {bench[6:]}")


if __name__ == "__main__":
    main()
