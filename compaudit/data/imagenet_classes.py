"""The 1,000 ImageNet-1k classes and the 200-class ImageNet-A subset.

Class index = position of the wnid in the sorted list of the 1,000 wnids (the order
torchvision and timm models use). The list ships with the package (taken from timm's
``imagenet_synsets.txt``), so no devkit is needed to map folders to indices.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = ["imagenet_wnids", "imagenet_class_names", "IMAGENET_A_INDICES", "imagenet_a_wnids"]

#: Indices into the 1,000 classes of the 200 ImageNet-A classes (REFERENCES.md).
IMAGENET_A_INDICES = np.array(
    [
        6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94,
        96, 97, 99, 105, 107, 108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234,
        235, 254, 277, 283, 287, 291, 295, 298, 301, 306, 307, 308, 309, 310, 311, 313, 314,
        315, 317, 319, 323, 324, 326, 327, 330, 334, 335, 336, 347, 361, 363, 372, 378, 386,
        397, 400, 401, 402, 404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438, 445, 456,
        457, 461, 462, 470, 472, 483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543,
        549, 552, 557, 561, 562, 569, 572, 573, 575, 579, 589, 606, 607, 609, 614, 626, 627,
        640, 641, 642, 643, 658, 668, 677, 682, 684, 687, 701, 704, 719, 736, 746, 749, 752,
        758, 763, 765, 768, 773, 774, 776, 779, 780, 786, 792, 797, 802, 803, 804, 813, 815,
        820, 823, 831, 833, 835, 839, 845, 847, 850, 859, 862, 870, 879, 880, 888, 890, 897,
        900, 907, 913, 924, 932, 933, 934, 937, 943, 945, 947, 951, 954, 956, 957, 959, 971,
        972, 980, 981, 984, 986, 987, 988,
    ],
    dtype=np.int64,
)


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids, sorted; position = class index."""
    text = resources.files("compaudit.data").joinpath("imagenet_wnids.txt").read_text()
    return tuple(text.split())


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """Human-readable names of the 1,000 classes, in class-index order."""
    text = resources.files("compaudit.data").joinpath("imagenet_class_names.txt").read_text()
    return tuple(line.split("\t", 1)[1] for line in text.splitlines() if line)


def imagenet_a_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-A wnids, in the order of :data:`IMAGENET_A_INDICES`."""
    wnids = imagenet_wnids()
    return tuple(wnids[i] for i in IMAGENET_A_INDICES)
