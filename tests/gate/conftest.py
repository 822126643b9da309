"""Runs the gate's tests share: a simulated run with a planted harm and its control
(computed once), a hand-made one-row run, the policy of the subgroup rate check alone,
and Fisher's z interval by hand."""

from __future__ import annotations

import numpy as np
import pytest

from compaudit.analysis.audit import AnalysisOptions, analyze
from compaudit.gate.policy import GatePolicy, SubgroupRatePolicy
from compaudit.schema import DeltaRow, Metrics
from compaudit.simulate import PlantedHarm, simulate_binary
from compaudit.tables import validate_examples, validate_predictions


def _metrics(harms=(), seed=0):
    ex, pr = simulate_binary(n_examples=6000, n_replicas=4, variants=("dense", "gmp-90"),
                             harms=harms, seed=seed)
    ex = validate_examples(ex)
    return analyze(ex, validate_predictions(pr, ex), AnalysisOptions(bootstrap=300)).metrics


@pytest.fixture(scope="session")
def planted():
    return _metrics((PlantedHarm("gmp-90", {"Male": True, "Young": False}, "fpr", 0.3),))


@pytest.fixture(scope="session")
def control():
    return _metrics(seed=1)


@pytest.fixture
def fisher_z():
    """Fisher z interval by hand (see :func:`_fisher_z`)."""
    return _fisher_z


def _fisher_z(est, half):
    """A Wald interval of half-width ``half`` built on atanh(est), mapped back (by hand)."""
    z, dz = np.arctanh(est), 1 / (1 - est**2)
    return np.tanh(z - dz * half), np.tanh(z + dz * half)


@pytest.fixture
def handmade():
    """A run with one hand-made subgroup rate change (see :func:`_handmade`)."""
    return _handmade


def _handmade(abs_diff, se, n=500, **row):
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}},
                   deltas=(DeltaRow(variant="c", subgroup="G=a", grouping="G", metric="fpr",
                                    n=n, abs_diff=abs_diff, abs_diff_se=se, **row),))


@pytest.fixture
def only_rates():
    """A policy with the subgroup false-positive rate check alone."""
    return ONLY_RATES


ONLY_RATES = GatePolicy(subgroup_rate=SubgroupRatePolicy(metrics=("fpr",), max_abs_increase=0.02),
                        accuracy=None, disparity=None, pie_overindex=None, robustness=None,
                        baseline=None)
