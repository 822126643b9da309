"""Chunked prediction: one variant's evaluation spread over the executor's workers.

Without chunks, one job per variant compresses its replicas and predicts every
evaluation set, so a cluster of N machines shortens a run only while there are N
variants left. With ``[predict].chunk_examples = C`` (:class:`~compaudit.spec.PredictSpec`)
the variants stage runs two rounds on the audit's executor:

1. one job per variant compresses (or loads) its replicas, measures the footprint,
   dissects and writes ``variants.json``'s record, and hands the models back
   (:func:`~compaudit.pipeline.jobs.compress_variant_job`): compression, fine-tuning and
   calibration stay once per variant;
2. one job per chunk (a variant, an evaluation set, a range of its examples) predicts
   that range with those models (:func:`run_chunk_job`); the executor ships the models
   with the job, so a Ray worker on another machine needs only the run folder.

A chunk reads its evaluation set through the run's decoded array when the set has one
(:class:`~compaudit.data.decoded.DecodedDataset`, memory-mapped: a chunk touches only
its own rows) and decodes only its own rows otherwise. ``C`` is rounded up to a
multiple of the batch size (of :data:`~compaudit.predict.batching.MAX_BATCH` when the
batch size is chosen from the models, which picks a power of two up to it), so every
chunk's batches are the unchunked run's batches and the predictions are identical, row
for row; the chunk size therefore stays out of the variants' cache key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import nn

from compaudit.configs.head import Head
from compaudit.data.base import dataset_length
from compaudit.pipeline.jobs import (
    VariantJob,
    compress_variant_job,
    write_variant_predictions,
)
from compaudit.predict import predict_population
from compaudit.predict.batching import MAX_BATCH
from compaudit.rundir import write_json

__all__ = ["ChunkJob", "ExampleRange", "chunk_ranges", "run_chunk_job", "run_chunked"]


class ExampleRange:
    """Examples ``start:stop`` of ``dataset``, as a dataset of their own.

    A dataset that reads whole batches (``read_batch``, a run's decoded array) is read
    the same way over the range's rows only; ``num_classes`` and ``class_mask`` are the
    dataset's.
    """

    def __init__(self, dataset: Any, start: int, stop: int) -> None:
        self.dataset, self.start, self.stop = dataset, start, stop
        self.num_classes = getattr(dataset, "num_classes", None)
        self.class_mask = getattr(dataset, "class_mask", None)
        if callable(getattr(dataset, "read_batch", None)):
            self.read_batch = self._read_batch

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.dataset[self.start + index]

    def _read_batch(self, start: int, stop: int, out: Any = None) -> Any:
        return self.dataset.read_batch(self.start + start, self.start + stop, out=out)


def chunk_ranges(n: int, chunk_examples: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``0:n`` in chunks of about ``chunk_examples``,
    each a multiple of ``batch_size`` (of :data:`MAX_BATCH` when it is 0, automatic)
    but the last.

    >>> chunk_ranges(600, 200, 0)
    [(0, 256), (256, 512), (512, 600)]
    >>> chunk_ranges(100, 30, 16)
    [(0, 32), (32, 64), (64, 96), (96, 100)]
    """
    unit = batch_size or MAX_BATCH
    size = -(-chunk_examples // unit) * unit
    return [(start, min(start + size, n)) for start in range(0, n, size)]


@dataclass(frozen=True)
class ChunkJob:
    """Predict examples ``start:stop`` of evaluation set ``eval_set`` with one variant's
    replicas (``models``, already compressed)."""

    variant: str
    models: tuple[nn.Module, ...]
    eval_data: Callable[[], Any]
    eval_set: int
    start: int
    stop: int
    device: str
    batch_size: int  # 0 chooses it from the models, as the unchunked job does
    head: Head | None
    #: The variant job's label (variant and spec key), for errors.
    where: str = ""

    @property
    def label(self) -> str:
        """How errors name this chunk: its variant, spec key, set and rows."""
        return (f"{self.where or self.variant}, evaluation set {self.eval_set}, examples "
                f"{self.start}-{self.stop - 1}")


def run_chunk_job(job: ChunkJob) -> tuple[Any, dict[str, float]]:
    """Predict one chunk; returns its predictions frame and its wall/CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    frame = predict_population(
        {job.variant: list(job.models)}, ExampleRange(job.eval_data(), job.start, job.stop),
        device=job.device, batch_size=job.batch_size or "auto", progress=False,
        head=job.head)
    return frame, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def run_chunked(jobs: Sequence[VariantJob], pool: Any, *, chunk_examples: int,
                log: Callable[[str], None]) -> None:
    """Run the variant ``jobs`` as compress jobs, then chunk jobs (see the module doc);
    writes each variant's predictions and record as :func:`run_variant_job` does."""
    compressed = pool.map(compress_variant_job, jobs, desc="compress")
    sizes: dict[int, int] = {}  # the variant jobs share their evaluation factories
    chunks = []
    for job, (_, models) in zip(jobs, compressed):
        for s, factory in enumerate(job.eval_data):
            if id(factory) not in sizes:
                sizes[id(factory)] = dataset_length(factory())
            chunks += [ChunkJob(variant=job.name, models=tuple(models), eval_data=factory,
                                eval_set=s, start=start, stop=stop, device=job.device,
                                batch_size=job.batch_size, head=job.head, where=job.label)
                       for start, stop in chunk_ranges(sizes[id(factory)], chunk_examples,
                                                       job.batch_size)]
    log(f"[variants] predicting in {len(chunks)} chunks of up to "
        f"{max(c.stop - c.start for c in chunks)} examples")
    results = pool.map(run_chunk_job, chunks, desc="predict chunks")
    for job, (record, _) in zip(jobs, compressed):
        mine = [(c, r) for c, r in zip(chunks, results) if c.variant == job.name]
        write_variant_predictions(job, [
            _replica_major([frame for c, (frame, _) in mine if c.eval_set == s])
            for s in range(len(job.eval_data))])
        # The record's seconds count all of the variant's work, as one job would.
        timing = record["timing"]
        for _, (_, seconds) in mine:
            timing["wall_s"] += seconds["wall_s"]
            timing["cpu_s"] += seconds["cpu_s"]
        timing.update(chunks=len(mine), finished=time.time())
        write_json(job.record_path, record)


def _replica_major(frames: list[Any]) -> Any:
    """One evaluation set's chunk frames in the unchunked job's row order: by replica,
    then example (each chunk holds every replica over its rows)."""
    return pd.concat(frames, ignore_index=True).sort_values(
        "replica", kind="stable").reset_index(drop=True)
