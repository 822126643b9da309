"""`compaudit demo` end to end: the planted harm is caught, the control passes.

This is the slowest test (two full audits, several minutes each on 2 cores); run the
rest with ``pytest -m "not demo"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.demo


def _demo(out, *extra):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compaudit.cli", "demo", "--out", str(out),
                           "--no-progress", *extra], capture_output=True, text=True,
                          timeout=1800)
    minutes = (time.perf_counter() - start) / 60
    print(f"compaudit demo {' '.join(extra)}: exit {proc.returncode} in {minutes:.1f} min")
    return proc


def _top_slice_shares(run, variant):
    """Share of the blond short-haired faces (the planted mechanism, from the generator's
    hidden factors in synthetic_meta.csv) in ``variant``'s top slice and among all test
    faces; and the share of them the slice holds (recall)."""
    import pandas as pd

    ex = pd.read_parquet(run / "examples.parquet").query("shift == 'clean'")
    meta = pd.read_csv(run / "data" / "synthetic-faces" / "synthetic_meta.csv")
    ex = ex.assign(image=ex["example_id"].str.split("/").str[-1]).merge(
        meta, on="image", validate="one_to_one")
    blond, short = ex["label"] == 1, ~ex["long_hair"].astype(bool)
    planted = blond & short
    members = pd.read_csv(run / "tables" / "slice_members.csv", dtype={"example_id": str})
    top = ex["example_id"].isin(members.query("variant == @variant and slice == 0")["example_id"])
    return {"precision": planted[top].mean(), "base_rate": planted.mean(),
            "recall": top[planted].mean(),
            # Short hair among the slice's blond faces over short hair among all blond
            # faces: the mechanism beyond the label whose errors compression raises.
            "short_within_blond": short[top & blond].mean() / short[blond].mean()}


def test_demo_flags_the_rare_subgroup_and_the_control_passes(tmp_path):
    demo = _demo(tmp_path / "demo")
    assert demo.returncode == 1, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "verdict: FAIL" in demo.stdout
    report = tmp_path / "demo" / "report.html"
    assert report.is_file() and report.stat().st_size > 50_000
    gate = json.loads((tmp_path / "demo" / "gate" / "gate.json").read_text())
    failed = [c for c in gate["checks"] if c["verdict"] == "fail"]
    assert failed, "the planted harm was not caught"
    # Short hair hides blond men's hair colour from the 90% variant: it is flagged for
    # men by their false-negative rate and by their share of PIEs among blond faces.
    men = {c["kind"] for c in failed if c["variant"] == "gmp-90" and "Male" in c["subject"]}
    assert "pie_within_label" in men
    # The error-rate checks for men see the harm too: a failure, or (their margins are
    # thin at 5 replicas and move with the package versions that decode and train) an
    # estimate above the tolerance whose interval still reaches below it.
    rates = [c for c in gate["checks"] if c["variant"] == "gmp-90" and "Male" in c["subject"]
             and c["kind"] in ("subgroup_rate", "disparity") and c["metric"].startswith("fnr")
             and c["verdict"] != "pass"]
    assert rates and all(c["estimate"] > c["tolerance"] for c in rates)
    assert all(c["variant"] != "float16" for c in failed)
    # The repair of gmp-90 (constrained_finetune, docs/repair.md): no check fails, none
    # that gmp-90 fails included, and the error-rate harm on young men is gone: their FNR
    # excess and the FNR gap pass. (The PIE check gmp-90 fails measured inconclusive for
    # the repair, +37% [-19, +131] against 75%, not a pass: docs/repair.md.)
    def key(c):
        return c["kind"], c["subject"], c["metric"]

    repaired = {key(c): c["verdict"] for c in gate["checks"]
                if c["variant"] == "gmp-90-repaired"}
    assert repaired and "fail" not in repaired.values(), repaired
    assert all(repaired[key(c)] != "fail" for c in failed if c["variant"] == "gmp-90")
    assert repaired["subgroup_rate", "Male=True & Young=True", "fnr (excess)"] == "pass"
    assert repaired["disparity", "Male x Young", "fnr"] == "pass"
    records = json.loads((tmp_path / "demo" / "variants.json").read_text())["variants"]
    assert records["gmp-90-repaired"]["base"] == "gmp-90"
    assert records["gmp-90-repaired"]["sparsity"] == records["gmp-90"]["sparsity"]
    assert records["gmp-90"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    # top-1 costs nothing: at least gmp-90's less 0.5 pp (measured: 2.5 pp above it)
    accuracy = json.loads((tmp_path / "demo" / "metrics.json").read_text())["accuracy"]
    assert accuracy["gmp-90-repaired"]["top1_mean"] >= accuracy["gmp-90"]["top1_mean"] - 0.005
    (family,) = [p for p in gate["operating_points"] if p["family"] == "gradual_magnitude"]
    names = [v["name"] for v in family["variants"]]
    assert names.index("gmp-90-repaired") == names.index("gmp-90") + 1
    # The compliance record: the demo's run verifies, and its model card parses back.
    assert (tmp_path / "demo" / "audit_record.json").is_file()
    verify = subprocess.run([sys.executable, "-m", "compaudit.cli", "verify",
                             str(tmp_path / "demo")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    card_path = tmp_path / "model_card.md"
    card = subprocess.run([sys.executable, "-m", "compaudit.cli", "card", str(tmp_path / "demo"),
                           "--out", str(card_path)], capture_output=True, text=True)
    assert card.returncode == 0, card.stdout + card.stderr
    from huggingface_hub import ModelCard

    results = ModelCard.load(card_path).data.eval_results
    assert results and any(r.metric_type == "accuracy" for r in results)
    # Slice discovery, given no attribute, finds the mechanism: gmp-90's top slice
    # over-indexes blond faces with short hair (measured 2026-12-07: precision 0.37 vs a
    # base rate of 0.049, 7.4x; recall 0.44). Most of that is the label (the slice is 86%
    # blond: gmp-90 misses blond faces in the control too, where its top slice holds
    # them at 6x); within the blond faces, short hair is over-represented 1.42x in the
    # demo and 1.12x in the control.
    shares = _top_slice_shares(tmp_path / "demo", "gmp-90")
    assert shares["precision"] >= 2 * shares["base_rate"], shares
    assert shares["short_within_blond"] >= 1.25, shares

    control = _demo(tmp_path / "control", "--no-spurious")
    assert control.returncode == 0, control.stdout[-3000:] + control.stderr[-3000:]
    gate = json.loads((tmp_path / "control" / "gate" / "gate.json").read_text())
    assert not [c for c in gate["checks"] if c["verdict"] == "fail"]
    assert (tmp_path / "control" / "report.html").is_file()
