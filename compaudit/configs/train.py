"""Training settings: a frozen dataclass, checked when built.

Every invalid field is reported at once (one message per field) as a
:class:`~compaudit.config.ConfigError`, so an audit spec is fixed in one pass. The
limits are declared on the fields (:func:`compaudit.config.setting`); this module
imports no torch, so an audit spec is validated without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from compaudit.config import Checked, setting

__all__ = ["TrainConfig"]

#: Torch device strings: a device type, optionally with an index ("cuda:1").
_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu|xla|meta|hpu|mtia|privateuseone)(:\d+)?$")


@dataclass(frozen=True)
class TrainConfig(Checked):
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

    epochs: int = setting(10, ge=1)
    batch_size: int = setting(128, ge=1)
    lr: float = setting(0.1, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = setting(0.9, ge=0, lt=1)
    weight_decay: float = setting(5e-4, ge=0)
    schedule: Literal["step", "cosine", "constant"] = "cosine"
    label_smoothing: float = setting(0.0, ge=0, lt=1)
    seed: int = setting(0, ge=0)
    amp: bool = False
    channels_last: bool = False
    num_workers: int = setting(0, ge=0)
    device: str = "cpu"
    num_threads: int | None = setting(None, ge=1)
    step_milestones: tuple[float, ...] = setting((0.5, 0.75), gt=0, lt=1)
    step_gamma: float = setting(0.1, gt=0, le=1)

    def _problems(self):
        if list(self.step_milestones) != sorted(self.step_milestones):
            yield "step_milestones", (f"got {self.step_milestones!r}; expected increasing "
                                      "fractions of the run")
        if not _DEVICE.match(self.device):
            yield "device", (f"got {self.device!r}; expected a torch device string such as "
                             "'cpu', 'cuda' or 'cuda:1'")
