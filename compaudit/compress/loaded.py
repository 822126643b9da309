"""``method = "load"``: a compressed model the team made elsewhere, paired with its dense replica.

Nothing is compressed here: file k of :class:`~compaudit.configs.compress.LoadConfig`
is read with :func:`~compaudit.models.artifacts.load_artifact`, a state dict into a
copy of dense replica k (its architecture), an ONNX model as it is.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from compaudit.artifact_format import artifact_format
from compaudit.compress.registry import CompressedModel, CompressionContext
from compaudit.configs.compress import LoadConfig
from compaudit.errors import AuditInputError
from compaudit.models.artifacts import load_artifact

__all__ = ["check_pairing", "file_for_replica", "load_compressed"]


def check_pairing(config: LoadConfig, replicas: int) -> None:
    """Refuse a file list that does not give one file per dense replica."""
    n = len(config.files)
    if n != replicas:
        raise AuditInputError(
            f"method = \"load\": files lists {n} file(s) for {replicas} dense replica(s); "
            "expected one file per replica, file k paired with dense replica k (a single "
            "file only when there is a single replica)")


def file_for_replica(config: LoadConfig, replica: int) -> Path:
    """The file paired with dense replica ``replica``."""
    if not 0 <= replica < len(config.files):
        raise AuditInputError(
            f"method = \"load\": no file for dense replica {replica}: files lists "
            f"{len(config.files)} file(s); expected one file per replica, file k paired with "
            "dense replica k (a single file only when there is a single replica)")
    return Path(config.files[replica])


def load_compressed(model: nn.Module, config: LoadConfig,
                    context: CompressionContext) -> CompressedModel:
    """Load the artifact of replica ``context.replica``; ``model`` (the dense replica) only
    lends its architecture and is not changed. ``context.replicas``, when given, must
    equal the number of files (:func:`check_pairing`)."""
    if context.replicas is not None:
        check_pairing(config, context.replicas)
    path = file_for_replica(config, context.replica)
    fmt = artifact_format(path)
    loaded = load_artifact(path, structure=model)
    # No masks: a loaded state dict carries its zeros, and the footprint counts them.
    return CompressedModel(model=loaded, info={
        "parameters": {"files": [str(f) for f in config.files]},
        "artifact": str(path), "format": fmt})
