"""Run an audit spec stage by stage into one run folder, caching and resuming per stage.

Stages (DESIGN.md): data → shifts → train → variants (compress + predict + footprint,
one job per variant) → analyze → gate → report. Each stage records a key, the hash
of the spec sections it reads and of the keys of the stages it depends on, in
``RUN_DIR/stages.json``; a stage whose key and outputs are unchanged is skipped. So a
killed run resumes (dense replicas and training epochs are checkpointed too) and a
changed spec recomputes only what depends on the change: editing one variant re-runs
that variant's job, the analysis, the gate and the report.

Run folder::

    RUN_DIR/run.json              provenance: spec, seeds, versions, data fingerprints
    RUN_DIR/stages.json           stage keys
    RUN_DIR/data/                 generated data and corrupted copies
    RUN_DIR/models/dense/         replica-XXX.pt (+ .json) and training checkpoints
    RUN_DIR/variants/<name>/      predictions.parquet and record.json per variant (and
                                  dissection.parquet with a [dissection] section)
    RUN_DIR/examples.parquet, predictions.parquet, variants.json
    RUN_DIR/metrics.json, tables/  (compaudit analyze)
    RUN_DIR/gate/                 gate.json, junit.xml, summary.md
    RUN_DIR/report.html
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from compaudit._atomic import atomic_write_text
from compaudit.errors import AuditInputError
from compaudit.spec import AuditSpec

__all__ = ["RunResult", "run_audit"]


@dataclass
class RunResult:
    """Where a run wrote its outputs, and the gate's verdict."""

    run_dir: Path
    metrics: dict[str, Any]
    verdict: str
    exit_code: int
    report: Path | None
    stages_run: list[str]
    stages_skipped: list[str]


def _key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class _Stages:
    """The record of finished stages in ``stages.json``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "stages.json"
        self.done: dict[str, str] = (json.loads(self.path.read_text())
                                     if self.path.is_file() else {})
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def fresh(self, name: str, key: str, outputs: list[Path]) -> bool:
        ok = self.done.get(name) == key and all(p.exists() for p in outputs)
        (self.skipped if ok else self.ran).append(name)
        return ok

    def finish(self, name: str, key: str) -> None:
        self.done[name] = key
        atomic_write_text(self.path, json.dumps(self.done, indent=2, sort_keys=True) + "\n")


def _dataset_factory(spec: AuditSpec, root: Path, split: str) -> Callable[[], Any]:
    """A picklable zero-argument factory building the spec's dataset for one split."""
    from compaudit.data import get_dataset  # noqa: F401  (registers every dataset)
    from compaudit.data.base import _REGISTRY, TransformSpec

    data = spec.data
    name = "celeba" if data.dataset == "synthetic-faces" else data.dataset
    if name not in _REGISTRY:
        raise AuditInputError(f"{spec.source}: [data].dataset: unknown dataset {data.dataset!r}; "
                              f"valid: synthetic-faces, {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[name]
    accepted = inspect.signature(cls.__init__).parameters
    size = data.image_size
    if spec.model.pretrained:
        import torchvision

        # Pretrained weights expect their own evaluation transform (IMAGENET1K_V2:
        # resize 232, crop 224, ImageNet statistics), scaled to the spec's image size.
        ref = torchvision.models.get_weight(spec.model.pretrained).transforms()
        transform = TransformSpec(resize=round(size * ref.resize_size[0] / ref.crop_size[0]),
                                  crop=size, mean=tuple(ref.mean), std=tuple(ref.std))
    else:
        transform = TransformSpec(resize=size, crop=size, mean=(0.5, 0.5, 0.5),
                                  std=(0.25, 0.25, 0.25))
    kwargs: dict[str, Any] = {"transform": transform.build()}
    for key, value in (("split", split), ("target", data.target),
                       ("protected", tuple(data.protected))):
        if key in accepted:
            kwargs[key] = value
    return partial(cls, root, **kwargs)


def _generate(spec: AuditSpec, root: Path) -> None:
    from compaudit.data.synthetic import generate_synthetic_faces

    d = spec.data
    generate_synthetic_faces(root, n=d.n, image_size=d.image_size, seed=spec.seed,
                             spurious=d.spurious, label_noise=d.label_noise,
                             split_fractions=d.splits, overwrite=True)


def _fingerprint(path: Path) -> str:
    """SHA-256 over the names and sizes of the files under ``path`` (cheap, stable)."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    else:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{f.relative_to(path)}:{f.stat().st_size}\n".encode())
    return digest.hexdigest()


def run_audit(
    spec: AuditSpec,
    out_dir: str | Path,
    *,
    executor: str | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    report: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Run every stage of ``spec`` into ``out_dir``; skip stages that are up to date."""
    from compaudit import tables
    from compaudit.analysis.audit import AnalysisOptions, analyze_files
    from compaudit.executors import get_executor
    from compaudit.gate import run_gate
    from compaudit.gate.outputs import format_table, write_gate_outputs

    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = _Stages(run_dir)
    started = time.time()

    # --- data --------------------------------------------------------------------------
    d = spec.data
    root = Path(d.root) if Path(d.root).is_absolute() else run_dir / d.root
    data_key = _key(spec.section("data"), spec.seed)
    if d.dataset == "synthetic-faces":
        if not stages.fresh("data", data_key, [root / "list_attr_celeba.txt"]):
            log(f"[data] generating {d.n} synthetic faces at {d.image_size} px into {root}")
            _generate(spec, root)
            stages.finish("data", data_key)
    elif not root.exists():
        raise AuditInputError(f"{spec.source}: [data].root: {root} does not exist; compaudit "
                              "never downloads data: put the dataset there or fix the path")
    from compaudit.data.base import subset

    train_root = (Path(d.train_root) if Path(d.train_root).is_absolute()
                  else run_dir / d.train_root) if d.train_root else root
    train_data = partial(subset, _dataset_factory(spec, train_root, d.train_split), d.max_train,
                         spec.seed)
    eval_data = partial(subset, _dataset_factory(spec, root, d.eval_split), d.max_eval,
                        spec.seed)
    transform = eval_data.args[0].keywords["transform"]

    # --- shifts --------------------------------------------------------------------------
    shift_data: list[Callable[[], Any]] = []
    shift_keys = []
    for i, shift in enumerate(spec.shifts):
        if shift.kind == "corruptions":
            from compaudit.data.corrupted_copy import write_corrupted_copy
            from compaudit.data.imagenet_c import ImageNetC

            out = run_dir / "data" / f"shift-{i}"
            key = _key(data_key, spec.section("shifts")[i])
            if not stages.fresh(f"shift-{i}", key, [out]):
                log(f"[shifts] writing corrupted copy {i}: {', '.join(shift.corruptions)} "
                    f"x severities {list(shift.severities)}")
                source = subset(eval_data, shift.max_images, spec.seed + i)
                write_corrupted_copy(source, out, corruptions=shift.corruptions,
                                     severities=shift.severities, seed=spec.seed,
                                     progress=progress)
                stages.finish(f"shift-{i}", key)
            shift_data.append(partial(ImageNetC, out, corruptions=shift.corruptions,
                                      severities=shift.severities, transform=transform))
        else:
            from compaudit.data.base import get_dataset

            shift_root = Path(shift.root)
            key = _key(spec.section("shifts")[i], _fingerprint(shift_root)
                       if shift_root.exists() else "missing")
            shift_data.append(partial(get_dataset, shift.dataset, shift_root,
                                      transform=transform))
        shift_keys.append(key)

    _write_class_names(spec, run_dir)
    examples_path = run_dir / "examples.parquet"
    ex_key = _key(data_key, shift_keys)
    if not stages.fresh("examples", ex_key, [examples_path]):
        frames = [eval_data().examples()] + [f().examples() for f in shift_data]
        tables.write_examples(pd.concat(frames, ignore_index=True), examples_path)
        stages.finish("examples", ex_key)

    plan = _dissection_plan(spec, root, transform, run_dir)

    # --- train ---------------------------------------------------------------------------
    from compaudit.models.population import train_population
    from compaudit.models.training import TrainConfig

    m, t = spec.model, spec.train
    train_cfg = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                            optimizer=t.optimizer, momentum=t.momentum,
                            weight_decay=t.weight_decay, schedule=t.schedule,
                            label_smoothing=t.label_smoothing, seed=spec.seed, device=t.device)
    fine_cfg = replace(train_cfg, epochs=t.fine_tune_epochs, lr=t.fine_tune_lr, num_threads=1)
    kind = executor or spec.executor.kind
    ex_kwargs: dict[str, Any] = {}
    if kind == "local":
        ex_kwargs = {"max_workers": spec.executor.workers}
    elif kind == "ray":
        ex_kwargs = {"address": ray_address or spec.executor.address or None}
    pool = get_executor(kind, **ex_kwargs)
    dense_dir = run_dir / "models" / "dense"
    train_key = _key(data_key, spec.section("model"), spec.section("train"), spec.seed)
    try:
        if m.pretrained:
            from compaudit.models.weights import torchvision_weights_path

            dense_paths = [torchvision_weights_path(m.pretrained)]
            if not dense_paths[0].is_file():
                raise AuditInputError(
                    f"{spec.source}: [model].pretrained: {m.pretrained} is not in the local "
                    f"cache; compaudit never downloads weights: put the file at {dense_paths[0]}")
        elif m.weights:
            dense_paths = [Path(w) for w in m.weights]
            missing = [str(p) for p in dense_paths if not p.is_file()]
            if missing:
                raise AuditInputError(f"{spec.source}: [model].weights: file(s) not found: "
                                      f"{', '.join(missing)}; put the state-dict files there")
        else:
            recorded = stages.done.get("train")
            if recorded is not None and recorded != train_key and dense_dir.exists():
                import shutil

                shutil.rmtree(dense_dir)  # the spec changed: the old replicas are stale
            # Recorded before training: a killed run keeps its finished replicas and
            # epoch checkpoints, and train_population resumes from them.
            stages.finish("train", train_key)
            log(f"[train] {m.replicas} x {m.arch} ({t.epochs} epochs each)")
            dense_paths = train_population(
                m.arch, train_data, train_cfg, replicas=m.replicas, executor=pool,
                out_dir=dense_dir, num_classes=m.num_classes, small_input=m.small_input)
            stages.ran.append("train")

        # --- variants ----------------------------------------------------------------
        from compaudit.pipeline.jobs import VariantJob, run_variant_job

        jobs, keys = [], {}
        variant_specs = [("dense", None, "dense", {})] + [
            (v.name, v.build_config(), v.method, v.params) for v in spec.variants]
        for name, config, method, params in variant_specs:
            vdir = run_dir / "variants" / name
            key = _key(train_key, ex_key, name, method, params, spec.section("train"),
                       spec.section("dissection"))
            keys[name] = key
            job = VariantJob(
                name=name, config=config, method=method, params=params, arch=m.arch,
                num_classes=m.num_classes, small_input=m.small_input,
                dense_paths=tuple(dense_paths), train_data=train_data,
                eval_data=(eval_data, *shift_data), fine_tune=fine_cfg, seed=spec.seed,
                device=t.device, image_size=d.image_size,
                predictions_path=vdir / "predictions.parquet", record_path=vdir / "record.json",
                examples_path=examples_path, dissection=plan)
            outputs = [job.predictions_path, job.record_path]
            if plan is not None:
                from compaudit.dissection.audit import UNITS_FILE

                outputs.append(vdir / UNITS_FILE)
            if not stages.fresh(f"variant:{name}", key, outputs):
                jobs.append(job)
        if jobs:
            log(f"[variants] {', '.join(j.name for j in jobs)}")
            pool.map(run_variant_job, jobs, desc="compress + predict")
            for job in jobs:
                stages.finish(f"variant:{job.name}", keys[job.name])
    finally:
        if hasattr(pool, "close"):
            pool.close()

    # --- analyze -------------------------------------------------------------------------
    names = [name for name, *_ in variant_specs]
    predictions_path = run_dir / "predictions.parquet"
    metrics_path = run_dir / "metrics.json"
    a = spec.analysis
    analysis_key = _key(list(keys.values()), spec.section("analysis"), d.protected)
    if not stages.fresh("analyze", analysis_key, [metrics_path, predictions_path]):
        log("[analyze] population statistics")
        examples = tables.read_examples(examples_path)
        parts = [pd.read_parquet(run_dir / "variants" / n / "predictions.parquet") for n in names]
        tables.write_predictions(pd.concat(parts, ignore_index=True), predictions_path,
                                 examples=examples)
        records = {n: json.loads((run_dir / "variants" / n / "record.json").read_text())
                   for n in names}
        from compaudit.compress.footprint import write_variants_json

        write_variants_json(run_dir / "variants.json", records)
        options = AnalysisOptions(protected=tuple(d.protected), positive_label=a.positive_label,
                                  n_boot=a.bootstrap, seed=a.seed, alpha=a.alpha, level=a.level,
                                  num_classes=m.num_classes)
        analysis = analyze_files(examples_path, predictions_path, options, progress=progress)
        if plan is not None:
            from compaudit.dissection.audit import dissection_block, read_population

            log("[analyze] dissection")
            units, concepts = read_population({n: run_dir / "variants" / n for n in names})
            block, extra = dissection_block(units, concepts, plan.describe(), level=a.level)
            analysis.metrics["dissection"] = block
            analysis.tables.update(extra)
        analysis.write(run_dir)
        stages.finish("analyze", analysis_key)

    # --- gate, provenance, report -----------------------------------------------------------
    metrics = json.loads(metrics_path.read_text())
    result = run_gate(metrics, spec.gate)
    write_gate_outputs(result, run_dir / "gate")
    _write_provenance(spec, run_dir, root, started)
    report_path = None
    if report:
        from compaudit.report import render_report

        report_path = render_report(run_dir)
    log(format_table(result))
    return RunResult(run_dir=run_dir, metrics=metrics, verdict=result.verdict,
                     exit_code=result.exit_code, report=report_path,
                     stages_run=stages.ran, stages_skipped=stages.skipped)


def _dissection_plan(spec: AuditSpec, data_root: Path, transform: Any, run_dir: Path) -> Any:
    """The variant jobs' :class:`DissectionPlan`, checked before any training (or None)."""
    dx = spec.dissection
    if dx is None:
        return None
    from compaudit.dissection.audit import DissectionPlan, concept_dataset
    from compaudit.dissection.dissect import DEFAULT_LAYERS, DissectionConfig
    from compaudit.models.architectures import build_model

    m = spec.model
    layers = tuple(dx.layers) or DEFAULT_LAYERS[m.arch]
    modules = {n for n, _ in build_model(m.arch, num_classes=m.num_classes,
                                         small_input=m.small_input).named_modules() if n}
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise AuditInputError(f"{spec.source}: [dissection].layers: {', '.join(map(repr, unknown))} "
                              f"are not modules of {m.arch!r}; valid names include "
                              f"{', '.join(sorted(modules)[:30])}")
    onnx = [v.name for v in spec.variants
            if getattr(v.build_config(), "backend", None) == "onnxruntime"]
    if onnx:
        raise AuditInputError(f"{spec.source}: [dissection]: variant(s) {', '.join(onnx)} run in "
                              "ONNX Runtime, which has no layers to hook; set backend = "
                              "\"simulated\" (the same int8 arithmetic in torch) or remove "
                              "[dissection]")
    # Relative roots resolve against the run folder, as [data].root does.
    root = (Path(dx.root) if Path(dx.root).is_absolute() else run_dir / dx.root) if dx.root \
        else data_root
    factory = partial(concept_dataset, dx.concepts, root, split=dx.split, transform=transform,
                      max_images=dx.max_images, seed=spec.seed)
    factory()  # fail now, before training, on missing or inconsistent mask files
    config = DissectionConfig(layers=layers, quantile=dx.quantile,
                              iou_threshold=dx.iou_threshold, batch_size=dx.batch_size,
                              device=spec.train.device)
    return DissectionPlan(dataset=factory, config=config, concepts=dx.concepts)


def _write_class_names(spec: AuditSpec, run_dir: Path) -> None:
    """``class_names.json`` for the report: the target's two names, or ImageNet's."""
    names: list[str] | None = None
    if spec.model.num_classes == 2:
        names = [f"not {spec.data.target}", spec.data.target]
    elif spec.model.num_classes == 1000 and spec.data.dataset.startswith("imagenet"):
        from compaudit.data.imagenet_classes import imagenet_class_names

        names = [n.split(",")[0] for n in imagenet_class_names()]
    if names is not None:
        atomic_write_text(run_dir / "class_names.json", json.dumps(names) + "\n")


def _write_provenance(spec: AuditSpec, run_dir: Path, root: Path, started: float) -> None:
    import numpy
    import torch
    import torchvision

    import compaudit

    doc = {
        "spec": spec.text,
        "spec_path": spec.source,
        "spec_sha256": spec.sha256,
        "seeds": {"audit": spec.seed,
                  "replicas": [spec.seed + k for k in range(spec.model.replicas)],
                  "bootstrap": spec.analysis.seed},
        "versions": {"compaudit": compaudit.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "numpy": numpy.__version__, "pandas": pd.__version__},
        "data": {"name": spec.data.dataset, "root": str(root),
                 "fingerprint": _fingerprint(root) if root.exists() else None},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(run_dir / "run.json", json.dumps(doc, indent=2) + "\n")
