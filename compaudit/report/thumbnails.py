"""Gallery thumbnails: look up example images and embed them as small base64 PNGs.

A missing, unreadable or corrupt image yields ``None`` (the gallery shows a
placeholder); the report never fails because of one image.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from compaudit.errors import AuditInputError
from compaudit.report.html import Html, tag

__all__ = ["image_paths", "thumbnail"]


def image_paths(examples_file: Path | None, ids: Iterable[str]) -> dict[str, Path]:
    """``example_id -> image path`` for ``ids`` from the ``path`` column of an examples file.

    Relative paths are taken relative to the examples file's folder (the run directory).
    Returns an empty dict when there is no file or no ``path`` column.
    """
    if examples_file is None:
        return {}
    try:
        schema = pq.read_schema(examples_file)
        if "path" not in schema.names or "example_id" not in schema.names:
            return {}
        table = pq.read_table(examples_file, columns=["example_id", "path"])
    except (OSError, ValueError) as err:
        raise AuditInputError(f"{examples_file}: cannot read examples ({err}); expected the "
                              "examples.parquet of the run, or remove it") from err
    wanted = set(ids)
    out: dict[str, Path] = {}
    for ex_id, path in zip(table.column("example_id").to_pylist(),
                           table.column("path").to_pylist()):
        if ex_id in wanted and path:
            p = Path(path)
            out[str(ex_id)] = p if p.is_absolute() else examples_file.parent / p
    return out


def thumbnail(path: Path | None, *, size: int, alt: str) -> Html | None:
    """An ``<img>`` with the image at ``path`` shrunk to ``size`` px on its longest side."""
    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return tag("img", src=f"data:image/png;base64,{data}", alt=alt, width=im.width,
               height=im.height, class_="thumb")
