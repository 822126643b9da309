"""Population inference: stacked vs one model at a time, shared loading, achieved GFLOP/s.

Workloads (issue 4), 10 or 2 classes, random weights:

- ``small_cnn`` x 30 on 32 px images held in memory;
- ``resnet18`` x 8 on 64 px images held in memory;
- ``small_cnn`` x 30 on 64 px synthetic faces decoded from JPEG files (CelebA layout),
  where loading costs as much as inference.

Three ways to predict the same images with the same models:

- ``loop``: what a user writes without compaudit: for each model, for each batch of a
  DataLoader, ``softmax(model(x))`` and ``argmax`` under ``torch.inference_mode`` (so
  every model re-reads the data);
- ``predict, stack=False``: :func:`compaudit.predict.predict_population` with each
  batch loaded once and the models run one at a time on it, output table included;
- ``predict, stacked``: the same with replicas stacked (``torch.func`` + ``vmap``).

Times are the best of ``--reps`` interleaved runs (other processes share the machine).
Throughput is model-images per second (images x replicas / time). FLOPs per image come
from ``torch.utils.flop_counter.FlopCounterMode``; the peak is the best rate of a
4096 x 4096 float32 ``torch.mm`` on the same device. A last table times the bare
forward pass, stacked vs looped, over batch sizes: where stacking starts to lose.

Run: ``python benchmarks/bench_predict.py [--reps 2 --device cpu]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch
from torch.func import functional_call, stack_module_state
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from compaudit.data.base import AuditDataset
from compaudit.models.architectures import build_model
from compaudit.predict import predict_population


class MemoryImages(AuditDataset):
    """Random images in memory, so the figures measure inference rather than decoding."""

    num_classes = 10

    def __init__(self, n: int, size: int) -> None:
        super().__init__("memory")
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, 10, (n,), generator=g).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], f"m/{i}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device: torch.device, n: int = 4096) -> float:
    """Best measured float32 matmul rate in GFLOP/s."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), device, 8) / 1e9


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    x = torch.randn(4, 3, size, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() / len(x)


def plain_loop(models, ds, *, batch_size: int, device: torch.device) -> None:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    with torch.inference_mode():
        for model in models:
            model.eval().to(device)
            for images, labels, _ in loader:
                logits = model(images.to(device))
                probs = torch.softmax(logits, dim=1)
                probs.gather(1, labels.to(device)[:, None]).cpu()
                logits.argmax(1).cpu()


def run_workload(name: str, models, ds, *, size: int, batch_size: int, device: torch.device,
                 reps: int) -> list[tuple]:
    """Best time of each method; rows (workload, method, s, img/s, vs loop, GFLOP/s)."""
    flops = flops_per_image(models[0], size)
    kw = dict(batch_size=batch_size, device=device, progress=False)
    methods = {
        "loop (inference_mode)": lambda: plain_loop(models, ds, batch_size=batch_size,
                                                    device=device),
        "predict, stack=False": lambda: predict_population({"dense": models}, ds,
                                                           stack=False, **kw),
        "predict, stacked": lambda: predict_population({"dense": models}, ds, stack=True,
                                                       **kw),
    }
    times = {m: float("inf") for m in methods}
    for round_ in range(reps + 1):
        for method, fn in methods.items():
            t = best_time(fn, device, 1)
            if round_:  # round 0 warms up (allocator, weight packing) and is discarded
                times[method] = min(times[method], t)
    n = len(ds) * len(models)
    return [(name, m, t, n / t, times["loop (inference_mode)"] / t, flops * n / t / 1e9)
            for m, t in times.items()]


def forward_sweep(device: torch.device, *, replicas: int, sizes: list[int],
                  reps: int) -> list[tuple]:
    """Bare forward pass of small_cnn x replicas at 32 px: stacked vs looped by batch size."""
    torch.manual_seed(0)
    models = [build_model("small_cnn", num_classes=10).eval().to(device) for _ in range(replicas)]
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    stacked = torch.vmap(lambda p, b, x: functional_call(models[0], (p, b), (x,)),
                         in_dims=(0, 0, None))
    rows = []
    with torch.inference_mode():
        for batch in sizes:
            x = torch.randn(batch, 3, 32, 32, device=device)
            repeat = max(1, 64 // batch)  # at least 64 images per timing

            def loop() -> None:
                for _ in range(repeat):
                    [m(x) for m in models]

            def stack() -> None:
                for _ in range(repeat):
                    stacked(params, buffers, x)

            loop(), stack()
            t_loop, t_stack = best_time(loop, device, reps), best_time(stack, device, reps)
            rows.append((batch, t_loop, t_stack, t_loop / t_stack))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--images-cnn", type=int, default=1024)
    ap.add_argument("--images-resnet", type=int, default=128)
    ap.add_argument("--images-faces", type=int, default=512)
    ap.add_argument("--replicas-cnn", type=int, default=30)
    ap.add_argument("--replicas-resnet", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    device = torch.device(args.device)

    peak = matmul_peak(device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"float32 matmul peak {peak:.1f} GFLOP/s at the start")
    common = dict(device=device, reps=args.reps)

    torch.manual_seed(0)
    cnns = [build_model("small_cnn", num_classes=10) for _ in range(args.replicas_cnn)]
    rows = run_workload(f"small_cnn x{len(cnns)}, 32 px, {args.images_cnn} in memory", cnns,
                        MemoryImages(args.images_cnn, 32), size=32,
                        batch_size=args.batch_size, **common)
    resnets = [build_model("resnet18", num_classes=10) for _ in range(args.replicas_resnet)]
    rows += run_workload(f"resnet18 x{len(resnets)}, 64 px, {args.images_resnet} in memory",
                         resnets, MemoryImages(args.images_resnet, 64), size=64,
                         batch_size=min(args.batch_size, 64), **common)
    with tempfile.TemporaryDirectory() as tmp:
        from torchvision.transforms import ToTensor

        from compaudit.data.celeba import CelebA
        from compaudit.data.synthetic import generate_synthetic_faces

        generate_synthetic_faces(tmp, n=args.images_faces, image_size=64, seed=0)
        faces = CelebA(tmp, split="all", transform=ToTensor())
        binary = [build_model("small_cnn", num_classes=2) for _ in range(args.replicas_cnn)]
        rows += run_workload(f"small_cnn x{len(binary)}, 64 px, {len(faces)} JPEG faces",
                             binary, faces, size=64, batch_size=args.batch_size, **common)

    # The best of a measurement before and after the workloads: another process may have
    # held the cores during either.
    end_peak = matmul_peak(device)
    peak = max(peak, end_peak)
    print(f"float32 matmul peak {end_peak:.1f} GFLOP/s at the end; using {peak:.1f}")
    header = ("workload", "method", "time s", "model-img/s", "vs loop", "GFLOP/s", "of peak")
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, method, t, rate, ratio, gflops in rows:
        print(f"| {name} | {method} | {t:.2f} | {rate:,.0f} | {ratio:.2f}x | {gflops:.1f} | "
              f"{gflops / peak:.1%} |")

    sweep = forward_sweep(device, replicas=args.replicas_cnn, sizes=[1, 8, 64, 256],
                          reps=args.reps + 2)
    print(f"\nbare forward, small_cnn x{args.replicas_cnn} at 32 px, >= 64 images per timing")
    print("| batch | loop s | stacked s | stacked speed-up |\n|---|---|---|---|")
    for batch, t_loop, t_stack, ratio in sweep:
        print(f"| {batch} | {t_loop:.3f} | {t_stack:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
