"""One GPU: train a population, compress it and predict it stacked; rates against the card's peak.

Issue 14, item 5. Synthetic faces (the demo's generator, CelebA format) are decoded
once into memory, then, for each workload (architecture, image size, replicas):

1. **train**: :func:`compaudit.models.train_population` on ``--device`` (bfloat16
   autocast and channels-last, the ``TrainConfig`` switches), beside a bare torch loop
   doing the same steps on the same model from a GPU-resident tensor (the lower bound);
2. **compress**: every replica by gradual magnitude pruning to 90% during one epoch of
   fine-tuning (Zhu & Gupta, the demo's ``gmp-90``) and by float16 conversion;
3. **predict**: :func:`compaudit.predict.predict_population` of the dense, gmp-90 and
   float16 populations on the test split, stacked (``torch.func`` + ``vmap``) and one
   model at a time, beside the bare stacked forward pass on GPU-resident images. The
   stacked and looped predictions are compared (share of equal labels).

Rates are model-images per second (images x replicas / seconds) and achieved FLOP/s:
forward FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode``, training
counted as 3x the forward pass. The peaks are measured on the same card at the start:
a 8192^3 ``torch.mm`` in float32 (TF32 off), TF32 and bfloat16, and a device-to-device
copy. Times after one warm-up, one run each; GPU timings synchronise first.

Run: ``python benchmarks/bench_cuda.py [--device cuda] [--quick] [--out results.json]``
(``--quick --device cpu`` checks the script in seconds on a laptop). Figures from an H200:
``benchmarks/README.md`` and ``results/bench_cuda_h200.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from compaudit.compress import CompressionContext, compress
from compaudit.configs.compress import Float16Config, GradualMagnitudeConfig
from compaudit.data.celeba import CelebA
from compaudit.data.in_memory import InMemoryDataset
from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.models import TrainConfig, train_population
from compaudit.models.architectures import build_model
from compaudit.models.training import train
from compaudit.models.weights import read_state_dict
from compaudit.predict import predict_population
from compaudit.predict.stacking import Member, StackedRunner


@dataclass(frozen=True)
class Workload:
    arch: str
    size: int
    replicas: int
    n: int          # faces generated (train 50%, test 50%)
    epochs: int
    batch: int


FULL = [Workload("small_cnn", 32, 16, 40000, 2, 256), Workload("resnet18", 64, 4, 16000, 1, 256)]
QUICK = [Workload("small_cnn", 32, 3, 600, 1, 64), Workload("resnet18", 32, 2, 300, 1, 32)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def peaks(device: torch.device, n: int) -> dict[str, float]:
    """Measured rates: matmul TFLOP/s in float32 / TF32 / bfloat16, copy TB/s."""
    out = {}
    for name, dtype, tf32 in [("fp32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bf16", torch.bfloat16, False)]:
        if device.type == "cpu" and name == "tf32":
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        best = min(timed(lambda a=a, b=b: [torch.mm(a, b) for _ in range(5)], device)[0] / 5
                   for _ in range(3))
        out[name] = 2 * n**3 / best / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.empty(256 * 2**20 if device.type == "cuda" else 2**24, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    t = min(timed(lambda: y.copy_(x), device)[0] for _ in range(5))
    out["copy_TBps"] = 2 * x.numel() * 4 / t / 1e12
    return out


def forward_flops(arch: str, size: int) -> float:
    model = build_model(arch, num_classes=2, small_input=True).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, size, size))
    return counter.get_total_flops() / 2


def faces(root: Path, w: Workload) -> tuple[InMemoryDataset, InMemoryDataset, float]:
    """Generated faces, train and test halves, decoded into memory; seconds spent."""
    from torchvision import transforms

    t0 = time.perf_counter()
    generate_synthetic_faces(root, n=w.n, image_size=w.size, seed=0,
                             split_fractions=(0.5, 0.0, 0.5))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.25] * 3)])
    sets = [InMemoryDataset(CelebA(root, split=s, target="Blond_Hair", transform=tf))
            for s in ("train", "test")]
    for ds in sets:  # decode now, so neither training nor prediction pays for it
        for i in range(len(ds)):
            ds[i]
    return sets[0], sets[1], time.perf_counter() - t0


def bare_train(w: Workload, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
               device: torch.device) -> float:
    """Seconds per epoch of the same SGD steps from GPU-resident tensors (one replica)."""
    torch.manual_seed(0)
    model = build_model(w.arch, num_classes=2, small_input=True).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def epoch() -> None:
        order = torch.randperm(len(images), device=device)
        for i in range(0, len(images), w.batch):
            idx = order[i:i + w.batch]
            with amp:
                loss = loss_fn(model(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()  # warm-up (cuDNN algorithm choice, allocator)
    return timed(epoch, device)[0]


def bare_predict(models: list[torch.nn.Module], images: torch.Tensor, batch: int,
                 device: torch.device) -> tuple[float, bool]:
    """Seconds of the same stacked forward passes on GPU-resident images, and whether
    they stayed stacked: the library's runner, without the loader and the output table."""
    runner = StackedRunner([Member(i, "v", i, m) for i, m in enumerate(models)], device=device)

    def run() -> None:
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                runner(images[i:i + batch]).argmax(-1)

    run()
    return timed(run, device)[0], runner.stacked


def run_workload(w: Workload, tmp: Path, device: torch.device, peak: dict) -> dict:
    train_ds, test_ds, t_data = faces(tmp / f"faces-{w.arch}-{w.size}", w)
    n_train, n_test = len(train_ds), len(test_ds)
    flops = forward_flops(w.arch, w.size)
    on_gpu = device.type == "cuda"
    config = TrainConfig(epochs=w.epochs, batch_size=w.batch, lr=0.05, device=str(device),
                         amp=on_gpu, channels_last=on_gpu, num_threads=torch.get_num_threads())
    row: dict = {"workload": f"{w.arch} x{w.replicas}, {w.size} px", "train_images": n_train,
                 "test_images": n_test, "forward_GFLOP_per_image": flops / 1e9,
                 "data_s": t_data}
    # 1. train
    out = tmp / f"pop-{w.arch}"
    t, paths = timed(lambda: train_population(w.arch, train_ds, config, replicas=w.replicas,
                                              out_dir=out, num_classes=2, small_input=True),
                     device)
    images = torch.stack([train_ds[i][0] for i in range(n_train)]).to(device)
    labels = torch.tensor([train_ds[i][1] for i in range(n_train)], device=device)
    if on_gpu:
        images = images.contiguous(memory_format=torch.channels_last)
    t_bare = bare_train(w, images, labels, config, device) * w.epochs * w.replicas
    seen = n_train * w.epochs * w.replicas
    row["train"] = {"s": t, "img_per_s": seen / t, "bare_s": t_bare,
                    "efficiency": t_bare / t,
                    "TFLOPs": 3 * flops * seen / t / 1e12,
                    "of_bf16_peak": 3 * flops * seen / t / 1e12 / peak["bf16"]}
    del images, labels
    dense = []
    for p in paths:
        m = build_model(w.arch, num_classes=2, small_input=True)
        m.load_state_dict(read_state_dict(p))
        dense.append(m.to(device).eval())
    # 2. compress
    steps = -(-n_train // w.batch)
    fine = TrainConfig(epochs=1, batch_size=w.batch, lr=0.01, device=str(device), amp=on_gpu,
                       channels_last=on_gpu, num_threads=torch.get_num_threads())
    gmp = GradualMagnitudeConfig(sparsity=0.9, begin_step=0, end_step=max(1, steps * 4 // 5),
                                 frequency=max(1, steps // 10))

    def compress_all(config) -> list[torch.nn.Module]:
        models = []
        for k, m in enumerate(dense):
            ctx = CompressionContext(
                train_dataset=train_ds, fine_tune_steps=steps, seed=k, device=str(device),
                fine_tune=lambda mod, cbs, k=k: train(mod, train_ds, replace(fine, seed=k),
                                                      step_callbacks=cbs, progress=False))
            models.append(compress(copy.deepcopy(m), config, context=ctx).model.to(device).eval())
        return models

    t_gmp, pruned = timed(lambda: compress_all(gmp), device)
    t_fp16, halves = timed(lambda: compress_all(Float16Config()), device)
    row["compress"] = {"gmp90_s": t_gmp, "gmp90_img_per_s": n_train * w.replicas / t_gmp,
                       "float16_s": t_fp16}
    # 3. predict
    pops = {"dense": dense, "gmp-90": pruned, "float16": halves}
    kw = {"batch_size": 1024 if on_gpu else 128, "device": device, "progress": False}
    predict_population(pops, test_ds, stack=True, **kw)  # warm-up
    t_stack, stacked = timed(lambda: predict_population(pops, test_ds, stack=True, **kw), device)
    t_loop, looped = timed(lambda: predict_population(pops, test_ds, stack=False, **kw), device)
    test_images = torch.stack([test_ds[i][0] for i in range(n_test)]).to(device)
    bare = {v: bare_predict(pops[v], test_images, kw["batch_size"], device) for v in pops}
    t_bare = sum(t for t, _ in bare.values())
    model_images = n_test * w.replicas * len(pops)
    agree = float((stacked["pred"].to_numpy() == looped["pred"].to_numpy()).mean())
    row["predict"] = {
        "stacked_s": t_stack, "looped_s": t_loop, "bare_stacked_s": t_bare,
        "stacked_img_per_s": model_images / t_stack, "looped_img_per_s": model_images / t_loop,
        "bare_img_per_s": model_images / t_bare, "efficiency": t_bare / t_stack,
        "stacked_TFLOPs": flops * model_images / t_stack / 1e12,
        "of_tf32_peak": flops * model_images / t_stack / 1e12 / peak.get("tf32", peak["fp32"]),
        "bare_stayed_stacked": {v: held for v, (_, held) in bare.items()},
        "members_stacked": len(stacked.attrs["stacked"]), "members": w.replicas * len(pops),
        "stacked_vs_looped_equal_labels": agree,
        "dense_accuracy": float(np.mean(stacked.loc[stacked["variant"] == "dense", "pred"]
                                        == np.tile([test_ds[i][1] for i in range(n_test)],
                                                   w.replicas))),
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peaks(device, 1024 if args.quick else 8192)
    print(f"{name}, torch {torch.__version__}; measured peaks: "
          + ", ".join(f"{k} {v:.1f}" for k, v in peak.items()), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in QUICK if args.quick else FULL:
            rows.append(run_workload(w, Path(tmp), device, peak))
            print(json.dumps(rows[-1], indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"device": name, "torch": torch.__version__,
                                        "peaks": peak, "workloads": rows}, indent=1))


if __name__ == "__main__":
    main()
