"""Recommended operating point: per method family, how far compression can go."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from compaudit.schema import DeltaRow, Metrics, dumps_metrics
from compaudit.cli import main
from compaudit.gate import run_gate, to_markdown
from compaudit.gate.operating import operating_points, variant_point
from compaudit.gate.outputs import format_table, write_gate_outputs
from compaudit.gate.policy import policy_from_dict


def _c(variant, verdict):
    return SimpleNamespace(variant=variant, verdict=verdict)


def test_family_order_recommendation_and_first_failure():
    checks = [_c("gmp-30", "pass"), _c("gmp-50", "pass"), _c("gmp-50", "pass"),
              _c("gmp-70", "inconclusive"), _c("gmp-90", "fail"), _c("gmp-90", "pass"),
              _c("int8", "pass"), _c("rnd-50", "fail")]
    variants = ["gmp-90", "gmp-50", "int8", "gmp-70", "gmp-30", "rnd-50"]
    points = {p.family: p for p in operating_points(checks, variants, dense="dense")}
    gmp = points["gmp"]
    assert gmp.variants == ("gmp-30", "gmp-50", "gmp-70", "gmp-90")  # by sparsity
    assert gmp.status == ("pass", "pass", "inconclusive", "fail")
    assert (gmp.recommended, gmp.first_failing, gmp.without_failure) == ("gmp-50", "gmp-90",
                                                                         "gmp-70")
    assert points["int8"].recommended == "int8" and points["int8"].first_failing is None
    rnd = points["rnd"]
    assert (rnd.recommended, rnd.first_failing, rnd.without_failure) == (None, "rnd-50", None)


def test_inconclusive_passes_only_under_a_pass_policy():
    checks = [_c("gmp-50", "pass"), _c("gmp-90", "inconclusive")]
    (warn,) = operating_points(checks, ["gmp-50", "gmp-90"], dense="dense")
    (lenient,) = operating_points(checks, ["gmp-50", "gmp-90"], dense="dense",
                                  inconclusive="pass")
    assert warn.recommended == "gmp-50" and lenient.recommended == "gmp-90"


def test_variants_json_gives_the_family_and_the_order():
    info = {"a": {"method": "gmp", "sparsity": 0.9}, "b": {"method": "gmp", "sparsity": 0.5},
            "q8": {"method": "int8_static", "sparsity": 0.0, "compressed_size_bytes": 30},
            "q16": {"method": "int8_static", "sparsity": 0.0, "compressed_size_bytes": 60}}
    checks = [_c("a", "fail"), _c("b", "pass"), _c("q8", "fail"), _c("q16", "pass")]
    points = {p.family: p for p in operating_points(checks, list(info), dense="d",
                                                    variants_info=info)}
    assert points["gmp"].variants == ("b", "a") and points["gmp"].recommended == "b"
    # Quantized: no sparsity; the larger file is the less compressed one.
    assert points["int8_static"].variants == ("q16", "q8")
    assert points["int8_static"].first_failing == "q8"
    assert variant_point("gmp-90", "dense", None).family == "gmp"


def _metrics():
    rows = tuple(DeltaRow(variant=v, subgroup="G=a", grouping="G", metric="fpr", n=500,
                          abs_diff=d, abs_diff_se=0.005)
                 for v, d in (("gmp-50", 0.0), ("gmp-90", 0.2)))
    return Metrics(options={"dense": "dense"},
                   variants={"dense": {}, "gmp-50": {}, "gmp-90": {}}, deltas=rows)


POLICY = policy_from_dict({"subgroup_rate": {"max_abs_increase": 0.02}})


def test_gate_outputs_carry_the_operating_point(tmp_path):
    result = run_gate(_metrics(), POLICY)
    (point,) = result.operating_points
    assert (point.recommended, point.first_failing) == ("gmp-50", "gmp-90")
    md = to_markdown(result)
    assert "### Recommended operating point" in md
    assert "| gmp | gmp-50 (50% sparse) | gmp-90 (90% sparse) |" in md
    assert "operating point: gmp: recommended gmp-50 (50% sparse)" in format_table(result)
    doc = json.loads(write_gate_outputs(result, tmp_path)["json"].read_text())
    assert doc["operating_points"][0]["recommended"] == "gmp-50"
    assert doc["operating_points"][0]["variants"][1] == {"name": "gmp-90", "status": "fail",
                                                          "sparsity": pytest.approx(0.9)}


def test_cli_gate_reads_variants_json(tmp_path):
    (tmp_path / "metrics.json").write_text(dumps_metrics(_metrics()))
    (tmp_path / "variants.json").write_text(json.dumps({"variants": {
        "gmp-50": {"method": "magnitude", "sparsity": 0.5},
        "gmp-90": {"method": "magnitude", "sparsity": 0.9}}}))
    policy = tmp_path / "p.toml"
    policy.write_text("[gate.subgroup_rate]\nmax_abs_increase = 0.02\n")
    assert main(["gate", str(tmp_path), "--policy", str(policy)]) == 1
    doc = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert doc["operating_points"][0]["family"] == "magnitude"
