"""Audit specs: every shipped spec parses; every mistake is reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from compaudit.compress.magnitude import GradualMagnitudeConfig
from compaudit.errors import AuditInputError
from compaudit.spec import demo_spec, load_spec, parse_spec

AUDITS = Path(__file__).resolve().parents[1] / "audits"


@pytest.mark.parametrize("path", sorted(AUDITS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_specs_parse(path):
    spec = load_spec(path)
    assert spec.variants and spec.model.replicas >= 1
    for variant in spec.variants:
        variant.build_config()


def test_demo_spec_and_its_control():
    spec = demo_spec()
    assert spec.name == "demo" and spec.data.spurious == 0.8
    assert isinstance(spec.variants[1].build_config(), GradualMagnitudeConfig)
    assert spec.variants[1].build_config().sparsity == 0.9
    control = demo_spec(spurious=False)
    assert control.name == "demo-control" and control.data.spurious == 0.0
    assert spec.section("model") == control.section("model")


def test_every_mistake_is_reported_with_file_and_key():
    text = """
[audit]
name = "x"
[data]
image_size = "big"
colour = 3
[model]
replicas = 0
[train]
optimizer = "adam"
[[variants]]
name = "dense"
method = "gradual_magnitude"
[[variants]]
name = "q"
method = "int4"
[gate]
level = 3
[extra]
"""
    with pytest.raises(AuditInputError) as exc:
        parse_spec(text, source="bad.toml")
    problems = exc.value.problems
    joined = "\n".join(problems)
    assert all(p.startswith("bad.toml: ") for p in problems)
    assert "[data].image_size: got 'big'; expected an integer" in joined
    assert "[data].colour: unknown key" in joined
    assert "[train].optimizer: got 'adam'; expected one of 'sgd', 'adamw'" in joined
    assert "[[variants]] #1.name: got 'dense'" in joined
    assert "[[variants]] #2.method: got 'int4'; expected one of gradual_magnitude" in joined
    assert "[gate].level: got 3" in joined
    assert "unknown section [extra]" in joined
    assert len(problems) >= 7


def test_method_parameters_are_checked_by_the_method_config():
    text = '[[variants]]\nname = "g"\nmethod = "gradual_magnitude"\nsparsity = 0.5\n'
    with pytest.raises(AuditInputError, match="parameters of 'gradual_magnitude' are invalid"):
        parse_spec(text, source="s.toml")


def test_ranges_are_checked():
    text = ('[model]\nreplicas = 0\n[data]\nsplits = [0.5, 0.5, 0.5]\n'
            '[[variants]]\nname = "f"\nmethod = "float16"\n')
    with pytest.raises(AuditInputError) as exc:
        parse_spec(text, source="s.toml")
    joined = "\n".join(exc.value.problems)
    assert "[model].replicas: expected at least 1" in joined
    assert "[data].splits: expected three fractions" in joined


def test_missing_spec_file(tmp_path):
    with pytest.raises(AuditInputError, match="audit spec not found"):
        load_spec(tmp_path / "nope.toml")


def test_dissection_section_is_optional_and_checked():
    base = '[[variants]]\nname = "f"\nmethod = "float16"\n'
    assert parse_spec(base, source="s.toml").dissection is None
    spec = parse_spec(base + '[dissection]\nquantile = 0.02\nlayers = ["features.11"]\n',
                      source="s.toml")
    assert spec.dissection.quantile == 0.02 and spec.dissection.layers == ("features.11",)
    assert spec.dissection.iou_threshold == 0.04 and spec.dissection.concepts == "synthetic-faces"
    bad = (base.replace('[[variants]]', '[model]\narch = "mystery"\n[[variants]]')
           + '[dissection]\nconcepts = "broden"\nquantile = 1.5\nmax_images = -1\n')
    with pytest.raises(AuditInputError) as exc:
        parse_spec(bad, source="s.toml")
    joined = "\n".join(exc.value.problems)
    assert "s.toml: [dissection].quantile: expected a value in (0, 1)" in joined
    assert "[dissection].max_images: expected 0 (all) or more" in joined
    assert "[dissection].root: expected the Broden folder" in joined
    assert "[dissection].layers: expected module names of 'mystery'" in joined
    with pytest.raises(AuditInputError, match=r"\[dissection\].concepts: got 'masks'"):
        parse_spec(base + '[dissection]\nconcepts = "masks"\n', source="s.toml")
