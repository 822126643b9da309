"""Shared validation rules of the dataset loaders (compaudit/data/_checks.py)."""

from __future__ import annotations

import pytest

from compaudit.data._checks import is_absolute_path


@pytest.mark.parametrize("text", [
    "/data/img.jpg",            # POSIX absolute
    "C:\\data\\img.jpg",        # Windows absolute
    "C:/data/img.jpg",
    "C:img.jpg",                # drive-relative: still not under the root
    "\\\\server\\share\\img.jpg",  # UNC
    "//server/share/img.jpg",
])
def test_paths_outside_any_root_are_absolute(text):
    assert is_absolute_path(text)


@pytest.mark.parametrize("text", ["img.jpg", "train/1.jpg", "train\\1.jpg", "../up.jpg",
                                  "./a/b.png", "faces/b:c.jpg"])
def test_relative_paths_are_not(text):
    # ``..`` is relative here; whether it leaves the root is each loader's own check.
    assert not is_absolute_path(text)
