"""The embed stage: the dense population's penultimate features of every evaluation
image, written once to ``embeddings.npz`` for slice discovery (``[analysis.slices]``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compaudit.pipeline.data import DataStage
from compaudit.pipeline.decoding import RunDecoder
from compaudit.pipeline.stages import StageCache, stage_key
from compaudit.pipeline.train import DenseStage, model_search_path
from compaudit.rundir import RunFolder, write_json
from compaudit.spec import AuditSpec

__all__ = ["EmbedJob", "embed_dense", "embed_record", "embed_replica", "onnx_dense"]

#: Part of the stage key: a change of what is embedded recomputes it.
EMBED_VERSION = "penultimate-mean/1"


@dataclass(frozen=True)
class EmbedJob:
    """Embed the evaluation set with one dense replica (picklable, for the executor)."""

    arch: str
    num_classes: int
    small_input: bool
    path: Path
    data: Callable[[], Any]
    batch_size: int
    device: str
    options: Mapping[str, Any] = field(default_factory=dict)
    search_path: str | None = None


def embed_replica(job: EmbedJob) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """``(example_ids, features, timing)`` of one replica (run in a worker, with its
    threads); ``timing``: the job's own wall and CPU seconds."""
    import time

    from compaudit._malloc import reuse_freed_memory
    from compaudit.pipeline.jobs import dense_models
    from compaudit.predict.embeddings import embed_population

    wall, cpu = time.perf_counter(), time.process_time()
    # Batches free and allocate activations of one size: keep them in the heap.
    with reuse_freed_memory():
        (model,) = dense_models(job.arch, job.num_classes, job.small_input, [job.path],
                                options=job.options, search_path=job.search_path)
        ids, features = embed_population([model], job.data(), batch_size=job.batch_size,
                                         device=job.device, progress=False)
    return ids, features, {"wall_s": time.perf_counter() - wall,
                           "cpu_s": time.process_time() - cpu, "finished": time.time()}


def embed_record(folder: RunFolder) -> Path:
    """Beside ``embeddings.npz``: how it was made and the embed jobs' time."""
    return folder.embeddings.with_suffix(".json")


def onnx_dense(spec: AuditSpec) -> str | None:
    """The first ``[model].weights`` file that is an ONNX model (no torch layers to
    embed with), else ``None``."""
    from compaudit.models.artifact_format import artifact_format

    return next((str(w) for w in spec.model.weights
                 if Path(w).is_file() and artifact_format(w) == "onnx"), None)


def embed_dense(spec: AuditSpec, folder: RunFolder, cache: StageCache, *, data: DataStage,
                dense: DenseStage, examples_key: str, decoder: RunDecoder, pool: Any,
                log: Callable[[str], None]) -> str | None:
    """Write ``embeddings.npz`` (cached on the dense models and the examples); returns
    the stage key, or ``None`` when slices are off or cannot be embedded (said once).

    One job per replica on the run's executor (each worker with its share of the
    cores, as the variant jobs), reading the evaluation set the variants decoded; the
    features are averaged here."""
    if not spec.analysis.slices.enabled:
        return None
    onnx = onnx_dense(spec)
    if onnx is not None:
        log(f"[embed] slices skipped: dense replica {onnx} is an ONNX model, which has no "
            "torch layers to take penultimate features from (give state dicts, or run "
            "'compaudit analyze --embeddings FILE' with features made elsewhere)")
        return None
    key = stage_key(dense.key, examples_key, EMBED_VERSION, spec.predict.batch_size)
    if cache.fresh("embed", key, [folder.embeddings]):
        return key
    from compaudit.tables import write_embeddings

    m = spec.model
    log(f"[embed] {len(dense.paths)} dense replica(s): penultimate features of the "
        "evaluation images")
    eval_data = decoder.get("eval-0", data.eval)
    jobs = [EmbedJob(arch=m.arch, num_classes=m.n_outputs, small_input=m.small_input,
                     path=p, data=eval_data, batch_size=spec.predict.batch_size or 256,
                     device=spec.train.device, options=m.options,
                     search_path=model_search_path(spec)) for p in dense.paths]
    results = pool.map(embed_replica, jobs, desc="embed")
    ids = results[0][0]
    # Every job read the same set in the same order; a mismatch is a bug, not input.
    if any(not np.array_equal(r[0], ids) for r in results):
        raise RuntimeError("embed: the replicas saw the evaluation examples in different orders")
    features = np.asarray(np.mean([r[1] for r in results], axis=0, dtype=np.float64),
                          dtype=np.float32)
    write_embeddings(ids, features, folder.embeddings)
    # The jobs' own time, as the variant records keep theirs (run.json's timings).
    write_json(embed_record(folder), {
        "replicas": len(results), "dims": int(features.shape[1]),
        "timing": {"wall_s": sum(r[2]["wall_s"] for r in results),
                   "cpu_s": sum(r[2]["cpu_s"] for r in results),
                   "finished": max(r[2]["finished"] for r in results)}})
    cache.finish("embed", key)
    return key
