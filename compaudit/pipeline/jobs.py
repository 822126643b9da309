"""Picklable jobs the pipeline hands to an executor (local processes or Ray).

Each job rebuilds what it needs from small, picklable descriptions (dataset factories,
file paths, config dataclasses), so it runs the same in this process, a worker
process or a Ray worker, and writes its outputs atomically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from compaudit import tables
from compaudit._malloc import reuse_freed_memory
from compaudit.compress.footprint import footprint, variant_record
from compaudit.compress.registry import CompressionContext, compress
from compaudit.configs.compress import method_of
from compaudit.configs.head import Head
from compaudit.dissection.audit import dissect_population
from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.models.artifacts import has_torch_weights, load_artifact
from compaudit.models.training import TrainConfig, train
from compaudit.models.weights import save_state_dict
from compaudit.predict import predict_population, write_predictions
from compaudit.rundir import jsonable, write_json

__all__ = ["VariantJob", "compress_variant_job", "dense_models", "run_variant_job",
           "write_variant_predictions"]


@dataclass(frozen=True)
class VariantJob:
    """Compress every dense replica with one method, predict, and measure the footprint.

    ``name == "dense"`` with ``config=None`` predicts the dense population itself.
    ``arch``, ``num_classes`` (the architecture's output width, ``[model].outputs``),
    ``small_input``, ``options`` and ``search_path`` rebuild the dense replicas in the
    worker (:func:`dense_models`); ``head`` says how their outputs are read (prediction,
    fine-tuning, pruning losses).
    """

    name: str
    config: Any
    method: str
    params: dict[str, Any]
    arch: str
    num_classes: int
    small_input: bool
    dense_paths: tuple[Path, ...]
    train_data: Callable[[], Any]
    eval_data: tuple[Callable[[], Any], ...]
    fine_tune: TrainConfig
    seed: int
    device: str
    image_size: int
    predictions_path: Path
    record_path: Path
    examples_path: Path
    dissection: Any = None  # a compaudit.dissection.audit.DissectionPlan, or None
    options: Mapping[str, Any] = field(default_factory=dict)
    search_path: str | None = None
    head: Head | None = None
    batch_size: int = 0  # [predict].batch_size; 0 chooses it from the models
    #: Where the variant is in the spec, e.g. ``"spec.toml: [[variants]] #2"``.
    spec_key: str = ""
    #: ``[data].protected``: the groups a repair bounds.
    protected: tuple[str, ...] = ()
    #: A derived variant (``Method.derives_from``): its base's name and the base's
    #: compressed replicas, one file per dense replica; and its family, the base's.
    base: str | None = None
    base_paths: tuple[Path, ...] = ()
    family: str | None = None
    #: Write compressed replica k to ``model_paths[k]``: a variant derives from this one.
    model_paths: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        """How errors name this job: the variant and its spec key, never a repr."""
        name = "dense population" if self.config is None else f"variant {self.name!r}"
        return f"{name}, {self.spec_key}" if self.spec_key else name


def dense_models(arch: str, num_classes: int, small_input: bool, paths: Sequence[Path], *,
                 options: Mapping[str, Any] | None = None,
                 search_path: str | None = None) -> list[nn.Module]:
    """The dense replicas, from their files (:func:`load_artifact`): a state dict is
    loaded into ``arch`` (``options`` and ``search_path`` as for
    :func:`~compaudit.models.architectures.build_model`), an ONNX model is an ONNX
    Runtime module."""
    structure = build_model(arch, num_classes=num_classes, small_input=small_input,
                            options=options, search_path=search_path)
    return [load_artifact(path, structure=structure) for path in paths]


def _without_torch_weights(models: Sequence[nn.Module]) -> int | None:
    """Index of the first model without torch weights (an ONNX module), else ``None``."""
    return next((k for k, m in enumerate(models) if not has_torch_weights(m)), None)


def _check_dense_fits(job: VariantJob, models: Sequence[nn.Module]) -> None:
    """Refuse, with the reason, what needs the dense replicas' torch weights when a
    replica has none (an ONNX file): every method but ``load``, and dissection."""
    k = _without_torch_weights(models)
    if k is None:
        return
    where, path = f"variant {job.name!r}", job.dense_paths[k]
    if job.config is not None and method_of(job.config).compresses_weights:
        raise AuditInputError(
            f"{where}: method {job.method!r} compresses the dense model's torch weights, but "
            f"dense replica {k} ({path}) is an ONNX model without them; give the dense "
            "replicas as state dicts, or audit your own compressed files with "
            "method = \"load\"")
    _check_dissectable(job, models)


def _check_dissectable(job: VariantJob, models: Sequence[nn.Module]) -> None:
    """Dissection hooks torch layers, which an ONNX Runtime module does not have."""
    k = _without_torch_weights(models)
    if job.dissection is not None and k is not None:
        raise AuditInputError(
            f"variant {job.name!r}: [dissection] hooks torch layers, but replica {k} is an "
            f"ONNX model run by ONNX Runtime ({getattr(models[k], 'path', '?')}); remove "
            "[dissection] or give the models as state dicts")


def _fine_tune(model: nn.Module, callbacks: Sequence[Any], *, data: Any,
               config: TrainConfig, head: Head | None = None) -> None:
    train(model, data, config, step_callbacks=callbacks, progress=False, head=head)


def run_variant_job(job: VariantJob) -> dict[str, Any]:
    """Run one variant job; returns its ``variants.json`` record."""
    # Calibration, fine-tuning, prediction and the latency probe free and allocate
    # activations of the same sizes again and again: keep freed memory in the heap
    # instead of faulting it in anew each time (see compaudit/_malloc.py).
    with reuse_freed_memory():
        return _variant_job(job)[0]


def compress_variant_job(job: VariantJob) -> tuple[dict[str, Any], list[nn.Module]]:
    """Run one variant job without predicting: compress (or load) the replicas, measure
    the footprint, dissect, write the record; returns the record and the models, which
    chunk jobs then predict range by range (:mod:`compaudit.pipeline.chunks`)."""
    with reuse_freed_memory():
        return _variant_job(job, predict=False)


def write_variant_predictions(job: VariantJob, frames: Sequence[Any]) -> None:
    """Write the variant's ``predictions.parquet`` from its frames, in evaluation-set order."""
    predictions = pd.concat(frames, ignore_index=True)
    examples = tables.read_examples(job.examples_path)
    predictions["variant"] = predictions["variant"].astype(str)
    predictions["example_id"] = predictions["example_id"].astype(str)
    write_predictions(predictions, job.predictions_path, examples=examples, dense=job.name)


def _variant_job(job: VariantJob, *, predict: bool = True
                 ) -> tuple[dict[str, Any], list[nn.Module]]:
    wall, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(job.seed)
    models = dense_models(job.arch, job.num_classes, job.small_input, job.dense_paths,
                          options=job.options, search_path=job.search_path)
    _check_dense_fits(job, models)
    # The torch model whose parameters and MACs a parameter-free (ONNX) variant is
    # measured by; none when the dense replicas are ONNX themselves.
    structure = models[0] if has_torch_weights(models[0]) else None
    info: dict[str, Any] = {"method": "dense", "parameters": {}}
    masks = None
    entry = None if job.config is None else method_of(job.config)
    if entry is not None:
        compressed = []
        train_data, steps = None, None  # a method that reads no training set gets none
        if entry.reads_training_set:
            # One dataset for every replica: the pipeline's training set keeps its
            # decoded images (in memory, or in the run's decoded array).
            train_data = job.train_data()
            steps = job.fine_tune.epochs * math.ceil(len(train_data) / job.fine_tune.batch_size)
        base_models = [load_artifact(path, structure=models[k])
                       for k, path in enumerate(job.base_paths)]
        for k, dense in enumerate(models):
            context = CompressionContext(
                train_dataset=train_data, fine_tune_steps=steps,
                fine_tune=partial(_fine_tune, data=train_data, head=job.head,
                                  config=replace(job.fine_tune, seed=job.seed + k)),
                calibration_dataset=train_data,
                seed=job.seed + k,
                device=job.device,
                replica=k,
                head=job.head,
                replicas=len(models),
                base_model=base_models[k] if base_models else None,
                protected=job.protected,
                dense_population=tuple(models),
            )
            try:
                out = compress(dense, job.config, context=context)
            except AuditInputError as err:  # say which replica
                raise AuditInputError([f"replica {k}: {p}" for p in err.problems]) from err
            compressed.append(out.model)
            if k == 0:
                info, masks = out.info, out.masks or None
        models = compressed
        _check_dissectable(job, models)  # before predicting, not after
        for model, path in zip(models, job.model_paths):  # a derived variant starts here
            save_state_dict(model, path)
    if predict:  # else chunk jobs predict (compaudit/pipeline/chunks.py)
        write_variant_predictions(job, [
            predict_population({job.name: models}, factory(), device=job.device,
                               batch_size=job.batch_size or "auto", progress=False,
                               head=job.head)
            for factory in job.eval_data])
    fp = footprint(models[0], input_size=(3, job.image_size, job.image_size), masks=masks,
                   structure=structure if not list(models[0].parameters()) else None)
    extra = {k: v for k, v in info.items() if k not in ("method", "parameters", "bits")}
    record = variant_record(method=info.get("method", job.method),
                            parameters=info.get("parameters", job.params),
                            derives_from=None if entry is None else "dense",
                            family=None if entry is None else
                            job.family or entry.family_of(job.name), base=job.base,
                            axis=None if entry is None else entry.axis,
                            bits=info.get("bits"), footprint=fp, **jsonable(extra))
    if job.dissection is not None:
        # Here, not later: the compressed replicas exist only inside this job.
        dissect_population(models, job.dissection, variant=job.name,
                           out_dir=job.record_path.parent)
    # Process CPU time counts every torch thread of this worker.
    record["timing"] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                        "finished": time.time()}
    write_json(job.record_path, record)
    return record, models
