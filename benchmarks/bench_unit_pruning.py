"""Unit pruning: layer-by-layer scoring ("sequential") against one pass ("simultaneous").

``UnitPruningConfig(order="sequential")`` is the reference's procedure and what unit
pruning did before: per chosen layer, a forward + backward over every sample batch to
score it and another forward to measure its penalty, so the cost is layers x batches.
``order="simultaneous"`` (the default) scores every layer in one forward + backward per
batch and measures the loss once more after pruning, so the cost grows with the batches
only.

Both run back to back in one process on copies of the same randomly initialised
torchvision model (no weights are downloaded), on the same 16 random 64 px images
(2 batches of 8), with ``UnitPruningConfig(fraction=0.1)``. Printed per model and
repeat: the number of prunable layers, the wall and CPU time of each order, their
ratios (and the median wall ratio over the repeats), and the total pruning penalty of
each. One intra-op thread by default: on a shared, loaded machine a thread pool waits
for its slowest thread, and wall times then swing several-fold from run to run (they differ: the simultaneous order scores every layer on the
unpruned network). A model that cannot be unit-pruned is reported with the error.

Run: ``python benchmarks/bench_unit_pruning.py [--models vit_b_16 convnext_tiny
efficientnet_b0] [--threads 1] [--repeats 1]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torchvision
from torch.utils.data import Dataset

from compaudit.compress.registry import CompressionContext, compress
from compaudit.compress.units import UnitPruningConfig, find_unit_layers
from compaudit.errors import AuditInputError

BUILDERS = {
    "vit_b_16": lambda: torchvision.models.vit_b_16(num_classes=10, image_size=64),
    "convnext_tiny": lambda: torchvision.models.convnext_tiny(num_classes=10),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(num_classes=10),
}


class RandomImages(Dataset):
    """``(image, label, example_id)`` items of seeded noise."""

    def __init__(self, n: int, size: int, classes: int = 10) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=gen)
        self.y = torch.randint(0, classes, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), f"ex/{i}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = RandomImages(args.n_batches * args.batch_size, args.size)
    print(f"{args.n_batches} x {args.batch_size} images at {args.size} px, "
          f"{args.threads} threads, fraction 0.1")
    print(f"{'model':<16} {'layers':>6} {'wall s: sequential':>18} {'simultaneous':>12} "
          f"{'ratio':>6} {'CPU s: sequential':>17} {'simultaneous':>12} {'ratio':>6}  "
          "penalty seq / sim")
    for name in args.models:
        torch.manual_seed(0)
        model = BUILDERS[name]().eval()
        try:
            n_layers = len(find_unit_layers(model)[0])
            with torch.no_grad():  # warm-up: allocator and kernels
                model(data.x[: args.batch_size])
            ratios = []
            for _ in range(args.repeats):
                seconds, cpu, penalty = {}, {}, {}
                for order in ("sequential", "simultaneous"):
                    net = copy.deepcopy(model)
                    config = UnitPruningConfig(fraction=0.1, n_batches=args.n_batches,
                                               batch_size=args.batch_size, order=order)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    out = compress(net, config,
                                   context=CompressionContext(train_dataset=data, seed=0))
                    seconds[order] = time.perf_counter() - start
                    cpu[order] = time.process_time() - start_cpu
                    penalty[order] = out.info["pruning_penalty"]
                seq, sim = seconds["sequential"], seconds["simultaneous"]
                ratios.append(seq / sim)
                cseq, csim = cpu["sequential"], cpu["simultaneous"]
                print(f"{name:<16} {n_layers:>6} {seq:>18.2f} {sim:>12.2f} {seq / sim:>5.1f}x "
                      f"{cseq:>17.2f} {csim:>12.2f} {cseq / csim:>5.1f}x  "
                      f"{penalty['sequential']:.3g} / {penalty['simultaneous']:.3g}", flush=True)
        except (AuditInputError, RuntimeError) as err:  # report it, go on
            print(f"{name:<16} FAILED: {type(err).__name__}: {err}", flush=True)
            continue
        if len(ratios) > 1:
            print(f"{name:<16} median ratio {statistics.median(ratios):.1f}x", flush=True)


if __name__ == "__main__":
    main()
