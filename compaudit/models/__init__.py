"""Models: architectures by name, the training loop, populations and user weights.

ONNX Runtime (extra ``onnx``) is imported only when an ONNX model is opened.
"""

from compaudit.models.architectures import build_model, list_architectures, register_architecture
from compaudit.models.onnx_runtime import OnnxModule, load_onnx
from compaudit.models.population import train_population
from compaudit.models.training import TrainConfig, TrainResult, train
from compaudit.models.weights import load_weights, read_state_dict, save_state_dict

__all__ = [
    "build_model",
    "list_architectures",
    "register_architecture",
    "TrainConfig",
    "TrainResult",
    "train",
    "train_population",
    "load_weights",
    "read_state_dict",
    "save_state_dict",
    "OnnxModule",
    "load_onnx",
]
