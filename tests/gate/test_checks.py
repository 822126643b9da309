"""The gate: verdicts from simultaneous intervals, on planted, null and hand-made runs."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import Table2x2

from compaudit.analysis.audit import AnalysisOptions, analyze
from compaudit.cli import main
from compaudit.errors import AuditInputError
from compaudit.gate import run_gate
from compaudit.gate.outputs import to_junit, to_markdown
from compaudit.gate.policy import GatePolicy, SubgroupRatePolicy, policy_from_dict
from compaudit.schema import (
    DeltaRow,
    Dissection,
    DissectionReplicaRow,
    Metrics,
    OverindexMHRow,
    SliceRow,
    Slices,
    Task,
    dumps_metrics,
)
from compaudit.simulate import PlantedHarm, simulate_binary
from compaudit.tables import validate_examples, validate_predictions


def _metrics(harms=(), seed=0):
    ex, pr = simulate_binary(n_examples=6000, n_replicas=4, variants=("dense", "gmp-90"),
                             harms=harms, seed=seed)
    ex = validate_examples(ex)
    return analyze(ex, validate_predictions(pr, ex), AnalysisOptions(bootstrap=300)).metrics


@pytest.fixture(scope="module")
def planted():
    return _metrics((PlantedHarm("gmp-90", {"Male": True, "Young": False}, "fpr", 0.3),))


@pytest.fixture(scope="module")
def control():
    return _metrics(seed=1)


def test_planted_harm_fails_the_gate_in_its_cell(planted):
    result = run_gate(planted)
    assert result.verdict == "fail" and result.exit_code == 1
    failed = {(c.kind, c.subject, c.metric) for c in result.failed}
    assert ("subgroup_rate", "Male=True & Young=False", "fpr") in failed
    assert all(c.lo > c.tolerance for c in result.failed)


def test_control_without_harm_does_not_fail(control):
    result = run_gate(control)
    assert not result.failed and result.exit_code == 0


def _fisher_z(est, half):
    """A Wald interval of half-width ``half`` built on atanh(est), mapped back (by hand)."""
    z, dz = np.arctanh(est), 1 / (1 - est**2)
    return np.tanh(z - dz * half), np.tanh(z + dz * half)


def test_intervals_are_bonferroni_intervals_on_fishers_z_scale(planted):
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
    lo, hi = _fisher_z(row.abs_diff, q * row.abs_diff_se)
    assert (check.lo, check.hi) == pytest.approx((lo, hi), rel=1e-12)
    # Away from the bounds it is the Wald interval to within 5% of its half-width.
    half = q * row.abs_diff_se
    assert (check.lo, check.hi) == pytest.approx(
        (row.abs_diff - half, row.abs_diff + half), abs=0.05 * half)


def test_inconclusive_subgroup_check_states_what_its_cell_can_detect():
    metrics = _handmade(0.03, 0.01, abs_diff_df=4.0, replicas=5)
    check = run_gate(metrics, ONLY_RATES).checks[0]
    assert check.verdict == "inconclusive"
    # One check: tail 0.025; t with 4 df. MDE = (t_{0.975,4} + t_{0.8,4}) * se.
    mde = (sps.t.ppf(0.975, 4) + sps.t.ppf(0.8, 4)) * 0.01
    assert check.reason == ("interval contains the tolerance 0.02 points; this cell can "
                            f"detect only ≥ {100 * mde:.1f} pp with 500 examples and "
                            "5 replicas")


def _handmade(abs_diff, se, n=500, **row):
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}},
                   deltas=(DeltaRow(variant="c", subgroup="G=a", grouping="G", metric="fpr",
                                    n=n, abs_diff=abs_diff, abs_diff_se=se, **row),))


ONLY_RATES = GatePolicy(subgroup_rate=SubgroupRatePolicy(metrics=("fpr",), max_abs_increase=0.02),
                        accuracy=None, disparity=None, pie_overindex=None, robustness=None,
                        baseline=None)


@pytest.mark.parametrize(
    "abs_diff, se, verdict",
    [(0.10, 0.01, "fail"), (0.0, 0.005, "pass"), (0.02, 0.01, "inconclusive"),
     (0.05, 0.05, "inconclusive"), (math.nan, 0.01, "inconclusive")],
)
def test_verdict_rule(abs_diff, se, verdict):
    (check,) = run_gate(_handmade(abs_diff, se), ONLY_RATES).checks
    z = sps.norm.ppf(1 - 0.05 / 2)  # a single check: no widening
    assert check.verdict == verdict
    if verdict != "inconclusive" or math.isfinite(abs_diff):
        assert check.lo == pytest.approx(_fisher_z(abs_diff, z * se)[0], rel=1e-12)


def test_inconclusive_policy_decides_the_exit_code():
    metrics = _handmade(0.02, 0.01)
    warn = run_gate(metrics, ONLY_RATES)
    assert (warn.verdict, warn.exit_code) == ("warn", 0)
    strict = GatePolicy(**{**ONLY_RATES.__dict__, "inconclusive": "fail"})
    assert run_gate(metrics, strict).exit_code == 1


def test_small_subgroups_are_not_checked_and_a_gate_without_checks_refuses():
    with pytest.raises(AuditInputError, match=r"no gate check applies \(\[gate.subgroup_rate\] "
                                              "matched no check in this run"):
        run_gate(_handmade(0.5, 0.01, n=10), ONLY_RATES)


def test_overindex_interval_is_the_katz_risk_ratio_interval(planted):
    result = run_gate(planted)
    rows = [r for r in planted.overindex if r.variant == "gmp-90"]
    n1 = sum(r.n_pie for r in rows)
    n2 = sum(r.n_non_pie for r in rows)
    row = max((r for r in rows if r.n_pie > 0), key=lambda r: r.n_pie)
    table = Table2x2(np.array([[row.n_pie, n1 - row.n_pie],
                               [row.n_non_pie, n2 - row.n_non_pie]]))
    checks = [c for c in result.checks if c.kind == "pie_overindex"]
    alpha = 2 * sps.norm.sf(result.z)
    lo, hi = table.riskratio_confint(alpha=alpha, method="normal")
    match = [c for c in checks if c.estimate == pytest.approx(row.relative_growth_pct)]
    assert match and match[0].lo == pytest.approx(100 * (lo - 1), rel=1e-6)
    assert match[0].hi == pytest.approx(100 * (hi - 1), rel=1e-6)


def test_baseline_comparison(planted):
    same = run_gate(planted, baseline=planted)
    assert not [c for c in same.failed if c.kind == "baseline"]
    older = replace(planted, deltas=tuple(replace(r, abs_diff=0.0) for r in planted.deltas))
    regressed = run_gate(planted, baseline=older)
    assert any(c.kind == "baseline" and c.subject == "Male=True & Young=False"
               for c in regressed.failed)


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


def _dissected(dense_counts, variant_counts, accuracy_drop=0.0):
    """A metrics.json with a dissection block built from interpretable-unit counts."""
    import pandas as pd

    from compaudit.dissection.compare import compare_dissections

    rows = []
    for variant, counts in (("dense", dense_counts), ("c", variant_counts)):
        for k, count in enumerate(counts):
            for unit in range(20):
                rows.append({"variant": variant, "replica": k, "layer": "l", "unit": unit,
                             "threshold": 0.0, "concept": f"c{unit % 4}", "category": "part",
                             "iou": 0.1, "interpretable": unit < count})
    replicas = compare_dissections(pd.DataFrame(rows))["replicas"]
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}},
                   deltas=(DeltaRow(variant="c", subgroup="overall", grouping="overall",
                                    metric="accuracy", n=500, abs_diff=-accuracy_drop,
                                    abs_diff_se=0.01),),
                   dissection=Dissection(config={}, replicas=tuple(
                       DissectionReplicaRow.from_dict(r, where="replicas")
                       for r in replicas.to_dict("records"))))


ONLY_DISSECTION = policy_from_dict({"dissection": {"max_unit_drop": 0.25}})


@pytest.mark.parametrize(
    "variant_counts, verdict",
    [((8, 9, 8, 10), "fail"),       # drops 60, 55, 60, 50%
     ((20, 19, 20, 18), "pass"),    # drops 0, 5, 0, 10%
     ((20, 10, 20, 5), "inconclusive")],
)
def test_dissection_check_is_a_t_interval_over_replicas(variant_counts, verdict):
    metrics = _dissected((20, 20, 20, 20), variant_counts)
    (check,) = run_gate(metrics, ONLY_DISSECTION).checks
    drops = 100 * (1 - np.array(variant_counts) / 20)
    # A drop is at most 100%: scipy's t-interval on -log(100 - drop), mapped back.
    m = drops.mean()
    g_lo, g_hi = sps.t.interval(0.95, len(drops) - 1, loc=-np.log(100 - m),
                                scale=sps.sem(drops) / (100 - m))
    lo, hi = 100 - np.exp(-g_lo), 100 - np.exp(-g_hi)
    assert (check.kind, check.metric, check.unit) == ("dissection", "interpretable_drop", "%")
    assert check.estimate == pytest.approx(drops.mean())
    assert (check.lo, check.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert check.tolerance == pytest.approx(25.0) and check.verdict == verdict


def test_dissection_check_options():
    metrics = _dissected((20, 20, 12), (8, 9, 6), accuracy_drop=0.04)
    both = policy_from_dict({"dissection": {"max_unit_drop": 0.25, "max_concept_drop": 0.5}})
    assert {c.metric for c in run_gate(metrics, both).checks} == {"interpretable_drop",
                                                                  "concept_drop"}
    # Accuracy fell by 4 points: out of scope under a 2-point tolerance, in under 5.
    holds = {"max_unit_drop": 0.25, "accuracy_tolerance": 0.02}
    with pytest.raises(AuditInputError, match=r"\[gate.dissection\] matched no check"):
        run_gate(metrics, policy_from_dict({"dissection": holds}))
    holds["accuracy_tolerance"] = 0.05
    assert len(run_gate(metrics, policy_from_dict({"dissection": holds})).checks) == 1
    off = policy_from_dict({"dissection": {"max_unit_drop": False}})
    with pytest.raises(AuditInputError, match="no gate check applies"):
        run_gate(metrics, off)


def test_dissection_check_without_replicas_or_interpretable_units_is_inconclusive():
    (one,) = run_gate(_dissected((20,), (5,)), ONLY_DISSECTION).checks
    assert one.verdict == "inconclusive" and "one replica" in one.reason
    (none,) = run_gate(_dissected((0, 0), (0, 0)), ONLY_DISSECTION).checks
    assert none.verdict == "inconclusive" and "no interpretable unit" in none.reason
    # Runs without a dissection block have no dissection checks at all: with nothing
    # else to check, the gate refuses rather than pass.
    with pytest.raises(AuditInputError, match=r"\[gate.dissection\] matched no check"):
        run_gate(_handmade(0.0, 0.01), ONLY_DISSECTION)
    both = policy_from_dict({"dissection": {"max_unit_drop": 0.25},
                             "subgroup_rate": {"max_abs_increase": 0.02}})
    result = run_gate(_handmade(0.0, 0.01), both)
    assert result.checks and result.notes == ["[gate.dissection] matched no check in this run"]


ONLY_WITHIN = policy_from_dict({"pie_within_label": {"max_relative_growth_pct": 25.0,
                                                     "min_cell_size": 30}})


def _mh_metrics(rr, log_se, *, n_pie=50, n_non_pie=500, strata=2):
    nan = math.nan
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}},
                   overindex_mh=(OverindexMHRow(
                       variant="c", cell={"attr.Male": True}, n_pie=n_pie,
                       n_non_pie=n_non_pie, strata=strata, rr_mh=nan if rr is None else rr,
                       log_rr_se=nan if log_se is None else log_se),))


@pytest.mark.parametrize("rr, se, verdict", [(2.0, 0.1, "fail"), (1.0, 0.05, "pass"),
                                             (1.3, 0.2, "inconclusive"), (0.0, None, "pass")])
def test_within_label_check_is_the_greenland_robins_interval(rr, se, verdict):
    (check,) = run_gate(_mh_metrics(rr, se), ONLY_WITHIN).checks
    assert (check.kind, check.subject) == ("pie_within_label", "Male=True (within label)")
    assert "pie" in check.kind and check.verdict == verdict
    assert check.estimate == pytest.approx(100 * (rr - 1))
    if rr > 0:
        z = sps.norm.ppf(0.975)  # one check: no widening
        assert check.lo == pytest.approx(100 * (rr * math.exp(-z * se) - 1))
        assert check.hi == pytest.approx(100 * (rr * math.exp(z * se) - 1))


def test_within_label_check_skips_variants_with_few_pies():
    # One PIE: its share among PIEs has no variance, the interval collapses (measured on
    # the demo's control: float16 with 1 PIE read as +2178% [+1622, +2914]).
    with pytest.raises(AuditInputError, match=r"\[gate.pie_within_label\] matched no check"):
        run_gate(_mh_metrics(22.8, 0.13, n_pie=1, n_non_pie=6228), ONLY_WITHIN)
    low = policy_from_dict({"pie_within_label": {"min_pies": 1}})
    assert run_gate(_mh_metrics(22.8, 0.13, n_pie=1, n_non_pie=6228), low).checks


def test_within_label_check_skips_small_cells_and_variants_without_pies():
    with pytest.raises(AuditInputError, match=r"\[gate.pie_within_label\] matched no check"):
        run_gate(_mh_metrics(2.0, 0.1, n_pie=5, n_non_pie=20), ONLY_WITHIN)
    with pytest.raises(AuditInputError, match=r"\[gate.pie_within_label\] matched no check"):
        run_gate(_mh_metrics(None, None, n_pie=0, strata=0), ONLY_WITHIN)


def test_within_label_check_on_a_planted_run(planted):
    result = run_gate(planted)
    checks = [c for c in result.checks if c.kind == "pie_within_label"]
    assert checks and all(c.subject.endswith("(within label)") for c in checks)
    row = next(r for r in planted.overindex_mh if r.variant == "gmp-90"
               and r.cell["attr.Male"] and not r.cell["attr.Young"])
    check = next(c for c in checks if c.id == "gmp-90/Male=True & Young=False/pie_within_label")
    assert check.lo == pytest.approx(
        100 * (row.rr_mh * math.exp(-result.z * row.log_rr_se) - 1))


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


def test_accuracy_check_reads_top1_of_many_class_runs_and_is_off_when_named_off():
    metrics = _handmade(0.0, 0.01)
    metrics = replace(metrics, task=Task(binary=False), deltas=metrics.deltas + (
        DeltaRow(variant="c", subgroup="overall", grouping="overall", metric="accuracy",
                 n=500, abs_diff=-0.05, abs_diff_se=0.005, replicas=2),))
    only = policy_from_dict({"accuracy": {"max_drop": 0.01}})
    (check,) = run_gate(metrics, only).checks
    assert (check.kind, check.metric, check.verdict) == ("accuracy", "top-1 drop", "fail")
    assert check.estimate == pytest.approx(0.05)
    assert "accuracy" not in {c.kind for c in run_gate(metrics, ONLY_RATES).checks}


def test_an_undecidable_cell_says_so_instead_of_a_size_beyond_the_range():
    # se of 40 pp: no increase within [-1, 1] detectable
    metrics = _handmade(0.03, 0.4, abs_diff_df=2.0, replicas=3)
    (check,) = run_gate(metrics, ONLY_RATES).checks
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


def _sliced(*rows):
    """A run with slice rows ``(variant, slice, change, se, df, n_test)``."""
    return Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}, "d": {}},
                   slices=Slices(rows=tuple(
                       SliceRow(variant=v, slice=k, n=2 * n, n_test=n, change=c, change_se=se,
                                change_df=df, description=f"Male=True (s{k})")
                       for v, k, c, se, df, n in rows)))


ONLY_SLICE = policy_from_dict({"slice": {"max_increase": 0.05, "min_slice_size": 30}})


@pytest.mark.parametrize("change, se, df, verdict", [
    (0.20, 0.02, math.nan, "fail"), (0.0, 0.01, math.nan, "pass"),
    (0.06, 0.03, 4.0, "inconclusive"), (0.0, math.nan, math.nan, "inconclusive")])
def test_slice_check_on_the_change_of_a_slice(change, se, df, verdict):
    (check,) = run_gate(_sliced(("c", 0, change, se, df, 200)), ONLY_SLICE).checks
    assert (check.kind, check.subject, check.unit) == ("slice", "slice 0: Male=True (s0)",
                                                       "points")
    assert check.id == "c/slice-0/error_increase" and check.verdict == verdict
    if math.isfinite(se):
        # A single check: the analysis-level quantile (t with df, else normal), on the
        # Fisher z scale of a change of a rate, as every rate check.
        q = sps.t.ppf(0.975, df) if math.isfinite(df) else sps.norm.ppf(0.975)
        lo, hi = _fisher_z(change, q * se)
        assert (check.lo, check.hi) == (pytest.approx(lo), pytest.approx(hi))


def test_slice_checks_every_slice_and_are_off_unless_named():
    metrics = _sliced(("c", 0, 0.2, 0.02, math.nan, 200), ("c", 1, 0.0, 0.01, math.nan, 200),
                      ("c", 2, 0.3, 0.05, math.nan, 12), ("d", 0, 0.0, 0.01, math.nan, 90))
    result = run_gate(metrics, ONLY_SLICE)
    # Slice 2 has 12 held-out examples, under min_slice_size.
    assert [c.id for c in result.checks] == ["c/slice-0/error_increase",
                                             "c/slice-1/error_increase",
                                             "d/slice-0/error_increase"]
    assert [c.verdict for c in result.checks] == ["fail", "pass", "pass"]
    assert GatePolicy().slice is None  # no policy: no slice check
    with pytest.raises(AuditInputError, match=r"\[gate.slice\] matched no check"):
        run_gate(_handmade(0.0, 0.01), ONLY_SLICE)
    with pytest.raises(AuditInputError, match=r"policy: \[gate\.slice\]\.max_increase: got -1; "
                                              r"expected a number >= 0"):
        policy_from_dict({"slice": {"max_increase": -1}})
