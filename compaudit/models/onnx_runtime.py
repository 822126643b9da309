"""Bring-your-own compressed model: an ONNX file run by ONNX Runtime behind ``nn.Module``.

:class:`OnnxModule` makes an ONNX classifier look like a torch model to the rest of
compaudit (float32 NCHW tensor in, logits tensor out), so a model compressed with any
toolchain can be audited. ONNX Runtime is the optional extra ``onnx``; it is imported
only when an ONNX model is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compaudit.errors import AuditInputError

__all__ = ["OnnxModule", "load_onnx", "ONNX_EXTRA_MESSAGE"]

ONNX_EXTRA_MESSAGE = (
    "ONNX models need ONNX Runtime, which is the optional extra 'onnx'; install it with "
    "pip install -e \".[onnx]\" (or pip install \"compaudit[onnx]\")"
)
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(double)": np.float64}


def _onnxruntime() -> Any:
    # The optional 'onnx' extra, imported only when an ONNX model is opened.
    try:
        import onnxruntime
    except ImportError as err:
        raise AuditInputError(ONNX_EXTRA_MESSAGE) from err
    return onnxruntime


class OnnxModule(nn.Module):
    """An ONNX classifier run on the CPU by an ``onnxruntime.InferenceSession``.

    The module has no parameters and ignores ``train()``/``eval()``; ``forward`` takes
    a float NCHW tensor and returns the logits as a float32 tensor on the input's
    device. A model exported with a fixed batch size is run in chunks of that size.
    The session is not pickled: a copy sent to another process reopens the file.

    Parameters
    ----------
    path
        The ``.onnx`` file; it must have one input and return logits first.
    num_threads
        ONNX Runtime intra-op threads; ``None`` takes ``torch.get_num_threads()`` when
        the session opens, so an ONNX model in an audit worker keeps to the worker's
        thread cap (ONNX Runtime's own default takes every core, oversubscribing the
        machine while other jobs run).
    """

    def __init__(self, path: str | Path, *, num_threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.num_threads = num_threads
        self._session: Any = None
        session = self.session  # open now so a bad file fails here, not mid-audit
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            found = [(i.name, i.shape) for i in inputs]
            raise AuditInputError(
                f"{self.path}: expected one 4-d image input (N, C, H, W), found {found}; "
                "export the model with a single image tensor input"
            )
        self.input_name: str = inputs[0].name
        self.input_shape: list[Any] = list(inputs[0].shape)
        self.input_dtype = _NUMPY_TYPES.get(inputs[0].type, np.float32)
        self.output_name: str = session.get_outputs()[0].name

    @property
    def session(self) -> Any:
        """The ONNX Runtime session, opened on first use."""
        if self._session is None:
            ort = _onnxruntime()
            if not self.path.is_file():
                raise AuditInputError(f"{self.path}: ONNX model file not found; fix the path")
            options = ort.SessionOptions()
            options.intra_op_num_threads = (self.num_threads if self.num_threads is not None
                                            else torch.get_num_threads())
            try:
                self._session = ort.InferenceSession(
                    str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
            except Exception as err:  # ORT raises its own types for any unreadable model
                lines = str(err).strip().splitlines() or [""]
                raise AuditInputError(
                    f"{self.path}: ONNX Runtime cannot load this model "
                    f"({type(err).__name__}: {lines[0]}); check the export"
                ) from err
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch ``x`` of shape (N, C, H, W)."""
        if x.ndim != 4:
            raise AuditInputError(f"{self.path}: expected an (N, C, H, W) batch, got shape "
                                  f"{tuple(x.shape)}")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy().astype(
            self.input_dtype, copy=False)
        fixed = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        chunks = [array] if fixed is None else [array[i:i + fixed]
                                                for i in range(0, len(array), fixed)]
        outputs = [self._run(chunk, fixed) for chunk in chunks]
        logits = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
        return torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)).to(x.device)

    def _run(self, chunk: np.ndarray, fixed: int | None) -> np.ndarray:
        n = len(chunk)
        if fixed is not None and n < fixed:  # pad the last chunk up to the fixed batch
            pad = np.zeros((fixed - n, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        out = self.session.run([self.output_name], {self.input_name: chunk})[0]
        return out[:n]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None  # sessions cannot be pickled; reopened lazily
        return state

    def extra_repr(self) -> str:
        """Show the file and input in ``repr(module)``."""
        return f"path={str(self.path)!r}, input={self.input_name}{self.input_shape}"


def load_onnx(path: str | Path, *, num_threads: int | None = None) -> OnnxModule:
    """Open an ONNX classifier for inference through ONNX Runtime.

    Parameters
    ----------
    path
        The ``.onnx`` file.
    num_threads
        ONNX Runtime intra-op threads, or ``None`` for its default.

    Returns
    -------
    OnnxModule
        A parameter-free ``nn.Module`` returning logits.
    """
    return OnnxModule(path, num_threads=num_threads)
