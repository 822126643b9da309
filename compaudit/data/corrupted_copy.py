"""Write a corrupted copy of any compaudit dataset in the ImageNet-C folder layout.

Layout: ``<out>/<corruption>/<severity>/<class_dir>/<stem><ext>``, where ``class_dir``
is the wnid for 1,000-class (ImageNet-family) datasets and ``class_<label>`` otherwise,
plus ``<out>/source_examples.parquet``: the clean dataset's examples table, attribute
columns included. :class:`compaudit.data.imagenet_c.ImageNetC` reads such a copy back
and carries the attributes over, so "CelebA-C" keeps ``attr.Male``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from compaudit.data.base import EXAMPLE_COLUMNS, AuditDataset
from compaudit.data.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    _corrupt_array,
    check_corruptions,
    check_severities,
)
from compaudit.data.imagenet_classes import imagenet_wnids
from compaudit.errors import AuditInputError

__all__ = ["SOURCE_EXAMPLES", "copy_name", "file_stem", "write_corrupted_copy"]

#: File names (tried in order) of the clean examples table inside a copy.
SOURCE_EXAMPLES = ("source_examples.parquet", "source_examples.csv")
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_FORMATS = {"JPEG": ".JPEG", "PNG": ".png"}

MSG_STEM_CLASH = (
    "examples {a!r} and {b!r} would be written to the same file name {stem!r}; "
    "example_id values must stay distinct after the dataset prefix and image suffix "
    "are dropped"
)
MSG_OTHER_COPY = (
    "{path} holds the examples of a different dataset ({n} ids differ); write the copy "
    "to an empty folder or delete that one"
)


def file_stem(example_id: str) -> str:
    """File name (without suffix) of an example inside a copy.

    Drops the dataset prefix (``celeba/``) and an image suffix, and joins any
    remaining folders with ``__`` so each class folder stays flat.

    Examples
    --------
    >>> file_stem("imagenet/ILSVRC2012_val_00000001")
    'ILSVRC2012_val_00000001'
    >>> file_stem("celeba/182638.jpg")
    '182638'
    """
    parts = example_id.split("/")
    rest = parts[1:] if len(parts) > 1 else parts
    name = "__".join(rest)
    if name.lower().endswith(_IMAGE_SUFFIXES):
        name = name.rsplit(".", 1)[0]
    return name


def copy_name(source_ids: Iterable[str]) -> str:
    """Dataset name of a copy: the source's id prefix plus ``-c`` (``celeba-c``)."""
    prefixes = {i.split("/", 1)[0] for i in source_ids if "/" in i}
    return f"{prefixes.pop()}-c" if len(prefixes) == 1 else "corrupted"


def _check_examples(dataset: AuditDataset, table: pd.DataFrame) -> dict[str, str]:
    missing = [c for c in EXAMPLE_COLUMNS if c not in table.columns]
    if missing:
        raise AuditInputError(
            f"{type(dataset).__name__}.examples() lacks the columns {missing}; expected "
            f"the examples.parquet contract ({', '.join(EXAMPLE_COLUMNS)}, attr.*)"
        )
    if len(table) != len(dataset):
        raise AuditInputError(
            f"{type(dataset).__name__}.examples() has {len(table)} rows for "
            f"{len(dataset)} images; expected one row per image, in index order"
        )
    stems: dict[str, str] = {}
    for eid in table["example_id"]:
        stem = file_stem(eid)
        if stem in stems:
            raise AuditInputError(MSG_STEM_CLASH.format(a=stems[stem], b=eid, stem=stem))
        stems[stem] = eid
    return stems


def _write_source_table(table: pd.DataFrame, out: Path) -> None:
    path = out / SOURCE_EXAMPLES[0]
    if path.exists():
        old = set(pd.read_parquet(path, columns=["example_id"])["example_id"])
        n = len(old.symmetric_difference(table["example_id"]))
        if n:
            raise AuditInputError(MSG_OTHER_COPY.format(path=path, n=n))
    tmp = out / f".{path.name}.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)  # atomic: a reader never sees half a table


def _save(array: np.ndarray, path: Path, image_format: str, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden temporary name: the loader skips dot files, and a killed run leaves no
    # truncated image under the final name.
    tmp = path.with_name(f".{path.name}.tmp")
    options = {"quality": quality, "optimize": True} if image_format == "JPEG" else {}
    Image.fromarray(array).save(tmp, format=image_format, **options)
    os.replace(tmp, path)


_CHUNK = 250  # images per task of a worker process


@dataclass(frozen=True)
class _Task:
    """One chunk of images to corrupt and write (runs in a worker process)."""

    dataset: AuditDataset
    indices: list[int]
    example_ids: list[str]
    labels: list[int]
    out: Path
    names: tuple[str, ...]
    severities: tuple[int, ...]
    seed: int
    suffix: str
    image_format: str
    quality: int
    wnids: tuple[str, ...] | None


def _write_chunk(task: _Task) -> int:
    """Write the missing corrupted images of one chunk; returns how many images it covers."""
    count = 0
    for i, eid, label in zip(task.indices, task.example_ids, task.labels, strict=True):
        class_dir = task.wnids[int(label)] if task.wnids is not None else f"class_{int(label)}"
        name = file_stem(eid) + task.suffix
        targets = [(c, s, task.out / c / str(s) / class_dir / name)
                   for c in task.names for s in task.severities]
        count += len(targets)
        todo = [t for t in targets if not t[2].exists()]
        if not todo:
            continue
        image = np.asarray(task.dataset._load(i)[0].convert("RGB"))
        for c, s, path in todo:
            _save(_corrupt_array(image, c, s, task.seed), path, task.image_format, task.quality)
    return count


def write_corrupted_copy(
    dataset: AuditDataset,
    out: str | Path,
    *,
    corruptions: Iterable[str] = CORRUPTIONS,
    severities: Iterable[int] = SEVERITIES,
    seed: int = 0,
    image_format: Literal["JPEG", "PNG"] = "JPEG",
    quality: int = 85,
    progress: bool = True,
    executor: Any = None,
) -> Path:
    """Write corrupted versions of every image of ``dataset`` under ``out``.

    Images already present are kept, so an interrupted run resumes. The images are
    the same as :func:`compaudit.data.corruptions.corrupt` with the same ``seed``
    gives on the fly (before JPEG encoding).

    Parameters
    ----------
    dataset
        Any compaudit dataset; its raw images are read (its ``transform`` is not used).
    out
        Folder of the copy.
    corruptions, severities
        What to write; by default the 15 mCE corruptions at severities 1-5.
    seed
        Base seed of the corruptions' random draws.
    image_format, quality
        ``"JPEG"`` at quality 85 as ImageNet-C was saved, or lossless ``"PNG"``.
    progress
        Show a tqdm progress bar.
    executor
        A :mod:`compaudit.executors` executor (e.g. the audit's own pool) that writes
        chunks of images in parallel; without one they are written here. It does not
        change the output: each image's draws depend on its content only.

    Returns
    -------
    Path
        ``out``, readable with ``ImageNetC(out)``.
    """
    names = check_corruptions(corruptions)
    sevs = check_severities(severities)
    if image_format not in _FORMATS:
        raise AuditInputError(
            f"image_format {image_format!r} is not supported; expected one of {list(_FORMATS)}"
        )
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
        raise AuditInputError(f"quality {quality!r} is not valid; expected an integer 1-95")
    table = dataset.examples().reset_index(drop=True)
    _check_examples(dataset, table)
    num_classes = getattr(dataset, "num_classes", None)
    wnids = imagenet_wnids() if num_classes == len(imagenet_wnids()) else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_source_table(table, out)

    suffix = _FORMATS[image_format]
    bar = tqdm(
        total=len(table) * len(names) * len(sevs),
        desc=f"corrupting {copy_name(table['example_id'])}",
        unit="img",
        disable=not progress,
    )
    tasks = [
        _Task(dataset, list(range(start, min(start + _CHUNK, len(table)))),
              table["example_id"].iloc[start:start + _CHUNK].tolist(),
              table["label"].iloc[start:start + _CHUNK].tolist(),
              out, tuple(names), tuple(sevs), seed, suffix, image_format, quality, wnids)
        for start in range(0, len(table), _CHUNK)
    ]
    with bar:
        if executor is None:
            for task in tasks:
                bar.update(_write_chunk(task))
        else:
            bar.update(sum(executor.map(_write_chunk, tasks, desc="corrupt")))
    return out
