"""Methodology section: definitions, provenance from run.json, inputs and settings."""

from __future__ import annotations

from html.parser import HTMLParser

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.methodology import render_methodology

EVIL = "<script>alert(1)</script>"
INPUTS = {"examples": {"path": "/data/ex.parquet", "sha256": "ab" * 32, "rows": 1200}}


def _render(run):
    return render_methodology(run, ReportOptions())


#: The terms the methods text must define, in reading order, each with a fact its
#: definition must state (written here, not read from the module).
TERMS = [
    ("Population", "Replica k of a compressed variant is derived from dense replica k"),
    ("PIE (pruning-identified exemplar)", "Ties go to the largest class index"),
    ("Taxicab score", "0 when both populations vote alike, 2 when they never agree"),
    ("Shifted recall and normalized recall difference",
     "recall of c − top-1 accuracy of the replica"),
    ("Welch t-test", "McNemar when paired, Fisher otherwise"),
    ("Paired bootstrap", "2·Φ(−|estimate|/se)"),
    ("t-interval over replicas", "Mean ± t quantile × standard error across replicas"),
    ("Benjamini-Hochberg (BH)", "false discovery rate"),
    ("PIE over-index", "share among PIEs divided by its share among non-PIEs, minus one"),
    ("Within-label over-index (Mantel-Haenszel)", "Greenland-Robins"),
    ("Slices compression breaks", "assigned by the features alone"),
    ("Pre-compression risk screen", "entropy of the dense replicas' mean prediction"),
    ("Bonferroni gate", "z for α divided by the number of checks"),
    ("Corruption error (CE) and mCE", "AlexNet for ImageNet-C"),
    ("Calibration error and AURRA", "adaptive bins of 100 examples"),
    ("Network dissection", "Frankle & Bau"),
]


class _Definitions(HTMLParser):
    """The (term, definition) texts of the rendered ``<dl class="defs">``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pairs: list[list[str]] = []
        self._in: str | None = None
        self._dl = False

    def handle_starttag(self, name, attrs):
        if name == "dl" and ("class", "defs") in attrs:
            self._dl = True
        elif self._dl and name == "dt":
            self.pairs.append(["", ""])
            self._in = name
        elif self._dl and name == "dd":
            self._in = name

    def handle_endtag(self, name):
        if name in ("dt", "dd"):
            self._in = None
        elif name == "dl":
            self._dl = False

    def handle_data(self, data):
        if self._in:
            self.pairs[-1][self._in == "dd"] += data


def test_every_definition_in_order(make_run):
    reader = _Definitions()
    reader.feed(_render(make_run()))
    rendered = [(" ".join(t.split()), " ".join(d.split())) for t, d in reader.pairs]
    assert [term for term, _ in rendered] == [term for term, _ in TERMS]
    for (term, definition), (_, fact) in zip(rendered, TERMS):
        assert fact in definition, term


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
    assert settings.caption == "From metrics.json (schema compaudit.metrics/4)."


def test_run_json_provenance_versions_and_spec(make_run, text_of, tables_of):
    info = {"started": "2026-01-01T00:00:00Z", "seeds": {"audit": 0}, "spec": 'name = "x"',
            "data": {"name": "celeba", "root": "/d"}, "spec_path": "a.toml",
            "versions": {"torch": "2.4", "compaudit": "0.1"}}
    html = _render(make_run(run_info=info))
    run_table, versions = tables_of(html)[:2]
    # The fields write_provenance writes (no "command": it never wrote one).
    assert run_table.rows == [["started", "2026-01-01T00:00:00Z"], ["finished", ""],
                              ["spec_sha256", "0" * 64], ["seeds", '{"audit": 0}'],
                              ["data.name", "celeba"], ["data.root", "/d"],
                              ["spec_path", "a.toml"]]
    assert versions.rows == [["compaudit", "0.1"], ["torch", "2.4"]]  # sorted
    assert 'Audit spec name = "x"' in text_of(html)


def test_hostile_spec_and_paths_are_escaped(make_run, tags_of, text_of):
    info = {"spec": f"</pre>{EVIL}", "data": {"root": f"/data/{EVIL}"}}
    inputs = {"examples": {"path": EVIL, "sha256": EVIL, "rows": 1}}
    html = _render(make_run({"inputs": inputs}, run_info=info))
    assert "script" not in tags_of(html)
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"/data/{EVIL}" in text_of(html)
