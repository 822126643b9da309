"""TrainConfig: every invalid field is reported, with its name and the valid values."""

from __future__ import annotations

import pytest

from compaudit.configs.train import TrainConfig
from compaudit.errors import AuditInputError


def test_defaults_are_valid_and_frozen():
    config = TrainConfig()
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]


def test_milestones_from_toml_lists_become_tuples():
    assert TrainConfig(step_milestones=[0.3, 0.6]).step_milestones == (0.3, 0.6)


def test_config_collects_every_problem_with_field_names():
    with pytest.raises(AuditInputError) as info:
        TrainConfig(epochs=0, optimizer="adam", lr=-1.0, schedule="linear", label_smoothing=1.0)
    problems = info.value.problems
    assert len(problems) == 5
    text = "\n".join(problems)
    for field in ("epochs", "optimizer", "lr", "schedule", "label_smoothing"):
        assert f"TrainConfig.{field}: got" in text
    assert "'sgd', 'adamw'" in text and "'step', 'cosine', 'constant'" in text


@pytest.mark.parametrize("kw", [dict(batch_size=True), dict(num_threads=0), dict(seed=-1),
                                dict(step_milestones=(0.75, 0.5)), dict(device="gpu!"),
                                dict(momentum=1.0), dict(amp="yes")])
def test_config_rejects_each_bad_value(kw):
    with pytest.raises(AuditInputError, match=next(iter(kw))):
        TrainConfig(**kw)
