"""Forward cost of simulated float16 and int8 static against dense, interleaved, one process.

A torchvision model (random weights, BatchNorm statistics made non-trivial; speed does
not depend on the values) at ``--size`` px, ``--threads`` torch threads, the batch the
pipeline would choose (:func:`compaudit.predict.batching.choose_batch_size`'s rule), inside
:func:`compaudit._malloc.reuse_freed_memory` as every variant job runs. Variants:

* ``dense``: the float32 model;
* ``float16-unfolded``: :func:`round_float_precision` with ``fold_batchnorm=False``,
  i.e. the simulation before BatchNorm folding (main up to this change);
* ``float16``: :func:`round_float_precision` as the ``float16`` method runs it now
  (BatchNorm folded into its conv first);
* ``int8-static``: the simulated ``int8_static`` (its BatchNorm was already folded by
  ``torch.fx``), calibrated on 2 random batches (calibration is not timed here).

Each round times ``--batches`` forwards of every variant in turn on the same input
(``torch.inference_mode``), so load from other processes falls on all of them alike;
the table gives the median over ``--rounds`` rounds of CPU time per image
(``time.process_time``) and of wall time, and each variant's ratio to dense::

    python benchmarks/bench_quant_sim.py --arch mobilenet_v2 resnet50 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

import torch
import torchvision
from torch import nn

from compaudit._malloc import reuse_freed_memory
from compaudit.compress.quant_sim import round_float_precision
from compaudit.compress.quant_static import calibrate, convert_static, prepare_static
from compaudit.predict.batching import BATCH_BUDGET, MAX_BATCH, working_set


def _model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=1000)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def variants(arch: str, size: int, batch: int) -> dict[str, nn.Module]:
    """The four models, built as the compression methods build them."""
    dense = _model(arch)
    gm, plan = prepare_static(copy.deepcopy(dense))
    batches = [torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(i))
               for i in range(2)]
    calibrate(gm, lambda: batches, device="cpu")
    convert_static(gm, plan)
    return {
        "dense": dense,
        "float16-unfolded": round_float_precision(copy.deepcopy(dense), torch.float16,
                                                  fold_batchnorm=False),
        "float16": round_float_precision(copy.deepcopy(dense), torch.float16),
        "int8-static": gm,
    }


def measure(arch: str, *, size: int, rounds: int, n_batches: int) -> dict[str, Any]:
    """Median CPU and wall seconds per image of each variant, interleaved by round."""
    image = torch.randn(3, size, size)
    dense = _model(arch)
    batch, per_image = 1, working_set(dense, image)  # choose_batch_size's rule, one model
    while batch * 2 <= MAX_BATCH and batch * 2 * per_image <= BATCH_BUDGET:
        batch *= 2
    models = variants(arch, size, batch)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(9))
    cpu: dict[str, list[float]] = {k: [] for k in models}
    wall: dict[str, list[float]] = {k: [] for k in models}
    with reuse_freed_memory(), torch.inference_mode():
        for model in models.values():  # warm up
            model(x)
        for _ in range(rounds):
            for name, model in models.items():
                c0, w0 = time.process_time(), time.perf_counter()
                for _ in range(n_batches):
                    model(x)
                n = n_batches * batch
                cpu[name].append((time.process_time() - c0) / n)
                wall[name].append((time.perf_counter() - w0) / n)
    out: dict[str, Any] = {"arch": arch, "size": size, "batch": batch, "rounds": rounds,
                           "batches_per_round": n_batches,
                           "threads": torch.get_num_threads(), "variants": {}}
    base_cpu, base_wall = statistics.median(cpu["dense"]), statistics.median(wall["dense"])
    for name in models:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        out["variants"][name] = {"cpu_ms_per_image": 1e3 * c, "wall_ms_per_image": 1e3 * w,
                                 "cpu_ratio": c / base_cpu, "wall_ratio": w / base_wall}
    return out


def table(results: list[dict[str, Any]]) -> str:
    """Markdown rows: model, variant, CPU and wall ms per image and ratios to dense."""
    lines = ["| model | batch | variant | CPU ms / image | x dense | wall ms / image | x dense |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for name, v in r["variants"].items():
            lines.append(f"| {r['arch']} | {r['batch']} | {name} | {v['cpu_ms_per_image']:.2f} "
                         f"| {v['cpu_ratio']:.2f} | {v['wall_ms_per_image']:.2f} "
                         f"| {v['wall_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["mobilenet_v2", "resnet50"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="forwards per variant per round")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [measure(a, size=args.size, rounds=args.rounds, n_batches=args.batches)
               for a in args.arch]
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
