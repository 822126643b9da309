"""Shared fixtures: small simulated populations in the table contracts."""

from __future__ import annotations

import dataclasses
import types
import typing

import pandas as pd
import pytest

from compaudit.analysis.population import Population, build_population
from compaudit.config import Range
from compaudit.simulate import PlantedHarm, simulate_binary
from compaudit.tables import validate_examples, validate_predictions


def make_population(examples: pd.DataFrame, predictions: pd.DataFrame, **kw) -> Population:
    ex = validate_examples(examples)
    return build_population(ex, validate_predictions(predictions, ex, **kw), **kw)


@pytest.fixture(scope="session")
def make_pop():
    """The function that validates tables and builds a Population from them."""
    return make_population


@pytest.fixture(scope="session")
def binary_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """3,000 CelebA-like examples, 4 replicas of dense, gmp-50 and gmp-90 (planted FPR harm)."""
    return simulate_binary(
        n_examples=3000, n_replicas=4, seed=7,
        harms=(PlantedHarm("gmp-90", {"Male": True, "Young": False}, "fpr", 0.25),),
    )


@pytest.fixture(scope="session")
def binary_population(binary_tables) -> Population:
    return make_population(*binary_tables)


# --- config limits: a test module lists LIMIT_CLASSES and asks for limit_case ---------------


def pytest_generate_tests(metafunc):
    """Parametrize ``limit_case`` over every limit of the module's ``LIMIT_CLASSES``."""
    if "limit_case" in metafunc.fixturenames:
        metafunc.parametrize("limit_case", limit_cases(metafunc.module.LIMIT_CLASSES))


def limited_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("range") not in (None, Range())
            or f.metadata.get("nonempty") or f.metadata.get("slug")]


def _scalar(hint):
    """``int``, ``float``, ``str`` or a tuple's element type, under Optional."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _scalar(args[0])
    if typing.get_origin(hint) is tuple:
        return _scalar(args[0])
    return hint


def limit_cases(classes: list[type]) -> list:
    """One case per ``setting(...)`` limit of each field of ``classes``: ``(class, key,
    a value just outside the limit, the words its message must start with)``."""
    cases = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in limited_fields(cls):
            hint, kind = hints[f.name], _scalar(hints[f.name])
            many = typing.get_origin(hint) is tuple or any(
                typing.get_origin(a) is tuple for a in typing.get_args(hint))
            bounds: Range = f.metadata["range"]
            bad: list = []
            if kind in (int, float):
                cast = float if kind is float else int
                if bounds.ge is not None:
                    bad.append(cast(bounds.ge - 1))
                if bounds.gt is not None:
                    bad.append(cast(bounds.gt))
                if bounds.le is not None:
                    bad.append(cast(bounds.le + 1))
                if bounds.lt is not None:
                    bad.append(cast(bounds.lt))
                what = "values" if many else "an integer" if kind is int else "a number"
                words = f"expected {what} {bounds.describe()}"
            if f.metadata.get("nonempty"):
                bad, words = [[] if many else ""], "expected a non-empty"
            if f.metadata.get("slug"):
                bad, words = ["../x"], "expected a name of letters, digits"
            for value in bad:
                value = [value] if many and value != [] else value
                cases.append(pytest.param((cls, f.name, value, words),
                                          id=f"{cls.__name__}.{f.name}={value!r}"))
    return cases
