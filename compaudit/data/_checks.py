"""Validation helpers shared by the dataset loaders.

Each helper raises :class:`~compaudit.errors.AuditInputError` with a message that
names the file or folder, says what was found and what was expected, and how to fix
it. Loaders call them at the door so the rest of the code can trust its inputs.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd
from PIL import Image, UnidentifiedImageError

from compaudit import config
from compaudit.errors import AuditInputError

__all__ = [
    "read_string_csv",
    "first_few",
    "check_choice",
    "check_files_present",
    "check_names",
    "check_no_attributes",
    "is_absolute_path",
    "list_names",
    "open_image",
]

#: How many offending items a message lists before summarising the rest.
SHOW = 5


def is_absolute_path(text: str) -> bool:
    """True for a path from an input table that is not relative to a root on any OS:
    POSIX-absolute, Windows-absolute, UNC, or with a drive (``C:x`` too)."""
    windows = PureWindowsPath(text)
    return PurePosixPath(text).is_absolute() or windows.is_absolute() or windows.drive != ""


def first_few(items: Iterable[object], total: int | None = None, *, show: int = SHOW) -> str:
    """Format the first ``show`` items, noting how many more there are.

    Parameters
    ----------
    items
        The offending items, in the order they should be reported.
    total
        How many items there are in all; counted from ``items`` when ``None``.
    show
        How many to list.

    Examples
    --------
    >>> first_few(["a", "b", "c"], show=2)
    'a, b (and 1 more)'
    """
    items = list(items)
    total = len(items) if total is None else total
    text = ", ".join(str(item) for item in items[:show])
    if total > show:
        text += f" (and {total - show} more)"
    return text


def check_choice(value: str, valid: Sequence[str], *, field: str, source: str) -> str:
    """Return ``value`` if it is one of ``valid``, else raise naming the valid values.

    ``field`` names the argument or column, ``source`` the file or class it belongs to.
    """
    problem = config.check_choice(f"{source}: {field}", value, valid)
    if problem:
        raise AuditInputError(problem)
    return value


def check_names(value: object, *, field: str, source: str) -> tuple[str, ...]:
    """``value`` as a tuple of non-empty strings (a list or tuple of names), else raise.

    A bare string is refused: ``protected="Male"`` would otherwise read as four names.
    """
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    hint = f"; write ({value!r},)" if isinstance(value, str) and value else ""
    raise AuditInputError(
        f"{source}: argument {field}: got {value!r}; expected a list or tuple of "
        f"attribute names{hint}"
    )


def check_no_attributes(source: str, *, target: object, protected: object, why: str) -> None:
    """Raise unless ``target`` is ``None`` and ``protected`` is empty.

    For datasets whose examples carry a class label and no attributes; ``why`` says
    where their labels come from.
    """
    problems = []
    if target is not None:
        problems.append(
            f"{source}: argument target: got {target!r}; this dataset has no target "
            f"attribute ({why}); leave target unset (None)"
        )
    if not isinstance(protected, (list, tuple)) or len(protected):
        problems.append(
            f"{source}: argument protected: got {protected!r}; this dataset has no "
            "protected attributes; leave protected unset (())"
        )
    if problems:
        raise AuditInputError(problems)


def list_names(directory: Path) -> set[str]:
    """Names of the entries of ``directory`` from one ``os.scandir`` (empty if absent).

    One directory read instead of one ``stat`` per file keeps the existence check of
    200,000 images to well under a second.
    """
    try:
        with os.scandir(directory) as entries:
            return {entry.name for entry in entries}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def check_files_present(
    directory: Path, names: Collection[str], *, listed_in: str, fix: str
) -> None:
    """Raise if any of ``names`` is not an entry of ``directory``.

    Parameters
    ----------
    directory
        The folder the files should be in.
    names
        File names expected there.
    listed_in
        Where the names came from (a file name), for the message.
    fix
        What the user should do, appended to the message.
    """
    present = list_names(directory)
    missing = [name for name in names if name not in present]
    if not missing:
        return
    if not present:
        found = "the folder is empty or does not exist"
    else:
        found = f"it holds {len(present)} entries"
    raise AuditInputError(
        f"{directory}: {len(missing)} of {len(names)} images listed in {listed_in} are "
        f"missing ({found}); first missing: {first_few(missing)}. {fix}"
    )


def open_image(path: Path) -> Image.Image:
    """Read an image fully and convert it to RGB, naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            # convert() decodes every pixel, so a truncated file fails here, not later.
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise AuditInputError(
            f"{path}: not a readable image ({type(err).__name__}: {err}); "
            "replace it with the original file or remove its row from the listing"
        ) from err


def read_string_csv(path: Path, *, not_found: str, expected: str) -> pd.DataFrame:
    """A CSV file as a frame of strings (empty cells are ``""``; an empty file gives an
    empty frame), or one error naming the file: ``not_found`` when it is missing,
    ``expected`` (what the file should hold) when it cannot be parsed."""
    if not path.is_file():
        raise AuditInputError(f"{path}: {not_found}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                           encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise AuditInputError(f"{path}: cannot be parsed as CSV ({str(err).strip()}); "
                              f"{expected}") from err
