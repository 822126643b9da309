"""The train stage: the dense population, trained (resumable) or loaded from files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compaudit.errors import NEVER_DOWNLOADS, AuditInputError
from compaudit.models.architectures import architecture_source, build_model
from compaudit.models.population import replica_path, train_population
from compaudit.models.weights import torchvision_weights_path
from compaudit.pipeline.data import DataStage
from compaudit.pipeline.decoding import RunDecoder
from compaudit.pipeline.stages import StageCache, fingerprint, stage_key
from compaudit.rundir import RunFolder
from compaudit.spec import AuditSpec

__all__ = ["DenseStage", "check_architecture", "dense_paths", "dense_population",
           "model_search_path"]


@dataclass(frozen=True)
class DenseStage:
    """The dense replicas' weight files and the stage's cache key."""

    paths: tuple[Path, ...]
    key: str


def dense_population(spec: AuditSpec, folder: RunFolder, cache: StageCache, data: DataStage,
                     *, pool: Any, decoder: RunDecoder,
                     log: Callable[[str], None]) -> DenseStage:
    """The dense replicas: pretrained, given as files, or trained into the run folder."""
    m, t = spec.model, spec.train
    # The files' contents, not only their paths: a replaced file is a new model.

    source = architecture_source(m.arch, search_path=model_search_path(spec))
    # The user's module too: edited code is a new architecture (and every variant's key
    # derives from this one).
    key = stage_key(data.key, spec.section("model"), spec.section("train"), spec.seed,
                    [fingerprint(Path(w)) for w in m.weights],
                    *([fingerprint(source)] if source is not None else []))
    if m.pretrained or m.weights:
        return DenseStage(paths=dense_paths(spec), key=key)

    out = folder.dense_models
    recorded = cache.done.get("train")
    if recorded is not None and recorded != key and out.exists():
        shutil.rmtree(out)  # the spec changed: the old replicas (compaudit's own) are stale
    done = tuple(replica_path(out, k) for k in range(m.replicas))
    if cache.fresh("train", key, list(done)):  # every replica there: decode nothing
        return DenseStage(paths=done, key=key)
    # Recorded before training: a killed run keeps its finished replicas and epoch
    # checkpoints, and train_population resumes from them.
    cache.finish("train", key)
    log(f"[train] {m.replicas} x {m.arch} ({t.epochs} epochs each)")
    paths = train_population(m.arch, decoder.get("train", data.train), t.dense(),
                             replicas=m.replicas,
                             executor=pool, out_dir=out, num_classes=m.n_outputs,
                             small_input=m.small_input, options=m.options,
                             search_path=model_search_path(spec), head=m.task_head())
    return DenseStage(paths=tuple(paths), key=key)


def model_search_path(spec: AuditSpec) -> str | None:
    """Where a ``"package.module:callable"`` architecture is imported from besides
    ``sys.path``: the spec file's folder, absolute (workers may start in another
    folder); ``None`` for a spec that is not a file (parsed from text)."""
    source = Path(spec.source)
    return str(source.resolve().parent) if source.is_file() else None


def check_architecture(spec: AuditSpec) -> None:
    """The spec's model must build (checked before anything trains).

    One model is built, so an unknown name, a missing timm extra, a user module that
    does not import, a missing callable, rejected ``[model].options`` or a factory that
    raises all fail here, naming the spec file and key, rather than in a worker.
    """
    m = spec.model
    try:
        # Building draws from the global RNG: leave it as it was for what follows.
        with torch.random.fork_rng(devices=[]):
            build_model(m.arch, num_classes=m.n_outputs, small_input=m.small_input,
                        options=m.options, search_path=model_search_path(spec))
    except AuditInputError as err:
        raise AuditInputError([f"{spec.source}: {p}" for p in err.problems]) from err


def dense_paths(spec: AuditSpec) -> tuple[Path, ...]:
    """The dense replicas' files: the pretrained weights in the local torch hub cache,
    or ``[model].weights`` (an error names a missing one)."""
    return (_pretrained(spec),) if spec.model.pretrained else _weight_files(spec)


def _pretrained(spec: AuditSpec) -> Path:
    path = torchvision_weights_path(spec.model.pretrained)
    if not path.is_file():
        raise AuditInputError(
            f"{spec.source}: [model].pretrained: {spec.model.pretrained} is not in the local "
            f"cache; {NEVER_DOWNLOADS} weights: put the file at {path}")
    return path


def _weight_files(spec: AuditSpec) -> tuple[Path, ...]:
    paths = tuple(Path(w) for w in spec.model.weights)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise AuditInputError(f"{spec.source}: [model].weights: file(s) not found: "
                              f"{', '.join(missing)}; put the state-dict files there")
    return paths
