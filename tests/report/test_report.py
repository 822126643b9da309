"""The HTML report: rendering from real analysis outputs, escaping, missing data, a real
browser (no console errors, no requests, every section visible), and the PDF."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compaudit.analysis.audit import AnalysisOptions, analyze, dumps_metrics
from compaudit.compress.footprint import write_variants_json
from compaudit.dissection.audit import dissection_block
from compaudit.errors import AuditInputError
from compaudit.gate import run_gate
from compaudit.gate.outputs import write_gate_outputs
from compaudit.report import SECTIONS, ReportOptions, load_run, render_html, render_report
from compaudit.report.rundata import VariantPoint
from compaudit.report.sections._common import records
from compaudit.report.sections.dissection import PANELS, dissection_points
from compaudit.report.sections.gallery import top_pies
from compaudit.report.sections.pie import overindex_matrix
from compaudit.report.sections.robustness import severity_points
from compaudit.report.sections.tradeoff import accuracy_points
from compaudit.report.thumbnails import thumbnail
from compaudit.rundir import jsonable
from compaudit.schema import VARIANT_FIELDS, Dissection, VariantRecord, read_metrics
from compaudit.simulate import PlantedHarm, simulate_binary, simulate_multiclass
from compaudit.tables import validate_examples, validate_predictions

EVIL_VARIANT = "<script>alert(1)</script>"
EVIL_ATTR = "<script>alert(2)</script>"
EVIL_SPEC = 'name = "x"\n</pre><script>alert(3)</script>'
EVIL_CONCEPT = "<i>mouth</i>"
DX_PLAN = {"concepts": "synthetic-faces", "layers": ["features.2", "features.5"],
           "quantile": 0.02, "iou_threshold": 0.04}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _binary_tables(*, evil: bool, shifts: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    harm = PlantedHarm("gmp-90", {"Male": True, "Young": False}, "fpr", 0.3)
    ex, pr = simulate_binary(n_examples=1500, n_replicas=3, harms=(harm,), seed=3)
    frames = [(ex, pr)]
    if shifts:
        for shift, sev in (("fog", 1), ("fog", 3), ("snow", 2)):
            e, p = simulate_binary(n_examples=400, n_replicas=3, error_rate=0.05 + 0.03 * sev,
                                   harms=(harm,), seed=10 + sev)
            pre = f"{shift}/{sev}/"
            frames.append((e.assign(example_id=pre + e.example_id, shift=shift,
                                    severity=np.int8(sev)),
                           p.assign(example_id=pre + p.example_id)))
    ex = pd.concat([f[0] for f in frames], ignore_index=True)
    pr = pd.concat([f[1] for f in frames], ignore_index=True)
    if evil:
        pr["variant"] = pr["variant"].replace({"gmp-90": EVIL_VARIANT})
        ex = ex.rename(columns={"attr.Young": f"attr.{EVIL_ATTR}"})
    return ex, pr


def _analyze_into(root: Path, ex: pd.DataFrame, pr: pd.DataFrame, **kw) -> None:
    exv = validate_examples(ex, num_classes=kw.get("num_classes"))
    prv = validate_predictions(pr, exv, num_classes=kw.get("num_classes"))
    result = analyze(exv, prv, AnalysisOptions(bootstrap=60, **kw))
    result.write(root)


def _dissection(variants: list[str], replicas: int = 3, seed: int = 0
                ) -> tuple[dict, dict[str, pd.DataFrame]]:
    """A dissection block built by the real analysis code from a hand-made units table:
    compressed variants lose some of the dense replica's interpretable units."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in variants:
        keep = 1.0 if v == "dense" else 0.6
        for r in range(replicas):
            for layer in DX_PLAN["layers"]:
                for u in range(12):
                    # The same dense units are interpretable in every variant's replica r,
                    # so retention is well defined; a compressed replica keeps ~60% of them.
                    dense_hit = (u + r) % 3 != 0
                    hit = bool(dense_hit and rng.random() < keep)
                    concept = ("hair", EVIL_CONCEPT)[(u + (v != "dense" and u % 4 == 1)) % 2]
                    rows.append({"variant": v, "replica": r, "layer": layer, "unit": u,
                                 "threshold": 1.0, "concept": concept, "category": "part",
                                 "iou": 0.1 if hit else 0.01, "interpretable": hit})
    concepts = pd.DataFrame({
        "concept": ["background", "hair", EVIL_CONCEPT, "freckles"],
        "category": ["background", "part", "part", "part"],
        "coverage": [0.7, 0.15, 0.005, 0.0005]})
    q = DX_PLAN["quantile"]
    concepts["iou_bound"] = np.minimum(q / concepts["coverage"], concepts["coverage"] / q)
    concepts["n_images"] = 64
    return dissection_block(pd.DataFrame(rows), concepts, DX_PLAN)


def _add_dissection(root: Path, variants: list[str]) -> None:
    """Put a dissection block into the run's metrics.json and its tables beside it."""
    block, tables = _dissection(variants)
    metrics = replace(read_metrics(root),
                      dissection=Dissection.from_dict(jsonable(block), where="dissection"))
    (root / "metrics.json").write_text(dumps_metrics(metrics))
    for name, table in tables.items():
        table.to_csv(root / "tables" / f"{name}.csv", index=False)


def _images(root: Path) -> dict[str, str]:
    """Images for the PIEs: most valid (relative or absolute paths), some missing, one corrupt."""
    pies = pd.read_csv(root / "tables" / "pie.csv", dtype={"example_id": str})
    ids = sorted(pies.loc[pies["is_pie"], "example_id"].unique())
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    paths = {}
    for i, ex_id in enumerate(ids):
        name = f"img/{i}.png"
        if i % 5 == 4:
            paths[ex_id] = name  # listed but never written: a placeholder
            continue
        if i == 1:
            (root / name).write_bytes(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(root / name)
        paths[ex_id] = name if i % 2 else str((root / name).resolve())
    return paths


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """Binary run with shifts, hostile names, gate, variants.json, run.json, images."""
    root = tmp_path_factory.mktemp("full")
    ex, pr = _binary_tables(evil=True, shifts=True)
    _analyze_into(root, ex, pr)
    write_gate_outputs(run_gate(read_metrics(root)), root / "gate")
    # After the gate: the gate's checks (and the tests of them) stay those of the analysis.
    _add_dissection(root, ["dense", "gmp-50", EVIL_VARIANT])

    def record(**kw):
        # A variants.json record; None where not measured, the method's own fields extra.
        extra = {k: kw.pop(k) for k in list(kw) if k not in VARIANT_FIELDS}
        return VariantRecord(**{**dict.fromkeys(VARIANT_FIELDS), "parameters": {}, **kw},
                             extra=extra)

    write_variants_json(root / "variants.json", {
        "dense": record(method="dense", parameters={}, sparsity=0.0, parameter_count=1000,
                        nonzero_count=1000, size_bytes=4000, macs=5_000_000,
                        theoretical_speedup=1.0,
                        latency_ms=1.25, latency_batch_size=32, int8_weight_share=0.0,
                        latency_kernel="torch"),
        "gmp-50": record(method="gradual_magnitude", family="gradual_magnitude",
                         axis="sparsity", parameters={"final_sparsity": 0.5}, derives_from="dense",
                         sparsity=0.5, parameter_count=1000, nonzero_count=500,
                         pruning_penalty=0.125),
        EVIL_VARIANT: record(method="gradual_magnitude", family="gradual_magnitude",
                             axis="sparsity", derives_from="dense", sparsity=0.9,
                             parameter_count=1000, nonzero_count=100, theoretical_speedup=10.0),
    })
    (root / "run.json").write_text(json.dumps({
        "spec": EVIL_SPEC, "spec_sha256": "0" * 64, "seeds": {"audit": 0, "replicas": [0, 1, 2], "bootstrap": 0},
        "versions": {"compaudit": "0.1.0", "torch": "2.x"},
        "data": {"name": "celeba-synthetic", "root": "/data/<celeba>", "fingerprint": "f" * 64}}))
    # "$" would start TeX in matplotlib labels: names must be drawn as plain text.
    (root / "class_names.json").write_text(json.dumps(["not blond", "blond & <b>fair</b> $x_{$"]))
    paths = _images(root)
    examples = ex[["example_id", "label"]].assign(path=ex["example_id"].map(paths))
    examples.to_parquet(root / "examples.parquet")
    return root


@pytest.fixture(scope="module")
def full_html(full_run) -> str:
    return render_report(full_run).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory) -> Path:
    """Clean-only binary run: metrics and tables, no gate or optional files."""
    root = tmp_path_factory.mktemp("bare")
    _analyze_into(root, *_binary_tables(evil=False, shifts=False))
    return root


@pytest.fixture(scope="module")
def bare_html(bare_run) -> str:
    return render_report(bare_run).read_text(encoding="utf-8")


def _sections(html_text: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)" class="report-section">(.*?)</section>',
                           html_text, flags=re.S))


def test_report_has_every_section_in_order_with_an_id_and_h2(full_run, full_html):
    ids = re.findall(r'<section id="([^"]+)" class="report-section"><h2>', full_html)
    assert ids == [s.id for s in SECTIONS]
    assert (full_run / "report.html").is_file()
    assert not list(full_run.glob(".report.html.*"))  # the atomic write left no temp file


def test_user_strings_are_escaped_never_tags(full_html):
    # The page's only script is the report's own sorting script.
    assert full_html.count("<script") == 1
    assert "alert(" not in re.sub(r"&lt;script&gt;alert\(\d\)&lt;/script&gt;", "", full_html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in full_html   # variant name
    assert "&lt;script&gt;alert(2)&lt;/script&gt;=True" in full_html  # attribute in subgroups
    assert "&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in full_html  # spec text
    assert "blond &amp; &lt;b&gt;fair&lt;/b&gt; $x_{$" in full_html  # class name
    assert "/data/&lt;celeba&gt;" in full_html  # a path


def test_page_is_self_contained_and_locked_down(full_html):
    assert not re.search(r'(src|href)="(?!data:|#)', full_html)
    assert "@import" not in full_html and "url(http" not in full_html
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', full_html)
    csp = html.unescape(found.group(1))
    assert "default-src 'none'" in csp and "img-src data:" in csp


def test_verdict_banner_follows_gate_json(full_run, full_html, bare_html):
    gate = json.loads((full_run / "gate" / "gate.json").read_text())
    assert gate["verdict"] == "fail"  # the planted harm must fail the default policy
    assert "Gate verdict: FAIL" in full_html
    n_fail = sum(c["verdict"] == "fail" for c in gate["checks"])
    assert f"{n_fail} failed · " in full_html
    assert "Gate not run" in bare_html and "Gate verdict" not in bare_html


def test_key_numbers_come_from_metrics(full_run, full_html):
    metrics = json.loads((full_run / "metrics.json").read_text())
    dense = metrics["accuracy"]["dense"]["top1_mean"]
    assert f"vs dense {100 * dense:.2f}%" in full_html
    n_pie = metrics["pie"]["gmp-50"]["n_pie"]
    assert f"{n_pie:,} PIEs" in full_html
    # The planted harm: FPR of Male=True & Young=False rises for the hostile variant.
    row = next(r for r in metrics["deltas"] if r["variant"] == EVIL_VARIANT and r["metric"] ==
               "fpr" and r["subgroup"] == f"Male=True & {EVIL_ATTR}=False")
    assert row["abs_diff_q"] <= 0.05
    assert f"{100 * row['abs_diff']:+.2f} pp [{100 * row['abs_diff_lo']:+.2f}, " in full_html


def test_missing_optional_inputs_render_notes_not_plots(bare_html):
    sections = _sections(bare_html)
    assert "Not available in this run" in sections["footprint"]
    assert "<img" not in sections["footprint"]
    assert "Not available in this run" in sections["robustness"]
    assert "No run.json" in sections["methodology"]
    assert 'class="thumb placeholder"' in sections["gallery"]  # no images, cards still shown


def test_metrics_only_run_renders_every_section(bare_run, tmp_path):
    root = tmp_path / "metrics_only"
    root.mkdir()
    shutil.copy(bare_run / "metrics.json", root / "metrics.json")
    html = render_report(root).read_text(encoding="utf-8")
    for s in SECTIONS:
        assert f'<section id="{s.id}"' in html
    sections = _sections(html)
    assert "Not available in this run" in sections["gallery"]
    assert "Not available in this run" in sections["classes"]


def test_rendering_is_deterministic(bare_run, bare_html, tmp_path):
    path = render_report(bare_run, out=tmp_path)  # a folder: report.html inside it
    assert path == tmp_path / "report.html"
    assert path.read_text(encoding="utf-8") == bare_html


def test_gallery_ranks_pies_by_taxicab_and_embeds_valid_images(full_run, full_html):
    pies = load_run(full_run).table("pie")
    top = top_pies(pies, "gmp-50", 5)
    assert top["is_pie"].all()
    assert list(top["taxicab"]) == sorted(top["taxicab"], reverse=True)
    best = pies[(pies.variant == "gmp-50") & pies.is_pie]["taxicab"].max()
    assert top["taxicab"].iloc[0] == best
    gallery = full_html.split('<section id="gallery"')[1].split("</section>")[0]
    thumbs = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="example ([^"]+)" '
                        r'width="(\d+)" height="(\d+)"', gallery)
    placeholders = gallery.count('class="thumb placeholder"')
    n_cards = gallery.count('class="card"')
    assert thumbs and placeholders and len(thumbs) + placeholders == n_cards
    assert all((w, h) == ("20", "24") for _, w, h in thumbs)  # smaller than 64: unchanged


def test_thumbnails_shrink_to_the_longest_side_and_tolerate_bad_files(tmp_path):
    Image.new("RGB", (200, 100), "red").save(tmp_path / "wide.png")
    img = thumbnail(tmp_path / "wide.png", size=64, alt="a <b>")
    assert 'width="64" height="32"' in img and 'alt="a &lt;b&gt;"' in img
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert thumbnail(tmp_path / "bad.jpg", size=64, alt="x") is None
    assert thumbnail(tmp_path / "missing.png", size=64, alt="x") is None
    assert thumbnail(None, size=64, alt="x") is None


def test_overindex_heatmap_values_are_log2_share_ratios(full_run):
    run = load_run(full_run)
    over = records(run.metrics.overindex)
    values, text = overindex_matrix(over, run)
    r = over.iloc[0]
    cell = " · ".join([f"label={run.class_name(r['label'])}", f"Male={r['attr.Male']}",
                       f"{EVIL_ATTR}={r[f'attr.{EVIL_ATTR}']}"])
    expected = math.log2(r["pie_pct"] / r["non_pie_pct"]) if r["pie_pct"] > 0 else -4.0
    assert values.loc[cell, r["variant"]] == pytest.approx(expected)
    growth = r["relative_growth_pct"]
    star = "*" if r["q_value"] <= run.alpha else ""
    shown = f"{growth:+.0f}%" if abs(growth) >= 10 else f"{growth:+.1f}%"
    assert text.loc[cell, r["variant"]] == shown + star


def test_footprint_table_shows_variants_json_fields(full_html):
    footprint = _sections(full_html)["footprint"]
    assert "1.25 ms" in footprint and "batch 32, torch kernels" in footprint
    assert "500" in footprint and "of 1k" in footprint
    assert "10.00×" in footprint and "pruning_penalty=0.125" in footprint
    assert "from dense" in footprint


def test_variant_without_pies_has_no_overindex_shares(full_run):
    run = load_run(full_run)
    over = records(run.metrics.overindex)
    over = pd.concat([over, over[over.variant == "gmp-50"].assign(variant="q", n_pie=0)])
    run.metrics = replace(run.metrics, variants={**run.metrics.variants, "q": {"replicas": [0]}})
    values, text = overindex_matrix(over, run)
    assert values["q"].isna().all() and set(text["q"]) == {"no PIEs"}
    assert values["gmp-50"].notna().any()


def test_tradeoff_points_use_variants_json_sparsity(full_run):
    run = load_run(full_run)
    assert run.points[EVIL_VARIANT].sparsity == 0.9   # from variants.json, not the name
    assert run.points["gmp-50"].sparsity == 0.5
    acc = accuracy_points(run).set_index("variant")
    m = run.metrics.accuracy["gmp-50"]
    assert acc.loc["gmp-50", "mean"] == m["top1_mean"] and acc.loc["gmp-50", "lo"] == m["top1_lo"]


def test_without_variants_json_each_variant_is_its_own_family(bare_run):
    run = load_run(bare_run)
    # Nothing says which variants share a method, and names are not read.
    assert run.points["gmp-90"] == VariantPoint("gmp-90", None, "gmp-90")
    assert run.points["dense"].sparsity == 0.0
    from compaudit.report.rundata import _point

    def rec(method, axis, sparsity, bits=None):
        return VariantRecord(**{**dict.fromkeys(VARIANT_FIELDS), "method": method,
                                "family": method, "axis": axis, "sparsity": sparsity,
                                "bits": bits, "parameters": {}})

    assert _point("fp16", "dense", rec("float16", "bits", 0.0, 16)).sparsity is None
    # Quantization rounds some weights to zero; that is not a pruning level.
    assert _point("int8-static", "dense", rec("int8_static", "bits", 0.3, 8)).sparsity is None
    assert _point("tiny", "dense", rec("one_shot_magnitude", "sparsity", 0.005)).sparsity is None
    assert _point("int8-ish", "dense",
                  rec("one_shot_magnitude", "sparsity", 0.2998)).sparsity == 0.2998


def test_severity_curves_are_the_analysis_table(full_run, full_html):
    table = load_run(full_run).table("accuracy_by_severity")
    robustness = _sections(full_html)["robustness"]
    assert "Accuracy against severity</h3><figure><img" in robustness
    pts = severity_points(table)
    assert set(pts["shift"]) == {"fog", "snow"}
    fog = pts[(pts["shift"] == "fog") & (pts["variant"] == "dense")].set_index("severity")
    assert list(fog.index) == [1, 3, 0]
    clean = table[(table["shift"] == "clean") & (table["variant"] == "dense")].iloc[0]
    assert fog.loc[0, "mean"] == clean["mean"] and fog.loc[0, "lo"] == clean["lo"]


def test_many_class_run_plots_every_class(tmp_path):
    ex, preds, top5 = simulate_multiclass(n_examples=2000, num_classes=100, n_replicas=3,
                                          variants=("dense", "gmp-90", "int8"), seed=1)
    ex = ex.assign(split="val", source_id=ex.example_id, shift="clean", severity=np.int8(0))
    rows = [pd.DataFrame({"variant": v, "replica": np.repeat(np.arange(3, dtype=np.int32), 2000),
                          "example_id": np.tile(ex.example_id.to_numpy(), 3),
                          "pred": p.ravel().astype(np.int64), "p_true": np.float32(0.5)})
            for v, p in preds.items()]
    _analyze_into(tmp_path, ex, pd.concat(rows, ignore_index=True), num_classes=100)
    html = render_report(tmp_path).read_text(encoding="utf-8")
    classes = html.split('<section id="classes"')[1].split("</section>")[0]
    assert classes.count("<img") == 1
    assert "Normalized recall difference per class" in classes
    run = load_run(tmp_path)
    assert run.points["int8"].sparsity is None  # quantized: placed beside the sparsity axis


@pytest.mark.parametrize("name, content, message", [
    ("metrics.json", "{not json", "is not valid JSON"),
    ("metrics.json", '{"schema": "other/9"}', "expected 'compaudit.metrics/4'"),
    ("class_names.json", '{"0": "a"}', "expected a JSON list of class names"),
    ("class_names.json", '["only one"]', "1 class names for 2 classes"),
    ("variants.json", '{"variants": [{"method": "gmp"}]}', "expected 'compaudit.variants/4'"),
    ("gate/gate.json", '{"checks": []}', "field 'verdict' missing"),
    ("run.json", "[1, 2]", "expected a JSON object"),
])
def test_bad_inputs_raise_clear_errors(bare_run, tmp_path, name, content, message):
    root = tmp_path / "run"
    shutil.copytree(bare_run, root)
    (root / name).parent.mkdir(exist_ok=True)
    (root / name).write_text(content)
    with pytest.raises(AuditInputError, match=re.escape(message)) as info:
        render_report(root)
    assert str(root / name) in str(info.value)


def test_report_options_are_checked_at_the_door(bare_run):
    with pytest.raises(AuditInputError, match="thumbnail_px: got 2") as info:
        render_report(bare_run, options=ReportOptions(thumbnail_px=2, gallery_size=-1))
    assert len(info.value.problems) == 2


def test_missing_run_dir_or_metrics_names_the_fix(tmp_path):
    with pytest.raises(AuditInputError, match="run directory not found"):
        render_report(tmp_path / "nope")
    with pytest.raises(AuditInputError, match="run analyze first"):
        render_report(tmp_path)


def test_report_in_headless_chromium(full_run, full_html, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the 'dev' extra")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    url = (full_run / "report.html").resolve().as_uri()
    console, failed, requests, dialogs = [], [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(str(e)))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url, wait_until="load")
        for section in SECTIONS:
            loc = page.locator(f"section#{section.id}")
            assert loc.count() == 1 and loc.is_visible(), section.id
            assert loc.bounding_box()["height"] > 0, section.id
            assert loc.locator("h2").inner_text() == section.title
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(images) > 5 and all(ok and w > 0 for ok, w, _ in images), images
        # A hostile variant name is shown as text on the page.
        assert EVIL_VARIANT in page.locator("#subgroups").inner_text()
        assert page.evaluate("document.scripts.length") == 1
        # Sorting a real report table by clicking its header.
        table = page.locator("#subgroups table.sortable").first
        col = table.locator("thead th").all_inner_texts().index("change (pp)")
        table.locator("thead th").nth(col).locator("button").click()
        keys = table.locator("tbody tr").evaluate_all(
            f"rows => rows.map(r => r.cells[{col}].getAttribute('data-sort'))")
        numbers = [float(k) for k in keys if k]
        assert numbers == sorted(numbers) and keys[: len(numbers)] == [k for k in keys if k]
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert console == [] and failed == [] and dialogs == []
    assert all(u == url or u.startswith("data:") for u in requests), requests
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_pdf_through_headless_chromium(bare_run, tmp_path):
    out = render_report(bare_run, out=tmp_path / "audit.html", pdf=True)
    pdf = out.with_suffix(".pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000


def _row(section: str, first_cell: str) -> str:
    """The ``<tr>`` of a table whose first cell is ``first_cell`` (escaped)."""
    found = re.search(rf"<tr><td>{re.escape(html.escape(first_cell))}</td>.*?</tr>", section)
    assert found, first_cell
    return found.group(0)


def test_dissection_section_sits_between_robustness_and_methodology(full_html):
    ids = [s.id for s in SECTIONS]
    assert ids.index("robustness") + 1 == ids.index("dissection") == ids.index("methodology") - 1
    assert ('<section id="dissection" class="report-section"><h2>Interpretability (network '
            'dissection)</h2>') in full_html


def test_dissection_numbers_come_from_metrics(full_run, full_html):
    block = json.loads((full_run / "metrics.json").read_text())["dissection"]
    section = _sections(full_html)["dissection"]
    assert "This run dissected 64 images" in section
    assert "quantile 2% and IoU threshold 0.04" in section
    assert "<code>features.2</code>, <code>features.5</code>" in section
    assert section.count("<img") == 1  # the curves against sparsity
    for variant, m in block["variants"].items():
        row = _row(section, variant)
        units = m["interpretable_units"]["mean"]
        shown = f"{units:,.0f}" if float(units).is_integer() else f"{units:,.1f}"
        assert f'data-sort="{units!r}" class="num">{shown}<' in row
        for key in ("interpretable_share", "retained_interpretable", "retained_concept",
                    "interpretable_drop", "concept_drop"):
            assert f">{100 * m[key]['mean']:.1f}%<" in row, (variant, key)
    # Intervals stay in the possible range (built on a transformed scale): no negative
    # count, no share above 100%; the report shows them as they are.
    gmp = block["variants"]["gmp-50"]
    units, kept = gmp["interpretable_units"], gmp["retained_interpretable"]
    assert 0 <= units["lo"] < units["mean"] < units["hi"]
    assert 0 <= kept["lo"] <= kept["mean"] <= kept["hi"] <= 1
    row = _row(section, "gmp-50")
    assert f"[{units['lo']:,.1f}, {units['hi']:,.1f}]" in row
    layers = _row(section.split("Interpretable units per layer")[1], "gmp-50")
    assert f">{gmp['by_layer']['features.5']['interpretable_units']:,.1f}<" in layers


def test_dissection_plot_points_are_the_metrics_values(full_run):
    block = load_run(full_run).metrics.dissection.as_dict()
    points = dissection_points(block).set_index(["variant", "panel"])
    for key, panel in PANELS:
        m = block["variants"]["gmp-50"][key]
        assert points.loc[("gmp-50", panel), "mean"] == m["mean"]
        assert points.loc[("gmp-50", panel), "lo"] == m["lo"]


def test_dissection_names_unreachable_concepts_and_escapes_names(full_run, full_html):
    block = json.loads((full_run / "metrics.json").read_text())["dissection"]
    assert block["unreachable"] == ["background", "freckles"]
    section = _sections(full_html)["dissection"]
    text = section.split("<h3>Concepts</h3>")[1]
    assert "2 concepts (<strong>background</strong>, <strong>freckles</strong>) can hardly be " \
           "detected" in text
    assert "at or below the threshold 0.04" in text
    assert "<strong>background</strong> covers 70% of the pixels: its bound is 0.0286" in text
    assert _row(text, "freckles").endswith('title="IoU bound at or below the threshold">no</td>'
                                           "</tr>")
    assert _row(text, "hair").endswith("<td>yes</td></tr>")
    assert "&lt;i&gt;mouth&lt;/i&gt;" in section and "<i>mouth" not in full_html


def test_missing_dissection_block_renders_a_note(bare_html):
    section = _sections(bare_html)["dissection"]
    assert "Not available in this run" in section and "no [dissection] section" in section
    assert "<img" not in section and "<table" not in section


def test_one_replica_dissection_has_no_intervals(bare_run, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(bare_run, root)
    metrics = read_metrics(root)
    block = _dissection(list(metrics.variants), replicas=1)[0]
    metrics = replace(metrics, dissection=Dissection.from_dict(jsonable(block), where="d"))
    (root / "metrics.json").write_text(dumps_metrics(metrics))
    metrics = json.loads(dumps_metrics(metrics))
    section = _sections(render_html(load_run(root)))["dissection"]
    assert metrics["dissection"]["variants"]["gmp-90"]["interpretable_units"]["lo"] is None
    assert 'class="ci"' not in _row(section, "gmp-90")
    assert section.count("<img") == 1


@pytest.mark.parametrize("unit, scale", [("%", 100.0)])
def test_dissection_gate_checks_render_as_percent_of_the_dense_count(full_run, tmp_path, unit,
                                                                    scale):
    root = tmp_path / "run"
    shutil.copytree(full_run, root)
    gate = json.loads((root / "gate" / "gate.json").read_text())
    gate["checks"].append({
        "id": "gmp-50/dissection/interpretable_drop", "kind": "dissection", "variant": "gmp-50",
        "subject": "interpretable units", "metric": "interpretable_drop",
        "estimate": 0.479 * scale, "se": 0.1 * scale, "tolerance": 0.1 * scale, "unit": unit,
        "lo": 0.2 * scale, "hi": 0.75 * scale, "verdict": "fail",
        "reason": f"increase above {0.1 * scale:g} {unit} with confidence"})
    (root / "gate" / "gate.json").write_text(json.dumps(gate))
    sections = _sections(render_html(load_run(root)))
    row = next(r for r in re.findall(r"<tr>.*?</tr>", sections["verdict"])
               if "interpretable_drop" in r)
    assert "<td>network dissection</td>" in row
    assert '+47.9%<span class="ci">[+20.0, +75.0]</span>' in row
    assert ">10%</td>" in row
    assert "The gate checked 1 of these drops: 1 failed" in sections["dissection"]


def test_printing_unfolds_folded_images(tmp_path):
    # The report's own stylesheet, real Chromium: a folded (closed <details>) image is
    # in the PDF, so the PDF holds the pixels; without the print rule it holds 6 kB.
    from compaudit.report.pdf import print_pdf
    from compaudit.report.render import _asset

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((300, 300, 3)) * 255).astype(np.uint8)).save(tmp_path / "n.png")
    picture = thumbnail(tmp_path / "n.png", size=300, alt="noise")
    page = (f"<html><head><style>{_asset('report.css')}</style></head><body><p>x</p>"
            f"<details><summary>folded</summary>{picture}</details></body></html>")
    (tmp_path / "p.html").write_text(page)
    folded = print_pdf(tmp_path / "p.html", tmp_path / "p.pdf").stat().st_size
    (tmp_path / "q.html").write_text(page.replace("<details>", "<details open>"))
    unfolded = print_pdf(tmp_path / "q.html", tmp_path / "q.pdf").stat().st_size
    assert folded > 100_000 and folded > 0.9 * unfolded
