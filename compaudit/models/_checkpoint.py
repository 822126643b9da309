"""Training checkpoints: what a killed run needs to resume bit for bit, written atomically.

A checkpoint is one ``torch.save`` file holding only tensors and plain containers, so
it loads with ``weights_only=True``: model, optimizer, scheduler and grad-scaler
states, the epoch and global step reached, every RNG state (torch, CUDA, NumPy,
Python), the training history and the ``extra_state`` of stateful callbacks (for
example the masks of gradual magnitude pruning).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compaudit._atomic import atomic_path
from compaudit.errors import AuditInputError

__all__ = ["CHECKPOINT_NAME", "capture_rng", "restore_rng", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "compaudit-train-checkpoint"
_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """Every global RNG state, in a form ``torch.load(weights_only=True)`` accepts."""
    legacy = np.random.get_state()
    if not isinstance(legacy, tuple):  # the global RandomState is an MT19937 one
        raise RuntimeError("numpy's global RNG state is not MT19937's; cannot checkpoint it")
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # NumPy's state holds an ndarray, which the weights-only unpickler refuses.
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set every global RNG to a state from :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format tags) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": _FORMAT, "version": _VERSION, **payload}, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything else."""
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # corrupt or foreign file: say which and how to recover
        # torch's own text runs over many lines and suggests weights_only=False; keep
        # the message to one line (the cause stays attached).
        raise AuditInputError(
            f"{path}: cannot read the training checkpoint ({type(err).__name__}; the file is "
            "corrupt or was not written by compaudit); delete it to start the run again "
            "from scratch"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise AuditInputError(
            f"{path}: not a compaudit training checkpoint (no format tag {_FORMAT!r}); "
            "point checkpoint_dir at a folder of its own"
        )
    if payload.get("version") != _VERSION:
        raise AuditInputError(
            f"{path}: checkpoint version {payload.get('version')!r}, expected {_VERSION}; "
            "delete it to start again"
        )
    return payload
