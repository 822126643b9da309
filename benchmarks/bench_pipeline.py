"""Where an audit's time goes: each stage's wall time beside its compute lower bound.

For a spec (the demo, and a CIFAR-10-shaped spec on fake CIFAR-10 batches in the
official format), this runs the whole audit once and reads the time of every step
from ``run.json``. The lower bound of a step is its arithmetic alone: the same
training steps (forward, backward, SGD step at the spec's batch size) and the same
forward passes (prediction of every replica on the eval and shift sets, calibration,
dissection) timed as a bare torch loop on random tensors, in this process, at the
executor's thread setting (one torch thread per worker), divided over the workers
(but never below the longest single job). Efficiency = lower bound / wall time.

``accounted`` adds the necessary work that bound leaves out, timed bare at one thread
on the run's own files: decoding the images (the dataset's ``__getitem__``, once per
run and set) and network dissection per replica (``dissect`` itself: forward passes,
upsampling, quantiles, IoUs), divided over the workers. What stays unaccounted is
scheduling (workers idle while the last job runs), process start-up, mask updates,
footprints and table writes.

Run: ``python benchmarks/bench_pipeline.py [--spec demo|cifar|both] [--out DIR]``
(the demo takes minutes on 2 cores; state the machine's load with the figures).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compaudit.configs.compress import Float16Config, Int8StaticConfig
from compaudit.models.architectures import build_model
from compaudit.pipeline import run_audit
from compaudit.pipeline.jobs import TRAINING_METHODS
from compaudit.spec import AuditSpec, demo_spec, parse_spec

CIFAR_SPEC = """
[audit]
name = "cifar-shaped"
[data]
dataset = "cifar10"
root = "{root}"
protected = []
image_size = 32
max_train = 4660
max_eval = 846
[model]
arch = "small_cnn"
num_classes = 10
replicas = 6
[train]
epochs = 4
batch_size = 128
lr = 0.05
fine_tune_epochs = 2
{variants}
[[shifts]]
corruptions = ["gaussian_noise", "contrast"]
severities = [1, 3, 5]
[gate.robustness]
max_accuracy_drop = 0.5
[executor]
kind = "local"
workers = 2
"""


def _cifar_variants() -> str:
    return "".join(f'[[variants]]\nname = "gmp-{s}"\nmethod = "gradual_magnitude"\n'
                   f"sparsity = 0.{s}\nbegin_step = 0\nend_step = 60\nfrequency = 10\n"
                   for s in (30, 50, 70, 90))


def fake_cifar(root: Path) -> None:
    """Random images in the official cifar-10-batches-py format (python pickles)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = 1000
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)],
            b"num_cases_per_batch": 1000, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


# --- bare torch loops --------------------------------------------------------------------


def _train_step_seconds(arch: str, num_classes: int, size: int, batch: int,
                        lr: float) -> float:
    model = build_model(arch, num_classes=num_classes, small_input=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, num_classes, (batch,))
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(3):
        step()
    start, n = time.perf_counter(), 20
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def _forward_image_seconds(arch: str, num_classes: int, size: int, batch: int = 256) -> float:
    model = build_model(arch, num_classes=num_classes, small_input=True).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        start, n = time.perf_counter(), 10
        for _ in range(n):
            model(x)
    return (time.perf_counter() - start) / (n * batch)


def lower_bounds(spec: AuditSpec, *, n_train: int, n_eval: int, n_shift: int,
                 workers: int) -> dict[str, float]:
    """Compute-only seconds of the train and variants steps on ``workers`` workers."""
    torch.set_num_threads(1)  # the executor's setting: one torch thread per worker
    m, t, size = spec.model, spec.train, spec.data.image_size
    step = _train_step_seconds(m.arch, m.num_classes, size, t.batch_size, t.lr)
    image = _forward_image_seconds(m.arch, m.num_classes, size)
    steps = math.ceil(n_train / t.batch_size)
    train_job = t.epochs * steps * step
    jobs = [m.replicas * (n_eval + n_shift) * image]  # the dense job: prediction only
    dissect = (spec.dissection.max_images * m.replicas * image * 2 if spec.dissection else 0.0)
    jobs[0] += dissect
    for v in spec.variants:
        seconds = m.replicas * (n_eval + n_shift) * image + dissect
        if v.method in TRAINING_METHODS:
            seconds += m.replicas * t.fine_tune_epochs * steps * step
        if isinstance(v.config, Int8StaticConfig):
            seconds += m.replicas * v.config.calibration_images * image
        if isinstance(v.config, Float16Config):
            seconds += 0.0  # simulated float16: at least the fp32 forward pass above
        jobs.append(seconds)
    return {
        "train": max(m.replicas * train_job / workers, train_job),
        "variants": max(sum(jobs) / workers, max(jobs)),
        "train_step_ms": 1000 * step, "forward_us_per_image": 1e6 * image,
    }


def measured_work(spec: AuditSpec, run_dir: Path, *, n_train: int, n_eval: int,
                  n_shift: int) -> dict[str, float]:
    """Seconds of the necessary work the arithmetic bound leaves out, timed bare at one
    thread on the run's own files: decoding images (the dataset's ``__getitem__``: JPEG
    and transforms, once per run and set) and network dissection per replica
    (:func:`~compaudit.dissection.netdissect.dissect` on the run's dense replica 0:
    forward passes, upsampling, quantiles and IoUs)."""
    from compaudit.dissection.audit import _in_memory
    from compaudit.dissection.netdissect import dissect
    from compaudit.models.weights import read_state_dict
    from compaudit.pipeline.data import prepare_data
    from compaudit.pipeline.stages import StageCache
    from compaudit.pipeline.variants import dissection_plan
    from compaudit.rundir import RunFolder

    torch.set_num_threads(1)
    folder = RunFolder(run_dir)
    data = prepare_data(spec, folder, StageCache(folder.stages_json), log=lambda _: None)
    dataset = data.eval()
    count = min(500, len(dataset))
    start = time.perf_counter()
    for i in range(count):
        dataset[i]
    decode = (time.perf_counter() - start) / count
    out = {"decode_us_per_image": 1e6 * decode, "decode_train_s": n_train * decode,
           "decode_eval_s": (n_eval + n_shift) * decode, "dissect_s_per_replica": 0.0}
    plan = dissection_plan(spec, folder, data)
    if plan is not None:
        m = spec.model
        model = build_model(m.arch, num_classes=m.num_classes, small_input=m.small_input)
        model.load_state_dict(read_state_dict(folder.dense_models / "replica-000.pt"))
        concepts = _in_memory(plan.dataset())
        dissect(model, concepts, config=plan.config)  # warm-up
        start = time.perf_counter()
        dissect(model, concepts, config=plan.config)
        out["dissect_s_per_replica"] = time.perf_counter() - start
    return out


def _accounted(spec: AuditSpec, bounds: dict[str, float], work: dict[str, float],
               workers: int) -> dict[str, float]:
    """The steps' work with decoding and dissection measured, not estimated."""
    m = spec.model
    dissect_forward = (spec.dissection.max_images * m.replicas * bounds["forward_us_per_image"]
                       * 2e-6 if spec.dissection else 0.0)
    jobs = 1 + len(spec.variants)
    dissection = jobs * (m.replicas * work["dissect_s_per_replica"] - dissect_forward)
    return {"train": bounds["train"] + work["decode_train_s"] / workers,
            "variants": bounds["variants"] + (work["decode_eval_s"] + dissection) / workers}


def _sizes(run_dir: Path) -> tuple[int, int, int]:
    import pandas as pd

    examples = pd.read_parquet(run_dir / "examples.parquet", columns=["shift"])
    n_eval = int((examples["shift"] == "clean").sum())
    return n_eval, len(examples) - n_eval


def bench(spec: AuditSpec, out: Path, n_train: int, *, reuse: bool = False) -> dict:
    """Run ``spec`` into ``out`` (or, with ``reuse``, read the run already there)."""
    start = time.perf_counter()
    verdict = (json.loads((out / "gate" / "gate.json").read_text())["verdict"] if reuse
               else run_audit(spec, out, progress=False, log=lambda _: None).verdict)
    total = time.perf_counter() - start
    n_eval, n_shift = _sizes(out)
    bounds = lower_bounds(spec, n_train=n_train, n_eval=n_eval, n_shift=n_shift,
                          workers=spec.executor.workers)
    steps = json.loads((out / "run.json").read_text())["timings"]["steps"]
    work = measured_work(spec, out, n_train=n_train, n_eval=n_eval, n_shift=n_shift)
    accounted = _accounted(spec, bounds, work, spec.executor.workers)
    return {"spec": spec.name, "total_s": None if reuse else round(total, 1), "verdict": verdict,
            "steps": steps, "lower_bound_s": {k: round(v, 1) for k, v in bounds.items()},
            "efficiency": {k: round(bounds[k] / steps[k]["wall_s"], 2)
                           for k in ("train", "variants")},
            "measured_work": {k: round(v, 2) for k, v in work.items()},
            "work_incl_decoding_and_dissection_s": {k: round(v, 1) for k, v in accounted.items()},
            "accounted": {k: round(accounted[k] / steps[k]["wall_s"], 2)
                          for k in ("train", "variants")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", choices=("demo", "cifar", "both"), default="both")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--from-run", type=Path, default=None, metavar="DIR",
                        help="read the step times of a demo run already in DIR (no rerun)")
    args = parser.parse_args()
    if args.from_run is not None:
        spec = parse_spec(json.loads((args.from_run / "run.json").read_text())["spec"],
                          source=str(args.from_run / "run.json"))
        n_train = round(spec.data.n * spec.data.splits[0])
        print(json.dumps(bench(spec, args.from_run, n_train, reuse=True), indent=2))
        return
    base = args.out or Path(tempfile.mkdtemp(prefix="compaudit-bench-"))
    results = []
    if args.spec in ("demo", "both"):
        spec = demo_spec()
        n_train = round(spec.data.n * spec.data.splits[0])
        results.append(bench(spec, base / "demo", n_train))
    if args.spec in ("cifar", "both"):
        fake_cifar(base / "cifar-data")
        text = CIFAR_SPEC.format(root=base / "cifar-data", variants=_cifar_variants())
        results.append(bench(parse_spec(text, source="cifar-shaped.toml"), base / "cifar", 4660))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
