"""The model card sections an audit fills (Hugging Face model card conventions).

``write_card(run_dir)`` writes a card whose YAML front matter holds the evaluation
results per variant (top-1, and the gate's checked rates per subgroup with their
intervals) as ``model-index`` entries, and whose body holds three sections: the
evaluation results, "Bias, risks, and limitations" (failing and inconclusive checks,
the PIE over-index, the recommended operating point), and the audit's data, statistics
and what it did not cover. ``into=`` fills or replaces those sections in a team's
existing card: the body sections between compaudit's HTML comment markers, and in the
front matter the ``model-index`` block (results that compaudit did not write are kept);
every other byte stays as it was.

Needs ``huggingface_hub`` (the ``card`` extra); nothing is fetched from the network.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from compaudit._atomic import atomic_path
from compaudit.errors import AuditInputError
from compaudit.gate.policy import SubgroupRatePolicy
from compaudit.rundir import RunFolder, gate_files
from compaudit.schema import (
    GateCheck,
    GateDoc,
    Metrics,
    read_gate,
    read_metrics,
    read_run_info,
)

__all__ = ["MARKER_BEGIN", "MARKER_END", "SECTIONS", "card_results", "write_card"]

#: Body sections compaudit owns, in order; each lies between its two markers.
SECTIONS = ("evaluation", "limitations", "audit")
MARKER_BEGIN = "<!-- compaudit:begin {} -->"
MARKER_END = "<!-- compaudit:end {} -->"
#: ``metric_args`` key that marks a model-index result as compaudit's.
_OURS = ("written_by", "compaudit")
_TASK = "image-classification"
_FRONT = re.compile(r"---(\r?\n)(.*?\r?\n)?---(\r?\n|$)", re.S)


def _hub() -> Any:
    """``huggingface_hub``, offline; a clear error naming the extra when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a card never needs the network
    try:
        import huggingface_hub
    except ImportError as err:
        raise AuditInputError("compaudit card needs huggingface_hub; install the 'card' "
                              "extra: pip install 'compaudit[card]'") from err
    return huggingface_hub


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or _missing(value) else f"{100 * value:.1f}%"


def _amount(value: float | None, unit: str) -> str:
    if value is None or _missing(value):
        return "n/a"
    return f"{100 * value:+.1f} pp" if unit == "points" else f"{value:+.1f}{unit}"


def _gate(folder: RunFolder) -> GateDoc | None:
    path = gate_files(folder.gate)["json"]
    return read_gate(path) if path.is_file() else None


def _checked_rates(gate: GateDoc | None) -> list[str]:
    """The rates the gate checked per subgroup (its policy's defaults without a gate)."""
    if gate is None:
        return list(SubgroupRatePolicy().metrics)
    return sorted({c.metric for c in gate.checks if c.kind == "subgroup_rate"})


def _dataset(folder: RunFolder) -> str:
    if folder.run_json.is_file():
        name = read_run_info(folder.run_json).data.get("name")
        if name:
            return str(name)
    return "audit-examples"


def card_results(metrics: Metrics, gate: GateDoc | None, *,
                 dataset: str) -> list[Any]:
    """The ``EvalResult`` entries of a run: top-1 per variant, then each checked rate
    per subgroup and variant, with the interval bounds in ``metric_args``."""
    hub = _hub()
    level, shift = metrics.level, metrics.shift

    def result(metric: str, value: float, name: str, variant: str, **args: Any) -> Any:
        return hub.EvalResult(task_type=_TASK, dataset_type=dataset, dataset_name=dataset,
                              dataset_config=shift, metric_type=metric, metric_value=value,
                              metric_name=name, metric_config=variant,
                              metric_args={**args, "level": level, _OURS[0]: _OURS[1]})

    out = [result("accuracy", acc["top1_mean"], f"top-1 accuracy ({variant})", variant,
                  lo=acc["top1_lo"], hi=acc["top1_hi"], replicas=acc["replicas"])
           for variant, acc in metrics.accuracy.items() if acc.get("top1_mean") is not None]
    rates = _checked_rates(gate)
    for row in metrics.subgroups:
        if row["metric"] in rates and row.get("mean") is not None:
            out.append(result(row["metric"], row["mean"],
                              f"{row['metric']} {row['subgroup']} ({row['variant']})",
                              row["variant"], subgroup=row["subgroup"], lo=row["lo"],
                              hi=row["hi"], n=row["n"]))
    return out


def _evaluation(metrics: Metrics, gate: GateDoc | None) -> str:
    level = 100 * metrics.level
    lines = ["## Evaluation results", "",
             f"Measured by compaudit on {metrics.task.n_examples:,} examples "
             f"(shift `{metrics.shift}`); {level:g}% intervals. Per-subgroup "
             "rates are in the front matter (`model-index`) and in `report.html`.", "",
             "| variant | replicas | top-1 accuracy | interval |", "|---|---|---|---|"]
    for variant, acc in metrics.accuracy.items():
        lines.append(f"| {variant} | {acc['replicas']} | {_pct(acc.get('top1_mean'))} | "
                     f"{_pct(acc.get('top1_lo'))} to {_pct(acc.get('top1_hi'))} |")
    if gate is not None:
        lines += ["", f"Gate verdict: **{gate.verdict.upper()}** "
                      f"({len(gate.checks)} checks)."]
    return "\n".join(lines)


def _check_line(c: GateCheck) -> str:
    return (f"- {c.variant}, {c.subject}: {c.metric} changed by "
            f"{_amount(c.estimate, c.unit)} (interval {_amount(c.lo, c.unit)} "
            f"to {_amount(c.hi, c.unit)}; tolerance "
            f"{_amount(c.tolerance, c.unit).lstrip('+')})")


def _limitations(metrics: Metrics, gate: GateDoc | None, limit: int = 10) -> str:
    lines = ["## Bias, risks, and limitations", ""]
    if gate is None:
        lines.append("No gate was run on this audit: run `compaudit gate` for the checks.")
    else:
        failed = [c for c in gate.checks if c.verdict == "fail"]
        unsure = [c for c in gate.checks if c.verdict == "inconclusive"]
        lines.append(f"{len(failed)} check(s) failed: compression harmed these beyond the "
                     "tolerance, with the interval wholly past it:" if failed
                     else "No check failed.")
        lines += [_check_line(c) for c in failed[:limit]]
        if len(failed) > limit:
            lines.append(f"- ... and {len(failed) - limit} more (see report.html)")
        if unsure:
            lines += ["", f"{len(unsure)} check(s) were inconclusive: the interval contains "
                          "the tolerance, so the data cannot tell harm from no harm "
                          "(more examples or replicas would)."]
        lines += ["", "Recommended operating point (most compressed variant of each "
                      "family that passes every check):"]
        for p in gate.operating_points:
            lines.append(f"- {p['family']}: {p['recommended'] or 'none passes every check'}")
    # NaN q (a cell without PIEs or non-PIEs) compares False: never listed.
    grown = sorted((r for r in metrics.overindex
                    if r.q_value < 0.05 and r.relative_growth_pct > 0),
                   key=lambda r: -r.relative_growth_pct)
    lines += ["", "Pruning identified exemplars (PIE) over-index (label x attribute cells "
                  "over-represented among the examples compression changed, q < 0.05):"]
    for r in grown[:limit]:
        cell = ", ".join(f"{k[5:]}={v}" for k, v in r.cell.items() if k.startswith("attr."))
        lines.append(f"- {r.variant}: label {r.cell['label']}, {cell}: "
                     f"{r.relative_growth_pct:+.0f}% ({r.n_pie} PIEs)")
    if not grown:
        lines.append("- none")
    lines += ["", *_slice_lines(metrics, limit)]
    return "\n".join(lines)


def _slice_lines(metrics: Metrics, limit: int) -> list[str]:
    """Slices (clusters of dense embeddings) whose error compression raised, q < 0.05."""
    if metrics.slices is None:
        return ["Slice discovery (clusters of dense embeddings, `[analysis.slices]`) was "
                "not run in this audit: harm to groups no attribute names is not covered."]
    # NaN q (a slice too small to test) compares False: never listed.
    hit = sorted((r for r in metrics.slices.rows if r.q < 0.05 and r.change > 0),
                 key=lambda r: -r.change)
    lines = ["Slices compression breaks (clusters of the dense model's embeddings whose "
             "error rose, q < 0.05; `tables/slices.csv`):"]
    lines += [f"- {r.variant}, slice {r.slice} ({r.n:,} examples): error "
              f"{100 * r.dense_error:.1f}% -> {100 * r.compressed_error:.1f}% "
              f"({100 * r.change:+.1f} points, interval {100 * r.change_lo:+.1f} to "
              f"{100 * r.change_hi:+.1f}); {r.description}" for r in hit[:limit]]
    if len(hit) > limit:
        lines.append(f"- ... and {len(hit) - limit} more (see report.html)")
    if not hit:
        lines.append("- none")
    return lines


def _audit(metrics: Metrics, gate: GateDoc | None, dataset: str) -> str:
    task = metrics.task
    kind = metrics.subgroup_method.kind if metrics.subgroup_method else "bootstrap"
    shifts = [s for s in task.shifts if s != "clean"]
    replicas = min((a["replicas"] for a in metrics.accuracy.values()), default=0)
    lines = ["## Audit: data, statistics and coverage", "",
             f"Data: {dataset}, {task.n_examples:,} evaluation examples; protected "
             f"attributes audited: {', '.join(task.attributes) or 'none'}; shifts: "
             f"{', '.join(shifts) or 'none'}.", "",
             "Statistics: every rate is compared between each compressed variant and the "
             "dense model it derives from, per subgroup and intersection; intervals are "
             f"{100 * metrics.level:g}% "
             f"({kind}); the gate's checks hold together "
             "(Bonferroni). "
             + (f"{gate.inference}. " if gate and gate.inference else "")
             + "The methods and every number are in `report.html`; `audit_record.json` "
               "holds the hashes that `compaudit verify` checks.", "",
             "Not covered by this audit:",
             "- attributes absent from the examples (only those listed above were audited);"]
    if not shifts:
        lines.append("- distribution shift: no corrupted or shifted data was tested;")
    if replicas <= 1:
        lines.append("- seed-to-seed variation: a population of one model per variant, so "
                     "the intervals cover the examples only;")
    lines.append("- data beyond the evaluation set, and uses other than the audited task.")
    return "\n".join(lines)


def _sections(metrics: Metrics, gate: GateDoc | None, dataset: str
              ) -> dict[str, str]:
    bodies = {"evaluation": _evaluation(metrics, gate),
              "limitations": _limitations(metrics, gate),
              "audit": _audit(metrics, gate, dataset)}
    return {name: f"{MARKER_BEGIN.format(name)}\n{bodies[name]}\n{MARKER_END.format(name)}"
            for name in SECTIONS}


def _model_index(data: Any, results: list[Any], name: str) -> str:
    """The ``model-index`` YAML block: the card's own results kept, compaudit's replaced."""
    hub = _hub()
    kept = [r for r in (data.eval_results or [])
            if (r.metric_args or {}).get(_OURS[0]) != _OURS[1]]
    return hub.ModelCardData(model_name=data.model_name or name,
                             eval_results=kept + results).to_yaml()


def _replace_block(yaml: str, key: str, block: str, nl: str) -> str:
    """``yaml`` with its top-level ``key:`` block replaced by ``block`` (or appended)."""
    lines = yaml.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{key}:")), None)
    new = block.replace("\n", nl).rstrip("\r\n") + nl
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += nl
        return "".join(lines) + new
    end = start + 1
    while end < len(lines) and (lines[end][:1] in (" ", "\t", "-") or not lines[end].strip()):
        end += 1
    return "".join(lines[:start]) + new + "".join(lines[end:])


def _fill(text: str, sections: dict[str, str], results: list[Any], name: str, source: Path
          ) -> str:
    """``text`` (an existing card) with compaudit's parts filled in or replaced."""
    hub = _hub()
    nl = "\r\n" if "\r\n" in text else "\n"
    m = _FRONT.match(text)
    try:
        data = hub.ModelCard(text, ignore_metadata_errors=True).data
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises several kinds
        raise AuditInputError(f"{source}: cannot parse the model card's front matter "
                              f"({err}); expected YAML between '---' lines") from err
    block = _model_index(data, results, name)
    if m:
        yaml = _replace_block(m.group(2) or "", "model-index", block, nl)
        text = f"---{m.group(1)}{yaml}---{m.group(3) or nl}" + text[m.end():]
    else:
        text = f"---{nl}{block.replace(chr(10), nl).rstrip()}{nl}---{nl}{nl}" + text
    for section, body in sections.items():
        body = body.replace("\n", nl)
        begin, end = MARKER_BEGIN.format(section), MARKER_END.format(section)
        i, j = text.find(begin), text.find(end)
        if i >= 0 and j > i:
            text = text[:i] + body + text[j + len(end):]
        else:
            if text and not text.endswith("\n"):
                text += nl
            text += nl + body + nl
    return text


def write_card(run_dir: str | Path, *, out: str | Path | None = None,
               into: str | Path | None = None) -> Path:
    """Write the card of the run in ``run_dir``; return its path.

    ``out`` defaults to ``RUN_DIR/model_card.md``, or with ``into`` to that file
    (filled in place). The written card parses back with ``ModelCard.load``.
    """
    hub = _hub()
    folder = RunFolder(Path(run_dir))
    metrics = read_metrics(folder.root)
    gate = _gate(folder)
    dataset = _dataset(folder)
    results = card_results(metrics, gate, dataset=dataset)
    sections = _sections(metrics, gate, dataset)
    name = folder.root.absolute().name
    if into is not None:
        into = Path(into)
        if not into.is_file():
            raise AuditInputError(f"{into}: model card not found; expected an existing "
                                  "Markdown card for --into")
        with open(into, encoding="utf-8", newline="") as f:  # keep its line endings
            text = _fill(f.read(), sections, results, name, into)
        target = Path(out) if out is not None else into
    else:
        data = hub.ModelCardData(model_name=name, eval_results=results,
                                 pipeline_tag=_TASK, tags=["compaudit", "compression-audit"])
        text = (f"---\n{data.to_yaml()}\n---\n\n# Model card: {name}\n\n"
                + "\n\n".join(sections.values()) + "\n")
        target = Path(out) if out is not None else folder.root / "model_card.md"
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)  # newline="": a team's CRLF card stays CRLF
    return target
