"""Folders compaudit generates: a marker file claims them; only claimed files are removed.

A generator writes a marker (a small JSON naming the generator and its settings) into its
output folder before anything else. Later runs regenerate a non-empty folder only when
the marker is there, and then remove only the files that generation wrote (known from
the marker's settings), never following a symbolic link out of the folder. Anything
else in the folder, or a folder without the marker, is left untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from compaudit.errors import AuditInputError

__all__ = ["NOT_EMPTY", "NOT_GENERATED", "claim_folder", "replace_owned_files", "write_marker"]

#: The refusal for a non-empty folder without the generator's marker.
NOT_GENERATED = (
    "{folder}: the folder is not empty and is not a compaudit-generated folder (no "
    "{marker} marker file), and compaudit never deletes or overwrites data it did not "
    "create; choose an empty or new folder for the generated data, e.g. one inside the "
    "run folder"
)
#: The refusal for a generated folder when ``overwrite`` is off.
NOT_EMPTY = (
    "{folder}: output folder is not empty; choose an empty folder or pass overwrite=True "
    "to replace an earlier synthetic dataset there"
)


def claim_folder(out: Path, *, marker: str, generator: str, overwrite: bool) -> dict | None:
    """Check that ``out`` may be written; the settings of the generation found there.

    Returns ``None`` for an absent or empty folder, the previous marker's ``settings``
    for a folder generated before by ``generator`` (with ``overwrite``), and raises
    :class:`AuditInputError` otherwise. Nothing is changed on disk.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise AuditInputError(f"{out}: exists and is not a folder; expected an empty or new "
                              "folder for the generated data")
    if not any(out.iterdir()):
        return None
    path = out / marker
    if path.is_symlink() or not path.is_file():
        raise AuditInputError(NOT_GENERATED.format(folder=out, marker=marker))
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise AuditInputError(
            f"{path}: cannot read the marker ({err}); expected the JSON compaudit wrote "
            f"there. Nothing was deleted; generate into an empty or new folder instead"
        ) from err
    settings = content.get("settings") if isinstance(content, dict) else None
    if not isinstance(content, dict) or content.get("generator") != generator or not isinstance(
        settings, dict
    ):
        found = content.get("generator") if isinstance(content, dict) else content
        raise AuditInputError(
            f"{path}: field generator is {found!r}; expected {generator!r} with a settings "
            "object. Nothing was deleted; generate into an empty or new folder instead"
        )
    if not overwrite:
        raise AuditInputError(NOT_EMPTY.format(folder=out))
    return settings


def _parents(files: Iterable[str]) -> list[str]:
    """Every folder (relative, parents first) holding one of ``files``."""
    found: dict[str, None] = {}
    for name in files:
        for parent in reversed(PurePosixPath(name).parents[:-1]):
            found[str(parent)] = None
    return list(found)


def replace_owned_files(out: Path, old: list[str], new: list[str]) -> None:
    """Remove the files ``old`` (an earlier generation's) to make way for ``new``.

    Checks everything first and raises :class:`AuditInputError` before removing
    anything when a folder on the way is a link or not a folder, when a file of ``old``
    is a folder, or when a file of ``new`` exists but was not written by the earlier
    generation. A link in place of an old file is removed itself; its target is kept.
    Folders of ``old`` left empty are removed.
    """
    folders = _parents([*old, *new])
    for rel in folders:
        path = out / rel
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            kind = "a symbolic link" if path.is_symlink() else "not a folder"
            raise AuditInputError(
                f"{path}: is {kind}, where the generator writes a folder; compaudit does not "
                "follow links out of a generated folder. Nothing was deleted; move it away or "
                "generate into an empty or new folder"
            )
    earlier = set(old)
    for rel in old:
        path = out / rel
        if path.is_dir() and not path.is_symlink():
            raise AuditInputError(
                f"{path}: is a folder, where the earlier generation wrote a file; nothing was "
                "deleted, move it away or generate into an empty or new folder"
            )
    foreign = [rel for rel in new if rel not in earlier and os.path.lexists(out / rel)]
    if foreign:
        raise AuditInputError(
            f"{out / foreign[0]}: exists but was not written by the earlier generation "
            f"({len(foreign)} such file(s)), and compaudit never overwrites data it did not "
            "create. Nothing was deleted; move them away or generate into an empty or new folder"
        )
    for rel in old:
        (out / rel).unlink(missing_ok=True)  # a link itself, never its target
    for rel in reversed(_parents(old)):
        path = out / rel
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def write_marker(out: Path, marker: str, generator: str, settings: dict) -> None:
    """Claim ``out`` for ``generator`` (written before any generated file)."""
    content = {"generator": generator, "settings": settings}
    (out / marker).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n",
                              encoding="utf-8")
