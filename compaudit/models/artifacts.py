"""One loader for every model file a spec names: dense replicas and ``load`` variants.

:func:`load_artifact` reads the format from the file's header
(:func:`~compaudit.artifact_format.artifact_format`) and returns a module that
takes a float NCHW batch and returns logits:

* a state dict (:func:`~compaudit.models.weights.read_state_dict`: ``weights_only``
  load, checkpoint unwrapping, pruning reparametrisations folded) is loaded strictly
  into a copy of ``structure``, the architecture it was trained with;
* an ONNX model becomes an :class:`~compaudit.models.onnx_runtime.OnnxModule`;
* a ``torch.export`` program (``.pt2``) is refused, because reading one can run code
  from the file (:data:`PT2_MESSAGE`; the reasons are in :func:`load_artifact`).
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from compaudit.artifact_format import PT2_MESSAGE, ArtifactFormat, artifact_format
from compaudit.errors import AuditInputError
from compaudit.models.onnx_runtime import OnnxModule
from compaudit.models.weights import check_compatible, read_state_dict

__all__ = ["PT2_MESSAGE", "has_torch_weights", "load_artifact"]



def load_artifact(path: str | Path, *, structure: nn.Module | None,
                  num_threads: int | None = None) -> nn.Module:
    """The model in ``path``, ready for inference (eval mode).

    Parameters
    ----------
    path
        A state dict (``torch.save``), or an ONNX model.
    structure
        The torch model a state dict is loaded into (it is copied, never changed);
        unused for ONNX. ``None`` or a parameter-free module (an ONNX dense replica)
        refuses state dicts, which hold weights without an architecture.
    num_threads
        ONNX Runtime intra-op threads (``None``: its default).

    Raises
    ------
    AuditInputError
        Missing or unrecognised files, whole pickled models, state dicts that do not
        fit ``structure`` (missing, unexpected or mis-shaped keys), and ``.pt2`` files.

    Notes
    -----
    Why ``.pt2`` is refused (torch 2.14): ``torch.export.load`` reads
    ``data/sample_inputs/<model>.pt`` through
    ``torch._export.serde.serialize.deserialize_torch_artifact``, which retries a
    failed ``torch.load(weights_only=True)`` with ``weights_only=False``; weights and
    constants whose ``*_config.json`` entry says ``use_pickle`` are read with
    ``torch.load(weights_only=False)``, and opaque constants with ``pickle.loads``
    (``torch/export/pt2_archive/_package.py``, ``_load_state_dict`` and
    ``_load_constants``); and ``models/<model>.json`` itself is not plain data: its
    symbolic expressions go through ``sympy.sympify`` (``_parse_sym_expr``), which calls
    ``eval``. Each of the three ran a shell command from a crafted archive during
    ``torch.export.load``. Skipping the pickles would still leave the JSON graph, so
    a safe reader would have to re-validate torch's private, changing serialization
    schema; exporting to ONNX or saving the state dict on a trusted machine is the
    sound fix.
    """
    path = Path(path)
    fmt: ArtifactFormat = artifact_format(path)
    if fmt == "onnx":
        return OnnxModule(path, num_threads=num_threads).eval()
    if fmt == "pt2":
        raise AuditInputError(PT2_MESSAGE.format(path=path))
    if structure is None or not has_torch_weights(structure):
        what = ("no torch architecture was given" if structure is None else
                f"the model it would be paired with is a {type(structure).__name__} without "
                "torch weights")
        raise AuditInputError(
            f"{path}: a state dict holds weights without an architecture, and {what}; pass "
            "an ONNX model instead, or give dense replicas as torch weights ([model].arch "
            "and state-dict files)")
    state = read_state_dict(path)
    model = copy.deepcopy(structure)
    check_compatible(model, state, source=str(path))
    model.load_state_dict(state)
    return model.eval()


def has_torch_weights(model: nn.Module) -> bool:
    """Whether ``model`` keeps its weights as torch tensors (not an ONNX Runtime session)."""
    return not isinstance(model, OnnxModule) and bool(list(model.state_dict()))
