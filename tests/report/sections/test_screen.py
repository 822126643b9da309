"""Screen section: validation of the risk score against PIEs, expected harm per cell."""

from __future__ import annotations

from compaudit.report.sections import SECTIONS, ReportOptions
from compaudit.report.sections.screen import render_screen

EVIL = "<script>alert(1)</script>"
SUMMARY = {"score": "entropy", "candidates": ["entropy", "disagreement", "margin"],
           "top": 0.05, "n_examples": 26000, "n_at_risk": 1300, "replicas": 5}
SCREEN = {"gmp-90": {"score": "entropy", "n_pie": 728, "pie_rate": 0.028, "auroc": 0.9718,
                     "precision_at_1pct": 0.5038, "precision_at_5pct": 0.3962,
                     "recall_at_top": 0.7074, "auroc_entropy": 0.9718,
                     "auroc_disagreement": 0.6473, "auroc_margin": 0.9614,
                     "cell_spearman": 0.8},
          "float16": {"score": "entropy", "n_pie": 0, "pie_rate": 0.0, "auroc": None,
                      "precision_at_1pct": None, "precision_at_5pct": None,
                      "recall_at_top": None, "auroc_entropy": None,
                      "auroc_disagreement": None, "auroc_margin": None, "cell_spearman": None}}
GROUPS = [{"attr.Male": True, "attr.Young": False, "n": 3819, "n_at_risk": 208,
           "mean_risk": 0.09, "at_risk_rate": 0.0545, "rate_ratio": 1.089,
           "expected_growth_pct": 143.7, "lo": 113.6, "hi": 178.0, "expected_q": 1e-30}]


def _render(run):
    return render_screen(run, ReportOptions())


def test_section_is_registered_after_the_pie_section():
    ids = [s.id for s in SECTIONS]
    assert ids.index("screen") == ids.index("pie") + 1


def test_without_a_screen_is_a_note(make_run, text_of, tables_of):
    html = _render(make_run())
    assert "Not available in this run: no screen in metrics.json" in text_of(html)
    assert tables_of(html) == []


def test_validation_and_groups_come_from_the_metrics(make_run, text_of, tables_of):
    run = make_run({"screen_summary": SUMMARY, "screen": SCREEN, "screen_groups": GROUPS})
    html = _render(run)
    text = text_of(html)
    assert "Risk score: entropy of the mean prediction over 5 dense replicas" in text
    assert "the 1,300 examples in the top 5% are flagged at risk" in text
    validation, groups = tables_of(html)
    assert validation.records()[0] == {
        "variant": "gmp-90", "PIEs": "728", "PIE rate": "2.80%", "AUROC": "0.972",
        "precision at top 1%": "50.4%", "precision at top 5%": "39.6%",
        "PIEs among at-risk": "70.7%", "AUROC entropy": "0.972",
        "AUROC disagreement": "0.647", "AUROC margin": "0.961",
        "cell rank correlation": "0.80"}
    assert validation.records()[1]["AUROC"] == "n/a"
    assert groups.records() == [{
        "cell": "Male=True · Young=False", "examples": "3,819", "at risk": "208",
        "at-risk rate": "5.5%", "rate / overall": "1.09",
        "expected within-label over-index": "+143.7% [+113.6, +178.0]"}]


def test_no_variants_and_no_attributes_are_notes(make_run, text_of):
    html = _render(make_run({"screen_summary": SUMMARY, "screen": {}, "screen_groups": []}))
    text = text_of(html)
    assert "no compressed variant to validate the screen against" in text
    assert "no protected attributes, so no per-cell summary" in text


def test_hostile_attribute_values_are_escaped(make_run, tags_of, tables_of):
    groups = [{**GROUPS[0], "attr.Male": EVIL}]
    html = _render(make_run({"screen_summary": SUMMARY, "screen": SCREEN,
                             "screen_groups": groups}))
    assert "script" not in tags_of(html)
    assert tables_of(html)[1].column("cell")[0] == f"Male={EVIL} · Young=False"
