"""The command line: output files, summary, and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compaudit.cli import main
from compaudit.tables import write_examples, write_predictions


@pytest.fixture(scope="module")
def files(tmp_path_factory, binary_tables):
    root = tmp_path_factory.mktemp("cli")
    ex, pr = binary_tables
    write_examples(ex, root / "examples.parquet")
    write_predictions(pr, root / "predictions.parquet", examples=ex)
    return root


def test_analyze_prints_summary_and_writes_outputs(files, tmp_path, capsys):
    code = main(["analyze", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"), "--out", str(tmp_path),
                 "--protected", "Male,Young", "--bootstrap", "200", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "gmp-90" in out and "largest subgroup changes" in out
    assert "FPR" in out  # the planted harm is an FPR increase
    planted = [d for d in json.loads((tmp_path / "metrics.json").read_text())["deltas"]
               if d["variant"] == "gmp-90" and d["metric"] == "fpr"
               and d["subgroup"] == "Male=True & Young=False"]
    assert planted[0]["abs_diff_q"] <= 0.05 and planted[0]["abs_diff_lo"] > 0.1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["options"]["bootstrap"] == 200


def test_bad_input_exits_2_with_one_line_per_problem_and_no_traceback(files, tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("variant,replica,example_id,pred,p_true\ndense,0,sim/000000,0,1.5\n"
                   "dense,0,nope,0,0.5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "compaudit.cli", "analyze", "--examples",
         str(files / "examples.parquet"), "--predictions", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("compaudit: error: ") for line in lines)
    assert any("p.csv: column 'p_true'" in line for line in lines)
    assert any("not in the examples table" in line for line in lines)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--examples", "x"])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_bad_option_value_exits_2(files, tmp_path, capsys):
    code = main(["analyze", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"), "--out", str(tmp_path),
                 "--bootstrap", "-1"])
    assert code == 2
    assert "option --bootstrap: got -1; expected an integer >= 0" in capsys.readouterr().err


def test_run_with_a_bad_spec_exits_2_listing_every_mistake(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('[model]\nreplicas = "five"\n[[variants]]\nname = "x"\nmethod = "zip"\n')
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"compaudit: error: {spec}") for line in err)
    assert not (tmp_path / "out").exists()


def test_report_command_renders_an_analyzed_run(files, tmp_path, capsys):
    assert main(["analyze", "--examples", str(files / "examples.parquet"), "--predictions",
                 str(files / "predictions.parquet"), "--out", str(tmp_path), "--bootstrap",
                 "50", "--no-progress"]) == 0
    assert main(["report", str(tmp_path), "--no-progress"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "Compression audit report" in html and "gmp-90" in html


def _dissection_files(root):
    """Hand-made per-unit rows of dense and gmp-90 (2 replicas x 4 units), concepts, config."""
    import pandas as pd

    hits = {("dense", 0): [True, True, False, True], ("dense", 1): [False, True, True, False],
            ("gmp-90", 0): [True, False, False, False], ("gmp-90", 1): [False, True, False, True]}
    units = pd.DataFrame([
        {"variant": v, "replica": r, "layer": "a" if u < 2 else "b", "unit": u % 2,
         "threshold": 0.5, "concept": ["hair", "eyes", "hair", "mouth"][u], "category": "part",
         "iou": 0.1 if hit else 0.01, "interpretable": hit}
        for (v, r), row in hits.items() for u, hit in enumerate(row)])
    concepts = pd.DataFrame({"concept": ["hair", "eyes", "mouth"], "category": "part",
                             "coverage": [0.15, 0.005, 0.01], "iou_bound": [0.03, 0.25, 0.5],
                             "n_images": 10})
    CONFIG = {"layers": ["a", "b"], "quantile": 0.005, "iou_threshold": 0.04}
    units.to_parquet(root / "units.parquet", index=False)
    concepts.to_csv(root / "concepts.csv", index=False)
    (root / "config.json").write_text(json.dumps(CONFIG))
    return units, concepts, CONFIG


def test_analyze_dissection_writes_the_block_dissection_block_builds(files, tmp_path):
    from compaudit.analysis.dissection import dissection_block
    from compaudit.rundir import jsonable

    units, concepts, config = _dissection_files(tmp_path)
    code = main(["analyze", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"),
                 "--out", str(tmp_path / "out"), "--bootstrap", "0", "--no-progress",
                 "--dissection", str(tmp_path / "units.parquet"),
                 "--dissection-concepts", str(tmp_path / "concepts.csv"),
                 "--dissection-config", str(tmp_path / "config.json")])
    assert code == 0
    block, _ = dissection_block(units, concepts, config)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())["dissection"]
    assert written == json.loads(json.dumps(jsonable(block), allow_nan=False))
    assert (tmp_path / "out" / "tables" / "dissection_replicas.csv").is_file()


def test_analyze_dissection_with_a_missing_column_exits_2(files, tmp_path, capsys):
    units, _, _ = _dissection_files(tmp_path)
    units.drop(columns="concept").to_parquet(tmp_path / "units.parquet", index=False)
    code = main(["analyze", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"),
                 "--out", str(tmp_path / "out"), "--no-progress",
                 "--dissection", str(tmp_path / "units.parquet"),
                 "--dissection-concepts", str(tmp_path / "concepts.csv"),
                 "--dissection-config", str(tmp_path / "config.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'units.parquet'}: missing required column(s) 'concept'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--protected", "Male,Male", "option --protected: got ['Male', 'Male']; expected each "
                                 "attribute once"),
    ("--seed", "-1", "option --seed: got -1; expected an integer >= 0"),
    ("--max-order", "0", "option --max-order: got 0; expected an integer >= 1"),
])
def test_bad_analysis_options_exit_2_naming_the_option(files, tmp_path, capsys, option, value,
                                                        message):
    code = main(["analyze", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"),
                 "--out", str(tmp_path / "out"), "--no-progress", option, value])
    assert code == 2
    assert f"compaudit: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_max_order_limits_the_subgroups(files, tmp_path):
    assert main(["analyze", "--examples", str(files / "examples.parquet"), "--predictions",
                 str(files / "predictions.parquet"), "--out", str(tmp_path), "--bootstrap",
                 "20", "--no-progress", "--max-order", "1"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["options"]["max_intersection_order"] == 1
    assert metrics["subgroup_cells"] == {"attributes": 2, "max_order": 1, "min_cell_size": 1,
                                         "max_cells": 5000, "analysed": 5, "skipped": 0}
    assert not any(" & " in row["subgroup"] for row in metrics["deltas"])


def test_huge_label_without_num_classes_exits_2_naming_file_and_column(tmp_path, capsys):
    examples = tmp_path / "e.csv"
    examples.write_text(f"example_id,label\na,0\nb,{2**40}\n")
    predictions = tmp_path / "p.csv"
    predictions.write_text("variant,replica,example_id,pred,p_true\ndense,0,a,0,0.5\n"
                           "dense,0,b,0,0.5\n")
    code = main(["analyze", "--examples", str(examples), "--predictions", str(predictions),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{examples}: column 'label': 1 row(s) (rows 2) hold class indices" in err
    assert "pass --num-classes" in err


def test_screen_reads_the_dense_rows_and_writes_scores(files, tmp_path, capsys):
    out = tmp_path / "screen"
    code = main(["screen", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"), "--out", str(out),
                 "--protected", "Male,Young", "--top", "0.1"])
    text = capsys.readouterr().out
    assert code == 0
    assert "at risk (top 10% by entropy" in text
    assert "ignored (not dense): gmp-50, gmp-90" in text
    summary = json.loads((out / "screen.json").read_text())
    assert summary["top"] == 0.1 and summary["ignored_variants"] == ["gmp-50", "gmp-90"]
    assert (out / "screen_scores.csv").is_file() and (out / "screen_groups.csv").is_file()


def test_screen_bad_top_exits_2(files, tmp_path, capsys):
    code = main(["screen", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"), "--out",
                 str(tmp_path / "s"), "--top", "2"])
    assert code == 2
    assert "screen option top: got 2.0; expected a fraction in (0, 1]" in capsys.readouterr().err


def test_check_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    from importlib import resources

    import torch

    text = resources.files("compaudit").joinpath("demo.toml").read_text(encoding="utf-8")
    from compaudit.models.architectures import build_model

    for k in range(2):  # check loads them: weights of the spec's architecture
        torch.save(build_model("small_cnn", num_classes=2, small_input=True).state_dict(),
                   tmp_path / f"r{k}.pt")
    spec = tmp_path / "mine.toml"
    spec.write_text(text.replace("replicas = 5", 'replicas = 2\nweights = ["r0.pt", "r1.pt"]'))
    before = sorted(tmp_path.rglob("*"))
    for argv in (["check", str(spec), "--out", str(tmp_path / "run")],
                 ["run", "--dry-run", str(spec), "--out", str(tmp_path / "run")]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert f"{tmp_path / 'r1.pt'}  (state_dict)" in out
        assert "gmp-90: gradual_magnitude (sparsity = 0.9" in out
        assert "load dense -> variants" in out and "spec OK" in out
    assert sorted(tmp_path.rglob("*")) == before


def test_check_reports_preflight_problems_together(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('[data]\ndataset = "manifest"\nroot = "nowhere"\n[model]\narch = "nonet"\n'
                    '[[variants]]\nname = "f16"\nmethod = "float16"\n')
    assert main(["check", str(spec), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any("[model].arch: unknown architecture 'nonet'" in line for line in err)
    assert any("[data].root:" in line and "does not exist" in line for line in err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("form", ["./spec.toml", "spec.toml", "absolute"])
def test_relative_paths_resolve_against_the_specs_folder_from_any_folder(
        tmp_path, monkeypatch, capsys, form):
    """`cd myaudit && compaudit check spec.toml` with `root = "val"` reads myaudit/val,
    however the spec path is written, and so does a call from another folder."""
    import torch

    from compaudit.models.architectures import build_model

    audit = tmp_path / "myaudit"
    (audit / "val" / "a").mkdir(parents=True)
    from PIL import Image

    rows = []
    for i in range(4):
        Image.new("RGB", (36, 36), (60 * i, 90, 160)).save(audit / "val" / "a" / f"{i}.png")
        rows.append(f"a/{i}.png,{i % 2},test")
    (audit / "val" / "manifest.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    torch.save(build_model("small_cnn", num_classes=2, small_input=True).state_dict(),
               audit / "dense.pt")
    (audit / "spec.toml").write_text(
        '[data]\ndataset = "manifest"\nroot = "val"\nprotected = []\nimage_size = 32\n'
        '[model]\nreplicas = 1\nweights = ["dense.pt"]\n'
        '[[variants]]\nname = "f16"\nmethod = "float16"\n[executor]\nkind = "serial"\n')
    out = tmp_path / "elsewhere" / "run"
    for cwd, arg in ((audit, form), (tmp_path / "elsewhere", None)):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        spec_arg = str(audit / "spec.toml") if arg in (None, "absolute") else arg
        code = main(["check", spec_arg, "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert f"manifest read from {audit / 'val'}" in captured.out
        assert f"{audit / 'dense.pt'}  (state_dict)" in captured.out
    assert not out.exists()


def _embeddings_csv(files, path, *, drop_id=False):
    import numpy as np
    import pandas as pd

    ids = pd.read_parquet(files / "examples.parquet")["example_id"]
    feats = np.random.default_rng(0).normal(size=(len(ids), 4))
    frame = pd.DataFrame(feats, columns=[f"f{i}" for i in range(4)])
    if not drop_id:
        frame.insert(0, "example_id", ids)
    frame.to_csv(path, index=False)
    return path


def test_analyze_with_embeddings_finds_slices_and_records_the_file(files, tmp_path, capsys):
    emb = _embeddings_csv(files, tmp_path / "emb.csv")
    code = main(["analyze", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"),
                 "--out", str(tmp_path / "out"), "--bootstrap", "100", "--no-progress",
                 "--embeddings", str(emb), "--n-slices", "3"])
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["options"]["slices"]["n_slices"] == 3
    rows = metrics["slices"]["rows"]
    assert {r["variant"] for r in rows} == {"gmp-50", "gmp-90"}
    assert all(len([r for r in rows if r["variant"] == v]) <= 3 for v in ("gmp-50", "gmp-90"))
    assert (tmp_path / "out" / "tables" / "slices.csv").is_file()
    assert (tmp_path / "out" / "tables" / "slice_members.csv").is_file()
    record = json.loads((tmp_path / "out" / "audit_record.json").read_text())
    assert [e["role"] for p, e in record["files"].items() if p.endswith("emb.csv")] == [
        "embeddings"]


@pytest.mark.parametrize("args, message", [
    (["--n-slices", "0"], "option --n-slices: got 0; expected an integer >= 1"),
    (["--embeddings", "{noid}"], "noid.csv: missing required column(s) 'example_id'"),
])
def test_analyze_bad_embeddings_exit_2_before_writing(files, tmp_path, capsys, args, message):
    noid = _embeddings_csv(files, tmp_path / "noid.csv", drop_id=True)
    code = main(["analyze", "--examples", str(files / "examples.parquet"),
                 "--predictions", str(files / "predictions.parquet"),
                 "--out", str(tmp_path / "out"), "--no-progress",
                 *[a.format(noid=noid) for a in args]])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
