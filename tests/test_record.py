"""audit_record.json and ``compaudit verify``: a run verifies; a changed byte in any
recorded file, or a record judged under another policy, is caught and named."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from compaudit.cli import main
from compaudit.gate.policy import (
    GatePolicy,
    load_policy,
    policy_from_dict,
    policy_table,
)
from compaudit.record import RECORD_SCHEMA, _digest, verify
from compaudit.simulate import PlantedHarm, simulate_binary

POLICY = """[gate]
level = 0.9
inconclusive = "pass"
[gate.subgroup_rate]
metrics = ["fpr"]
max_abs_increase = 0.05
max_rel_increase_pct = false
[gate.accuracy]
max_drop = 0.03
"""


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """``compaudit analyze`` + ``compaudit gate --policy`` on simulated tables."""
    base = tmp_path_factory.mktemp("record")
    examples, predictions = simulate_binary(
        n_examples=1500, n_replicas=3, seed=5,
        harms=(PlantedHarm("gmp-90", {"Male": True, "Young": False}, "fpr", 0.3),))
    examples.to_parquet(base / "examples.parquet")
    predictions.to_parquet(base / "predictions.parquet")
    (base / "policy.toml").write_text(POLICY, encoding="utf-8")
    run = base / "run"
    assert main(["analyze", "--examples", str(base / "examples.parquet"), "--predictions",
                 str(base / "predictions.parquet"), "--out", str(run), "--bootstrap", "20",
                 "--no-progress"]) == 0
    assert main(["gate", str(run), "--policy", str(base / "policy.toml")]) == 1
    return base


@pytest.fixture
def case(analyzed, tmp_path):
    """A private copy of the analyzed folder (inputs, policy and run)."""
    copy = tmp_path / "case"
    shutil.copytree(analyzed, copy)
    run = copy / "run"
    doc = json.loads((run / "audit_record.json").read_text())
    # The copied record points at the module's inputs; repoint them and re-seal.
    doc["files"] = {p.replace(str(analyzed), str(copy)): e for p, e in doc["files"].items()}
    doc["digest"] = _digest(doc)
    (run / "audit_record.json").write_text(json.dumps(doc))
    return copy


def _flip_byte(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_record_holds_hashes_versions_seeds_policy_and_verdict(analyzed):
    run = analyzed / "run"
    doc = json.loads((run / "audit_record.json").read_text())
    assert doc["schema"] == RECORD_SCHEMA and doc["written_by"] == "gate"
    files = doc["files"]
    for stored, role in ((str(analyzed / "examples.parquet"), "examples"),
                         (str(analyzed / "predictions.parquet"), "predictions"),
                         (str(analyzed / "policy.toml"), "policy"),
                         ("metrics.json", "metrics"), ("gate/gate.json", "gate"),
                         ("tables/deltas.csv", "table")):
        assert files[stored]["role"] == role
        target = Path(stored) if Path(stored).is_absolute() else run / stored
        assert files[stored]["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert set(doc["versions"]) == {"compaudit", "torch", "torchvision", "onnxruntime",
                                    "numpy"}
    import numpy

    assert doc["versions"]["numpy"] == numpy.__version__
    assert doc["seeds"] == {"bootstrap": 0}
    gate = json.loads((run / "gate" / "gate.json").read_text())
    assert doc["verdict"] == gate["verdict"] == "fail"
    assert policy_from_dict(doc["policy"]["table"]) == load_policy(analyzed / "policy.toml")
    assert doc["digest"] == _digest(doc)


def test_a_run_verifies_and_so_does_a_moved_run_folder(case, tmp_path, capsys):
    assert main(["verify", str(case / "run")]) == 0
    assert "verdict FAIL re-judged" in capsys.readouterr().out
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(str(case / "run"), moved)
    result = verify(moved)
    assert result.ok and result.files > 20 and result.verdict == "fail"


@pytest.mark.parametrize("name", ["predictions.parquet", "run/metrics.json", "policy.toml",
                                  "run/gate/junit.xml"])
def test_one_changed_byte_is_caught_and_named(case, name, capsys):
    _flip_byte(case / name)
    assert main(["verify", str(case / "run")]) == 1
    err = capsys.readouterr().err
    assert f"{case / name}: changed" in err
    others = [line for line in err.splitlines() if ": changed (" in line]
    assert len(others) == 1, err  # only the file that changed


def test_a_record_sealed_under_another_policy_fails_on_its_verdict(case):
    """A forged record (lenient policy, digest recomputed) is caught by re-judging."""
    path = case / "run" / "audit_record.json"
    doc = json.loads(path.read_text())
    doc["policy"]["table"]["subgroup_rate"]["max_abs_increase"] = 0.9
    doc["policy"]["table"]["pie_overindex"] = {"max_relative_growth_pct": 1e6}
    doc["policy"]["table"].pop("disparity", None)
    doc["digest"] = _digest(doc)
    path.write_text(json.dumps(doc))
    result = verify(case / "run")
    assert [p for p in result.problems if p.startswith("verdict: 'fail' recorded, 'pass'")], \
        result.problems


def test_an_edited_record_is_named(case, capsys):
    path = case / "run" / "audit_record.json"
    doc = json.loads(path.read_text())
    doc["verdict"] = "pass"
    path.write_text(json.dumps(doc))
    assert main(["verify", str(case / "run")]) == 1
    err = capsys.readouterr().err
    assert "the record was edited" in err and "verdict: 'pass' recorded, 'fail'" in err


def test_a_folder_without_a_record_is_bad_input(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'audit_record.json'}: not found" in err and "Traceback" not in err


def test_the_policy_table_reads_back_to_the_same_policy():
    custom = policy_from_dict({"level": 0.9, "subgroup_rate": {
        "metrics": ["fnr"], "max_abs_increase": False, "max_excess_increase": 0.03}})
    for policy in (GatePolicy(), custom, policy_from_dict({"accuracy": {}})):
        assert policy_from_dict(policy_table(policy)) == policy
    assert "disparity" not in policy_table(custom)
    assert policy_table(custom)["subgroup_rate"]["max_abs_increase"] is False


TINY_RUN = """[audit]
name = "tiny-record"
seed = 1
[data]
dataset = "synthetic-faces"
root = "data/faces"
image_size = 32
n = 240
splits = [0.5, 0.1, 0.4]
[model]
arch = "small_cnn"
replicas = 1
{weights}
[[variants]]
name = "f16"
method = "float16"
{loaded}
[analysis]
bootstrap = 20
[executor]
kind = "serial"
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real ``compaudit run`` that reads a dense weights file and a loaded artifact."""
    from compaudit.models.architectures import build_model
    from compaudit.models.weights import save_state_dict
    from compaudit.spec import parse_spec

    base = tmp_path_factory.mktemp("realrun")
    m = parse_spec(TINY_RUN.format(weights="", loaded=""), source="t.toml").model
    for name, seed in (("dense.pt", 0), ("theirs.pt", 1)):
        import torch

        torch.manual_seed(seed)
        save_state_dict(build_model(m.arch, num_classes=m.n_outputs, small_input=m.small_input,
                                    options=m.options), base / "team" / name)
    spec = base / "audit.toml"
    spec.write_text(TINY_RUN.format(
        weights=f'weights = ["{base / "team" / "dense.pt"}"]',
        loaded=f'[[variants]]\nname = "theirs"\nmethod = "load"\n'
               f'files = ["{base / "team" / "theirs.pt"}"]'), encoding="utf-8")
    code = main(["run", str(spec), "--out", str(base / "run"), "--no-progress"])
    assert code in (0, 1)
    return base


def test_a_run_records_its_model_files_and_verifies(real_run, tmp_path, capsys):
    run = real_run / "run"
    doc = json.loads((run / "audit_record.json").read_text())
    roles = {}
    for stored, entry in doc["files"].items():
        roles.setdefault(entry["role"], []).append(stored)
    assert sorted(roles["model"]) == [str(real_run / "team" / "dense.pt"),
                                      str(real_run / "team" / "theirs.pt")]
    assert roles["spec"] == [str(real_run / "audit.toml")]
    assert {"examples.parquet", "predictions.parquet", "metrics.json", "report.html",
            "gate/gate.json", "run.json"} <= set(doc["files"])
    assert "variants/f16/predictions.parquet" in roles["artifact"]
    assert "variants/theirs/record.json" in roles["artifact"]
    run_json = json.loads((run / "run.json").read_text())
    assert doc["seeds"] == run_json["seeds"] and doc["written_by"] == "run"
    assert doc["verdict"] == json.loads((run / "gate" / "gate.json").read_text())["verdict"]
    # a moved run folder verifies; a changed byte in a model file is caught and named
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    assert main(["verify", str(moved)]) == 0
    saved = (real_run / "team" / "theirs.pt").read_bytes()
    try:
        _flip_byte(real_run / "team" / "theirs.pt")
        assert main(["verify", str(moved)]) == 1
        err = capsys.readouterr().err
        assert f"{real_run / 'team' / 'theirs.pt'}: changed (model" in err
    finally:
        (real_run / "team" / "theirs.pt").write_bytes(saved)
    _flip_byte(moved / "variants" / "f16" / "predictions.parquet")
    problems = verify(moved).problems
    assert len(problems) == 1 and problems[0].startswith(
        f"{moved / 'variants' / 'f16' / 'predictions.parquet'}: changed (artifact: sha256 ")
