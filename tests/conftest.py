"""Shared fixtures: small simulated populations in the table contracts."""

from __future__ import annotations

import pandas as pd
import pytest

from compaudit.analysis.population import Population, build_population
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
