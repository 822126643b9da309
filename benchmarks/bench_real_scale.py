"""An ImageNet-sized audit against the bare lower bound of its work, stage by stage.

ImageNet-sized JPEGs (500x375, smooth colour fields with grain, quality 90, written
once into ``--out``), a torchvision model at 224 px (random weights: speed does not
depend on them; nothing downloads), dense + 3 variants (float16 and int8 static,
simulated; int8 weights) + 2 corruption sets, run by ``compaudit.run_audit`` in this
process (serial executor, ``--threads`` torch threads). Per stage: wall, user and
system CPU, peak RSS (``getrusage``). Then, in the same process and thread settings,
the bare lower bound of the inference work: every image the variant jobs read decoded
once with PIL into tensors (``Resize``, ``CenterCrop``, ``ToTensor``, ``Normalize``),
and a batched ``torch`` forward of the dense model at its fastest batch (of 1, 4, 8,
16, 32 timed on the first images), once per variant. Efficiency = lower bound / wall
of the stages that do that work (dense weights given, so ``train`` only checks them;
``variants`` decodes, compresses, predicts).

Before / after on one machine: run it once with the old code first on ``PYTHONPATH``
(its interface is the audit spec, which both understand), then with the new::

    PYTHONPATH=/path/to/old python benchmarks/bench_real_scale.py --images 300 --json before.json
    python benchmarks/bench_real_scale.py --images 300 --json after.json
    python benchmarks/bench_real_scale.py --table before.json after.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

MIB = 2**20


def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter(), "user": r.ru_utime, "sys": r.ru_stime,
            "rss_mib": r.ru_maxrss / 1024}


def _since(start: dict[str, float]) -> dict[str, float]:
    now = _usage()
    return {"wall_s": now["wall"] - start["wall"], "user_s": now["user"] - start["user"],
            "sys_s": now["sys"] - start["sys"], "peak_rss_mib": now["rss_mib"]}


# ------------------------------------------------------------------------------ data


def write_images(root: Path, *, n_eval: int, n_train: int, seed: int = 0) -> Path:
    """ImageNet-sized JPEGs and a manifest (``val`` and ``train`` splits); kept if there."""
    from PIL import Image

    manifest = root / "manifest.csv"
    if manifest.is_file() and len(manifest.read_text().splitlines()) == 1 + n_eval + n_train:
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = ["path,label,split"]
    for i in range(n_eval + n_train):
        # a smooth colour field (upsampled noise) with grain: JPEG sizes like photos'
        small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        field = np.asarray(small.resize((500, 375), Image.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 12, field.shape).astype(np.int16)
        image = Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8))
        name = f"img/{i:06d}.JPEG"
        image.save(root / name, quality=90)
        split = "val" if i < n_eval else "train"
        rows.append(f"{name},{int(rng.integers(0, 1000))},{split}")
    manifest.write_text("\n".join(rows) + "\n")
    return root


def write_spec(folder: Path, *, data: Path, arch: str, weights: Path, n_shift: int) -> Path:
    text = f"""
[audit]
name = "bench-{arch}"
[data]
dataset = "manifest"
root = "{data}"
eval_split = "val"
train_split = "train"
protected = []
image_size = 224
crop = 224
resize = 256
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
options = {{ num_classes = 1000 }}
[model]
arch = "{arch}"
num_classes = 1000
small_input = false
replicas = 1
weights = ["{weights}"]
[[variants]]
name = "float16"
method = "float16"
[[variants]]
name = "int8-static"
method = "int8_static"
calibration_images = 32
[[variants]]
name = "int8-weights"
method = "int8_weight_only"
[[shifts]]
corruptions = ["gaussian_noise"]
severities = [3]
max_images = {n_shift}
[[shifts]]
corruptions = ["contrast"]
severities = [3]
max_images = {n_shift}
[executor]
kind = "serial"
"""
    path = folder / f"{arch}.toml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- audit


@contextmanager
def _stage_usage(stages: dict[str, Any]) -> Iterator[None]:
    """Record each pipeline stage's wall, user, system CPU and peak RSS (instrumenting
    ``StageCache.timed``, which every stage runs under, in old and new code alike)."""
    from compaudit.pipeline import stages as stage_module

    original = stage_module.StageCache.timed

    @contextmanager
    def timed(self: Any, step: str) -> Iterator[None]:
        start = _usage()
        with original(self, step):
            yield
        stages[step] = _since(start)

    stage_module.StageCache.timed = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        stage_module.StageCache.timed = original  # type: ignore[method-assign]


def run_audit_measured(spec_path: Path, out: Path) -> dict[str, Any]:
    from compaudit.pipeline.run import run_audit
    from compaudit.spec import load_spec

    stages: dict[str, Any] = {}
    shutil.rmtree(out, ignore_errors=True)
    start = _usage()
    with _stage_usage(stages):
        result = run_audit(load_spec(spec_path), out, progress=False, report=False,
                           log=lambda line: print(line, flush=True))
    total = _since(start)
    from compaudit.rundir import RunFolder

    folder = RunFolder(out)
    names = ["dense"] + [v.name for v in load_spec(spec_path).variants]
    jobs = {name: json.loads(folder.variant_record(name).read_text()).get("timing", {})
            for name in names}
    return {"stages": stages, "total": total, "jobs": jobs, "verdict": result.verdict}


# ------------------------------------------------------------------------ lower bound


def bare_lower_bound(spec_path: Path, out: Path, model: Any, *, n_models: int) -> dict[str, Any]:
    """Decode every image the variant jobs read once with PIL; time the dense forward at
    its fastest batch; the bound is decode + ``n_models`` forwards of every image."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from compaudit.rundir import RunFolder
    from compaudit.spec import load_spec

    spec = load_spec(spec_path)
    data = Path(spec.data.root)
    rows = [line.split(",") for line in (data / "manifest.csv").read_text().splitlines()[1:]]
    files = [data / r[0] for r in rows if r[2] == "val"]
    folder = RunFolder(out)
    for i in range(len(spec.shifts)):
        files += sorted(p for p in folder.shift_data(i).rglob("*.JPEG")
                        if not p.name.startswith("."))
    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    t0 = time.perf_counter()
    images = torch.empty(len(files), 3, 224, 224)
    for i, f in enumerate(files):
        with Image.open(f) as img:
            images[i] = transform(img.convert("RGB"))
    decode_s = time.perf_counter() - t0
    model.eval()
    probe = images[:32]
    per_image = {}
    with torch.inference_mode():
        model(probe[:4])  # warm-up
        for batch in (1, 4, 8, 16, 32):
            t0 = time.perf_counter()
            for s in range(0, len(probe), batch):
                model(probe[s:s + batch])
            per_image[batch] = (time.perf_counter() - t0) / len(probe)
    best = min(per_image, key=per_image.get)
    forward_s = per_image[best] * len(files) * n_models
    return {"images": len(files), "decode_s": decode_s, "forward_s_per_image": per_image,
            "best_batch": best, "bound_s": decode_s + forward_s}


# ---------------------------------------------------------------------------- report


def _row(label: str, result: dict[str, Any]) -> list[str]:
    stages, bound = result["stages"], result["bound"]
    work = [s for s in ("train", "variants") if s in stages]
    wall = sum(stages[s]["wall_s"] for s in work)
    user = sum(stages[s]["user_s"] for s in work)
    sys_ = sum(stages[s]["sys_s"] for s in work)
    total = result["total"]
    return [label, result["arch"], str(bound["images"]), f"{wall:.1f}",
            f"{bound['bound_s']:.1f}", f"{100 * bound['bound_s'] / wall:.0f}%",
            f"{user:.1f}", f"{sys_:.1f}", f"{100 * sys_ / max(user, 1e-9):.0f}%",
            f"{total['peak_rss_mib'] / 1024:.2f}", f"{total['wall_s']:.1f}"]


def table(paths: list[str]) -> str:
    head = ["code", "model", "images read", "train + variants wall s", "bare bound s",
            "efficiency", "user s", "system s", "system / user", "peak RSS GiB",
            "whole run wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        for result in json.loads(Path(path).read_text()):
            lines.append("| " + " | ".join(_row(result["label"], result)) + " |")
    lines.append("")
    lines.append("Per stage (wall / user / system s, peak RSS GiB):")
    for path in paths:
        for result in json.loads(Path(path).read_text()):
            parts = [f"{name} {s['wall_s']:.1f} / {s['user_s']:.1f} / {s['sys_s']:.1f} / "
                     f"{s['peak_rss_mib'] / 1024:.2f}" for name, s in result["stages"].items()]
            lines.append(f"- {result['label']} {result['arch']}: " + "; ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="evaluation images")
    parser.add_argument("--shift-images", type=int, default=0,
                        help="images per corruption set (default: images / 2)")
    parser.add_argument("--train-images", type=int, default=32,
                        help="training split (int8 calibration reads it)")
    parser.add_argument("--arch", nargs="+", default=["mobilenet_v2"],
                        help="torchvision models, e.g. mobilenet_v2 resnet50")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default="/tmp/compaudit-bench-real")
    parser.add_argument("--label", default="", help="name of this code in the table")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--table", nargs="+", default=None, metavar="JSON",
                        help="print the markdown table of earlier --json files and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0

    import torch
    import torchvision

    import compaudit

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = write_images(out / "data", n_eval=args.images, n_train=args.train_images)
    n_shift = args.shift_images or max(1, args.images // 2)
    results = []
    for arch in args.arch:
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(num_classes=1000)
        weights = out / f"{arch}.pt"
        torch.save(model.state_dict(), weights)
        spec = write_spec(out, data=data, arch=arch, weights=weights, n_shift=n_shift)
        result = run_audit_measured(spec, out / f"run-{arch}")
        result["bound"] = bare_lower_bound(spec, out / f"run-{arch}", model, n_models=4)
        result.update(arch=arch, label=args.label or str(Path(compaudit.__file__).parents[1]),
                      threads=args.threads)
        results.append(result)
        print(json.dumps(result, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
