"""Populations: K replicas of a model, each trained independently from its own seed.

The PIE method compares populations, not single models (REFERENCES.md: K = 30 per
level). :func:`train_population` turns each replica into one job for an executor
(serial, local processes or Ray), writes ``replica-XXX.pt`` (a state dict) and
``replica-XXX.json`` (seed, settings, loss history) atomically, and skips replicas
whose ``.pt`` is already there, so a killed run resumes; a replica killed mid-training
resumes from its own epoch checkpoint.

Replica k uses seed ``seeds[k]`` for its initialisation, shuffling and everything
else, and trains with ``config.num_threads`` CPU threads (1 when unset), so its weights
do not depend on which executor trained it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from compaudit._atomic import atomic_write_text
from compaudit.errors import AuditInputError
from compaudit.executors import Executor, ExecutorKind, SerialExecutor, get_executor
from compaudit.models.architectures import build_model, resolve_architecture
from compaudit.models.head import Head
from compaudit.models.training import TrainConfig, train
from compaudit.models.weights import save_state_dict

__all__ = ["ReplicaJob", "train_replica", "train_population", "replica_path"]


def replica_path(out_dir: str | Path, replica: int) -> Path:
    """Return the state-dict file of replica ``replica`` under ``out_dir``."""
    return Path(out_dir) / f"replica-{replica:03d}.pt"


@dataclass(frozen=True)
class ReplicaJob:
    """Everything one worker needs to train one replica (picklable).

    ``dataset`` is a dataset, or a zero-argument callable building one in the worker
    (e.g. ``functools.partial(CelebA, root, split="train", transform=...)``), which
    avoids shipping a large dataset object to every process. ``options`` and
    ``search_path`` go to :func:`~compaudit.models.architectures.build_model` (the
    worker imports a ``"package.module:callable"`` architecture from ``search_path``).
    """

    replica: int
    seed: int
    arch: str
    num_classes: int
    small_input: bool
    dataset: Any
    config: TrainConfig
    out_path: Path
    checkpoint_dir: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    search_path: str | None = None
    head: Head | None = None

    @property
    def label(self) -> str:
        """How errors name this job (never its repr, which quotes the dataset)."""
        return f"dense replica {self.replica} (seed {self.seed}, {self.arch})"


def train_replica(job: ReplicaJob) -> Path:
    """Train one replica from its seed and write its files; the executor's job function.

    Returns
    -------
    Path
        The replica's state-dict file.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    dataset = job.dataset() if _is_factory(job.dataset) else job.dataset
    torch.manual_seed(job.seed)  # initial weights come from the replica's seed
    model = build_model(job.arch, num_classes=job.num_classes, small_input=job.small_input,
                        options=job.options, search_path=job.search_path)
    result = train(model, dataset, job.config, checkpoint_dir=job.checkpoint_dir, progress=False,
                   head=job.head)
    meta = {
        "replica": job.replica, "seed": job.seed, "arch": job.arch,
        "num_classes": job.num_classes, "small_input": job.small_input,
        "options": dict(job.options), "config": asdict(job.config),
        "head": asdict(job.head or Head()), "losses": result.losses,
        "accuracies": result.accuracies, "global_step": result.global_step,
        # Process CPU time counts every torch thread of this worker.
        "timing": {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                   "finished": time.time()},
    }
    # The .json first, the .pt last: the .pt's presence is what marks a replica done.
    atomic_write_text(job.out_path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    save_state_dict(model, job.out_path)
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)  # the final file supersedes it
    return job.out_path


def _is_factory(dataset: Any) -> bool:
    return callable(dataset) and not hasattr(dataset, "__getitem__")


def train_population(
    arch: str,
    dataset: Any,
    config: TrainConfig,
    *,
    replicas: int,
    seeds: Sequence[int] | None = None,
    executor: Executor | ExecutorKind | None = None,
    out_dir: str | Path,
    num_classes: int | None = None,
    small_input: bool = False,
    options: Mapping[str, Any] | None = None,
    search_path: str | Path | None = None,
    head: Head | None = None,
) -> list[Path]:
    """Train ``replicas`` independent models and write one state-dict file per replica.

    Parameters
    ----------
    arch
        An architecture :func:`~compaudit.models.architectures.build_model` accepts.
    dataset
        Training data yielding ``(image, label, example_id)``, or a zero-argument callable
        returning it.
    config
        Training settings; ``seed`` is replaced by each replica's seed.
    replicas
        Population size K.
    seeds
        One seed per replica; default ``config.seed, config.seed + 1, ...``.
    executor
        An executor or its name (``"serial"``, ``"local"``, ``"ray"``); default serial.
    out_dir
        Folder for ``replica-XXX.pt`` / ``.json`` and in-progress checkpoints.
    num_classes
        Output width; default ``dataset.num_classes`` (a sigmoid head: ``head.outputs``).
    small_input
        Small-image stem for ResNets (see :func:`~compaudit.models.architectures.build_model`).
    options, search_path
        Builder keyword arguments and the folder a ``"package.module:callable"``
        architecture is imported from (absolute: workers may start elsewhere); see
        :func:`~compaudit.models.architectures.build_model`.
    head
        The training loss's head (:func:`~compaudit.models.training.train`); default
        softmax cross-entropy.

    Returns
    -------
    list of Path
        The state-dict files, in replica order (existing ones included).
    """
    seeds = _check_population_args(arch, config, replicas, seeds, search_path)
    if num_classes is None and head is not None and head.sigmoid:
        num_classes = head.outputs
    if num_classes is None:
        probe = dataset() if _is_factory(dataset) else dataset
        num_classes = getattr(probe, "num_classes", None)
        if num_classes is None:
            raise AuditInputError("train_population: the dataset has no num_classes "
                                  "attribute; pass num_classes=")
    owned = isinstance(executor, str)  # built here, so closed here
    if isinstance(executor, str):
        executor = get_executor(executor)
    executor = executor or SerialExecutor()
    out_dir = Path(out_dir)
    threads = config.num_threads or 1
    jobs = [
        ReplicaJob(replica=k, seed=seed, arch=arch, num_classes=num_classes,
                   small_input=small_input, dataset=dataset, options=dict(options or {}),
                   search_path=None if search_path is None else str(search_path), head=head,
                   config=replace(config, seed=seed, num_threads=threads),
                   out_path=replica_path(out_dir, k),
                   checkpoint_dir=out_dir / "checkpoints" / f"replica-{k:03d}")
        for k, seed in enumerate(seeds)
    ]
    todo = [job for job in jobs if not job.out_path.exists()]
    try:
        if todo:
            executor.map(train_replica, todo, desc=f"train {arch} population")
    finally:
        if owned and hasattr(executor, "close"):
            executor.close()
    return [job.out_path for job in jobs]


def _check_population_args(arch: str, config: TrainConfig, replicas: int,
                           seeds: Sequence[int] | None,
                           search_path: str | Path | None) -> list[int]:
    resolve_architecture(arch, search_path=search_path)  # an unknown arch fails here, once
    if not isinstance(config, TrainConfig):
        raise AuditInputError(f"config must be a TrainConfig, got {type(config).__name__}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise AuditInputError(f"replicas must be an integer >= 1, got {replicas!r}")
    if seeds is None:
        return [config.seed + k for k in range(replicas)]
    seeds = list(seeds)
    if len(seeds) != replicas:
        raise AuditInputError(f"seeds has {len(seeds)} entries but replicas is {replicas}; "
                              "give one seed per replica or leave seeds out")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise AuditInputError(f"seeds must be integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise AuditInputError(f"seeds must be distinct (replicas would be copies), got {seeds!r}")
    return seeds

