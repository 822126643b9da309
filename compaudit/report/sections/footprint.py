"""Compression footprint: what each variant is and what it saves (from ``variants.json``)."""

from __future__ import annotations

import json
from typing import Any

from compaudit.report.format import NA, finite, nbytes, pct, si, sort_key
from compaudit.report.html import Cell, Html, interval_cell, join, note, sortable_table, tag
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import NOT_AVAILABLE, ReportOptions
from compaudit.schema import VariantRecord

__all__ = ["render_footprint"]

#: How the latency cell names ``latency_kernel`` (compaudit.compress.footprint).
_KERNELS = {"onnxruntime": "ONNX Runtime", "torch": "torch kernels",
            "simulated": "simulated, not int8/fp16 speed"}


def _params_text(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, dict):
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in value.items()) or "—"
    return json.dumps(value) if not isinstance(value, str) else value


def _num_cell(value: Any, text: str) -> Cell:
    v = finite(value)
    return Cell(text, sort=v if v is not None else float("nan"))


def _latency(info: VariantRecord) -> Cell:
    ms = finite(info.latency_ms)
    if ms is None:
        return Cell(NA, sort=float("nan"))
    batch = info.latency_batch_size
    kernel = info.latency_kernel
    below = [f"batch {batch}" if batch is not None else "",
             _KERNELS.get(kernel, str(kernel)) if kernel is not None else ""]
    return interval_cell((f"{ms:,.2f} ms", ", ".join(b for b in below if b)), sort=ms)


def _int8(info: VariantRecord) -> Cell:
    """Share of conv/linear weights stored as int8, and of ONNX compute nodes run in int8."""
    weights, ops = finite(info.int8_weight_share), finite(info.int8_op_share)
    return _pair(pct(weights, 0) if weights is not None else NA,
                 f"{pct(ops, 0)} of ops" if ops is not None else "", weights)


def _pair(main: str, below: str, sort: Any) -> Cell:
    """A value with a secondary one in small type below (sorted by the first)."""
    return interval_cell((main, below if below and below != NA else ""), sort=sort_key(sort))


def _extras(info: VariantRecord) -> str:
    """The method's own fields (pruning penalty, execution, ...): scalars as k=v, nested
    records by their size only (the full record is in variants.json)."""
    parts = []
    for k, v in info.extra.items():
        if v is None:
            continue
        if isinstance(v, (dict, list, tuple)):
            parts.append(f"{k}: {len(v)} entries")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def _parameters(info: VariantRecord) -> Cell:
    params = _params_text(info.parameters)
    extras = _extras(info)
    text = join([params, tag("span", extras, class_="ci")]) if extras else params
    return Cell(text, sort=params, cls="wrap")


def _top1(a: dict[str, Any]) -> Cell:
    text = pct(a.get("top1_mean"), 2)
    lo, hi = finite(a.get("top1_lo")), finite(a.get("top1_hi"))
    ci = f"[{100 * lo:.2f}, {100 * hi:.2f}]" if lo is not None and hi is not None else ""
    return interval_cell((text, ci), sort=sort_key(a.get("top1_mean")))


def render_footprint(run: RunData, options: ReportOptions) -> Html:
    """Table of method, sparsity, parameters, size, MACs and latency per variant."""
    if not run.variants_info:
        return note(f"{NOT_AVAILABLE}: no variants.json in the run directory (it is written "
                    "by the compress stage of 'compaudit run'; runs analysed from prediction "
                    "files alone have no footprint).")
    acc = run.metrics.accuracy
    names = run.variants + [v for v in run.variants_info if v not in run.variants]
    rows = []
    for v in names:
        a = acc.get(v, {})
        info = run.variants_info.get(v)
        if info is None:  # analysed, but not in variants.json
            rows.append([_pair(v, "", v), NA, *[_num_cell(None, NA)] * 8, _top1(a)])
            continue
        params, nz = finite(info.parameter_count), finite(info.nonzero_count)
        speed = finite(info.theoretical_speedup)
        rows.append([
            _pair(v, f"from {info.derives_from}" if info.derives_from else "", v),
            info.method,
            _parameters(info),
            _num_cell(info.sparsity, pct(info.sparsity, 1)),
            _pair(si(nz), f"of {si(params)}" if params is not None else "", nz),
            _pair(nbytes(info.size_bytes),
                  f"{nbytes(info.compressed_size_bytes)} compressed"
                  if info.compressed_size_bytes is not None else "", info.size_bytes),
            _int8(info),
            _pair(si(info.macs), "", info.macs),
            _num_cell(speed, f"{speed:.2f}×" if speed is not None else NA),
            _latency(info),
            _top1(a),
        ])
    headers = ["variant", "method", "parameters (other fields below)", "sparsity",
               "non-zero weights", "size on disk", "int8 weights", "MACs",
               "theoretical speedup", "latency", "top-1"]
    numeric = [False] * 3 + [True] * 8
    return join([
        tag("p", "Sparsity is the share of weights that are exactly zero; theoretical speedup "
                 "is dense MACs over non-zero MACs. Size on disk is the deployable file: the "
                 "state dict with int8 weights as int8 and float16 as float16 (about a "
                 "quarter and a half of float32), or the ONNX file; the compressed size "
                 "below it is a minimal container that also stores sparse tensors as a "
                 "bitmask and their non-zeros (zeros shrink it; no runtime loads it). Int8 "
                 "weights: share of conv/linear weights stored as int8 (and for ONNX "
                 "models, of conv/matmul nodes run by int8 kernels). Latency is measured on "
                 "the audit machine; 'simulated' variants run float32 kernels with "
                 "rounding, so their latency does not show int8 or half-precision speed."),
        sortable_table(headers, rows, numeric=numeric,
                       caption="Footprint per variant (n/a: not recorded for this variant)"),
    ])
