"""Training settings: a frozen dataclass, validated when built.

Every invalid field is reported at once (one message per field) as an
:class:`~compaudit.errors.AuditInputError`, so an audit spec is fixed in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from compaudit.errors import AuditInputError

__all__ = ["TrainConfig"]

_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULES = ("step", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Attributes
    ----------
    epochs, batch_size, lr
        Passes over the data, examples per step, peak learning rate.
    optimizer
        ``"sgd"`` (with ``momentum``, Nesterov off) or ``"adamw"``.
    momentum, weight_decay
        SGD momentum; L2 (SGD) or decoupled (AdamW) weight decay.
    schedule
        Learning-rate schedule over steps: ``"step"`` (multiply by ``step_gamma`` at the
        fractions ``step_milestones`` of the run), ``"cosine"`` (to zero) or ``"constant"``.
    label_smoothing
        Cross-entropy label smoothing in [0, 1).
    seed
        Seeds the global RNGs and the shuffling of every epoch.
    amp, channels_last
        Mixed precision (bfloat16 where supported, else float16 with loss scaling) and
        channels-last memory format; used on CUDA only, ignored with a warning on CPU.
    num_workers
        DataLoader worker processes (seeded per worker).
    device
        Torch device string, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    num_threads
        CPU intra-op threads while training, or ``None`` to leave torch's setting.
    step_milestones, step_gamma
        Parameters of the ``"step"`` schedule.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["step", "cosine", "constant"] = "cosine"
    label_smoothing: float = 0.0
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    num_workers: int = 0
    device: str = "cpu"
    num_threads: int | None = None
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.step_milestones, list):  # TOML and JSON give lists
            object.__setattr__(self, "step_milestones", tuple(self.step_milestones))
        problems = _config_problems(self)
        if problems:
            raise AuditInputError([f"TrainConfig: {p}" for p in problems])


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _config_problems(c: TrainConfig) -> list[str]:
    """One message per invalid field (all of them, so a spec is fixed in one pass)."""
    p: list[str] = []
    for name in ("epochs", "batch_size"):
        if not _is_int(getattr(c, name)) or getattr(c, name) < 1:
            p.append(f"{name} must be an integer >= 1, got {getattr(c, name)!r}")
    if not isinstance(c.lr, (int, float)) or not c.lr > 0:
        p.append(f"lr must be a number > 0, got {c.lr!r}")
    if c.optimizer not in _OPTIMIZERS:
        p.append(f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {c.optimizer!r}")
    if c.schedule not in _SCHEDULES:
        p.append(f"schedule must be one of {', '.join(_SCHEDULES)}, got {c.schedule!r}")
    if not isinstance(c.momentum, (int, float)) or not 0 <= c.momentum < 1:
        p.append(f"momentum must be in [0, 1), got {c.momentum!r}")
    if not isinstance(c.weight_decay, (int, float)) or c.weight_decay < 0:
        p.append(f"weight_decay must be >= 0, got {c.weight_decay!r}")
    if not isinstance(c.label_smoothing, (int, float)) or not 0 <= c.label_smoothing < 1:
        p.append(f"label_smoothing must be in [0, 1), got {c.label_smoothing!r}")
    if not _is_int(c.seed) or c.seed < 0:
        p.append(f"seed must be an integer >= 0, got {c.seed!r}")
    if not _is_int(c.num_workers) or c.num_workers < 0:
        p.append(f"num_workers must be an integer >= 0, got {c.num_workers!r}")
    if c.num_threads is not None and (not _is_int(c.num_threads) or c.num_threads < 1):
        p.append(f"num_threads must be None or an integer >= 1, got {c.num_threads!r}")
    for name in ("amp", "channels_last"):
        if not isinstance(getattr(c, name), bool):
            p.append(f"{name} must be true or false, got {getattr(c, name)!r}")
    ms = c.step_milestones
    if (not isinstance(ms, tuple) or not all(isinstance(m, (int, float)) and 0 < m < 1 for m in ms)
            or list(ms) != sorted(ms)):
        p.append(f"step_milestones must be an increasing tuple of fractions in (0, 1), got {ms!r}")
    if not isinstance(c.step_gamma, (int, float)) or not 0 < c.step_gamma <= 1:
        p.append(f"step_gamma must be in (0, 1], got {c.step_gamma!r}")
    try:
        torch.device(c.device)
    except (RuntimeError, TypeError):
        p.append(f"device must be a torch device string such as 'cpu' or 'cuda', got {c.device!r}")
    return p
