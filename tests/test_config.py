"""The one TOML -> dataclass coercer: types, limits and their messages, hand-checked on a
small config, then every ``setting(...)`` limit declared in the package refused through
both doors (Python and TOML), found by introspection so a new limit is covered at once.
Compression methods' configs have their own file (tests/configs/test_compress.py)."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

import compaudit
from compaudit.config import (
    Checked,
    ConfigError,
    Range,
    check_choice,
    check_int,
    from_table,
    setting,
)
from compaudit.errors import AuditInputError

# --- the coercer on a config written here ---------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Fit(Checked):
    steps: int = setting(10, ge=1)
    rate: float = setting(0.5, gt=0, lt=1)
    cap: float = setting(2.0, le=3)
    fractions: tuple[float, ...] = setting(factory=tuple, ge=0, le=1)
    names: tuple[str, ...] = setting((), nonempty=False)
    tags: tuple[str, ...] = setting(("a",), nonempty=True)
    folder: str = setting("run", slug=True)
    limit: int | None = setting(None, ge=0, off=True)
    mode: Literal["a", "b"] = "a"

    def _problems(self):
        if self.cap < self.rate:
            yield "cap", f"got {self.cap!r}; expected at least rate ({self.rate!r})"


@pytest.mark.parametrize("key, value, message", [
    ("steps", 0, "got 0; expected an integer >= 1"),
    ("rate", 0, "got 0; expected a number in (0, 1)"),
    ("rate", 1.0, "got 1.0; expected a number in (0, 1)"),
    ("cap", 3.5, "got 3.5; expected a number <= 3"),
    ("fractions", [0.5, 1.5], "got [0.5, 1.5]; expected values in [0, 1]"),
    ("tags", [], "got []; expected a non-empty list of strings"),
    ("folder", "../up", "got '../up'; expected a name of letters, digits, '-', '_' and '.' "
                        "(no path separators, no '..', not starting with '.')"),
    ("limit", -1, "got -1; expected an integer >= 0"),
    ("steps", True, "got True; expected an integer"),      # a bool is not an integer
    ("steps", "3", "got '3'; expected an integer"),        # nor is a string
    ("rate", "0.5", "got '0.5'; expected a number"),
    ("mode", "c", "got 'c'; expected one of 'a', 'b'"),
    ("names", "x", "got 'x'; expected a list of strings"),
])
def test_each_kind_of_limit_is_refused_with_its_message_at_both_doors(key, value, message):
    problems: list[str] = []
    assert from_table(Fit, {key: value}, where="s.toml: [fit]", problems=problems) is None
    assert problems == [f"s.toml: [fit].{key}: {message}"]
    with pytest.raises(ConfigError) as info:
        Fit(**{key: value})
    assert str(info.value) == f"Fit.{key}: {message}"
    assert info.value.reworded("p.toml: [x]") == [f"p.toml: [x].{key}: {message}"]


def test_values_inside_the_limits_are_converted_not_refused():
    fit = Fit(steps=np.int64(1), rate=0.999, cap=3, fractions=[0, 1], limit=0)
    assert fit.steps == 1 and type(fit.steps) is int
    assert fit.cap == 3.0 and type(fit.cap) is float  # an integer where a float is declared
    assert fit.fractions == (0.0, 1.0)                  # lists become tuples
    problems: list[str] = []
    assert from_table(Fit, {"limit": False}, where="w", problems=problems).limit is None
    assert problems == []  # false turns an optional setting off (TOML has no null)


def test_every_problem_is_listed_and_cross_field_rules_run_after_the_fields():
    problems: list[str] = []
    from_table(Fit, {"steps": 0, "rate": 2, "oops": 1}, where="s.toml: [fit]",
               problems=problems)
    assert problems == [
        "s.toml: [fit].steps: got 0; expected an integer >= 1",
        "s.toml: [fit].rate: got 2; expected a number in (0, 1)",
        "s.toml: [fit].oops: unknown key; valid keys: steps, rate, cap, fractions, names, "
        "tags, folder, limit, mode",
    ]
    with pytest.raises(ConfigError) as info:
        Fit(rate=0.9, cap=0.5)
    assert info.value.items == [("cap", "got 0.5; expected at least rate (0.9)")]
    with pytest.raises(ConfigError) as info:  # a bad field hides the cross-field rule
        Fit(steps=0, rate=0.9, cap=0.5)
    assert [key for key, _ in info.value.items] == ["steps"]
    assert isinstance(info.value, AuditInputError)


def test_tables_missing_keys_and_nested_tables_are_located():
    @dataclass(frozen=True, kw_only=True)
    class Outer(Checked):
        name: str
        fit: Fit = dataclasses.field(default_factory=Fit)

    problems: list[str] = []
    assert from_table(Outer, [1], where="s.toml: [o]", problems=problems) is None
    assert from_table(Outer, {}, where="s.toml: [o]", problems=problems) is None
    assert from_table(Outer, {"name": "x", "fit": {"steps": -2}}, where="s.toml: [o]",
                      problems=problems) is None
    assert problems == ["s.toml: [o]: got [1]; expected a table",
                        "s.toml: [o]: missing required key(s) name",
                        "s.toml: [o.fit].steps: got -2; expected an integer >= 1"]


def test_single_options_of_the_command_line():
    assert check_int("--workers", 2, minimum=1) is None
    assert check_int("--workers", 0, minimum=1, maximum=8) == \
        "--workers: got 0; expected an integer in [1, 8]"
    assert check_int("--n", 1.5) == "--n: got 1.5; expected an integer"
    assert check_choice("--about", "x", ["models", "procedure"]) == \
        "--about: got 'x'; expected one of 'models', 'procedure'"
    assert Range(gt=0.5).describe() == "> 0.5" and Range(lt=2).describe() == "< 2"


# --- every limit declared in the package ------------------------------------------------------

_ROOT = Path(compaudit.__file__).parent
_OWN_FILE = {"compaudit.configs.compress", "compaudit.configs.pruning",
             "compaudit.configs.quantization"}  # tests/configs/: their own files


def _config_classes() -> list[type]:
    """Every dataclass of the modules that call ``setting(`` (read as text, so that a new
    module is found without a list); those without limits add no cases."""
    classes: dict[str, type] = {}
    for path in sorted(_ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(_ROOT.parent).with_suffix("").parts)
        if module in _OWN_FILE or module == "compaudit.config" or \
                "setting(" not in path.read_text(encoding="utf-8"):
            continue
        for obj in vars(importlib.import_module(module)).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and \
                    obj.__module__ == module:
                classes[f"{module}.{obj.__qualname__}"] = obj
    return list(classes.values())


def test_introspection_finds_the_configs_of_every_stage():
    names = {cls.__name__ for cls in _config_classes()}
    assert {"TrainConfig", "AnalysisOptions", "DataSpec", "ModelSpec", "CubicSparsitySchedule",
            "DissectionConfig"} <= names
    assert not names & {"GradualMagnitudeConfig", "UnitPruningConfig"}  # their own file


LIMIT_CLASSES = _config_classes()  # the limit_case parameters (tests/conftest.py)


def test_every_declared_limit_is_refused_with_its_message(limit_case):
    cls, key, value, words = limit_case
    problems: list[str] = []
    assert from_table(cls, {key: value}, where="a.toml: [t]", problems=problems) is None
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"a.toml: [t].{key}: got {value!r}; {words}"), problems


# --- cross-field rules outside the compression methods ------------------------------------------


def test_train_config_cross_field_rules():
    from compaudit.configs.train import TrainConfig

    with pytest.raises(ConfigError) as info:
        TrainConfig(step_milestones=(0.75, 0.5))
    assert info.value.items == [("step_milestones", "got (0.75, 0.5); expected increasing "
                                                    "fractions of the run")]
    with pytest.raises(ConfigError) as info:
        TrainConfig(device="gpu")
    assert info.value.items == [("device", "got 'gpu'; expected a torch device string such "
                                           "as 'cpu', 'cuda' or 'cuda:1'")]
    assert TrainConfig(device="cuda:1").device == "cuda:1"
