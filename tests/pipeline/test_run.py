"""The pipeline on a tiny spec: stages, caching, partial recompute and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compaudit.configs.compress import METHODS
from compaudit.pipeline import run_audit
from compaudit.schema import read_metrics
from compaudit.spec import parse_spec

TINY = (Path(__file__).with_name("tiny_spec.toml").read_text() + """\
[analysis]
bootstrap = 50
[analysis.slices]
enabled = true
n_slices = 4
typical = 3
[dissection]
quantile = 0.02
max_images = 60
[executor]
kind = "serial"
""")


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    result = run_audit(parse_spec(TINY, source="tiny.toml"), out, progress=False, log=_quiet)
    return out, result


def test_run_writes_every_output(first_run):
    out, result = first_run
    for name in ("examples.parquet", "predictions.parquet", "variants.json", "metrics.json",
                 "run.json", "gate/junit.xml", "report.html"):
        assert (out / name).is_file(), name
    # The evaluation sets decoded for the variant jobs are removed after them.
    assert not (out / "variants" / ".decoded").exists()
    assert sorted(p.name for p in (out / "variants").iterdir()) == ["dense", "float16", "gmp-50"]
    metrics = result.metrics
    assert set(metrics.variants) == {"dense", "gmp-50", "float16"}
    assert metrics.task.shifts == ("clean", "contrast")
    # The verdict is the gate's on the written metrics under the spec's policy.
    from compaudit.gate import run_gate

    spec = parse_spec(TINY, source="tiny.toml")
    gate = run_gate(read_metrics(out), spec.gate)
    assert (result.verdict, result.exit_code) == (gate.verdict, gate.exit_code)
    written = json.loads((out / "gate" / "gate.json").read_text())
    assert (written["verdict"], written["exit_code"]) == (gate.verdict, gate.exit_code)
    assert len(written["checks"]) == len(gate.checks) > 0
    variants = json.loads((out / "variants.json").read_text())["variants"]
    assert variants["gmp-50"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    # One identity per method: the spec's name, and its entry's family, axis and bits.
    for v in spec.variants:
        entry = METHODS.get(v.method)
        assert (variants[v.name]["method"], variants[v.name]["family"],
                variants[v.name]["axis"]) == (v.method, entry.family, entry.axis)
    assert (variants["gmp-50"]["bits"], variants["float16"]["bits"]) == (None, 16)
    assert variants["dense"]["method"] == "dense" and variants["dense"]["family"] is None
    families = {p["family"]: [x["name"] for x in p["variants"]]
                for p in written["operating_points"]}
    assert families == {"gradual_magnitude": ["gmp-50"], "float16": ["float16"]}
    run = json.loads((out / "run.json").read_text())
    assert run["seeds"]["replicas"] == [3, 4] and run["data"]["fingerprint"]
    # Time accounting: every step is timed; the serial executor runs the jobs inside
    # their steps, so a step lasts at least as long as its jobs together.
    steps, jobs = run["timings"]["steps"], run["timings"]["jobs"]
    assert list(steps) == ["data", "shifts", "examples", "train", "variants", "embed",
                           "analyze"]
    assert set(jobs) == {"train:replica-000", "train:replica-001", "variant:dense",
                         "variant:gmp-50", "variant:float16", "embed"}
    for step, prefix in (("train", "train:"), ("variants", "variant:"), ("embed", "embed")):
        inside = sum(t["wall_s"] for name, t in jobs.items() if name.startswith(prefix))
        assert steps[step]["wall_s"] >= inside > 0
    assert all(t["cpu_s"] > 0 for t in jobs.values())
    # The steps that ran jobs in workers count the jobs' CPU time too.
    for step, prefix in (("train", "train:"), ("variants", "variant:"), ("embed", "embed")):
        assert steps[step]["cpu_s"] >= sum(t["cpu_s"] for n, t in jobs.items()
                                           if n.startswith(prefix))
    assert result.timings["variants"] == steps["variants"]


def test_dissection_of_every_replica_reaches_metrics(first_run):
    import pandas as pd

    from compaudit.dissection import DissectionConfig, SyntheticFaceConcepts, dissect
    from compaudit.dissection.concepts import ConceptSubset
    from compaudit.models.architectures import build_model
    from compaudit.models.weights import read_state_dict
    from compaudit.pipeline.data import eval_transform

    out, result = first_run
    block = result.metrics.dissection
    assert block.config["quantile"] == 0.02 and block.n_images == 60
    assert block.config["layers"] == ["features.2", "features.5", "features.8", "features.11"]
    assert {r.variant for r in block.replicas} == {"dense", "gmp-50", "float16"}
    units = pd.read_csv(out / "tables" / "dissection_units.csv")
    assert len(units) == 3 * 2 * 120
    # Independent reference: dissect the saved dense replica 1 directly.
    spec = parse_spec(TINY, source="tiny.toml")
    transform = eval_transform(spec)
    model = build_model("small_cnn", num_classes=2, small_input=True)
    model.load_state_dict(read_state_dict(out / "models" / "dense" / "replica-001.pt"))
    data = ConceptSubset(SyntheticFaceConcepts(out / "data" / "faces", split="test",
                                               transform=transform), n=60, seed=3)
    direct = dissect(model, data, config=DissectionConfig(
        layers=("features.2", "features.5", "features.8", "features.11"), quantile=0.02))
    mine = units[(units["variant"] == "dense") & (units["replica"] == 1)]
    assert mine["threshold"].to_numpy() == pytest.approx(direct.units["threshold"].to_numpy())
    assert mine["interpretable"].tolist() == direct.units["interpretable"].tolist()
    dense1 = next(r for r in block.replicas if r.variant == "dense" and r.replica == 1)
    assert dense1.interpretable_units == int(direct.units["interpretable"].sum())
    assert [c["concept"] for c in block.concepts] == direct.concepts["concept"].tolist()


def test_slices_from_the_dense_embeddings_reach_metrics_and_report(first_run):
    import numpy as np
    import pandas as pd
    import torch

    from compaudit.data.synthetic import SyntheticFaces
    from compaudit.models.architectures import build_model
    from compaudit.models.weights import read_state_dict
    from compaudit.pipeline.data import eval_transform
    from compaudit.tables import read_embeddings, read_examples

    out, result = first_run
    emb = read_embeddings(out / "embeddings.npz")
    clean = read_examples(out / "examples.parquet").query("shift == 'clean'")
    assert sorted(emb.example_ids) == sorted(clean["example_id"])
    # Independent reference: the saved dense replicas run up to their pooling, by hand,
    # on the first evaluation images.
    spec = parse_spec(TINY, source="tiny.toml")
    data = SyntheticFaces(out / "data" / "faces", split="test", transform=eval_transform(spec))
    images = [data[i] for i in range(8)]
    x = torch.stack([im for im, _, _ in images])
    direct = []
    for k in range(2):
        model = build_model("small_cnn", num_classes=2, small_input=True)
        model.load_state_dict(read_state_dict(out / "models" / "dense" / f"replica-00{k}.pt"))
        with torch.no_grad():
            direct.append(model.eval().pool(model.features(x)).flatten(1).numpy())
    np.testing.assert_allclose(emb.rows_for(np.array([i for _, _, i in images])),
                               np.mean(direct, axis=0), rtol=1e-4, atol=1e-5)
    block = result.metrics.slices
    assert block is not None and block.settings["n_slices"] == 4 and block.dims == 64
    assert {r.variant for r in block.rows} == {"gmp-50", "float16"}
    table = pd.read_csv(out / "tables" / "slices.csv")
    assert len(table) == len(block.rows) and all(len(r.typical) <= 3 for r in block.rows)
    assert "Slices compression breaks" in (out / "report.html").read_text()
    record = json.loads((out / "audit_record.json").read_text())
    assert record["files"]["embeddings.npz"]["role"] == "embeddings"


def _copy(first_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(first_run[0], out)
    return out


def test_second_run_skips_every_stage(first_run, tmp_path):
    out = _copy(first_run, tmp_path)
    again = run_audit(parse_spec(TINY, source="tiny.toml"), out, progress=False, log=_quiet)
    assert again.stages_run == []
    assert {"train", "analyze"} <= set(again.stages_skipped)


def test_changed_variant_recomputes_only_that_variant(first_run, tmp_path):
    out = _copy(first_run, tmp_path)
    changed = TINY.replace("sparsity = 0.5", "sparsity = 0.6")
    again = run_audit(parse_spec(changed, source="tiny.toml"), out, progress=False, log=_quiet)
    assert "variant:gmp-50" in again.stages_run and "analyze" in again.stages_run
    assert "variant:float16" in again.stages_skipped and "variant:dense" in again.stages_skipped
    assert "data" in again.stages_skipped
    recorded = json.loads((out / "variants.json").read_text())["variants"]["gmp-50"]
    assert recorded["sparsity"] == pytest.approx(0.6, abs=0.01)


def test_changed_slice_settings_rerun_only_the_analysis(first_run, tmp_path):
    out = _copy(first_run, tmp_path)
    changed = TINY.replace("n_slices = 4", "n_slices = 3")
    again = run_audit(parse_spec(changed, source="tiny.toml"), out, progress=False, log=_quiet)
    assert "analyze" in again.stages_run and "embed" in again.stages_skipped
    assert not [s for s in again.stages_run if s.startswith(("variant:", "train"))]
    rows = again.metrics.slices.rows
    assert rows and max(r.slice for r in rows) <= 2


def test_slices_turned_off_leave_no_slice_output_in_the_record(first_run, tmp_path):
    out = _copy(first_run, tmp_path)
    changed = TINY.replace("[analysis.slices]\nenabled = true", "[analysis.slices]\nenabled = false")
    assert changed != TINY
    again = run_audit(parse_spec(changed, source="tiny.toml"), out, progress=False, log=_quiet)
    assert "analyze" in again.stages_run and again.metrics.slices is None
    files = json.loads((out / "audit_record.json").read_text())["files"]
    assert "embeddings.npz" not in files and (out / "embeddings.npz").is_file()  # kept: a cache
    assert not (out / "tables" / "slices.csv").exists()
    assert not [f for f in files if "slice" in f]


def test_a_methods_new_revision_recomputes_only_its_variants(first_run, tmp_path, monkeypatch):
    # float16 changed what it computes (BatchNorm folded): a run folder made by the older
    # code must not hand back its float16 predictions, and nothing else is redone.
    import dataclasses

    out = _copy(first_run, tmp_path)
    entry = METHODS.get("float16")
    monkeypatch.setitem(METHODS._entries, "float16",
                        dataclasses.replace(entry, revision=entry.revision + 1))
    again = run_audit(parse_spec(TINY, source="tiny.toml"), out, progress=False, log=_quiet)
    assert "variant:float16" in again.stages_run and "analyze" in again.stages_run
    assert {"variant:dense", "variant:gmp-50"} <= set(again.stages_skipped)


def test_a_new_variants_schema_recompresses_every_variant(first_run, tmp_path, monkeypatch):
    # A run folder of an older compaudit (another variants.json schema) is not reused:
    # the schema is part of each variant's stage key, so variants.json is rewritten.
    import compaudit.pipeline.variants as stage

    out = _copy(first_run, tmp_path)
    (out / "variants.json").write_text('{"schema": "old", "variants": {}}')
    monkeypatch.setattr(stage, "VARIANTS_SCHEMA", "compaudit.variants/older")
    again = run_audit(parse_spec(TINY, source="tiny.toml"), out, progress=False, log=_quiet)
    assert {"variant:dense", "variant:gmp-50", "variant:float16"} <= set(again.stages_run)
    assert "train" in again.stages_skipped
    written = json.loads((out / "variants.json").read_text())
    assert set(written["variants"]) == {"dense", "gmp-50", "float16"}


def test_killed_run_resumes_to_the_same_numbers(first_run, tmp_path):
    reference, _ = first_run
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "compaudit.cli", "run", str(spec), "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "models" / "dense").glob("*.pt")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists(), "killed too late to test a resume"
    finished = {p: p.stat().st_mtime_ns for p in (out / "models" / "dense").glob("*.pt")}
    assert finished
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    # The replicas finished before the kill were kept, not trained again.
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "classes", "pie", "deltas", "disparity"):
        assert a[key] == b[key], key


def test_pretrained_weights_get_their_own_evaluation_transform(tmp_path):
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    from compaudit.pipeline.data import eval_transform
    from compaudit.spec import load_spec

    spec = load_spec(os.path.join(os.path.dirname(__file__), "..", "..", "audits",
                                  "imagenet_resnet50.toml"))
    mine = eval_transform(spec)
    reference = torchvision.models.get_weight(spec.model.pretrained).transforms()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3),
                                                              dtype=np.uint8))
    # ToTensor+Normalize vs the weights' own pipeline: the same up to float rounding.
    assert torch.allclose(mine(image), reference(image), atol=1e-4)


@pytest.mark.parametrize("section, message", [
    ('layers = ["features.99"]', r"\[dissection\].layers: 'features.99' are not modules of "
                                 r"'small_cnn'; valid names include"),
    ('concepts = "broden"\nroot = "nowhere"', r"nowhere/index.csv: not found; expected the "
                                              r"Broden layout"),
    ('[[variants]]\nname = "ort"\nmethod = "int8_static"\nbackend = "onnxruntime"',
     r"variant\(s\) ort run in ONNX Runtime, which has no layers to hook"),
])
def test_bad_dissection_section_fails_before_training(tmp_path, section, message):
    from compaudit.errors import AuditInputError

    text = TINY.replace("n = 800", "n = 200").replace("max_images = 60\n",
                                                      f"max_images = 60\n{section}\n")
    with pytest.raises(AuditInputError, match=message):
        run_audit(parse_spec(text, source="tiny.toml"), tmp_path, progress=False, log=_quiet)
    assert not (tmp_path / "models").exists()


def test_an_audit_of_the_users_own_model_runs_in_worker_processes(tmp_path, monkeypatch):
    """``arch = "module:callable"`` from the spec's folder: the preflight builds it here
    and the variant jobs rebuild it in spawned workers that start elsewhere and have
    not imported it yet (weights come from a file, so no training job imports it
    first): the search path travels with the jobs."""
    from compaudit.models.architectures import build_model
    from compaudit.models.weights import save_state_dict
    from compaudit.rundir import RunFolder
    from compaudit.spec import load_spec

    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "netzoo.py").write_text(
        "from torch import nn\n\n"
        "def tiny(num_classes, width=8):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(width, num_classes))\n", encoding="utf-8")
    try:
        save_state_dict(build_model("netzoo:tiny", num_classes=2, options={"width": 4},
                                    search_path=folder), folder / "tiny.pt")
        text = TINY[:TINY.index("[model]")].replace("n = 800", "n = 200") + f"""[model]
arch = "netzoo:tiny"
options = {{ width = 4 }}
replicas = 1
weights = ["{folder / 'tiny.pt'}"]
[[variants]]
name = "f16"
method = "float16"
[analysis]
bootstrap = 20
[executor]
kind = "local"
workers = 1
"""
        (folder / "audit.toml").write_text(text, encoding="utf-8")
        monkeypatch.chdir(tmp_path)  # not the spec's folder: the import must not use the cwd
        assert str(folder) not in sys.path
        result = run_audit(load_spec(folder / "audit.toml"), tmp_path / "run", progress=False,
                           report=False, log=_quiet)
        sys.modules.pop("netzoo", None)
        same = run_audit(load_spec(folder / "audit.toml"), tmp_path / "run", progress=False,
                         report=False, log=_quiet)
        # Edited user code is a new architecture: the cached variants are stale.
        with (folder / "netzoo.py").open("a", encoding="utf-8") as f:
            f.write("\n# edited: the same layers, but the cache cannot know that\n")
        sys.modules.pop("netzoo", None)
        edited = run_audit(load_spec(folder / "audit.toml"), tmp_path / "run", progress=False,
                           report=False, log=_quiet)
    finally:
        sys.modules.pop("netzoo", None)
    assert {"variant:dense", "variant:f16"} <= set(result.stages_run)
    assert {"variant:dense", "variant:f16"} <= set(same.stages_skipped)
    assert {"variant:dense", "variant:f16"} <= set(edited.stages_run)
    record = json.loads(RunFolder(tmp_path / "run").variant_record("f16").read_text())
    assert record["method"] == "float16"


def test_a_sigmoid_head_trains_prunes_and_dissects_with_bce(tmp_path):
    """compaudit trains a one-logit population with binary cross-entropy, prunes it (unit
    scores from BCE gradients, BCE fine-tuning) and dissects every variant."""
    import pandas as pd
    import torch

    from compaudit.data import get_dataset
    from compaudit.models.architectures import build_model
    from compaudit.models.weights import read_state_dict
    from compaudit.pipeline.data import eval_transform

    text = (TINY.replace('arch = "small_cnn"\nreplicas = 2',
                         'arch = "small_cnn"\nreplicas = 1\nhead = "sigmoid"')
            .replace("n = 800", "n = 400")
            .replace('name = "float16"\nmethod = "float16"',
                     'name = "units"\nmethod = "unit"\nfraction = 0.25\nn_batches = 2'))
    spec = parse_spec(text, source="tiny.toml")
    assert spec.model.n_outputs == 1 and spec.model.task_head().sigmoid
    result = run_audit(spec, tmp_path, progress=False, log=_quiet)
    assert set(result.metrics.variants) == {"dense", "gmp-50", "units"}
    # The replica has one output and was trained with BCE: its own sigmoid is p_pos.
    state = read_state_dict(tmp_path / "models" / "dense" / "replica-000.pt")
    model = build_model("small_cnn", num_classes=1, small_input=True)
    model.load_state_dict(state)
    meta = json.loads((tmp_path / "models" / "dense" / "replica-000.json").read_text())
    assert meta["head"]["kind"] == "sigmoid"
    ds = get_dataset("celeba", tmp_path / "data" / "faces", split="test",
        transform=eval_transform(spec))
    x = torch.stack([ds[i][0] for i in range(16)])
    ids = [ds[i][2] for i in range(16)]
    with torch.no_grad():
        p_pos = torch.sigmoid(model.eval()(x)[:, 0]).numpy()
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    dense = predictions[predictions["variant"] == "dense"].set_index("example_id").loc[ids]
    assert dense["p_pos"].to_numpy() == pytest.approx(p_pos, rel=1e-5, abs=1e-6)
    variants = json.loads((tmp_path / "variants.json").read_text())["variants"]
    assert variants["gmp-50"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    # BCE through the head (softmax cross-entropy over one logit would be 0 or fail)
    assert variants["units"]["loss_before"] > 0
    block = result.metrics.dissection
    assert {r.variant for r in block.replicas} == {"dense", "gmp-50", "units"}
