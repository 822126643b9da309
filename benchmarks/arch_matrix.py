"""Torchvision classification architectures x compaudit methods, at a small input size.

For every name in ``torchvision.models.list_models(module=torchvision.models)`` the
model is built with ``build_model(name, num_classes=10)`` (random weights, nothing
downloaded), and each compaudit method compresses a copy of it; the compressed model
then runs one forward pass on a batch of 2 random images. A cell is ``ok`` (wall
seconds of compress + forward, output of shape (2, 10)) or the exception's class and
first line.

The input size is the smallest of 32, 64 and 224 px at which the dense model's forward
pass works (ViT and Swin V1 need 224: their position embeddings are fixed). The methods
that fine-tune run a real fine-tuning of 2 optimizer steps on 4 random images (batch 2,
SGD), so training through the architecture is exercised too; scores, penalties and
int8 calibration use the same 4 images.

Each model runs in its own subprocess with a time limit (``--timeout``, default 180 s):
one huge model cannot hang the run, and the cells it did not reach are recorded as
timed out. Models above ``--max-params`` (300 M by default; counted on the meta
device, without allocating) are skipped and recorded as such. Results go to
``benchmarks/results/arch_matrix.json`` (written after every model, so ``--resume``
continues a killed run) and ``arch_matrix.md``.

Run (one thread; it takes about an hour on 2 shared cores):
``nice -n 10 python benchmarks/arch_matrix.py [--only resnet18 vit_b_16] [--resume]``
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (32, 64, 224)
BATCH = 2
NUM_CLASSES = 10


def _configs() -> dict[str, Any]:
    """Column name -> method config; the methods that train come last (slowest)."""
    from compaudit.configs import compress as c

    return {
        "float16": c.Float16Config(),
        "bfloat16": c.BFloat16Config(),
        "int8_weight_only": c.Int8WeightOnlyConfig(),
        "int8_static (simulated)": c.Int8StaticConfig(
            calibration_images=4, calibration_batch_size=2, backend="simulated"),
        "int8_static (onnxruntime)": c.Int8StaticConfig(
            calibration_images=4, calibration_batch_size=2, backend="onnxruntime",
            num_threads=1),
        "one_shot_magnitude (global 0.5)": c.OneShotMagnitudeConfig(
            sparsity=0.5, scope="global", penalty_batches=1, batch_size=BATCH),
        "random (0.5)": c.RandomPruningConfig(sparsity=0.5, penalty_batches=1,
                                              batch_size=BATCH),
        "unit (l2, 0.3)": c.UnitPruningConfig(fraction=0.3, score="l2", n_batches=1,
                                              batch_size=BATCH),
        "gradual_magnitude (0.5, 2 steps)": c.GradualMagnitudeConfig(
            sparsity=0.5, begin=0.0, end=1.0, frequency=1),
        "lottery (0.5, 1 round)": c.LotteryTicketConfig(sparsity=0.5, rounds=1),
    }


# --- one model, in a subprocess -------------------------------------------------------------


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _emit(out: Any, record: dict[str, Any]) -> None:
    # One JSON line per finding, flushed at once: a model killed by the time limit
    # keeps the cells it finished.
    out.write(json.dumps(record) + "\n")
    out.flush()


def _count_params(name: str) -> int:
    import torch

    from compaudit.models.architectures import build_model

    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = build_model(name, num_classes=NUM_CLASSES)
    except Exception:  # noqa: BLE001 - a builder that cannot run on meta: count on the CPU
        model = build_model(name, num_classes=NUM_CLASSES)
    return sum(p.numel() for p in model.parameters())


def _input_size(model: Any) -> tuple[int | None, dict[int, str]]:
    """The smallest size of :data:`SIZES` the dense model accepts, and why others failed."""
    import torch

    refused = {}
    model.eval()
    for size in SIZES:
        try:
            with torch.no_grad():
                out = model(torch.randn(BATCH, 3, size, size))
            if tuple(out.shape) == (BATCH, NUM_CLASSES):
                return size, refused
            refused[size] = f"output shape {tuple(out.shape)}"
        except Exception as err:  # noqa: BLE001 - any failure means: try a larger size
            refused[size] = f"{type(err).__name__}: {_one_line(err, 120)}"
    return None, refused


def _context(size: int) -> Any:
    import torch

    from compaudit.compress.registry import CompressionContext
    from compaudit.models.training import TrainConfig, train

    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(3, size, size, generator=gen), k % NUM_CLASSES, f"x{k}")
            for k in range(4)]
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=0.01, weight_decay=0.0, seed=0,
                         num_threads=1)

    def fine_tune(model: Any, callbacks: Any) -> None:
        train(model, data, config, step_callbacks=callbacks, progress=False)

    return CompressionContext(train_dataset=data, calibration_dataset=data,
                              fine_tune=fine_tune, fine_tune_steps=2, seed=0)


def run_one(name: str, *, max_params: float, out: Any) -> None:
    """Build ``name``, pick its input size, and try every method; one JSON line each."""
    import torch

    from compaudit.compress.registry import compress
    from compaudit.models.architectures import build_model

    torch.set_num_threads(1)
    n_params = _count_params(name)
    _emit(out, {"kind": "model", "params": n_params})
    if n_params > max_params:
        _emit(out, {"kind": "skipped", "reason": f"skipped: {n_params / 1e6:.0f} M params "
                                                 f"(> {max_params / 1e6:.0f} M)"})
        return
    torch.manual_seed(0)
    start = time.perf_counter()
    dense = build_model(name, num_classes=NUM_CLASSES)
    size, refused = _input_size(dense)
    _emit(out, {"kind": "size", "size": size, "refused": refused,
                "build_s": time.perf_counter() - start})
    if size is None:
        return
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(1))
    context = _context(size)
    _emit(out, {"kind": "control", **_control(dense, context, x)})
    with tempfile.TemporaryDirectory(prefix="arch-matrix-") as onnx_dir:
        for column, config in _configs().items():
            if getattr(config, "backend", None) == "onnxruntime":
                config = dataclasses.replace(config, onnx_dir=onnx_dir)
            _emit(out, {"kind": "start", "method": column})
            cell = _cell(lambda c=config: compress(copy.deepcopy(dense), c, context=context),
                         x)
            _emit(out, {"kind": "cell", "method": column, **cell})


def _control(dense: Any, context: Any, x: Any) -> dict[str, Any]:
    """The dense model's largest output, and whether the fine-tuning alone (no
    compression) keeps the outputs finite: the reference for the ``(nan)`` cells."""
    import torch

    with torch.no_grad():
        dense_max = float(dense.eval()(x).abs().max())
    model = copy.deepcopy(dense)
    try:
        context.fine_tune(model, [])
        with torch.no_grad():
            y = model.eval()(x)
        tuned = {"fine_tuned_finite": bool(torch.isfinite(y).all())}
    except Exception as err:  # noqa: BLE001 - recorded; the methods' cells say more
        tuned = {"fine_tune_error": f"{type(err).__name__}: {_one_line(err, 120)}"}
    return {"dense_max": dense_max, **tuned}


def _cell(make: Callable[[], Any], x: Any) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    try:
        model = make().model
        model.eval()
        with torch.no_grad():
            y = model(x)
        seconds = time.perf_counter() - start
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (x.shape[0], NUM_CLASSES):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            return {"status": "error", "error": "WrongOutput",
                    "reason": f"output {shape}; expected ({x.shape[0]}, {NUM_CLASSES})"}
        cell = {"status": "ok", "seconds": round(seconds, 2)}
        if not torch.isfinite(y.float()).all():
            cell["note"] = "non-finite outputs"
        return cell
    except Exception as err:  # noqa: BLE001 - every failure is a finding to record
        return {"status": "error", "error": type(err).__name__, "reason": _one_line(err)}


# --- the run: one subprocess per model ---------------------------------------------------------


def _run_model(name: str, *, timeout: float, max_params: float) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", name, "--max-params", str(max_params)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
        stdout, ended = proc.stdout, (f"exit code {proc.returncode}" if proc.returncode
                                      else None)
        stderr = proc.stderr
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr, ended = "", f"timeout (> {timeout:.0f} s)"
    row: dict[str, Any] = {"name": name, "cells": {}, "wall_s": time.perf_counter() - start}
    started = None
    for line in stdout.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = rec.pop("kind", None)
        if kind == "model":
            row["params"] = rec["params"]
        elif kind == "skipped":
            row["skipped"] = rec["reason"]
        elif kind == "size":
            row.update(size=rec["size"], refused=rec["refused"], build_s=rec["build_s"])
        elif kind == "control":
            row["control"] = rec
        elif kind == "start":
            started = rec["method"]
        elif kind == "cell":
            row["cells"][rec.pop("method")] = rec
            started = None
    if ended:
        # What the process did not finish is recorded, not guessed.
        row["ended"] = ended
        reason = ended if not stderr.strip() else \
            f"{ended}: {_one_line(Exception(stderr.strip().splitlines()[-1]))}"
        for column in _configs():
            if column not in row["cells"] and not row.get("skipped"):
                row["cells"][column] = {"status": "not run" if column != started else "error",
                                        "error": "Timeout" if "timeout" in ended else "Crash",
                                        "reason": reason}
    return row


def _environment() -> dict[str, Any]:
    import onnxruntime
    import torch
    import torchvision

    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), 1 thread",
            "batch": BATCH, "num_classes": NUM_CLASSES, "sizes_tried": list(SIZES)}


def _summary(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, dict[str, int]]:
    built = [r for r in rows if r.get("size")]
    return {c: {"ok": sum(r["cells"].get(c, {}).get("status") == "ok" for r in built),
                "of": len(built)} for c in columns}


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    """The table: models as rows, methods as columns; distinct failures numbered below."""
    columns = result["methods"]
    reasons: dict[tuple[str, str], int] = {}

    def cell(c: dict[str, Any] | None) -> str:
        if c is None:
            return ""
        if c["status"] == "ok":
            return f"ok {c['seconds']:.1f}s" + (" (nan)" if c.get("note") else "")
        key = (c.get("error", ""), c.get("reason", ""))
        n = reasons.setdefault(key, len(reasons) + 1)
        return f"{'–' if c['status'] == 'not run' else '✗'} {key[0]} [{n}]"

    def whole_row(row: dict[str, Any], params: str, text: str) -> str:
        return f"| {row['name']} | {params} | | {text} |" + " |" * (len(columns) - 1)

    env = ", ".join(f"{k} {v}" for k, v in result["environment"].items())
    lines = [
        "# Torchvision architectures x compaudit methods",
        "",
        (f"Generated by `benchmarks/arch_matrix.py` ({env}; per-model time limit "
         f"{result['timeout_s']:.0f} s; models over {result['max_params'] / 1e6:.0f} M "
         "parameters skipped)."),
        "",
        ("Each model is built with `num_classes=10` and random weights; each method "
         "compresses a copy and the result runs one forward pass on 2 random images at the "
         "smallest input size of 32, 64, 224 px the dense model accepts (column px). `ok` = "
         "compress + forward worked (wall seconds, 1 thread), `(nan)` = it ran but some "
         "outputs are not finite, `✗ Class [n]` = failed (reason n below), `– [n]` = not "
         "reached before the process ended. Methods that fine-tune train 2 SGD steps on 4 "
         "images."),
        "",
        "## Models that worked, per method",
        "",
        "| method | ok | of models built |",
        "|---|---:|---:|",
        *(f"| {c} | {s['ok']} | {s['of']} |" for c, s in result["summary"].items()),
        "",
        "## The matrix",
        "",
        "| model | params (M) | px | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---|" * len(columns),
    ]
    for row in result["models"]:
        params = f"{row['params'] / 1e6:.1f}" if "params" in row else "?"
        if row.get("skipped"):
            lines.append(whole_row(row, params, row["skipped"]))
        elif not row.get("size"):
            why = row.get("ended") or "; ".join(f"{s} px: {r}" for s, r in
                                                row.get("refused", {}).items())
            lines.append(whole_row(row, params, f"no input size worked: {why}"))
        else:
            lines.append(f"| {row['name']} | {params} | {row['size']} | "
                         + " | ".join(cell(row["cells"].get(c)) for c in columns) + " |")
    lines += ["", "## Failure reasons", ""]
    lines += [f"{n}. **{err}**: {reason}" for (err, reason), n in reasons.items()]
    nan = [r for r in result["models"]
           if any(c.get("note") for c in r.get("cells", {}).values())]
    if nan:
        lines += ["", "## Non-finite outputs", "",
                  ("The reference for each model with a `(nan)` cell: the dense model's "
                   "largest output, and whether the same 2-step fine-tuning without any "
                   "compression keeps the outputs finite."), "",
                  "| model | dense max abs output | fine-tuned alone: finite | (nan) in |",
                  "|---|---:|---|---|"]
        for r in nan:
            ctl = r.get("control", {})
            tuned = ctl.get("fine_tune_error") or {True: "yes", False: "no", None: "?"}[
                ctl.get("fine_tuned_finite")]
            where = ", ".join(c for c, v in r["cells"].items() if v.get("note"))
            dense_max = f"{ctl['dense_max']:.3g}" if "dense_max" in ctl else "?"
            lines.append(f"| {r['name']} | {dense_max} | {tuned} | {where} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="these torchvision model names only")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per model")
    parser.add_argument("--max-params", type=float, default=300e6)
    parser.add_argument("--resume", action="store_true",
                        help="keep the models already in arch_matrix.json")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_one(args.worker, max_params=args.max_params, out=sys.stdout)
        return

    import torchvision

    names = sorted(torchvision.models.list_models(module=torchvision.models))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "arch_matrix.json"
    done: dict[str, Any] = {}
    if args.resume and json_path.exists():
        done = {r["name"]: r for r in json.loads(json_path.read_text())["models"]}
    if args.only:
        # With --resume the other models' rows are kept, so a few can be run again.
        names = [n for n in names if n in args.only or n in done]
        done = {n: r for n, r in done.items() if n not in args.only}
    columns = list(_configs())
    rows = []
    for i, name in enumerate(names, 1):
        row = done.get(name) or _run_model(name, timeout=args.timeout,
                                           max_params=args.max_params)
        rows.append(row)
        ok = sum(c["status"] == "ok" for c in row["cells"].values())
        print(f"[{i}/{len(names)}] {name}: {row.get('skipped') or row.get('ended') or ''} "
              f"{ok}/{len(row['cells'])} ok ({row.get('wall_s', 0):.0f} s)", flush=True)
        result = {"environment": _environment(), "timeout_s": args.timeout,
                  "max_params": args.max_params, "methods": columns,
                  "summary": _summary(rows, columns), "models": rows}
        json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        write_markdown(args.out / "arch_matrix.md", result)


if __name__ == "__main__":
    main()
