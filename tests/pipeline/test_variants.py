"""The variants stage with a derived variant (a repair): it runs after its base, from
the base's model files, its stage key holds the base's, and it joins the base's family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compaudit.pipeline import run_audit
from compaudit.spec import parse_spec

SPEC = Path(__file__).with_name("tiny_spec.toml").read_text().replace("[[shifts]]", """\
[[variants]]
name = "gmp-50-repaired"
method = "constrained_finetune"
base = "gmp-50"
epochs = 1
[[shifts]]""") + """
[analysis]
bootstrap = 20
[executor]
kind = "serial"
"""


def _run(text: str, out: Path):
    return run_audit(parse_spec(text, source="tiny.toml"), out, progress=False,
                     log=lambda _: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("derived")
    first = _run(SPEC, out)
    records = json.loads((out / "variants.json").read_text())["variants"]
    gate = json.loads((out / "gate" / "gate.json").read_text())
    # Only the repair changes: the base and every other variant are reused. It measures
    # disagreement with the dense population, which the job hands it.
    second = _run(SPEC.replace("epochs = 1\n[[shifts]]", 'epochs = 1\nteacher = "population"\n'
                               'relative_to = "dense"\ndistill = 0.5\n[[shifts]]'), out)
    population = json.loads((out / "variants.json").read_text())["variants"]["gmp-50-repaired"]
    # The base changes: the repair, which starts from it, is made again too.
    third = _run(SPEC.replace("sparsity = 0.5", "sparsity = 0.6"), out)
    return out, first, records, gate, population, second, third


def test_the_repair_keeps_its_bases_sparsity_and_joins_its_family(runs):
    out, _, records, gate, *_ = runs
    base, repaired = records["gmp-50"], records["gmp-50-repaired"]
    assert repaired["base"] == "gmp-50" and base["base"] is None
    assert repaired["derives_from"] == "dense"  # paired with dense replica k, as the base
    assert (repaired["family"], repaired["axis"]) == ("gradual_magnitude", "sparsity")
    assert repaired["sparsity"] == base["sparsity"]
    assert repaired["nonzero_count"] == base["nonzero_count"]
    # The base's replicas were written for it, one per dense replica, and hold the zeros.
    files = sorted((out / "variants" / "gmp-50" / "models").iterdir())
    assert [f.name for f in files] == ["replica-000.pt", "replica-001.pt"]
    state = torch.load(files[0], weights_only=True)
    zeros = sum(int((t == 0).sum()) for t in state.values())
    assert zeros >= base["parameter_count"] - base["nonzero_count"]
    (point,) = [p for p in gate["operating_points"] if p["family"] == "gradual_magnitude"]
    assert [v["name"] for v in point["variants"]] == ["gmp-50", "gmp-50-repaired"]
    repair = repaired["repair"]
    assert len(repair["groups"]) == len(repair["dense_error"]) == len(repair["multipliers"])


def test_a_changed_repair_reruns_alone_and_a_changed_base_reruns_both(runs):
    *_, population, second, third = runs
    assert population["parameters"]["teacher"] == "population"
    n = len(population["repair"]["groups"])
    assert len(population["repair"]["repaired_disagreement"]) == n
    assert "variant:gmp-50-repaired" in second.stages_run
    assert {"variant:gmp-50", "variant:float16", "variant:dense"} <= set(second.stages_skipped)
    assert {"variant:gmp-50", "variant:gmp-50-repaired"} <= set(third.stages_run)
    assert "variant:float16" in third.stages_skipped


def test_short_jobs_wait_for_the_derived_round_and_long_ones_go_first():
    from types import SimpleNamespace

    from compaudit.configs.compress import (
        ConstrainedFinetuneConfig,
        GradualMagnitudeConfig,
        Int8StaticConfig,
    )
    from compaudit.pipeline.variants import _rounds

    def job(name, config):
        return SimpleNamespace(name=name, config=config)

    jobs = [job("dense", None), job("gmp-50", GradualMagnitudeConfig(sparsity=0.5, frequency=20, begin=0.0, end=0.5)),
            job("gmp-90", GradualMagnitudeConfig(sparsity=0.9, frequency=20, begin=0.0, end=0.5)),
            job("int8", Int8StaticConfig()),
            job("fixed", ConstrainedFinetuneConfig(base="gmp-90"))]
    # The repair reads gmp-90's files: after it. The short jobs (dense, int8) run beside
    # the repair, not before it, so the two workers stay busy; gmp-50 trains: first round.
    assert _rounds(jobs, {"fixed": "gmp-90"}) == {
        "dense": 1, "gmp-50": 0, "gmp-90": 0, "int8": 1, "fixed": 1}
    # Without a derived variant every job is in one round.
    assert set(_rounds(jobs[:4], {}).values()) == {0}
