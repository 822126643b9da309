"""ImageNet-A (Hendrycks et al., 2021): 7,500 natural adversarial images of 200 classes.

Released layout: ``<root>/<wnid>/<file>.jpg`` for 200 ImageNet wnids, with a
``README.txt``. Labels are indices into the 1,000 ImageNet classes. Nothing is
downloaded: missing or foreign files are an :class:`AuditInputError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from compaudit.data._image_folders import ImageFiles, check_root, list_class_folders, scan_folder
from compaudit.data.base import TransformSpec, register_dataset
from compaudit.data.imagenet_classes import IMAGENET_A_INDICES, imagenet_a_wnids
from compaudit.errors import AuditInputError

__all__ = ["ImageNetA"]

#: The ImageNet-A archive ships a README beside its 200 class folders.
_IMAGENET_A_EXTRAS = frozenset({"README.txt"})

# A read-only copy, so no caller can change the mask every ImageNet-A dataset shares.
_IMAGENET_A_MASK = IMAGENET_A_INDICES.copy()
_IMAGENET_A_MASK.flags.writeable = False


@register_dataset("imagenet-a")
class ImageNetA(ImageFiles):
    """ImageNet-A: 7,500 natural adversarial images of 200 ImageNet classes.

    Labels are indices into the 1,000 ImageNet classes; predictions are restricted
    to :attr:`class_mask` (the 200 classes) before taking the argmax.

    Parameters
    ----------
    root
        The extracted ``imagenet-a`` folder (200 wnid folders and ``README.txt``).
    split
        ``"test"``, the only split.
    target, protected
        Accepted for the shared constructor shape; only ``None`` and ``()``.
    transform
        Callable or :class:`TransformSpec`; ``None`` returns the PIL image.

    Example (not run here: it needs files on disk)::

        ds = ImageNetA("/data/imagenet-a")
        pred = ds.class_mask[logits[:, ds.class_mask].argmax(1)]
    """

    class_mask = _IMAGENET_A_MASK
    _shift = "imagenet-a"

    def __init__(
        self,
        root: str | Path,
        *,
        split: Literal["test"] = "test",
        target: str | None = None,
        protected: Sequence[str] = (),
        transform: Callable | TransformSpec | None = None,
    ) -> None:
        super().__init__(Path(os.path.abspath(root)), transform=transform)
        self._check_arguments(split, target, protected)
        check_root(self.root, "ImageNet-A", "the imagenet-a folder with 200 wnid folders")
        dirs, files = scan_folder(self.root)
        if not dirs and not files:
            raise AuditInputError(
                f"{self.root}: no images found; the folder is empty, expected 200 wnid folders"
            )
        valid = {w: int(i) for w, i in zip(imagenet_a_wnids(), IMAGENET_A_INDICES)}
        items = list_class_folders(
            self.root, dirs, files, valid, "ImageNet-A (200-class subset)", _IMAGENET_A_EXTRAS
        )
        root = str(self.root)
        self._set_items(
            [os.path.join(root, w, f) for w, f, _ in items],
            [label for _, _, label in items],
            [f"imagenet-a/{w}/{f}" for w, f, _ in items],
        )
