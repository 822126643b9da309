"""ImageNet-C corruptions (Hendrycks & Dietterich, 2019), seeded and size-checked.

The corruption formulas come from the ``imagecorruptions-imaug`` package, the
maintained NumPy-2 port of ``imagecorruptions`` (the packaged form of the ImageNet-C
code, with its frost textures). compaudit adds what an audit needs on top:

- **determinism**: the random draws of every corruption are seeded from
  ``(seed, corruption, severity, image bytes)``, so the same seed and image always give
  the same output, different images get independent noise, and a corrupted copy
  written to disk equals the on-the-fly transform;
- **one entry point for PIL images, uint8 arrays and tensors**, returning the type it
  was given;
- **validation** with messages that say how to fix the call.

Sizes: any image with both sides >= 32 px. Constants are the ImageNet-C ones, tuned
for 224 px, and follow ``imagecorruptions``' handling of other sizes: noise, colour,
JPEG and pixelate are size-free; blur kernels (defocus, gaussian, glass, motion, zoom)
and snow flakes keep their size in pixels, so they are relatively stronger on small
images; fog draws its fractal at the next power of two >= the long side, frost
rescales its texture to cover the image, and elastic_transform scales its smoothing
and displacement with the image side.

Where ``imagecorruptions`` departs from the code that made the released ImageNet-C
files (so published mCE baselines belong with the released files): motion_blur and
snow use a NumPy re-implementation of ImageMagick's motion blur; elastic_transform is
the package's size-free variant (no random affine); frost samples all six textures
(the original, five) and enlarges them by 1.1x; zoom_blur keeps the top-left of each
zoomed layer rather than its centre (a sub-pixel shift).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from PIL import Image

from compaudit.errors import AuditInputError

__all__ = [
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "ALL_CORRUPTIONS",
    "SEVERITIES",
    "CorruptionName",
    "Corrupt",
    "corrupt",
    "check_corruptions",
    "check_severities",
]

#: The 15 corruptions of ImageNet-C's mCE, in the paper's order.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
#: The 4 held-out ("validation") corruptions released beside ImageNet-C.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

CorruptionName = Literal[
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
]  # fmt: skip

MIN_SIDE = 32

MSG_MISSING_BACKEND = (
    "ImageNet-C corruptions need the package 'imagecorruptions-imaug', which is not "
    "installed; install it with: pip install 'compaudit[corruptions]'"
)
MSG_UNKNOWN = "unknown corruption {name!r}; valid names are: {valid}"
MSG_SEVERITY = "severity {value!r} is not valid; expected an integer from 1 to 5"
MSG_TOO_SMALL = (
    "image of {h}x{w} px is too small for ImageNet-C corruptions; both sides must be "
    ">= 32 px: resize it first"
)
MSG_BAD_IMAGE = (
    "cannot corrupt an image of type {kind} with shape {shape}; expected a PIL image, "
    "a uint8 array (H, W) or (H, W, 3), or a tensor (C, H, W) / (B, C, H, W) with C in (1, 3)"
)

# These two take an explicit seed: glass_blur seeds numba's RNG, impulse_noise
# scikit-image's Generator.
_SEEDED_BY_ARGUMENT = frozenset({"glass_blur", "impulse_noise"})
# These draw from NumPy's global legacy RNG (the rest are deterministic). A lock keeps
# threads from interleaving draws, which would break determinism, and the global state
# is put back afterwards; saving it costs ~70 us, so deterministic ones skip it.
_GLOBAL_RNG = frozenset(
    {"gaussian_noise", "shot_noise", "speckle_noise", "motion_blur", "snow", "frost",
     "fog", "elastic_transform", "spatter"}
)  # fmt: skip
_RNG_LOCK = threading.Lock()

_T = TypeVar("_T", Image.Image, np.ndarray, torch.Tensor)


def _backend() -> Any:
    """Import the corruption implementation, or fail naming the extra to install."""
    try:
        import imagecorruptions
    except ImportError as err:
        raise ImportError(MSG_MISSING_BACKEND) from err
    return imagecorruptions


def check_corruptions(names: Any) -> tuple[str, ...]:
    """Validate corruption names; return them as a tuple (a single string is accepted)."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    bad = [n for n in names if n not in ALL_CORRUPTIONS]
    if bad:
        raise AuditInputError(
            [MSG_UNKNOWN.format(name=n, valid=", ".join(ALL_CORRUPTIONS)) for n in bad]
        )
    return names


def check_severities(values: Any) -> tuple[int, ...]:
    """Validate severities (integers 1-5); return them as a tuple of int."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        values = (values,)
    out = []
    for v in values:
        # bool is an int subclass; True as a severity is a mistake, not 1.
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 5:
            raise AuditInputError(MSG_SEVERITY.format(value=v))
        out.append(int(v))
    return tuple(out)


def _seed_for(image: np.ndarray, corruption: str, severity: int, seed: int) -> int:
    """A 32-bit seed from the base seed, the corruption and the image content."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{int(seed)}|{corruption}|{severity}|{image.shape}|".encode())
    h.update(np.ascontiguousarray(image).data)
    # np.random.seed and numba's seed take values below 2**32.
    return int.from_bytes(h.digest(), "little") % (2**32)


def _corrupt_array(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt one uint8 (H, W, 3) array; the validated core of :func:`corrupt`."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise AuditInputError(MSG_TOO_SMALL.format(h=h, w=w))
    ic = _backend()
    if corruption not in _GLOBAL_RNG and corruption not in _SEEDED_BY_ARGUMENT:
        return ic.corrupt(image, severity=severity, corruption_name=corruption)
    call_seed = _seed_for(image, corruption, severity, seed)
    if corruption in _SEEDED_BY_ARGUMENT:
        return ic.corrupt(image, severity=severity, corruption_name=corruption, seed=call_seed)
    with _RNG_LOCK:
        state = np.random.get_state()
        try:
            np.random.seed(call_seed)
            out = ic.corrupt(image, severity=severity, corruption_name=corruption)
        finally:
            np.random.set_state(state)
    return out


def _as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise AuditInputError(MSG_BAD_IMAGE.format(kind="ndarray", shape=array.shape))
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] != 3:
        raise AuditInputError(MSG_BAD_IMAGE.format(kind="ndarray", shape=array.shape))
    return array


def _corrupt_tensor(x: torch.Tensor, corruption: str, severity: int, seed: int) -> torch.Tensor:
    if x.ndim == 4:
        return torch.stack([_corrupt_tensor(xi, corruption, severity, seed) for xi in x])
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise AuditInputError(MSG_BAD_IMAGE.format(kind="Tensor", shape=tuple(x.shape)))
    is_uint8 = x.dtype == torch.uint8
    # Float tensors are taken as ToTensor() output in [0, 1]; the corruptions are
    # defined on 8-bit images, so quantize as saving and reloading would.
    u8 = x if is_uint8 else (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = _as_rgb_uint8(u8.permute(1, 2, 0).cpu().numpy())
    out = _corrupt_array(arr, corruption, severity, seed)
    t = torch.from_numpy(np.require(out, requirements=["C", "W"])).permute(2, 0, 1)
    if x.shape[0] == 1:
        # Some corruptions add colour (frost, spatter); return grey as PIL's "L" would.
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        t = (t.float() * w).sum(0, keepdim=True).round().to(torch.uint8)
    t = t.to(x.device)
    return t if is_uint8 else (t.float() / 255).to(x.dtype)


def corrupt(image: _T, corruption: CorruptionName | str, severity: int, *, seed: int = 0) -> _T:
    """Apply one ImageNet-C corruption at one severity.

    Parameters
    ----------
    image
        A PIL image (any mode, converted to RGB), a uint8 array (H, W) or (H, W, 3), or
        a tensor (C, H, W) or (B, C, H, W), uint8 or float in [0, 1] (apply before
        normalization). Both sides >= 32 px.
    corruption
        One of :data:`ALL_CORRUPTIONS`.
    severity
        1 to 5.
    seed
        Base seed; the draws also depend on the image content, corruption and severity.

    Returns
    -------
    The corrupted image, of the input's type (PIL RGB, uint8 (H, W, 3) array, or a
    tensor of the input's shape, dtype and device).

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((64, 64, 3), 128, dtype=np.uint8)
    >>> corrupt(img, "contrast", 5).shape
    (64, 64, 3)
    """
    (name,) = check_corruptions(corruption)
    (sev,) = check_severities(severity)
    if isinstance(image, Image.Image):
        out = _corrupt_array(np.asarray(image.convert("RGB")), name, sev, seed)
        return Image.fromarray(out)
    if isinstance(image, np.ndarray):
        return _corrupt_array(_as_rgb_uint8(image), name, sev, seed)
    if isinstance(image, torch.Tensor):
        return _corrupt_tensor(image, name, sev, seed)
    shape = getattr(image, "shape", None)
    raise AuditInputError(MSG_BAD_IMAGE.format(kind=type(image).__name__, shape=shape))


@dataclass(frozen=True)
class Corrupt:
    """Transform applying one corruption at one severity; see :func:`corrupt`.

    Use it in a torchvision pipeline before ``ToTensor`` (on PIL images) or after it
    and before ``Normalize`` (on tensors).

    Examples
    --------
    >>> from torchvision import transforms as T
    >>> tf = T.Compose([T.Resize(256), T.CenterCrop(224), Corrupt("fog", 3), T.ToTensor()])
    """

    corruption: CorruptionName | str
    severity: int
    seed: int = 0

    def __post_init__(self) -> None:
        # Fail when the pipeline is built, not at the first image of an epoch.
        check_corruptions(self.corruption)
        check_severities(self.severity)

    def __call__(self, image: _T) -> _T:
        return corrupt(image, self.corruption, self.severity, seed=self.seed)
