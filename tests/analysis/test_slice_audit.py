"""Slice discovery inside the analysis: files in, ``slices.csv``, ``slice_members.csv`` and
the typed ``slices`` block out, on a simulated population with one planted slice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compaudit.analysis.audit import AnalysisOptions, analyze_files
from compaudit.analysis.slice_audit import SliceSettings
from compaudit.analysis.slices import TABLE_COLUMNS, SliceOptions, find_slices
from compaudit.errors import AuditInputError
from compaudit.schema import read_metrics
from compaudit.simulate import simulate_slices
from compaudit.tables import write_embeddings, write_examples, write_predictions


def _predictions(pop) -> pd.DataFrame:
    """The population's predictions as the predictions table (binary: p_pos = pred)."""
    rows = []
    for name, v in pop.variants.items():
        for r, rid in enumerate(v.replicas):
            pred = v.pred[r].astype(np.int64)
            rows.append(pd.DataFrame({
                "variant": name, "replica": int(rid),
                "example_id": pop.examples["example_id"].astype(str), "pred": pred,
                "p_true": (pred == pop.labels).astype(np.float32),
                "p_pos": pred.astype(np.float32)}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    pop, emb, truth = simulate_slices(n_examples=1200, size=0.12, effect=0.4, seed=4)
    examples = pop.examples.copy()
    # A shifted copy of two examples: the embeddings need rows for the analysed shift only.
    shifted = examples.iloc[:2].assign(example_id=["c/0", "c/1"], shift="contrast",
                                       severity=1)
    write_examples(pd.concat([examples, shifted], ignore_index=True), root / "ex.parquet")
    preds = _predictions(pop)
    extra = preds[preds["example_id"].isin(examples["example_id"][:2])].assign(
        example_id=lambda f: f["example_id"].map(
            dict(zip(examples["example_id"][:2], ["c/0", "c/1"]))))
    write_predictions(pd.concat([preds, extra], ignore_index=True), root / "pr.parquet",
                      examples=pd.concat([examples, shifted], ignore_index=True))
    # Rows in another order than the examples: they are matched by id.
    order = np.random.default_rng(0).permutation(len(examples))
    write_embeddings(examples["example_id"].to_numpy()[order], emb[order], root / "emb.npz")
    return root, pop, emb, truth


def test_analysis_writes_the_slice_tables_and_block(planted, tmp_path):
    root, pop, emb, truth = planted
    options = AnalysisOptions(bootstrap=200, slices=SliceSettings(n_slices=6, typical=4))
    result = analyze_files(root / "ex.parquet", root / "pr.parquet", options,
                           embeddings=root / "emb.npz")
    result.write(tmp_path)
    table = pd.read_csv(tmp_path / "tables" / "slices.csv")
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table["variant"]) == {"compressed"}
    assert list(table["slice"]) == list(range(len(table)))
    members = pd.read_csv(tmp_path / "tables" / "slice_members.csv", dtype={"example_id": str})
    assert list(members.columns) == ["variant", "slice", "example_id"]
    # Every analysed example (not the shifted copies) is in exactly one slice.
    assert sorted(members["example_id"]) == sorted(pop.examples["example_id"])
    sizes = members.groupby("slice").size()
    assert sizes.to_dict() == dict(zip(table["slice"], table["n"]))
    # Independent reference: find_slices on the arrays, in the examples' order.
    direct = find_slices(pop, emb, attributes=["Male", "Young"], bootstrap=200,
                         options=SliceOptions(n_slices=6, typical=4))
    np.testing.assert_allclose(table["change"], direct.table["change"], rtol=1e-12)
    np.testing.assert_allclose(table["q"], direct.table["q"], rtol=1e-12)
    # The planted slice is found: slice 0's members are mostly planted ones.
    top = members.loc[members["slice"] == 0, "example_id"]
    precision = top.isin(pop.examples["example_id"][truth]).mean()
    assert precision > 0.8
    # The typed block carries every row, the mappings and the typical ids.
    metrics = read_metrics(tmp_path)
    block = metrics.slices
    assert block is not None and block.n_examples == 1200 and block.dims == 16
    assert block.settings["n_slices"] == 6 and block.source == str(root / "emb.npz")
    assert metrics.inputs["embeddings"]["rows"] == 1200
    assert [(r.variant, r.slice, r.n) for r in block.rows] == list(
        zip(table["variant"], table["slice"], table["n"]))
    first = block.rows[0]
    assert first.change == pytest.approx(table["change"][0])
    assert first.over_index == json.loads(table["over_index"][0])
    assert first.label_mix == json.loads(table["label_mix"][0])
    assert 0 < len(first.typical) <= 4 and set(first.typical) <= set(top)
    assert metrics.options["slices"]["n_slices"] == 6


def test_without_embeddings_there_is_no_slice_block(planted, tmp_path):
    root, *_ = planted
    result = analyze_files(root / "ex.parquet", root / "pr.parquet",
                           AnalysisOptions(bootstrap=0))
    assert result.metrics.slices is None and "slices" not in result.tables


def test_embeddings_missing_an_example_name_the_file(planted, tmp_path):
    root, pop, emb, _ = planted
    write_embeddings(pop.examples["example_id"].to_numpy()[1:], emb[1:], tmp_path / "e.npz")
    with pytest.raises(AuditInputError, match=r"e\.npz: column 'example_id': no row for 1 of "
                                              r"the 1200 analysed examples \(e\.g\. "
                                              r"'slices/000000'\)"):
        analyze_files(root / "ex.parquet", root / "pr.parquet", AnalysisOptions(bootstrap=0),
                      embeddings=tmp_path / "e.npz")


def test_a_rerun_without_embeddings_retires_the_older_slice_tables(planted, tmp_path):
    root, *_ = planted
    with_slices = AnalysisOptions(bootstrap=0, slices=SliceSettings(n_slices=4))
    analyze_files(root / "ex.parquet", root / "pr.parquet", with_slices,
                  embeddings=root / "emb.npz").write(tmp_path)
    assert (tmp_path / "tables" / "slices.csv").is_file()
    analyze_files(root / "ex.parquet", root / "pr.parquet",
                  AnalysisOptions(bootstrap=0)).write(tmp_path)
    tables = {p.name for p in (tmp_path / "tables").iterdir()}
    assert "slices.csv" not in tables and "slice_members.csv" not in tables
    assert "subgroups.csv" in tables and read_metrics(tmp_path).slices is None


def test_a_folder_without_older_metrics_keeps_a_file_named_like_a_table(planted, tmp_path):
    root, *_ = planted
    mine = tmp_path / "tables" / "slices.csv"
    mine.parent.mkdir()
    mine.write_text("not compaudit's\n")
    analyze_files(root / "ex.parquet", root / "pr.parquet",
                  AnalysisOptions(bootstrap=0)).write(tmp_path)
    assert mine.read_text() == "not compaudit's\n"
