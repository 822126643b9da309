"""A pickle reader that runs no code from the file: only numpy array reconstruction.

Pickle files name the functions they call ("globals"); a plain ``pickle.load`` imports
and calls whatever a file names, ``os.system`` included. :class:`ArrayUnpickler` admits
only the globals that pickles of dicts, lists, bytes and numpy arrays use (the official
CIFAR-10 python batches, Python 2 pickles, name ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray`` and ``numpy.dtype``) and refuses every other one before importing it.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

import numpy as np

# Private NumPy functions that pickles name: numpy's stubs leave _frombuffer out, and
# mypy sees the NumPy 1 fallback as a second definition.
try:  # NumPy 2 and its pickles: numpy._core
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

__all__ = ["ADMITTED", "ArrayUnpickler", "RefusedGlobal", "safe_load"]


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside :data:`ADMITTED`; ``name`` is ``module.name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"refused global {name}")


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 uses it for bytes in protocol 0-2 pickles only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise RefusedGlobal(f"_codecs.encode (with encoding {encoding!r}, errors {errors!r})")
    return text.encode("latin1")


#: ``(module, name)`` -> the object the unpickler returns for it; nothing else is imported.
ADMITTED: dict[tuple[str, str], Any] = {
    # The arrays of the official files (Python 2, NumPy 1) and of copies re-pickled
    # with NumPy 2 (numpy._core), protocol 5 included (_frombuffer).
    **{(f"{core}.multiarray", "_reconstruct"): _reconstruct
       for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.numeric", "_frombuffer"): _frombuffer
       for core in ("numpy.core", "numpy._core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Bytes in protocol 0-2 pickles written by Python 3: _codecs.encode(text, "latin1").
    ("_codecs", "encode"): _latin1_encode,
}  # fmt: skip


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`ADMITTED`.

    Any other global (``builtins.eval``, ``os.system``, ``posix.system``, ...) raises
    :class:`RefusedGlobal` before it is imported, so nothing from the file runs.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ADMITTED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def safe_load(file: IO[bytes], *, encoding: str = "bytes") -> Any:
    """``pickle.load(file, encoding=encoding)`` through :class:`ArrayUnpickler`."""
    return ArrayUnpickler(file, encoding=encoding).load()
