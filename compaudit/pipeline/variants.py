"""The variants stage: one job per variant (compress every dense replica, predict,
measure the footprint, dissect), run on the executor; and the dissection plan."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from compaudit.config import narrow
from compaudit.configs.compress import GradualMagnitudeConfig, method_of
from compaudit.configs.dissection import DEFAULT_LAYERS, DissectionConfig
from compaudit.dissection.audit import DissectionPlan, concept_dataset
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.pipeline.chunks import run_chunked
from compaudit.pipeline.data import DataStage, ShiftStage, data_path
from compaudit.pipeline.decoding import RunDecoder
from compaudit.pipeline.jobs import VariantJob, run_variant_job
from compaudit.pipeline.stages import StageCache, fingerprint, stage_key
from compaudit.pipeline.train import DenseStage, model_search_path
from compaudit.rundir import VARIANTS_SCHEMA, RunFolder
from compaudit.spec import AuditSpec, VariantSpec

__all__ = ["check_schedules", "dissection_plan", "run_variants", "variant_bases", "variant_names"]

DENSE = VariantSpec(name="dense", method="dense", config=None)


def variant_names(spec: AuditSpec) -> list[str]:
    """``dense`` and every compressed variant, in spec order."""
    return [DENSE.name] + [v.name for v in spec.variants]


def run_variants(spec: AuditSpec, folder: RunFolder, cache: StageCache, *, data: DataStage,
                 shifts: ShiftStage, dense: DenseStage, examples_key: str, plan: Any,
                 pool: Any, decoder: RunDecoder, log: Callable[[str], None]) -> dict[str, str]:
    """Run the jobs of the variants that are not up to date; returns every variant's key."""
    m = spec.model
    bases = variant_bases(spec)
    derived_from = set(bases.values())
    keys: dict[str, str] = {}
    jobs: list[VariantJob] = []
    # Bases before the variants derived from them: a derived variant's key holds its base's.
    for i, variant in sorted(enumerate((DENSE, *spec.variants)),
                             key=lambda iv: _depth(iv[1].name, bases)):
        # Model files made elsewhere (method = "load"): their contents are inputs too.
        method = None if variant.config is None else method_of(variant.config)
        files = () if method is None else method.files(variant.config)
        revision = 1 if method is None else method.revision
        base = bases.get(variant.name)
        key = stage_key(dense.key, examples_key, variant.name, variant.method, revision,
                        variant.params,
                        spec.section("train"), spec.section("dissection"),
                        _predict_key(spec), VARIANTS_SCHEMA,
                        [fingerprint(Path(f)) for f in files],
                        *((keys[base], list(spec.data.protected)) if base else ()))
        keys[variant.name] = key
        model_paths = tuple(folder.variant_model(variant.name, k) for k in range(m.replicas)) \
            if variant.name in derived_from else ()
        job = VariantJob(
            name=variant.name, config=variant.config, method=variant.method,
            params=variant.params, arch=m.arch, num_classes=m.n_outputs,
            small_input=m.small_input, dense_paths=dense.paths, train_data=data.train,
            eval_data=(data.eval, *shifts.factories), fine_tune=spec.train.fine_tune(),
            seed=spec.seed, device=spec.train.device, image_size=spec.data.input_size,
            predictions_path=folder.variant_predictions(variant.name),
            record_path=folder.variant_record(variant.name),
            examples_path=folder.examples, dissection=plan, options=m.options,
            search_path=model_search_path(spec), head=m.task_head(),
            batch_size=spec.predict.batch_size,
            spec_key=f"{spec.source}: " + ("[model]" if i == 0 else f"[[variants]] #{i}"),
            protected=tuple(spec.data.protected), base=base,
            base_paths=tuple(folder.variant_model(base, k) for k in range(m.replicas))
            if base else (),
            family=_family(variant.name, spec, bases) if base else None,
            model_paths=model_paths)
        outputs = [job.predictions_path, job.record_path, *model_paths]
        if plan is not None:
            outputs.append(folder.variant_units(variant.name))
        if not cache.fresh(f"variant:{variant.name}", key, outputs):
            jobs.append(job)
    if jobs:
        log(f"[variants] {', '.join(j.name for j in jobs)}")
        eval_data = tuple(decoder.get(f"eval-{i}", f) for i, f in enumerate(jobs[0].eval_data))
        reads_train = any(j.config is not None and method_of(j.config).reads_training_set
                          for j in jobs)
        train_data = decoder.get("train", data.train) if reads_train else data.train
        jobs = [replace(j, eval_data=eval_data, train_data=train_data) for j in jobs]
        rounds = _rounds(jobs, bases)
        for depth in sorted(set(rounds.values())):
            # Longest first (the methods that fine-tune every replica), so the last jobs
            # to finish are short ones and no worker idles while one long job runs alone.
            round_ = sorted((j for j in jobs if rounds[j.name] == depth),
                            key=lambda j: _length(j.config))
            if spec.predict.chunk_examples:
                run_chunked(round_, pool, chunk_examples=spec.predict.chunk_examples, log=log)
            else:
                pool.map(run_variant_job, round_, desc="compress + predict")
            for job in round_:
                cache.finish(f"variant:{job.name}", keys[job.name])
    return keys


def variant_bases(spec: AuditSpec) -> dict[str, str]:
    """``{variant: the variant it derives from}`` for every derived variant
    (``Method.derives_from``; checked by :func:`derivation_problems`)."""
    out = {}
    for v in spec.variants:
        base = method_of(v.config).base_of(v.config)
        if base is not None:
            out[v.name] = base
    return out


def _rounds(jobs: list[VariantJob], bases: dict[str, str]) -> dict[str, int]:
    """The round each job runs in. A derived variant's job reads its base's model files,
    so it runs in the round after the one that wrote them (one round per derivation
    depth). Short jobs that nothing derives from (no training) wait for the last round,
    beside the derived jobs, so that no worker idles while a repair runs alone."""
    depth = {j.name: _depth(j.name, bases) for j in jobs}
    last = max(depth.values(), default=0)
    bases_of_others = set(bases.values())
    return {j.name: last if depth[j.name] == 0 and j.name not in bases_of_others
            and _length(j.config)[0] else depth[j.name] for j in jobs}


def _depth(name: str, bases: dict[str, str]) -> int:
    """How many derivations lead from the dense replicas to ``name`` (0 for most)."""
    depth = 0
    while name in bases and depth <= len(bases):
        name, depth = bases[name], depth + 1
    return depth


def _family(name: str, spec: AuditSpec, bases: dict[str, str]) -> str | None:
    """The operating-point family of a derived variant: its first base's, so that a
    repair sits beside the variant it repairs."""
    while name in bases:
        name = bases[name]
    v = next(v for v in spec.variants if v.name == name)
    return method_of(v.config).family_of(name)


def _predict_key(spec: AuditSpec) -> dict[str, Any]:
    """``[predict]`` as it changes predictions: chunks give the unchunked predictions
    (compaudit/pipeline/chunks.py), so their size stays out of the key."""
    return {k: v for k, v in spec.section("predict").items() if k != "chunk_examples"}


def _length(config: Any) -> tuple[bool, bool]:
    """Sort key, longest jobs first: training methods, then those reading the training
    set (scores, calibration), then the rest."""
    if config is None:
        return (True, True)
    entry = method_of(config)
    return (not entry.trains, not entry.reads_training_set)


def check_schedules(spec: AuditSpec, n_train: Callable[[], int]) -> None:
    """Pruning schedules in optimizer steps must end within the fine-tuning run on
    ``n_train()`` training images, called only for such schedules (checked before
    anything trains; schedules in fractions always fit)."""
    gradual = [(i, v) for i, v in enumerate(spec.variants, 1)
               if isinstance(v.config, GradualMagnitudeConfig) and v.config.in_steps]
    if not gradual:
        return
    t = spec.train
    per_epoch = math.ceil(n_train() / t.batch_size)
    planned = t.fine_tune_epochs * per_epoch
    problems = [f"{spec.source}: [[variants]] #{i}.end_step: got {v.config.end_step}; the "
                f"fine-tuning run has {planned} optimizer steps ([train].fine_tune_epochs = "
                f"{t.fine_tune_epochs} x {per_epoch} steps of {t.batch_size}); expected at most "
                f"{planned}, or give begin/end as fractions of the run (e.g. begin = 0.0, "
                "end = 0.8)" for i, v in gradual if v.config.end_step > planned]
    if problems:
        raise AuditInputError(problems)


def dissection_plan(spec: AuditSpec, folder: RunFolder, *, transform: Any,
                    load_concepts: bool = True) -> Any:
    """The variant jobs' :class:`DissectionPlan`, checked before any training (or None).

    ``load_concepts=False`` skips reading the concept masks (the preflight of generated
    synthetic faces, whose masks the run writes)."""
    dx = spec.dissection
    if dx is None:
        return None

    layers = tuple(dx.layers) or DEFAULT_LAYERS[spec.model.arch]
    _check_layers(spec, layers)
    onnx = [v.name for v in spec.variants if not method_of(v.config).torch_layers(v.config)]
    if onnx:
        raise AuditInputError(f"{spec.source}: [dissection]: variant(s) {', '.join(onnx)} run in "
                              "ONNX Runtime, which has no layers to hook; set backend = "
                              "\"simulated\" (the same int8 arithmetic in torch) or remove "
                              "[dissection]")
    # Another concept set's root is absolute; the data's own masks are where the data is.
    root = data_path(spec, folder, dx.root or spec.data.root)
    factory = partial(concept_dataset, dx.concepts, root, split=dx.split,
                      transform=transform, max_images=dx.max_images, seed=spec.seed)
    if load_concepts:
        factory()  # fail now, before training, on missing or inconsistent mask files
    config = narrow(dx, DissectionConfig, layers=layers, device=spec.train.device)
    return DissectionPlan(dataset=factory, config=config, concepts=dx.concepts)


def _check_layers(spec: AuditSpec, layers: tuple[str, ...]) -> None:
    m = spec.model
    model = build_model(m.arch, num_classes=m.n_outputs, small_input=m.small_input,
                        options=m.options, search_path=model_search_path(spec))
    modules = {n for n, _ in model.named_modules() if n}
    unknown = [n for n in layers if n not in modules]
    if unknown:
        raise AuditInputError(f"{spec.source}: [dissection].layers: {', '.join(map(repr, unknown))} "
                              f"are not modules of {m.arch!r}; valid names include "
                              f"{', '.join(sorted(modules)[:30])}")
