"""Footprint section: one row per variant from ``variants.json``."""

from __future__ import annotations

from compaudit.report.sections import ReportOptions
from compaudit.report.sections.footprint import render_footprint
from compaudit.schema import VARIANT_FIELDS, VariantRecord

EVIL = "<script>alert(1)</script>"
ACCURACY = {"gmp-90": {"top1_mean": 0.92, "top1_lo": 0.91, "top1_hi": 0.93}}


def _render(run):
    return render_footprint(run, ReportOptions())


def _record(method="gradual_magnitude", parameters=None, **fields):
    """A variants.json record with ``fields`` measured, the rest not (None)."""
    extra = {k: fields.pop(k) for k in list(fields) if k not in VARIANT_FIELDS}
    return VariantRecord(**{**dict.fromkeys(VARIANT_FIELDS), "method": method,
                            "parameters": parameters or {}, **fields}, extra=extra)


def test_without_variants_json_it_is_a_note(make_run, text_of, tables_of):
    html = _render(make_run())
    assert "Not available in this run: no variants.json" in text_of(html)
    assert tables_of(html) == []


def test_row_shows_the_recorded_fields(make_run, tables_of):
    info = {"gmp-90": _record("gmp", {"final_sparsity": 0.9},
                              derives_from="dense", sparsity=0.9, parameter_count=11_200_000,
                              nonzero_count=1_120_000, size_bytes=3 * 2**20,
                              compressed_size_bytes=2**20, macs=4_000_000_000,
                              theoretical_speedup=4.0, latency_ms=1.25, latency_batch_size=32,
                              pruning_penalty=0.125, execution={"a": 1, "b": 2})}
    [table] = tables_of(_render(make_run({"accuracy": ACCURACY}, variants_info=info)))
    row = table.records()[1]
    assert row == {
        "variant": "gmp-90 from dense", "method": "gmp",
        "parameters (other fields below)": 'final_sparsity=0.9 pruning_penalty=0.125, '
                                           'execution: 2 entries',
        "sparsity": "90.0%", "non-zero weights": "1.12M of 11.2M",
        "size on disk": "3.00 MiB 1.00 MiB compressed", "int8 weights": "n/a",
        "MACs": "4G", "theoretical speedup": "4.00×",
        "latency": "1.25 ms batch 32", "top-1": "92.00% [91.00, 93.00]"}
    assert table.attr(1, "theoretical speedup", "data-sort") == "4.0"


def test_int8_shares_and_latency_kernel_are_shown(make_run, tables_of):
    info = {"gmp-90": _record("int8_static", int8_weight_share=1.0, int8_op_share=0.8,
                              latency_ms=2.0, latency_batch_size=1,
                              latency_kernel="onnxruntime"),
            "dense": _record("int8_weight_only", int8_weight_share=0.75, latency_ms=3.0,
                             latency_batch_size=1, latency_kernel="simulated")}
    [table] = tables_of(_render(make_run(variants_info=info)))
    dense, onnx = table.records()[0], table.records()[1]
    assert onnx["int8 weights"] == "100% 80% of ops"
    assert onnx["latency"] == "2.00 ms batch 1, ONNX Runtime"
    assert dense["int8 weights"] == "75%"
    assert dense["latency"] == "3.00 ms batch 1, simulated, not int8/fp16 speed"
    # the new fields have their own columns, not the "other fields" list
    assert "kernel" not in onnx["parameters (other fields below)"]


def test_recorded_speedup_and_unknown_fields_are_na(make_run, tables_of):
    info = {"gmp-90": _record(macs=4_000_000_000, theoretical_speedup=3.5)}
    [table] = tables_of(_render(make_run(variants_info=info)))
    gmp, dense = table.records()[1], table.records()[0]
    assert gmp["theoretical speedup"] == "3.50×"
    # dense has no record: every measured column says n/a.
    assert [dense[k] for k in ("method", "sparsity", "size on disk", "latency", "top-1")] == [
        "n/a"] * 5


def test_variants_only_in_variants_json_follow_the_run_variants(make_run, tables_of):
    info = {"extra": _record("x"), "dense": _record("dense")}
    [table] = tables_of(_render(make_run(variants_info=info)))
    assert table.column("variant") == ["dense", "gmp-90", "extra"]


def test_hostile_strings_are_escaped(make_run, tags_of, tables_of):
    info = {EVIL: _record(EVIL, {"name": EVIL})}
    html = _render(make_run(variants_info=info, variants=("dense", EVIL)))
    assert "script" not in tags_of(html)
    row = tables_of(html)[0].records()[1]
    assert row["variant"] == EVIL and row["method"] == EVIL
    assert row["parameters (other fields below)"] == f'name="{EVIL}"'
