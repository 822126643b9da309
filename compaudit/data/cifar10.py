"""CIFAR-10 (official python batches) and CIFAR-10-C (Hendrycks & Dietterich).

CIFAR-10-C holds, per corruption, the 10,000 CIFAR-10 test images at severities 1..5
(rows ``(severity - 1) * 10000 + index``), so every corrupted example names its clean
source ``cifar10/test/<index>``. Nothing is downloaded.

The python batches are pickles; they are read by a restricted unpickler that admits only
the numpy array globals those files name and refuses any other (``os.system``,
``builtins.exec``, ...) before importing it, so no code from a batch file runs.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._checks import check_choice, check_no_attributes
from compaudit.data._safe_pickle import ADMITTED, RefusedGlobal, safe_load
from compaudit.data.base import AuditDataset, TransformSpec, clean_examples, register_dataset
from compaudit.errors import AuditInputError

__all__ = [
    "CIFAR10",
    "CIFAR10C",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_TRANSFORM",
    "CIFAR10C_CORRUPTIONS",
    "CIFAR10C_EXTRA_CORRUPTIONS",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: The usual preprocessing: resize/crop to 32 leave a 32x32 image unchanged, so this
#: is ToTensor + Normalize with the CIFAR-10 mean and std.
CIFAR10_TRANSFORM = TransformSpec(resize=32, crop=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)

#: The 15 corruptions of the benchmark (mCE), in the paper's order.
CIFAR10C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
#: The 4 held-out corruptions shipped in the same archive.
CIFAR10C_EXTRA_CORRUPTIONS = ("gaussian_blur", "saturate", "spatter", "speckle_noise")

_BATCH_DIR = "cifar-10-batches-py"
_META = "batches.meta"
_SPLIT_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_C_DIR = "CIFAR-10-C"
_NUM_CLASSES = 10
_SHAPE = (32, 32, 3)
# Unpickling a damaged or foreign file can fail in any of these ways.
_PICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError,
    AttributeError, ImportError, IndexError, KeyError, OSError,
)  # fmt: skip


#: The refusal of a batch that names a global other than numpy array reconstruction.
_REFUSED = (
    "{path}: refused global {name}: a CIFAR-10 python batch holds only dicts, lists, "
    "bytes and numpy arrays (admitted globals: "
    + ", ".join(sorted(f"{module}.{name}" for module, name in ADMITTED))
    + "), and compaudit never runs code from an input file; re-extract the official "
    "cifar-10-python.tar.gz"
)
_NO_ATTRIBUTES = "labels are the 10 CIFAR-10 classes"


def _check_labels(labels: np.ndarray, where: str, count: int) -> np.ndarray:
    """Labels as int64 after checking their number and range 0..9."""
    if labels.ndim != 1 or labels.shape[0] != count:
        raise AuditInputError(
            f"{where}: {labels.shape[0] if labels.ndim else 0} labels for {count} images; "
            "expected one label per image, the file may be truncated"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise AuditInputError(
            f"{where}: labels have dtype {labels.dtype}; expected integers 0..9"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= _NUM_CLASSES))
    if bad.size:
        raise AuditInputError(
            f"{where}: {bad.size} label(s) outside 0..9, first {int(labels[bad[0]])} at "
            f"position {int(bad[0])}; expected CIFAR-10 class indices 0..9"
        )
    return labels.astype(np.int64)


def _unpickle(path: Path) -> dict:
    """Read one batch file of the official python version."""
    try:
        with open(path, "rb") as f:
            # The official format is a pickle; the restricted unpickler admits only the
            # numpy array globals those files name, so no code from the file runs.
            batch = safe_load(f, encoding="bytes")
    except RefusedGlobal as err:
        raise AuditInputError(_REFUSED.format(path=path, name=err.name)) from err
    except _PICKLE_ERRORS as err:
        raise AuditInputError(
            f"{path}: cannot unpickle ({err!r}); expected a batch of the official CIFAR-10 "
            "python version, re-extract cifar-10-python.tar.gz"
        ) from err
    if not isinstance(batch, dict):
        raise AuditInputError(f"{path}: holds a {type(batch).__name__}; expected a dict")
    # Official keys are bytes; accept str keys of re-pickled copies as well.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data N x 3072 uint8, labels int64) of one batch file, checked."""
    batch = _unpickle(path)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise AuditInputError(
            f"{path}: missing field(s) {', '.join(missing)}; expected data and labels"
        )
    data = np.asarray(batch["data"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise AuditInputError(
            f"{path}: field data has shape {data.shape} and dtype {data.dtype}; expected "
            "(N, 3072) uint8 (3 channel planes of 32x32 pixels per row)"
        )
    labels = _check_labels(np.asarray(batch["labels"]), f"{path}: field labels", data.shape[0])
    return data, labels


def _find_dir(root: Path, child: str, what: str) -> Path:
    """``root/child`` when it exists, else root itself (a folder, not empty)."""
    if (root / child).is_dir():
        return root / child
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise AuditInputError(f"{what} root {root} {state}; expected {child}/ or its parent")
    if not any(root.iterdir()):
        raise AuditInputError(f"{root}: the folder is empty; expected the extracted {child}/")
    return root


@register_dataset("cifar10")
class CIFAR10(AuditDataset):
    """CIFAR-10 from the official python version (``cifar-10-batches-py``).

    Parameters
    ----------
    root
        The ``cifar-10-batches-py`` folder or its parent.
    split
        ``"train"`` (``data_batch_1..5``, 50,000 images) or ``"test"`` (``test_batch``).
    target, protected
        Accepted for the shared constructor shape; only ``None`` and ``()``.
    transform
        Callable or :class:`TransformSpec` applied to each PIL image; ``None`` returns
        the PIL image. :attr:`default_transform` (:data:`CIFAR10_TRANSFORM`) is the
        usual choice.

    Example (not run here: it needs files on disk)::

        ds = CIFAR10("/data/cifar10", split="test")
        ds.examples().example_id[0]
        # -> 'cifar10/test/0'
    """

    num_classes = _NUM_CLASSES
    default_transform: ClassVar[TransformSpec] = CIFAR10_TRANSFORM

    def __init__(
        self,
        root: str | Path,
        *,
        split: Literal["train", "test"] = "test",
        target: str | None = None,
        protected: Sequence[str] = (),
        transform: Callable | TransformSpec | None = None,
    ) -> None:
        super().__init__(root, transform=transform)
        check_choice(split, tuple(_SPLIT_FILES), field="argument split", source="CIFAR10")
        check_no_attributes("CIFAR10", target=target, protected=protected, why=_NO_ATTRIBUTES)
        self.split = split
        folder = _find_dir(self.root, _BATCH_DIR, "CIFAR-10")
        needed = [_META, *_SPLIT_FILES[split]]
        missing = [name for name in needed if not (folder / name).is_file()]
        if missing:
            raise AuditInputError(
                f"{folder}: missing CIFAR-10 file(s) {', '.join(missing)}; expected the "
                f"extracted cifar-10-python.tar.gz ({_BATCH_DIR}/ with data_batch_1..5, "
                "test_batch and batches.meta)"
            )
        names = _unpickle(folder / _META).get("label_names")
        if names is None or len(names) != _NUM_CLASSES:
            raise AuditInputError(
                f"{folder / _META}: field label_names is {names!r}; expected 10 class names"
            )
        self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        batches = [_read_batch(folder / name) for name in _SPLIT_FILES[split]]
        self._data = np.concatenate([d for d, _ in batches])
        self._labels = np.concatenate([lab for _, lab in batches])

    def __len__(self) -> int:
        return self._data.shape[0]

    def _load(self, index: int) -> tuple[Image.Image, int, str]:
        # Rows are channel-major (RRR..GGG..BBB); PIL wants height x width x channel.
        pixels = self._data[index].reshape(3, 32, 32).transpose(1, 2, 0)
        image = Image.fromarray(np.ascontiguousarray(pixels))
        return image, int(self._labels[index]), f"cifar10/{self.split}/{index}"

    def examples(self) -> pd.DataFrame:
        """Rows of ``examples.parquet``, in index order."""
        ids = [f"cifar10/{self.split}/{i}" for i in range(len(self))]
        return clean_examples(ids, self._labels, self.split)


@register_dataset("cifar10-c")
class CIFAR10C(AuditDataset):
    """CIFAR-10-C: the CIFAR-10 test set under corruptions at severities 1..5.

    Arrays are memory-mapped, so selecting a corruption reads only the images used.

    Parameters
    ----------
    root
        The ``CIFAR-10-C`` folder (``<corruption>.npy`` and ``labels.npy``) or its parent.
    split
        ``"test"``, the only split (the corrupted CIFAR-10 test set).
    target, protected
        Accepted for the shared constructor shape; only ``None`` and ``()``.
    transform
        Callable or :class:`TransformSpec` applied to each PIL image; ``None`` returns
        the PIL image. :attr:`default_transform` (:data:`CIFAR10_TRANSFORM`) is the
        usual choice.
    corruptions
        Corruption names; ``None`` means the 15 benchmark corruptions
        (:data:`CIFAR10C_CORRUPTIONS`). The 4 extra ones may be named explicitly.
    severities
        Severities to include, each 1..5.
    """

    num_classes = _NUM_CLASSES
    default_transform: ClassVar[TransformSpec] = CIFAR10_TRANSFORM

    def __init__(
        self,
        root: str | Path,
        *,
        split: Literal["test"] = "test",
        target: str | None = None,
        protected: Sequence[str] = (),
        transform: Callable | TransformSpec | None = None,
        corruptions: Sequence[str] | None = None,
        severities: Sequence[int] = (1, 2, 3, 4, 5),
    ) -> None:
        super().__init__(root, transform=transform)
        check_choice(split, ("test",), field="argument split", source="CIFAR10C")
        check_no_attributes("CIFAR10C", target=target, protected=protected, why=_NO_ATTRIBUTES)
        self.split = split
        valid = CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA_CORRUPTIONS
        corruptions = list(CIFAR10C_CORRUPTIONS if corruptions is None else corruptions)
        unknown = [c for c in corruptions if c not in valid]
        if unknown or not corruptions or len(set(corruptions)) != len(corruptions):
            raise AuditInputError(
                f"argument corruptions: got {corruptions}; expected distinct names among "
                f"{', '.join(valid)}"
            )
        severities = [int(s) for s in severities]
        if not severities or len(set(severities)) != len(severities) or not all(
            1 <= s <= 5 for s in severities
        ):
            raise AuditInputError(
                f"argument severities: got {severities}; expected distinct integers 1..5"
            )
        self.corruptions, self.severities = corruptions, severities
        self._folder = _find_dir(self.root, _C_DIR, "CIFAR-10-C")
        missing = [f"{n}.npy" for n in ["labels", *corruptions] if not self._file(n).is_file()]
        if missing:
            raise AuditInputError(
                f"{self._folder}: missing CIFAR-10-C file(s) {', '.join(missing)}; expected "
                f"the extracted CIFAR-10-C.tar ({_C_DIR}/ with <corruption>.npy and labels.npy)"
            )
        self._labels = self._read_labels()
        self._n = self._labels.shape[0] // 5  # clean test images per severity
        self._arrays: dict[str, np.ndarray] = {}
        for name in corruptions:
            array = self._array(name)
            if array.shape != (self._labels.shape[0], *_SHAPE) or array.dtype != np.uint8:
                raise AuditInputError(
                    f"{self._file(name)}: array has shape {array.shape} and dtype "
                    f"{array.dtype}; expected ({self._labels.shape[0]}, 32, 32, 3) uint8 "
                    "(5 severities x the test images, height x width x channel)"
                )

    def _file(self, name: str) -> Path:
        return self._folder / f"{name}.npy"

    def _read_labels(self) -> np.ndarray:
        path = self._file("labels")
        try:
            labels = np.load(path)
        except (OSError, ValueError) as err:
            raise AuditInputError(f"{path}: cannot read ({err}); expected a .npy array") from err
        count = labels.shape[0] if labels.ndim == 1 else -1
        if count <= 0 or count % 5:
            raise AuditInputError(
                f"{path}: shape {labels.shape}; expected (5 * N,) labels, the N test labels "
                "once per severity (N = 10,000 in the official file)"
            )
        labels = _check_labels(labels, str(path), count)
        if not (labels.reshape(5, -1) == labels[: count // 5]).all():
            raise AuditInputError(
                f"{path}: the 5 severity blocks hold different labels; expected the test "
                "labels repeated once per severity, re-extract CIFAR-10-C.tar"
            )
        return labels

    def _array(self, name: str) -> np.ndarray:
        """Memory-mapped images of one corruption, opened once per process."""
        if name not in self._arrays:
            try:
                self._arrays[name] = np.load(self._file(name), mmap_mode="r")
            except (OSError, ValueError) as err:
                raise AuditInputError(
                    f"{self._file(name)}: cannot read ({err}); expected a .npy array"
                ) from err
        return self._arrays[name]

    def __getstate__(self) -> dict:
        # Worker processes reopen the maps; pickling them would copy every image.
        return {**self.__dict__, "_arrays": {}}

    def __len__(self) -> int:
        return len(self.corruptions) * len(self.severities) * self._n

    def _locate(self, index: int) -> tuple[str, int, int]:
        """(corruption, severity, clean test index) of dataset position ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        block, clean = divmod(index, self._n)
        corruption, severity = divmod(block, len(self.severities))
        return self.corruptions[corruption], self.severities[severity], clean

    def _load(self, index: int) -> tuple[Image.Image, int, str]:
        name, severity, clean = self._locate(index)
        row = (severity - 1) * self._n + clean
        image = Image.fromarray(np.array(self._array(name)[row]))
        return image, int(self._labels[row]), f"cifar10-c/{name}/{severity}/{clean}"

    def examples(self) -> pd.DataFrame:
        """Rows of ``examples.parquet``, in index order."""
        n, n_sev = self._n, len(self.severities)
        clean = np.tile(np.arange(n), len(self.corruptions) * n_sev)
        per_corruption = np.repeat(np.asarray(self.severities, dtype=np.int8), n)
        severity = np.tile(per_corruption, len(self.corruptions))
        shift = np.repeat(np.asarray(self.corruptions, dtype=object), n_sev * n)
        rows = (severity.astype(np.int64) - 1) * n + clean
        return pd.DataFrame(
            {
                "example_id": [
                    f"cifar10-c/{c}/{s}/{i}" for c, s, i in zip(shift, severity, clean)
                ],
                "label": self._labels[rows],
                "split": "test",
                "source_id": [f"cifar10/test/{i}" for i in clean],
                "shift": shift,
                "severity": severity,
            }
        )
