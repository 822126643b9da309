"""Compression footprint: what each variant is and what it saves (from ``variants.json``)."""

from __future__ import annotations

import json
from typing import Any

from compaudit.report.format import NA, finite, nbytes, pct, si, sort_key
from compaudit.report.html import Cell, Html, interval_cell, join, note, sortable_table, tag
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import NOT_AVAILABLE, ReportOptions

__all__ = ["render_footprint"]

#: variants.json fields the table shows in its own columns (with older aliases); the
#: operating-point family and axis are the method's (its column).
_SHOWN = frozenset({
    "name", "variant", "method", "family", "axis", "parameters", "derives_from", "sparsity", "parameter_count",
    "params", "nonzero_count", "nonzeros", "size_bytes", "compressed_size_bytes", "macs",
    "nonzero_macs", "theoretical_speedup", "latency_ms", "latency_batch_size",
    "int8_weight_share", "int8_op_share", "latency_kernel",
})
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


def _speedup(info: dict[str, Any]) -> float | None:
    given = finite(info.get("theoretical_speedup"))
    if given is not None:
        return given
    macs, nz = finite(info.get("macs")), finite(info.get("nonzero_macs"))
    return macs / nz if macs is not None and nz else None


def _latency(info: dict[str, Any]) -> Cell:
    ms = finite(info.get("latency_ms"))
    if ms is None:
        return Cell(NA, sort=float("nan"))
    batch = info.get("latency_batch_size")
    kernel = info.get("latency_kernel")
    below = [f"batch {batch}" if batch is not None else "",
             _KERNELS.get(kernel, str(kernel)) if kernel is not None else ""]
    return interval_cell((f"{ms:,.2f} ms", ", ".join(b for b in below if b)), sort=ms)


def _int8(info: dict[str, Any]) -> Cell:
    """Share of conv/linear weights stored as int8, and of ONNX compute nodes run in int8."""
    weights, ops = finite(info.get("int8_weight_share")), finite(info.get("int8_op_share"))
    return _pair(pct(weights, 0) if weights is not None else NA,
                 f"{pct(ops, 0)} of ops" if ops is not None else "", weights)


def _pair(main: str, below: str, sort: Any) -> Cell:
    """A value with a secondary one in small type below (sorted by the first)."""
    return interval_cell((main, below if below and below != NA else ""), sort=sort_key(sort))


def _first(info: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present (``variants.json`` field names, then older aliases)."""
    return next((info[k] for k in keys if info.get(k) is not None), None)


def _extras(info: dict[str, Any]) -> str:
    """Fields beyond the table's columns (pruning penalty, execution, ...): scalars as
    k=v, nested records by their size only (the full record is in variants.json)."""
    parts = []
    for k, v in info.items():
        if k in _SHOWN or v is None:
            continue
        if isinstance(v, (dict, list, tuple)):
            parts.append(f"{k}: {len(v)} entries")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def _parameters(info: dict[str, Any]) -> Cell:
    params = _params_text(info.get("parameters"))
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
        info = run.variants_info.get(v, {})
        a = acc.get(v, {})
        params = finite(_first(info, "parameter_count", "params"))
        nz = finite(_first(info, "nonzero_count", "nonzeros"))
        speed = _speedup(info)
        derives = info.get("derives_from")
        rows.append([
            _pair(v, f"from {derives}" if derives else "", v),
            info.get("method", NA),
            _parameters(info),
            _num_cell(info.get("sparsity"), pct(info.get("sparsity"), 1)),
            _pair(si(nz), f"of {si(params)}" if params is not None else "", nz),
            _pair(nbytes(info.get("size_bytes")),
                  f"{nbytes(info.get('compressed_size_bytes'))} compressed"
                  if info.get("compressed_size_bytes") is not None else "",
                  info.get("size_bytes")),
            _int8(info),
            _pair(si(info.get("macs")), f"{si(info.get('nonzero_macs'))} non-zero"
                  if info.get("nonzero_macs") is not None else "", info.get("macs")),
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
