"""The training loop: seeded, deterministic on CPU, checkpointed every epoch, resumable.

:func:`train` trains a model in place on a dataset yielding ``(image, label,
example_id)``. With ``checkpoint_dir`` it writes a checkpoint atomically after every
epoch and, when one is already there, resumes from it, so a killed run finishes with
weights identical (``torch.equal``) to an uninterrupted one.

Callbacks
---------
A step callback is called as ``cb(step, model)`` after every optimizer step (``step``
counts from 1 over the whole run) under ``torch.no_grad()``; an epoch callback as
``cb(epoch, model)`` after every epoch (from 1), before the checkpoint is written.
A callback with state that must survive a resume (the masks of gradual magnitude
pruning) implements ``state_dict() -> dict`` and ``load_state_dict(state)``; its state
is stored in the checkpoint's ``extra_state`` under ``cb.state_key`` when it has that
attribute, else under its position and class name.

Numbers on CPU depend on the number of intra-op threads (summation order), so
:attr:`TrainConfig.num_threads` can pin it; populations do.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from compaudit.configs.head import Head
from compaudit.configs.train import TrainConfig
from compaudit.data.base import dataset_length
from compaudit.errors import AuditInputError
from compaudit.models._checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)

__all__ = [
    "TrainConfig", "TrainResult", "train", "FineTuner", "StepCallback", "EpochCallback",
    "cosine_factor", "epoch_loader",
]

StepCallback = Callable[[int, nn.Module], None]
EpochCallback = Callable[[int, nn.Module], None]

# Fields that change how fast a run goes but not its numbers: a resume may differ in them.
_RESUME_FREE = frozenset({"num_workers"})


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    losses, accuracies
        Mean training loss and accuracy of every epoch, including epochs run before a
        resume.
    epochs, global_step
        Epochs completed and optimizer steps taken in all.
    checkpoint_path
        The last checkpoint written, or ``None`` without ``checkpoint_dir``.
    resumed_from_epoch
        Epochs already done when this call started (0 for a fresh run).
    seconds, images_per_second
        Wall time of the epochs run by this call and their throughput (not part of the
        reproducible numbers).
    """

    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    epochs: int = 0
    global_step: int = 0
    checkpoint_path: Path | None = None
    resumed_from_epoch: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0


def train(
    model: nn.Module,
    dataset: Any,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    step_callbacks: Sequence[StepCallback] = (),
    epoch_callbacks: Sequence[EpochCallback] = (),
    progress: bool = True,
    head: Head | None = None,
) -> TrainResult:
    """Train ``model`` in place; resume from ``checkpoint_dir`` when it holds a checkpoint.

    Parameters
    ----------
    model
        The model to train; moved to ``config.device`` and left there.
    dataset
        Map-style dataset yielding ``(image, label, example_id)``.
    config
        The run's settings; a resume must use the same (apart from ``num_workers``).
    checkpoint_dir
        Folder for ``checkpoint.pt``, written atomically after every epoch.
    step_callbacks, epoch_callbacks
        Called as ``cb(step, model)`` / ``cb(epoch, model)``; see the module docstring.
    progress
        Show a tqdm bar per epoch.
    head
        The loss and the prediction of the training accuracy
        (:class:`~compaudit.configs.head.Head`): cross-entropy over class logits
        (default), or binary cross-entropy with logits on one logit (sigmoid head).

    Returns
    -------
    TrainResult
        Loss and accuracy history, steps taken and the checkpoint path.
    """
    if not isinstance(config, TrainConfig):
        raise AuditInputError(f"config must be a TrainConfig, got {type(config).__name__}")
    n = dataset_length(dataset)
    device = _resolve_device(config.device)
    use_cuda = device.type == "cuda"
    if (config.amp or config.channels_last) and not use_cuda:
        warnings.warn("TrainConfig.amp and channels_last apply on CUDA only; training on "
                      f"{device} in float32 with the default memory format", stacklevel=2)
    callbacks = _stateful_callbacks(step_callbacks, epoch_callbacks)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None

    with _threads(config.num_threads), _deterministic(device):
        model.to(device)
        if use_cuda and config.channels_last:
            model.to(memory_format=torch.channels_last)
        steps_per_epoch = math.ceil(n / config.batch_size)
        optimizer = _build_optimizer(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_factor(config, steps_per_epoch * config.epochs))
        amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) \
            if use_cuda and config.amp else None
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        result = TrainResult(checkpoint_path=ckpt_path)

        stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                    "scaler": scaler}
        if ckpt_path is not None and ckpt_path.exists():
            _resume(ckpt_path, config, stateful, callbacks, result)
        else:
            _seed_everything(config.seed)

        step = _Step(model, optimizer, scheduler, scaler, head or Head(),
                     config.label_smoothing, device, amp_dtype,
                     channels_last=use_cuda and config.channels_last)
        started = time.perf_counter()
        seen = 0
        for epoch in range(result.epochs + 1, config.epochs + 1):
            model.train()
            # One iterator, made here: tqdm.auto calls iter() on an iterable it is given and
            # then again when iterated, which starts loader workers twice and moves the
            # shuffling generator on, so the order would depend on num_workers.
            batches = iter(_loader(dataset, config, epoch, pin=use_cuda))
            bar = tqdm(batches, total=steps_per_epoch,
                       desc=f"train epoch {epoch}/{config.epochs}", disable=not progress,
                       leave=False)
            total_loss, correct, count = _train_epoch(step, bar, step_callbacks, result)
            seen += count
            bar.close()
            result.losses.append(float(total_loss) / n)
            result.accuracies.append(int(correct) / n)
            result.epochs = epoch
            for cb in epoch_callbacks:
                cb(epoch, model)
            if ckpt_path is not None:
                _save_epoch(ckpt_path, config, epoch, result, stateful, callbacks)
        result.seconds = time.perf_counter() - started
        result.images_per_second = seen / result.seconds if seen and result.seconds > 0 else 0.0
    return result


@dataclass
class _Step:
    """What one optimisation step needs (built once per :func:`train` call)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    head: Head
    label_smoothing: float
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool


def _train_epoch(step: _Step, batches: Iterable[Any], step_callbacks: Sequence[StepCallback],
                 result: TrainResult) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over ``batches``: (summed loss, correct predictions, images seen)."""
    model, device = step.model, step.device
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for images, labels, _ids in batches:
        images = images.to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        if step.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, step.amp_dtype):
            out = model(images)
            # GoogLeNet and Inception v3 return (logits, aux logits...) in training mode:
            # the main head is trained, as in evaluation.
            logits = getattr(out, "logits", out)
            loss = step.head.loss(logits.float(), labels,
                                  label_smoothing=step.label_smoothing)
        step.optimizer.zero_grad(set_to_none=True)
        step.scaler.scale(loss).backward()
        step.scaler.step(step.optimizer)
        step.scaler.update()
        step.scheduler.step()
        result.global_step += 1
        with torch.no_grad():
            for cb in step_callbacks:
                cb(result.global_step, model)
            total_loss += loss.detach().double() * labels.shape[0]
            correct += (step.head.predict(logits) == labels).sum()
        seen += labels.shape[0]
    return total_loss, correct, seen


def _save_epoch(path: Path, config: TrainConfig, epoch: int, result: TrainResult,
                stateful: dict[str, Any], callbacks: dict[str, Any]) -> None:
    """Write the checkpoint of a finished epoch (atomically)."""
    save_checkpoint(path, {
        "config": asdict(config), "epoch": epoch, "global_step": result.global_step,
        **{name: obj.state_dict() for name, obj in stateful.items()},
        "extra_state": {key: cb.state_dict() for key, cb in callbacks.items()},
        "rng": capture_rng(),
        "history": {"loss": result.losses, "accuracy": result.accuracies},
    })


@dataclass(frozen=True)
class FineTuner:
    """A ``fine_tune(model, step_callbacks)`` callable with fixed data and settings.

    This is the shape :class:`~compaudit.compress.registry.CompressionContext` expects
    for ``fine_tune``; it is picklable when its dataset is, so it can travel to workers.

    Attributes
    ----------
    dataset, config
        Passed to :func:`train`.
    checkpoint_dir
        Makes fine-tuning resumable, like :func:`train`'s argument.
    progress
        Show progress bars.
    head
        The loss's head (default softmax cross-entropy); see :func:`train`.
    """

    dataset: Any
    config: TrainConfig
    checkpoint_dir: Path | None = None
    progress: bool = False
    head: Head | None = None

    def __call__(self, model: nn.Module,
                 step_callbacks: Sequence[StepCallback] = ()) -> TrainResult:
        """Train ``model`` in place, calling ``step_callbacks`` after every step."""
        return train(model, self.dataset, self.config, checkpoint_dir=self.checkpoint_dir,
                     step_callbacks=step_callbacks, progress=self.progress, head=self.head)


def _resume(path: Path, config: TrainConfig, stateful: dict[str, Any],
            callbacks: dict[str, Any], result: TrainResult) -> None:
    """Restore everything a checkpoint holds, so the run continues as if never stopped."""
    state = load_checkpoint(path)
    _check_resumable(path, state, config)
    for name, obj in stateful.items():
        obj.load_state_dict(state[name])
    _load_extra_state(path, callbacks, state["extra_state"])
    restore_rng(state["rng"])
    result.epochs = result.resumed_from_epoch = state["epoch"]
    result.global_step = state["global_step"]
    result.losses = list(state["history"]["loss"])
    result.accuracies = list(state["history"]["accuracy"])


def _resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AuditInputError(
            f"TrainConfig.device is {name!r} but CUDA is not available here; use device='cpu'"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise AuditInputError(
            f"TrainConfig.device is {name!r} but device index {device.index} does not exist "
            f"({torch.cuda.device_count()} CUDA devices); use 'cuda' or 'cuda:0'"
        )
    return device


def _build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def cosine_factor(total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate after ``step`` steps: cosine to zero at
    ``total_steps`` (a ``LambdaLR`` factor; the repair's multipliers use it too)."""
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate after ``step`` scheduler steps."""
    if config.schedule == "cosine":
        return cosine_factor(total_steps)
    if config.schedule == "step":
        bounds = [round(m * total_steps) for m in config.step_milestones]
        return lambda step: config.step_gamma ** sum(step >= b for b in bounds)
    return lambda step: 1.0


def _epoch_seed(seed: int, epoch: int) -> int:
    # A fresh, well-mixed shuffle seed per epoch: a resumed run needs no loader state.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; NumPy and random follow it.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def epoch_loader(dataset: Any, *, batch_size: int, seed: int, epoch: int, num_workers: int = 0,
                 pin: bool = False) -> DataLoader:
    """The shuffled batches of ``epoch`` (from 1) of a run seeded ``seed``.

    The order depends on ``seed`` and ``epoch`` only (not on ``num_workers`` or on the
    epochs before), so a resumed run needs no loader state.
    """
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                      num_workers=num_workers, worker_init_fn=_seed_worker,
                      pin_memory=pin, drop_last=False)


def _loader(dataset: Any, config: TrainConfig, epoch: int, *, pin: bool) -> DataLoader:
    return epoch_loader(dataset, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
                        num_workers=config.num_workers, pin=pin)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the run; on CUDA warn instead of failing where none exist."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if device.type == "cuda":  # cuBLAS is deterministic only with a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2:]


def _stateful_callbacks(step_cbs: Sequence[Any], epoch_cbs: Sequence[Any]) -> dict[str, Any]:
    """Callbacks with ``state_dict``/``load_state_dict``, by their key in ``extra_state``."""
    found: dict[str, Any] = {}
    for group, cbs in (("step", step_cbs), ("epoch", epoch_cbs)):
        for i, cb in enumerate(cbs):
            if not callable(cb):
                raise AuditInputError(f"{group}_callbacks[{i}] is not callable: {cb!r}")
            if hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict"):
                key = getattr(cb, "state_key", None) or f"{group}[{i}]:{type(cb).__qualname__}"
                if key in found:
                    raise AuditInputError(f"two callbacks share the state key {key!r}; "
                                          "give them distinct state_key attributes")
                found[key] = cb
    return found


def _load_extra_state(path: Path, callbacks: dict[str, Any], extra: dict[str, Any]) -> None:
    if set(callbacks) != set(extra):
        raise AuditInputError(
            f"{path}: the checkpoint holds state for callbacks {sorted(extra)} but this run "
            f"has stateful callbacks {sorted(callbacks)}; resume with the same callbacks or "
            "use a fresh checkpoint_dir"
        )
    for key, cb in callbacks.items():
        cb.load_state_dict(extra[key])


def _check_resumable(path: Path, state: dict[str, Any], config: TrainConfig) -> None:
    saved = state["config"]
    now = asdict(config)
    differ = [f.name for f in fields(TrainConfig)
              if f.name not in _RESUME_FREE and saved.get(f.name) != now[f.name]]
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in differ)
        raise AuditInputError(
            f"{path}: the checkpoint was written with a different TrainConfig ({shown}); "
            "resume with the same settings or use a fresh checkpoint_dir"
        )
