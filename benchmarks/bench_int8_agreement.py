"""Simulated int8 static quantization against ONNX Runtime's real int8 kernels.

Trains a ``small_cnn`` on the synthetic CelebA-format faces (Blond_Hair), quantizes it
with ``Int8StaticConfig`` twice (``backend="simulated"`` and ``backend="onnxruntime"``,
the same calibration images), and prints: top-1 agreement of the two int8 models (and of
each with fp32), the largest logit difference, the accuracy of fp32 / simulated int8 /
ONNX Runtime int8 on the held-out splits, and the latency of each (median of repeated
runs on the CPU, batch sizes stated).

Run: ``python benchmarks/bench_int8_agreement.py [--n 4000] [--image-size 32]
[--epochs 3] [--calibration-images 512]`` (needs the ``onnx`` extra). Nothing is
downloaded; the faces are generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from compaudit.compress.latency import measure_latency
from compaudit.compress.quant_onnx import onnx_versions
from compaudit.compress.quantization import Int8StaticConfig
from compaudit.compress.registry import CompressionContext, compress
from compaudit.data.celeba import CelebA
from compaudit.data.synthetic import generate_synthetic_faces
from compaudit.models.architectures import build_model
from compaudit.models.training import TrainConfig, train


class InMemory(Dataset):
    """A dataset decoded once into tensors: ``(image, label, example_id)``."""

    def __init__(self, dataset: Dataset) -> None:
        items = [dataset[i] for i in range(len(dataset))]
        self.x = torch.stack([it[0] for it in items])
        self.y = torch.tensor([it[1] for it in items])
        self.ids = [it[2] for it in items]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), self.ids[i]


@torch.no_grad()
def logits_of(model: torch.nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="synthetic images in all")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--observer", choices=("minmax", "percentile"), default="minmax")
    parser.add_argument("--activation-dtype", choices=("uint8", "int8"), default="uint8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per latency")
    args = parser.parse_args()

    print(f"python {platform.python_version()}, torch threads {torch.get_num_threads()}, "
          + ", ".join(f"{k} {v}" for k, v in onnx_versions().items()))
    tf = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    with tempfile.TemporaryDirectory(prefix="compaudit-bench-int8-") as tmp:
        root = generate_synthetic_faces(tmp, n=args.n, image_size=args.image_size,
                                        seed=args.seed, masks=False, overwrite=True)
        train_ds = InMemory(CelebA(root, split="train", transform=tf))
        held_out = [InMemory(CelebA(root, split=s, transform=tf)) for s in ("valid", "test")]
    x = torch.cat([d.x for d in held_out])
    y = torch.cat([d.y for d in held_out])
    print(f"data: {len(train_ds)} train, {len(y)} held-out (valid+test) images at "
          f"{args.image_size} px, Blond_Hair rate {y.float().mean():.3f}")

    torch.manual_seed(args.seed)
    model = build_model("small_cnn", num_classes=2)
    start = time.perf_counter()
    train(model, train_ds, TrainConfig(epochs=args.epochs, batch_size=64, lr=0.05,
                                       schedule="cosine", seed=args.seed), progress=False)
    print(f"trained small_cnn for {args.epochs} epochs in {time.perf_counter() - start:.1f} s")
    model.eval()

    context = CompressionContext(calibration_dataset=train_ds, seed=args.seed)
    common = dict(calibration_images=args.calibration_images,
                  activation_observer=args.observer, activation_dtype=args.activation_dtype)
    sim = compress(model, Int8StaticConfig(backend="simulated", **common), context=context)
    with tempfile.TemporaryDirectory(prefix="compaudit-bench-onnx-") as onnx_dir:
        ort = compress(model, Int8StaticConfig(backend="onnxruntime", onnx_dir=onnx_dir,
                                               **common), context=context)
        models = {"fp32": model, "sim int8": sim.model, "ORT int8": ort.model}
        logits = {name: logits_of(m, x) for name, m in models.items()}
        preds = {name: v.argmax(1) for name, v in logits.items()}

        agree = (preds["sim int8"] == preds["ORT int8"]).float().mean().item()
        print(f"\ncalibration: {sim.info['calibration_images_used']} training images, "
              f"{args.observer} observer, {args.activation_dtype} activations")
        print(f"top-1 agreement sim int8 vs ORT int8: {agree:.4%} on {len(y)} images "
              f"(max |logit difference| "
              f"{(logits['sim int8'] - logits['ORT int8']).abs().max().item():.3g})")
        for name in ("sim int8", "ORT int8"):
            fp_agree = (preds[name] == preds["fp32"]).float().mean().item()
            print(f"top-1 agreement fp32 vs {name}: {fp_agree:.4%}")
        print(f"\n{'model':<10} {'accuracy':>9} {'latency b=1 (ms)':>17} "
              f"{'latency b=64 (ms)':>18}")
        for name, m in models.items():
            acc = (preds[name] == y).float().mean().item()
            lat = [measure_latency(m, input_size=(3, args.image_size, args.image_size),
                                   batch_size=b, repeats=args.repeats, warmup=5)["median_ms"]
                   for b in (1, 64)]
            print(f"{name:<10} {acc:>9.4f} {lat[0]:>17.3f} {lat[1]:>18.3f}")


if __name__ == "__main__":
    main()
