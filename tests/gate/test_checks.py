"""The gate: verdicts from simultaneous intervals, on planted, null and hand-made runs."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy import stats as sps

from compaudit.analysis.audit import AnalysisOptions, analyze
from compaudit.cli import main
from compaudit.errors import AuditInputError
from compaudit.gate import run_gate
from compaudit.gate.outputs import to_junit, to_markdown
from compaudit.gate.policy import GatePolicy, policy_from_dict
from compaudit.schema import dumps_metrics
from compaudit.simulate import simulate_binary
from compaudit.tables import validate_examples, validate_predictions


def test_planted_harm_fails_the_gate_in_its_cell(planted):
    result = run_gate(planted)
    assert result.verdict == "fail" and result.exit_code == 1
    failed = {(c.kind, c.subject, c.metric) for c in result.failed}
    assert ("subgroup_rate", "Male=True & Young=False", "fpr") in failed
    assert all(c.lo > c.tolerance for c in result.failed)


def test_control_without_harm_does_not_fail(control):
    result = run_gate(control)
    assert not result.failed and result.exit_code == 0


def test_intervals_are_bonferroni_intervals_on_fishers_z_scale(planted, fisher_z):
    result = run_gate(planted)
    m = len(result.checks)
    assert result.z == pytest.approx(sps.norm.ppf(1 - 0.05 / (2 * m)))
    row = next(r for r in planted.deltas if r.variant == "gmp-90" and r.metric == "fpr"
               and r.subgroup == "Male=True & Young=False")
    check = next(c for c in result.checks if c.id == "gmp-90/Male=True & Young=False/fpr/abs")
    # The row's se covers replica pairs and examples, with Satterthwaite df: t quantiles
    # at the Bonferroni tail (the example-only se of earlier versions took z).
    q = sps.t.ppf(1 - 0.05 / (2 * m), row.abs_diff_df)
    assert 3 <= row.abs_diff_df <= 1000 and check.df == row.abs_diff_df
    lo, hi = fisher_z(row.abs_diff, q * row.abs_diff_se)
    assert (check.lo, check.hi) == pytest.approx((lo, hi), rel=1e-12)
    # Away from the bounds it is the Wald interval to within 5% of its half-width.
    half = q * row.abs_diff_se
    assert (check.lo, check.hi) == pytest.approx(
        (row.abs_diff - half, row.abs_diff + half), abs=0.05 * half)


def test_inconclusive_subgroup_check_states_what_its_cell_can_detect(handmade, only_rates):
    metrics = handmade(0.03, 0.01, abs_diff_df=4.0, replicas=5)
    check = run_gate(metrics, only_rates).checks[0]
    assert check.verdict == "inconclusive"
    # One check: tail 0.025; t with 4 df. MDE = (t_{0.975,4} + t_{0.8,4}) * se.
    mde = (sps.t.ppf(0.975, 4) + sps.t.ppf(0.8, 4)) * 0.01
    assert check.reason == ("interval contains the tolerance 2.00 pp; this cell can "
                            f"detect only ≥ {100 * mde:.1f} pp with 500 examples and "
                            "5 replicas")


@pytest.mark.parametrize(
    "abs_diff, se, verdict",
    [(0.10, 0.01, "fail"), (0.0, 0.005, "pass"), (0.02, 0.01, "inconclusive"),
     (0.05, 0.05, "inconclusive"), (math.nan, 0.01, "inconclusive")],
)
def test_verdict_rule(abs_diff, se, verdict, handmade, fisher_z, only_rates):
    (check,) = run_gate(handmade(abs_diff, se), only_rates).checks
    z = sps.norm.ppf(1 - 0.05 / 2)  # a single check: no widening
    assert check.verdict == verdict
    if verdict != "inconclusive" or math.isfinite(abs_diff):
        assert check.lo == pytest.approx(fisher_z(abs_diff, z * se)[0], rel=1e-12)


def test_inconclusive_policy_decides_the_exit_code(handmade, only_rates):
    metrics = handmade(0.02, 0.01)
    warn = run_gate(metrics, only_rates)
    assert (warn.verdict, warn.exit_code) == ("warn", 0)
    strict = GatePolicy(**{**only_rates.__dict__, "inconclusive": "fail"})
    assert run_gate(metrics, strict).exit_code == 1


def test_small_subgroups_are_not_checked_and_a_gate_without_checks_refuses(handmade, only_rates):
    with pytest.raises(AuditInputError, match=r"no gate check applies \(\[gate.subgroup_rate\] "
                                              "matched no check in this run"):
        run_gate(handmade(0.5, 0.01, n=10), only_rates)


def test_junit_and_markdown(planted):
    result = run_gate(planted)
    suite = ET.fromstring(to_junit(result))
    assert int(suite.get("tests")) == len(result.checks)
    assert int(suite.get("failures")) == len(result.failed)
    assert int(suite.get("skipped")) == len(result.inconclusive)
    assert len(suite.findall("testcase/failure")) == len(result.failed)
    md = to_markdown(result)
    assert md.startswith("## ❌ compaudit gate: FAIL")
    assert "Male=True & Young=False" in md


def test_cli_gate_exit_codes_and_step_summary(planted, control, tmp_path, monkeypatch, capsys):
    for name, m in (("bad", planted), ("good", control)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(dumps_metrics(m))
    summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["gate", str(tmp_path / "bad")]) == 1
    assert (tmp_path / "bad" / "gate" / "junit.xml").is_file()
    assert "compaudit gate: FAIL" in summary.read_text()
    assert main(["gate", str(tmp_path / "good")]) == 0
    policy = tmp_path / "policy.toml"
    policy.write_text("[gate]\nlevell = 0.9\n[gate.subgroup_rate]\nmetrics = ['fpx']\n")
    assert main(["gate", str(tmp_path / "good"), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "[gate].levell: unknown key" in err
    assert "[gate.subgroup_rate].metrics: got ['fpx']; expected a list of values from 'fpr'" in err


def test_policy_types_are_checked_all_at_once():
    with pytest.raises(AuditInputError) as exc:
        policy_from_dict({"level": 2, "disparity": {"max_increase": "a"},
                          "pie_overindex": {"min_cell_size": 1.5}})
    problems = exc.value.problems
    assert len(problems) == 3
    assert any("level: got 2" in p for p in problems)
    assert any("max_increase: got 'a'; expected a number" in p for p in problems)
    assert any("min_cell_size: got 1.5; expected an integer" in p for p in problems)


def test_policy_from_dict_turns_off_absent_sections():
    policy = policy_from_dict({"subgroup_rate": {"max_abs_increase": 0.05}})
    assert policy.disparity is None and policy.subgroup_rate.max_abs_increase == 0.05


def _loaded_artifacts(about):
    """Three fixed dense models, a variant flipping half of their predictions and a
    float16 variant that changes none, analysed as a team's artifacts or a procedure."""
    ex, pr = simulate_binary(n_examples=3000, n_replicas=3, variants=("dense",), seed=4,
                             replica_logit_sd=0.5)
    dense = pr[pr["variant"] == "dense"]
    flip = np.random.default_rng(0).random(len(dense)) < 0.5
    flipped = dense.assign(variant="flip-50", pred=np.where(flip, 1 - dense["pred"],
                                                            dense["pred"]))
    flipped["p_pos"] = np.where(flipped["pred"] == 1, 0.9, 0.1).astype(np.float32)
    flipped["p_true"] = np.where(ex.set_index("example_id").loc[flipped["example_id"],
                                                               "label"].to_numpy() == 1,
                                 flipped["p_pos"], 1 - flipped["p_pos"]).astype(np.float32)
    import pandas as pd

    pr = pd.concat([dense, flipped, dense.assign(variant="float16")], ignore_index=True)
    ex = validate_examples(ex)
    return analyze(ex, validate_predictions(pr, ex),
                   AnalysisOptions(bootstrap=300, about=about)).metrics


def test_a_team_s_artifacts_are_judged_flipping_half_fails_and_an_identical_one_passes():
    metrics = _loaded_artifacts("models")
    assert metrics.subgroup_method.about == "models"
    result = run_gate(metrics)  # the default policy, accuracy check included
    flip = [c for c in result.checks if c.variant == "flip-50"]
    fp16 = [c for c in result.checks if c.variant == "float16"]
    assert {c.verdict for c in fp16} == {"pass"}
    (acc,) = [c for c in flip if c.kind == "accuracy"]
    # Half the predictions flipped: balanced accuracy falls to about 0.5.
    assert acc.metric == "balanced accuracy drop" and acc.estimate > 0.3
    assert acc.verdict == "fail" and acc.lo > 0.01
    assert sum(c.verdict == "fail" for c in flip) > len(flip) / 2
    assert result.verdict == "fail"
    assert "About the models at hand" in result.inference
    for c in result.checks:
        if c.unit == "points":
            assert -2 <= c.lo <= c.estimate <= c.hi <= 2
    op = {p.family: p for p in result.operating_points}
    assert any(p.first_failing == "flip-50" for p in op.values())


def test_an_undecidable_cell_says_so_instead_of_a_size_beyond_the_range(handmade, only_rates):
    # se of 40 pp: no increase within [-1, 1] detectable
    metrics = handmade(0.03, 0.4, abs_diff_df=2.0, replicas=3)
    (check,) = run_gate(metrics, only_rates).checks
    assert check.verdict == "inconclusive"
    assert check.reason.endswith("cannot be decided with 3 replicas and 500 examples")
    assert -1 <= check.lo < check.hi <= 1


def test_every_policy_section_but_baseline_has_one_registered_check_function():
    import dataclasses
    import typing

    from compaudit.gate import policy
    from compaudit.gate.checks import SECTIONS

    hints = typing.get_type_hints(policy.GatePolicy)
    # Every field typed as a section's policy (those off by default, as slice, too).
    sections = [f.name for f in dataclasses.fields(policy.GatePolicy)
                if any(dataclasses.is_dataclass(a) for a in typing.get_args(hints[f.name]))]
    assert sorted(sections) == sorted(policy.SECTIONS)
    # baseline compares two runs, so it is not a section of one run's metrics
    assert SECTIONS.names() == sorted(set(sections) - {"baseline"})
    assert [name for name, _ in SECTIONS.items()][:2] == ["accuracy", "subgroup_rate"]


