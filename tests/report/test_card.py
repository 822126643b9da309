"""compaudit card: a Hugging Face model card that ModelCard.load parses back with the
numbers of metrics.json; --into fills a team's card and leaves the rest byte for byte."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from compaudit.cli import main
from compaudit.report.card import MARKER_BEGIN, MARKER_END, SECTIONS
from compaudit.simulate import PlantedHarm, simulate_binary, simulate_slices
from compaudit.tables import write_embeddings

hub = pytest.importorskip("huggingface_hub")

TEAM_CARD = (
    "---\r\nlicense: apache-2.0\r\n# our own comment, kept as written\r\n"
    "tags:\r\n  - vision\r\nmodel-index:\r\n- name: blond-net\r\n  results:\r\n"
    "  - task:\r\n      type: image-classification\r\n    dataset:\r\n"
    "      name: CelebA\r\n      type: celeba\r\n    metrics:\r\n"
    "    - type: accuracy\r\n      value: 0.951\r\n      name: our training eval\r\n"
    "datasets:   [celeba]\r\n---\r\n\r\n# blond-net\r\n\r\nTrained by the team.  \r\n\r\n"
    "## Bias, risks, and limitations (team)\r\n\r\nOur own words.\r\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("card")
    examples, predictions = simulate_binary(
        n_examples=1500, n_replicas=3, seed=5,
        harms=(PlantedHarm("gmp-90", {"Male": True, "Young": False}, "fpr", 0.3),))
    examples.to_parquet(base / "ex.parquet")
    predictions.to_parquet(base / "pr.parquet")
    assert main(["analyze", "--examples", str(base / "ex.parquet"), "--predictions",
                 str(base / "pr.parquet"), "--out", str(base / "run"), "--bootstrap", "20",
                 "--no-progress"]) == 0
    assert main(["gate", str(base / "run")]) == 1
    return base / "run"


def _numbers(metrics: dict, rates: set[str]) -> dict[tuple[str, str], tuple]:
    """(metric, name) -> (value, lo, hi) straight from metrics.json."""
    out = {("accuracy", f"top-1 accuracy ({v})"): (a["top1_mean"], a["top1_lo"], a["top1_hi"])
           for v, a in metrics["accuracy"].items()}
    for r in metrics["subgroups"]:
        if r["metric"] in rates and r["mean"] is not None:
            out[(r["metric"], f"{r['metric']} {r['subgroup']} ({r['variant']})")] = (
                r["mean"], r["lo"], r["hi"])
    return out


def test_the_card_parses_back_with_the_numbers_of_metrics_json(run, capsys):
    assert main(["card", str(run)]) == 0
    card = hub.ModelCard.load(run / "model_card.md")
    metrics = json.loads((run / "metrics.json").read_text())
    got = {(r.metric_type, r.metric_name): (r.metric_value, r.metric_args["lo"],
                                            r.metric_args["hi"])
           for r in card.data.eval_results}
    expected = _numbers(metrics, {"fpr", "fnr"})  # the default policy checks FPR and FNR
    assert got == expected and len(got) > 3 * 9
    assert card.data.model_name == "run"
    text = card.text
    for name in SECTIONS:
        assert MARKER_BEGIN.format(name) in text and MARKER_END.format(name) in text
    gate = json.loads((run / "gate" / "gate.json").read_text())
    failed = [c for c in gate["checks"] if c["verdict"] == "fail"]
    assert f"{len(failed)} check(s) failed" in text and failed
    assert "Bias, risks, and limitations" in text and "Male, Young" in text
    assert "Slice discovery (clusters of dense embeddings, `[analysis.slices]`) was not run" in text


def test_into_fills_a_team_card_and_keeps_every_other_byte(run, tmp_path):
    team = tmp_path / "README.md"
    team.write_bytes(TEAM_CARD.encode())
    assert main(["card", str(run), "--into", str(team)]) == 0
    once = team.read_bytes().decode()
    # Outside the model-index block and compaudit's sections, nothing changed.
    start = once.index("model-index:")
    end = once.index("datasets:   [celeba]")
    rest = once[:start] + once[end:once.index(MARKER_BEGIN.format(SECTIONS[0]))]
    original = TEAM_CARD[:TEAM_CARD.index("model-index:")] + TEAM_CARD[TEAM_CARD.index(
        "datasets:   [celeba]"):]
    assert rest == original + "\r\n"
    assert "\n" not in once.replace("\r\n", "")  # the card's CRLF line endings are kept
    card = hub.ModelCard.load(team)
    names = [r.metric_name for r in card.data.eval_results]
    assert names[0] == "our training eval" and card.data.model_name == "blond-net"
    assert "top-1 accuracy (gmp-90)" in names
    # Filling again replaces compaudit's parts in place: the same bytes.
    assert main(["card", str(run), "--into", str(team)]) == 0
    assert team.read_bytes().decode() == once
    # A team edit between the markers' sections survives a refill.
    edited = once.replace("Trained by the team.", "Trained by the team, edited.")
    team.write_bytes(edited.encode())
    assert main(["card", str(run), "--into", str(team)]) == 0
    assert team.read_bytes().decode() == edited


def test_into_a_missing_card_is_bad_input(run, tmp_path, capsys):
    assert main(["card", str(run), "--into", str(tmp_path / "nope.md")]) == 2
    assert "nope.md: model card not found" in capsys.readouterr().err


def test_without_huggingface_hub_the_error_names_the_extra(run, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)  # not installed
    assert main(["card", str(run), "--out", str(run / "x.md")]) == 2
    assert "install the 'card' extra" in capsys.readouterr().err
    assert not (run / "x.md").exists()


def test_the_card_lists_the_slices_compression_broke(tmp_path):
    pop, emb, _ = simulate_slices(n_examples=1200, size=0.12, effect=0.4, seed=4)
    rows = []
    for name, v in pop.variants.items():
        for r, rid in enumerate(v.replicas):
            pred = v.pred[r].astype("int64")
            rows.append(pd.DataFrame({
                "variant": name, "replica": int(rid),
                "example_id": pop.examples["example_id"].astype(str), "pred": pred,
                "p_true": (pred == pop.labels).astype("float32"),
                "p_pos": pred.astype("float32")}))
    pop.examples.to_parquet(tmp_path / "ex.parquet")
    pd.concat(rows, ignore_index=True).to_parquet(tmp_path / "pr.parquet")
    write_embeddings(pop.examples["example_id"].to_numpy(), emb, tmp_path / "emb.npz")
    run = tmp_path / "run"
    assert main(["analyze", "--examples", str(tmp_path / "ex.parquet"), "--predictions",
                 str(tmp_path / "pr.parquet"), "--embeddings", str(tmp_path / "emb.npz"),
                 "--out", str(run), "--bootstrap", "200", "--no-progress"]) == 0
    assert main(["card", str(run)]) == 0
    text = hub.ModelCard.load(run / "model_card.md").text
    table = pd.read_csv(run / "tables" / "slices.csv")
    hit = table[(table["q"] < 0.05) & (table["change"] > 0)].sort_values("change",
                                                                          ascending=False)
    assert len(hit) >= 1  # the planted slice (+40 points) is significant
    top = hit.iloc[0]
    assert (f"- {top['variant']}, slice {top['slice']} ({top['n']:,} examples): error "
            f"{100 * top['dense_error']:.1f}% -> {100 * top['compressed_error']:.1f}%") in text
    # Slices not significantly hurt are not listed.
    for _, r in table[~table.index.isin(hit.index)].iterrows():
        assert f"slice {r['slice']} ({r['n']:,} examples)" not in text
