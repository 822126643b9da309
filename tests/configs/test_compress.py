"""Compression methods' configs: every ``setting(...)`` limit of every registered method
refused with its message (cases from tests/conftest.py). The pruning configs' cross-field
rules: tests/configs/test_pruning.py."""

from __future__ import annotations

from compaudit.config import from_table
from compaudit.configs.compress import METHODS

LIMIT_CLASSES = [METHODS.get(name).config for name in METHODS.names()]  # limit_case (tests/conftest.py)


def test_every_declared_limit_is_refused_with_its_message(limit_case):
    cls, key, value, words = limit_case
    problems: list[str] = []
    assert from_table(cls, {key: value}, where="a.toml: [[variants]]", problems=problems) is None
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"a.toml: [[variants]].{key}: got {value!r}; {words}")
