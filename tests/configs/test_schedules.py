"""The Zhu & Gupta cubic sparsity schedule against its formula."""

from __future__ import annotations

import pytest

from compaudit.configs.schedules import CubicSparsitySchedule
from compaudit.errors import AuditInputError


def _reference(t: int, s_i: float, s_f: float, t0: int, n: int, delta: int) -> float:
    # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n delta))^3 on [t0, t0 + n delta].
    if t < t0:
        return s_i
    if t > t0 + n * delta:
        return s_f
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * delta)) ** 3


def test_matches_the_formula_at_every_step():
    s_i, s_f, t0, n, delta = 0.1, 0.8, 10, 8, 5
    sched = CubicSparsitySchedule(final_sparsity=s_f, initial_sparsity=s_i, begin_step=t0,
                                  end_step=t0 + n * delta, frequency=delta)
    for t in range(0, 70):
        assert sched.sparsity_at(t) == pytest.approx(_reference(t, s_i, s_f, t0, n, delta),
                                                     abs=1e-12)


def test_hand_computed_values():
    sched = CubicSparsitySchedule(final_sparsity=0.9, begin_step=0, end_step=100, frequency=10)
    assert sched.sparsity_at(0) == 0.0
    assert sched.sparsity_at(25) == pytest.approx(0.5203125)  # 0.9 - 0.9 * 0.75^3
    assert sched.sparsity_at(50) == pytest.approx(0.7875)  # 0.9 - 0.9 * 0.5^3
    assert sched.sparsity_at(100) == pytest.approx(0.9)
    assert sched.sparsity_at(150) == pytest.approx(0.9)
    paper = CubicSparsitySchedule(final_sparsity=0.9, initial_sparsity=0.5, begin_step=1000,
                                  end_step=9000, frequency=1000)
    assert paper.sparsity_at(3000) == pytest.approx(0.73125)  # 0.9 - 0.4 * 0.75^3
    assert paper.sparsity_at(500) == 0.5


def test_update_steps_every_frequency_and_always_at_the_end():
    imagenet = CubicSparsitySchedule(final_sparsity=0.9, begin_step=5000, end_step=8000,
                                     frequency=500)
    assert imagenet.update_steps() == [5000, 5500, 6000, 6500, 7000, 7500, 8000]
    ragged = CubicSparsitySchedule(final_sparsity=0.5, begin_step=0, end_step=25, frequency=10)
    assert ragged.update_steps() == [10, 20, 25]
    assert [t for t in range(40) if ragged.is_update_step(t)] == [0, 10, 20, 25]
    assert not ragged.is_update_step(30)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(final_sparsity=0.9, begin_step=10, end_step=10, frequency=1), "end_step"),
        (dict(final_sparsity=0.9, begin_step=0, end_step=10, frequency=0), "frequency"),
        (dict(final_sparsity=1.0, begin_step=0, end_step=10, frequency=1), "final_sparsity"),
        (dict(final_sparsity=0.5, initial_sparsity=0.6, begin_step=0, end_step=10,
              frequency=1), "initial sparsity"),
        (dict(final_sparsity=0.5, begin_step=-1, end_step=10, frequency=1), "begin_step"),
        (dict(final_sparsity=0.5, begin_step=0, end_step=10.0, frequency=1), "end_step"),
    ],
)
def test_validate_names_the_bad_field(kwargs, field):
    with pytest.raises(AuditInputError, match=field):
        CubicSparsitySchedule(**kwargs)


def test_valid_schedule_builds_and_ends_on_its_last_update():
    s = CubicSparsitySchedule(final_sparsity=0.5, begin_step=0, end_step=10, frequency=3)
    # Steps count from 1: updates at 3, 6, 9 and the end step 10 (hand-counted).
    assert s.update_steps() == [3, 6, 9, 10]
    # Zhu & Gupta at t = 6: 0.5 + (0 - 0.5) * (1 - 6/10)^3 = 0.5 - 0.5 * 0.064 = 0.468
    assert s.sparsity_at(6) == pytest.approx(0.468)
    assert s.sparsity_at(10) == 0.5 and s.sparsity_at(11) == 0.5
