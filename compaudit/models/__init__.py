"""Models: architectures by name, the training loop, populations and user weights.

Names are imported on first use, so reading a :class:`TrainConfig` (which needs no
torch) does not load torch. ONNX Runtime (extra ``onnx``) is imported only when an
ONNX model is opened.
"""

from __future__ import annotations

import importlib
from typing import Any

from compaudit.models.train_config import TrainConfig

#: Torch-side names and the module each comes from.
_LAZY = {
    "build_model": "architectures", "list_architectures": "architectures",
    "register_architecture": "architectures",
    "TrainResult": "training", "train": "training",
    "train_population": "population",
    "load_weights": "weights", "read_state_dict": "weights", "save_state_dict": "weights",
    "OnnxModule": "onnx_runtime", "load_onnx": "onnx_runtime",
    "load_artifact": "artifacts",
}

__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"compaudit.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'compaudit.models' has no attribute {name!r}")
