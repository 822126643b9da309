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

import torch
from torch import nn

from compaudit.compress.footprint import footprint, variant_record
from compaudit.compress.registry import CompressionContext, compress
from compaudit.data.in_memory import InMemoryDataset
from compaudit.models.architectures import build_model
from compaudit.models.training import TrainConfig, train
from compaudit.models.weights import read_state_dict
from compaudit.predict import predict_population, write_predictions
from compaudit.rundir import jsonable, write_json

__all__ = ["TRAINING_METHODS", "VariantJob", "run_variant_job", "dense_models"]

#: Compression methods that train every replica again (the long variant jobs).
TRAINING_METHODS = frozenset({"gradual_magnitude", "one_shot_magnitude", "random",
                              "lottery", "unit"})


@dataclass(frozen=True)
class VariantJob:
    """Compress every dense replica with one method, predict, and measure the footprint.

    ``name == "dense"`` with ``config=None`` predicts the dense population itself.
    ``arch``, ``num_classes``, ``small_input``, ``options`` and ``search_path`` rebuild
    the dense replicas in the worker (:func:`dense_models`).
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


def dense_models(arch: str, num_classes: int, small_input: bool, paths: Sequence[Path], *,
                 options: Mapping[str, Any] | None = None,
                 search_path: str | None = None) -> list[nn.Module]:
    """Build the dense replicas from their state-dict files (``options`` and
    ``search_path`` as for :func:`~compaudit.models.architectures.build_model`)."""
    models = []
    for path in paths:
        model = build_model(arch, num_classes=num_classes, small_input=small_input,
                            options=options, search_path=search_path)
        model.load_state_dict(read_state_dict(path))
        models.append(model.eval())
    return models


def _fine_tune(model: nn.Module, callbacks: Sequence[Any], *, data: Any,
               config: TrainConfig) -> None:
    train(model, data, config, step_callbacks=callbacks, progress=False)


def run_variant_job(job: VariantJob) -> dict[str, Any]:
    """Run one variant job; returns its ``variants.json`` record."""
    import pandas as pd

    from compaudit import tables

    wall, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(job.seed)
    models = dense_models(job.arch, job.num_classes, job.small_input, job.dense_paths,
                          options=job.options, search_path=job.search_path)
    structure = models[0]
    info: dict[str, Any] = {"method": "dense", "parameters": {}}
    masks = None
    if job.config is not None:
        compressed = []
        # One copy for every replica: each training image is decoded once per job.
        train_data = job.train_data()
        if not isinstance(train_data, InMemoryDataset):
            train_data = InMemoryDataset(train_data)
        steps = job.fine_tune.epochs * math.ceil(len(train_data) / job.fine_tune.batch_size)
        for k, dense in enumerate(models):
            context = CompressionContext(
                train_dataset=train_data, fine_tune_steps=steps,
                fine_tune=partial(_fine_tune, data=train_data,
                                  config=replace(job.fine_tune, seed=job.seed + k)),
                calibration_dataset=train_data,
                seed=job.seed + k,
                device=job.device,
            )
            out = compress(dense, job.config, context=context)
            compressed.append(out.model)
            if k == 0:
                info, masks = out.info, out.masks or None
        models = compressed
    frames = [predict_population({job.name: models}, factory(), device=job.device,
                                 progress=False) for factory in job.eval_data]
    predictions = pd.concat(frames, ignore_index=True)
    examples = tables.read_examples(job.examples_path)
    predictions["variant"] = predictions["variant"].astype(str)
    predictions["example_id"] = predictions["example_id"].astype(str)
    write_predictions(predictions, job.predictions_path, examples=examples, dense=job.name)
    fp = footprint(models[0], input_size=(3, job.image_size, job.image_size), masks=masks,
                   structure=structure if not list(models[0].parameters()) else None)
    extra = {k: v for k, v in info.items() if k not in ("method", "parameters")}
    record = variant_record(method=info.get("method", job.method),
                            parameters=info.get("parameters", job.params),
                            derives_from=None if job.config is None else "dense",
                            footprint=fp, **jsonable(extra))
    if job.dissection is not None:
        from compaudit.dissection.audit import dissect_population

        # Here, not later: the compressed replicas exist only inside this job.
        dissect_population(models, job.dissection, variant=job.name,
                           out_dir=job.record_path.parent)
    # Process CPU time counts every torch thread of this worker.
    record["timing"] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                        "finished": time.time()}
    write_json(job.record_path, record)
    return record
