"""The pruning configs' cross-field rules, by hand (their limits: tests/configs/test_compress.py)."""

from __future__ import annotations

import pytest

from compaudit.config import ConfigError, from_table
from compaudit.configs.pruning import GradualMagnitudeConfig, LotteryTicketConfig, UnitPruningConfig
from compaudit.configs.schedules import CubicSparsitySchedule


def test_the_limits_cover_the_pruning_fractions():
    # Written here: sparsity 1 (nothing left) and negative steps are never accepted.
    for cls, key, value in [(GradualMagnitudeConfig, "sparsity", 1.0),
                            (LotteryTicketConfig, "sparsity", 0.0),
                            (UnitPruningConfig, "fraction", 1.0),
                            (GradualMagnitudeConfig, "begin_step", -1)]:
        problems: list[str] = []
        from_table(cls, {key: value}, where="w", problems=problems)
        assert problems and problems[0].startswith(f"w.{key}: got {value!r}; expected")


def _items(cls, **kw):
    with pytest.raises(ConfigError) as info:
        cls(**kw)
    return info.value.items


def test_gradual_magnitude_needs_one_pair_of_steps_or_fractions():
    one_pair = [(None, "give begin_step and end_step (optimizer steps) or begin and end "
                       "(fractions of the fine-tuning run), one pair")]
    assert _items(GradualMagnitudeConfig, sparsity=0.5, frequency=1) == one_pair
    assert _items(GradualMagnitudeConfig, sparsity=0.5, frequency=1, begin_step=0,
                  end_step=10, end=0.5) == one_pair
    # Found while typing the rule for mypy: a lone begin_step beside both fractions was
    # accepted, and for_run dropped it without a word.
    assert _items(GradualMagnitudeConfig, sparsity=0.5, frequency=1, begin_step=10,
                  begin=0.1, end=0.5) == one_pair
    assert _items(GradualMagnitudeConfig, sparsity=0.5, frequency=1, end_step=10,
                  begin=0.1, end=0.5) == one_pair
    assert _items(GradualMagnitudeConfig, sparsity=0.5, frequency=1, begin=0.5,
                  end=0.5) == [("end", "got 0.5; expected a fraction greater than begin (0.5)")]
    assert _items(GradualMagnitudeConfig, sparsity=0.5, frequency=1, begin_step=10,
                  end_step=10) == [("end_step", "got 10; expected an integer greater than "
                                                "begin_step (10)")]
    assert _items(GradualMagnitudeConfig, sparsity=0.5, initial_sparsity=0.6, frequency=1,
                  begin=0.0, end=0.8) == [
        (None, "initial sparsity 0.6 exceeds the final sparsity 0.5 (sparsity); sparsity may "
               "only grow during training")]
    assert GradualMagnitudeConfig(sparsity=0.5, frequency=1, begin=0.0, end=0.8).for_run(
        100).end_step == 80


def test_cubic_schedule_cross_field_rules():
    assert _items(CubicSparsitySchedule, final_sparsity=0.5, begin_step=5, end_step=4,
                  frequency=1) == [("end_step", "got 4; expected an integer greater than "
                                                "begin_step (5)")]
    assert _items(CubicSparsitySchedule, final_sparsity=0.2, initial_sparsity=0.3,
                  begin_step=0, end_step=4, frequency=1)[0][1].startswith(
        "initial sparsity 0.3 exceeds the final sparsity 0.2 (final_sparsity)")


def test_unit_pruning_takes_exactly_one_of_fraction_and_count():
    for kw in ({}, {"fraction": 0.5, "count": 2}):
        assert _items(UnitPruningConfig, **kw) == [
            (None, "give exactly one of fraction (share of each layer's units) and count "
                   f"(units per layer); got fraction={kw.get('fraction')!r}, "
                   f"count={kw.get('count')!r}")]
    assert UnitPruningConfig(count=2).count == 2


def test_lottery_takes_per_round_fraction_or_rounds_not_both():
    assert _items(LotteryTicketConfig, sparsity=0.9, per_round_fraction=0.2, rounds=3) == [
        (None, "give per_round_fraction or rounds, not both (got 0.2 and 3)")]
    assert LotteryTicketConfig(sparsity=0.9, rounds=3).rounds == 3
