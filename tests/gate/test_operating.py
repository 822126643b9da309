"""Recommended operating point: per method family, how far compression can go."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from compaudit.cli import main
from compaudit.compress.footprint import write_variants_json
from compaudit.configs.compress import METHODS
from compaudit.gate import run_gate, to_markdown
from compaudit.gate.operating import VariantPoint, operating_points, variant_point, variants_info
from compaudit.gate.outputs import format_table, write_gate_outputs
from compaudit.gate.policy import policy_from_dict
from compaudit.schema import VARIANT_FIELDS, DeltaRow, Metrics, VariantRecord, dumps_metrics


def _c(variant, verdict):
    return SimpleNamespace(variant=variant, verdict=verdict)


def _record(method, *, sparsity=None, bits=None, size=None):
    """A variants.json record placed as the pipeline places it: from the method's entry;
    what these tests do not need is not measured (None)."""
    entry = METHODS.get(method)
    unmeasured = dict.fromkeys(VARIANT_FIELDS, None)
    return VariantRecord(**{**unmeasured, "method": method, "family": entry.family,
                            "axis": entry.axis, "bits": bits, "parameters": {},
                            "sparsity": sparsity, "compressed_size_bytes": size})


GMP = {f"gmp-{s}": _record("gradual_magnitude", sparsity=s / 100) for s in (30, 50, 70, 90)}


def test_family_order_recommendation_and_first_failure():
    checks = [_c("gmp-30", "pass"), _c("gmp-50", "pass"), _c("gmp-50", "pass"),
              _c("gmp-70", "inconclusive"), _c("gmp-90", "fail"), _c("gmp-90", "pass"),
              _c("int8", "pass"), _c("rnd-50", "fail")]
    variants = ["gmp-90", "gmp-50", "int8", "gmp-70", "gmp-30", "rnd-50"]
    info = {**GMP, "int8": _record("int8_static", bits=8, sparsity=0.003),
            "rnd-50": _record("random", sparsity=0.5)}
    points = {p.family: p for p in operating_points(checks, variants, dense="dense",
                                                    variants_info=info)}
    gmp = points["gradual_magnitude"]
    assert gmp.variants == ("gmp-30", "gmp-50", "gmp-70", "gmp-90")  # by sparsity
    assert gmp.status == ("pass", "pass", "inconclusive", "fail")
    assert (gmp.recommended, gmp.first_failing, gmp.without_failure) == ("gmp-50", "gmp-90",
                                                                         "gmp-70")
    int8 = points["int8_static"]
    assert int8.recommended == "int8" and int8.first_failing is None
    assert int8.sparsity == (None,)  # a quantized variant is not a pruning level
    rnd = points["random"]
    assert (rnd.recommended, rnd.first_failing, rnd.without_failure) == (None, "rnd-50", None)


def test_inconclusive_passes_only_under_a_pass_policy():
    checks = [_c("gmp-50", "pass"), _c("gmp-90", "inconclusive")]
    (warn,) = operating_points(checks, ["gmp-50", "gmp-90"], dense="dense", variants_info=GMP)
    (lenient,) = operating_points(checks, ["gmp-50", "gmp-90"], dense="dense",
                                  inconclusive="pass", variants_info=GMP)
    assert warn.recommended == "gmp-50" and lenient.recommended == "gmp-90"


def test_a_repair_sits_right_after_its_base_and_can_be_recommended():
    # The record of a derived variant names its base and carries the base's family (the
    # pipeline writes it so) and the same sparsity and size: placed right after the base.
    repaired = replace(_record("constrained_finetune", sparsity=0.9, size=100),
                       family="gradual_magnitude", base="gmp-90")
    info = {**GMP, "gmp-90": replace(GMP["gmp-90"], compressed_size_bytes=100),
            "a-repair": repaired}
    checks = [_c("gmp-50", "pass"), _c("gmp-90", "fail"), _c("a-repair", "pass")]
    (point,) = operating_points(checks, ["a-repair", "gmp-90", "gmp-50"], dense="dense",
                                variants_info=info)
    assert point.variants == ("gmp-50", "gmp-90", "a-repair")  # not by name: 'a' < 'g'
    assert point.sparsity == (0.5, 0.9, 0.9)
    assert (point.recommended, point.first_failing) == ("a-repair", "gmp-90")
    assert variant_point("a-repair", "dense", repaired).base == "gmp-90"
    assert variant_point("gmp-90", "dense", GMP["gmp-90"]).base is None


def test_families_come_from_the_method_not_the_name():
    # Named like quantized variants, made by pruning: grouped and placed by their method.
    info = {"int8-ish": _record("one_shot_magnitude", sparsity=0.9),
            "fp16-a": _record("one_shot_magnitude", sparsity=0.5),
            "gmp-90": _record("float16", bits=16, sparsity=0.0)}
    checks = [_c("int8-ish", "fail"), _c("fp16-a", "pass"), _c("gmp-90", "pass")]
    points = {p.family: p for p in operating_points(checks, list(info), dense="dense",
                                                    variants_info=info)}
    assert set(points) == {"one_shot_magnitude", "float16"}
    pruned = points["one_shot_magnitude"]
    assert pruned.variants == ("fp16-a", "int8-ish") and pruned.sparsity == (0.5, 0.9)
    assert (pruned.recommended, pruned.first_failing) == ("fp16-a", "int8-ish")
    assert points["float16"].sparsity == (None,)


def test_without_variants_json_each_variant_is_its_own_family():
    checks = [_c("gmp-50", "pass"), _c("gmp-90", "fail")]
    points = operating_points(checks, ["gmp-90", "gmp-50"], dense="dense")
    assert [(p.family, p.variants, p.sparsity) for p in points] == [
        ("gmp-90", ("gmp-90",), (None,)), ("gmp-50", ("gmp-50",), (None,))]
    assert variant_point("gmp-90", "dense", None) == VariantPoint("gmp-90", None, "gmp-90")


def test_variants_json_gives_the_family_and_the_order():
    info = {"a": _record("gradual_magnitude", sparsity=0.9),
            "b": _record("gradual_magnitude", sparsity=0.5),
            "q8": _record("int8_static", bits=8, sparsity=0.0, size=30),
            "q8-big": _record("int8_static", bits=8, sparsity=0.0, size=60),
            "w8": _record("int8_weight_only", bits=8, size=100),
            "w16": _record("int8_weight_only", bits=16, size=10)}
    checks = [_c("a", "fail"), _c("b", "pass"), _c("q8", "fail"), _c("q8-big", "pass")]
    points = {p.family: p for p in operating_points(checks, list(info), dense="d",
                                                    variants_info=info)}
    assert points["gradual_magnitude"].variants == ("b", "a")
    assert points["gradual_magnitude"].recommended == "b"
    # Same bit width: the larger file is the less compressed one.
    assert points["int8_static"].variants == ("q8-big", "q8")
    assert points["int8_static"].first_failing == "q8"
    # On the bits axis the wider weights come first, whatever the file sizes.
    assert points["int8_weight_only"].variants == ("w16", "w8")


def test_variants_json_reads_back_as_written(tmp_path):
    write_variants_json(tmp_path / "variants.json", GMP)
    assert variants_info(tmp_path) == GMP
    assert variants_info(tmp_path / "elsewhere") is None


def _metrics():
    rows = tuple(DeltaRow(variant=v, subgroup="G=a", grouping="G", metric="fpr", n=500,
                          abs_diff=d, abs_diff_se=0.005)
                 for v, d in (("gmp-50", 0.0), ("gmp-90", 0.2)))
    return Metrics(options={"dense": "dense"},
                   variants={"dense": {}, "gmp-50": {}, "gmp-90": {}}, deltas=rows)


POLICY = policy_from_dict({"subgroup_rate": {"max_abs_increase": 0.02}})


def test_gate_outputs_carry_the_operating_point(tmp_path):
    result = run_gate(_metrics(), POLICY, variants_info=GMP)
    (point,) = result.operating_points
    assert (point.recommended, point.first_failing) == ("gmp-50", "gmp-90")
    md = to_markdown(result)
    assert "### Recommended operating point" in md
    assert "| gradual_magnitude | gmp-50 (50% sparse) | gmp-90 (90% sparse) |" in md
    assert ("operating point: gradual_magnitude: recommended gmp-50 (50% sparse)"
            in format_table(result))
    doc = json.loads(write_gate_outputs(result, tmp_path)["json"].read_text())
    assert doc["operating_points"][0]["recommended"] == "gmp-50"
    assert doc["operating_points"][0]["variants"][1] == {"name": "gmp-90", "status": "fail",
                                                          "sparsity": pytest.approx(0.9)}


def test_cli_gate_reads_variants_json(tmp_path):
    (tmp_path / "metrics.json").write_text(dumps_metrics(_metrics()))
    write_variants_json(tmp_path / "variants.json", {
        "gmp-50": _record("one_shot_magnitude", sparsity=0.5),
        "gmp-90": _record("one_shot_magnitude", sparsity=0.9)})
    policy = tmp_path / "p.toml"
    policy.write_text("[gate.subgroup_rate]\nmax_abs_increase = 0.02\n")
    assert main(["gate", str(tmp_path), "--policy", str(policy)]) == 1
    doc = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert doc["operating_points"][0]["family"] == "one_shot_magnitude"
    assert [v["sparsity"] for v in doc["operating_points"][0]["variants"]] == [0.5, 0.9]
