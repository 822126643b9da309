"""Methodology section: definitions, provenance from run.json, inputs and settings."""

from __future__ import annotations

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.methodology import DEFINITIONS, render_methodology

EVIL = "<script>alert(1)</script>"
INPUTS = {"examples": {"path": "/data/ex.parquet", "sha256": "ab" * 32, "rows": 1200}}


def _render(run):
    return render_methodology(run, ReportOptions())


def test_every_definition_in_order(make_run, text_of):
    text = text_of(_render(make_run()))
    positions = [text.index(f"{term} {definition}") for term, definition in DEFINITIONS]
    assert positions == sorted(positions)


def test_without_run_json_a_note_and_the_analysis_settings(make_run, text_of, tables_of):
    run = make_run({"inputs": INPUTS, "environment": {"python": "3.11.9"}},
                   gate={"verdict": "pass", "z": 2.5})
    html = _render(run)
    assert "No run.json in the run directory" in text_of(html)
    inputs, settings = tables_of(html)
    assert inputs.records() == [{"table": "examples", "path": "/data/ex.parquet",
                                 "SHA-256": "ab" * 32, "rows": "1200"}]
    fields = dict(settings.rows)
    assert fields["created_by"] == "compaudit test"
    assert fields["environment.python"] == "3.11.9"
    assert fields["options.alpha"] == "0.05" and fields["options.dense"] == "dense"
    assert fields["replicas.gmp-90"] == "[0, 1, 2]"
    assert fields["gate.z"] == "2.5"
    assert settings.caption == "From metrics.json (schema compaudit.metrics/1)."


def test_run_json_provenance_versions_and_spec(make_run, text_of, tables_of):
    info = {"command": "compaudit run a.toml", "seeds": [0, 1], "spec": 'name = "x"',
            "data": {"name": "celeba", "root": "/d"}, "host": "box",
            "versions": {"torch": "2.4", "compaudit": "0.1"}}
    html = _render(make_run(run_info=info))
    run_table, versions = tables_of(html)[:2]
    assert run_table.rows == [["command", "compaudit run a.toml"], ["seeds", "[0, 1]"],
                              ["data.name", "celeba"], ["data.root", "/d"], ["host", "box"]]
    assert versions.rows == [["compaudit", "0.1"], ["torch", "2.4"]]  # sorted
    assert 'Audit spec name = "x"' in text_of(html)


def test_hostile_spec_and_paths_are_escaped(make_run, tags_of, text_of):
    info = {"spec": f"</pre>{EVIL}", "data": {"root": f"/data/{EVIL}"}}
    inputs = {"examples": {"path": EVIL, "sha256": EVIL, "rows": 1}}
    html = _render(make_run({"inputs": inputs}, run_info=info))
    assert "script" not in tags_of(html)
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"/data/{EVIL}" in text_of(html)
