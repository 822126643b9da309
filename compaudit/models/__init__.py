"""Models: architectures by name, the training loop, populations and user weights.

:class:`TrainConfig` lives in :mod:`compaudit.configs.train` (no torch) and is
re-exported here. ONNX Runtime (extra ``onnx``) is imported only when an ONNX model is
opened.
"""

from compaudit.configs.train import TrainConfig
from compaudit.models.architectures import build_model, list_architectures, register_architecture
from compaudit.models.artifacts import load_artifact
from compaudit.models.onnx_runtime import OnnxModule, load_onnx
from compaudit.models.population import train_population
from compaudit.models.training import TrainResult, train
from compaudit.models.weights import load_weights, read_state_dict, save_state_dict

__all__ = [
    "TrainConfig",
    "build_model",
    "list_architectures",
    "register_architecture",
    "TrainResult",
    "train",
    "train_population",
    "load_weights",
    "read_state_dict",
    "save_state_dict",
    "OnnxModule",
    "load_onnx",
    "load_artifact",
]
