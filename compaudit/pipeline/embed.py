"""The embed stage: the dense population's penultimate features of every evaluation
image, written once to ``embeddings.npz`` for slice discovery (``[analysis.slices]``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compaudit.pipeline.data import DataStage
from compaudit.pipeline.decoding import RunDecoder
from compaudit.pipeline.stages import StageCache, stage_key
from compaudit.pipeline.train import DenseStage, model_search_path
from compaudit.rundir import RunFolder
from compaudit.spec import AuditSpec

__all__ = ["embed_dense", "onnx_dense"]

#: Part of the stage key: a change of what is embedded recomputes it.
EMBED_VERSION = "penultimate-mean/1"


def onnx_dense(spec: AuditSpec) -> str | None:
    """The first ``[model].weights`` file that is an ONNX model (no torch layers to
    embed with), else ``None``."""
    from compaudit.models.artifact_format import artifact_format

    return next((str(w) for w in spec.model.weights
                 if Path(w).is_file() and artifact_format(w) == "onnx"), None)


def embed_dense(spec: AuditSpec, folder: RunFolder, cache: StageCache, *, data: DataStage,
                dense: DenseStage, examples_key: str, decoder: RunDecoder, progress: bool,
                log: Callable[[str], None]) -> str | None:
    """Write ``embeddings.npz`` (cached on the dense models and the examples); returns
    the stage key, or ``None`` when slices are off or cannot be embedded (said once)."""
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
    from compaudit.pipeline.jobs import dense_models
    from compaudit.predict.embeddings import embed_population
    from compaudit.tables import write_embeddings

    m = spec.model
    models = dense_models(m.arch, m.n_outputs, m.small_input, dense.paths, options=m.options,
                          search_path=model_search_path(spec))
    log(f"[embed] {len(models)} dense replica(s): penultimate features of the evaluation "
        "images")
    ids, features = embed_population(models, decoder.get("eval-0", data.eval)(),
                                     batch_size=spec.predict.batch_size or 256,
                                     device=spec.train.device, progress=progress)
    write_embeddings(ids, features, folder.embeddings)
    cache.finish("embed", key)
    return key
