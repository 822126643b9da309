"""Methodology in plain words, and everything needed to reproduce the run."""

from __future__ import annotations

import json
from typing import Any

from compaudit.report.format import number
from compaudit.report.html import Html, join, note, sortable_table, tag
from compaudit.report.rundata import RunData
from compaudit.report.sections._common import ReportOptions

__all__ = ["render_methodology", "DEFINITIONS"]

#: (term, plain-words definition), shown in this order.
DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("Population", "Several independently trained (or independently seeded) models per "
     "variant. Replica k of a compressed variant is derived from dense replica k. Spread "
     "across replicas is the seed-to-seed variation that every comparison must beat."),
    ("PIE (pruning-identified exemplar)", "An example whose most frequent (modal) prediction "
     "across the compressed population differs from the modal prediction across the dense "
     "population. Ties go to the largest class index, as in the public code of Hooker et al.; "
     "the rule is arbitrary and documented here so counts can be reproduced."),
    ("Taxicab score", "The L1 distance between the two populations' normalized histograms of "
     "predicted labels for one example: 0 when both populations vote alike, 2 when they never "
     "agree. The gallery ranks PIEs by it."),
    ("Shifted recall and normalized recall difference", "For class c and replica k, shifted "
     "recall = recall of c − top-1 accuracy of the replica, so a class is judged relative to "
     "the model as a whole. The normalized recall difference is the compressed population's "
     "mean shifted recall minus the dense population's."),
    ("Welch t-test", "A two-sample, two-sided t-test that does not assume equal variances. "
     "Per class it compares the compressed and dense samples of shifted recall; with a single "
     "replica on a side it falls back to an exact per-example test (McNemar when paired, "
     "Fisher otherwise)."),
    ("Paired bootstrap", "Subgroup changes resample the examples with replacement and apply "
     "each resample to the dense and the compressed predictions alike. Intervals are "
     "percentiles of the resampled changes; p-values use the bootstrap standard error "
     "(2·Φ(−|estimate|/se))."),
    ("t-interval over replicas", "Mean ± t quantile × standard error across replicas: how far "
     "the population mean may move with other seeds. Used for accuracy and subgroup rates."),
    ("Benjamini-Hochberg (BH)", "Controls the false discovery rate across many tests: q-values "
     "are p-values adjusted for the number of tests. The paper counts classes at p ≤ 0.05 with "
     "no correction; the report shows both counts."),
    ("PIE over-index", "Per attribute cell, the cell's share among PIEs divided by its share "
     "among non-PIEs, minus one, with Fisher's exact test of the cell against the rest."),
    ("Within-label over-index (Mantel-Haenszel)", "The same ratio computed within each true "
     "label and pooled over labels with the Mantel-Haenszel risk ratio (Greenland-Robins "
     "interval, Cochran-Mantel-Haenszel test), so that PIEs concentrating on one class in "
     "every group do not read as group harm."),
    ("Slices compression breaks", "Groups no attribute names, found from the data: the "
     "dense population's penultimate features (averaged over replicas) are reduced by PCA "
     "and clustered with a Gaussian mixture fitted, on a held-out share of the examples, to "
     "the features beside each example's compression-caused error change (Domino, Eyuboglu "
     "et al.); every example is assigned by the features alone, and each slice's error "
     "change is estimated on the examples the mixture did not see, with the same paired, "
     "seed-aware intervals as subgroups and BH across slices."),
    ("Pre-compression risk screen", "Each example's entropy of the dense replicas' mean "
     "prediction, computed before compression (Iofinova et al., CVPR 2023); validated against "
     "each variant's PIEs by AUROC and precision among the highest-risk examples."),
    ("Bonferroni gate", "The CI gate builds one interval per check, widened so that all of them "
     "hold together at the policy's level (Bonferroni: z for α divided by the number of "
     "checks). A check fails when its whole interval lies above the tolerance, passes when it "
     "lies below, and is inconclusive otherwise."),
    ("Corruption error (CE) and mCE", "Σ over severities of the top-1 error on a corruption, "
     "divided by the same sum for a reference at the same severities (AlexNet for "
     "ImageNet-C, else the dense population), × 100; mCE averages CE over corruptions."),
    ("Calibration error and AURRA", "RMS calibration error compares confidence with accuracy "
     "in adaptive bins of 100 examples; AURRA averages the accuracy of the k most confident "
     "answers over every k."),
    ("Network dissection", "Each unit of a dissected layer is switched on where its "
     "activation is in its top quantile over all pixels of the concept images, and that region "
     "is compared with every concept's pixel masks by IoU (Bau et al.); the unit is "
     "interpretable when its best IoU exceeds the threshold. Replica k of a compressed variant "
     "is compared unit by unit with dense replica k (Frankle & Bau); means over replicas "
     "carry t-intervals."),
)


def _kv_table(pairs: list[tuple[str, Any]], caption: str) -> Html:
    rows = [[k, "n/a" if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True)]
            for k, v in pairs]
    return sortable_table(["field", "value"], rows, caption=caption, numeric=[False, False],
                          cls="kv")


def _run_info(run: RunData) -> list[Html]:
    info = run.run_info
    if info is None:
        return [note("No run.json in the run directory (it is written by 'compaudit run'); "
                     "spec, seeds and data fingerprints are not recorded. The analysis inputs "
                     "below are.")]
    parts: list[Html] = [tag("h3", "Run")]
    pairs: list[tuple[str, Any]] = [
        ("started", info.started), ("finished", info.finished),
        ("spec_sha256", info.spec_sha256), ("seeds", dict(info.seeds)),
        *((f"data.{k}", v) for k, v in info.data.items()), ("spec_path", info.spec_path)]
    parts.append(_kv_table(pairs, "Provenance recorded by the pipeline (run.json)."))
    parts += _timings(info.timings)
    if info.versions:
        parts.append(_kv_table(sorted(info.versions.items()), "Software versions."))
    if info.spec:
        parts += [tag("h3", "Audit spec"), tag("pre", info.spec, class_="spec")]
    return parts


def _timings(timings: Any) -> list[Html]:
    """Wall and CPU seconds of every step of the run and of every job."""
    if not isinstance(timings, dict):
        return []
    rows = []
    for group, label in (("steps", "step"), ("jobs", "job")):
        for name, t in (timings.get(group) or {}).items():
            if isinstance(t, dict):
                rows.append([f"{label}: {name}", number(t.get("wall_s"), 1),
                             number(t.get("cpu_s"), 1)])
    if not rows:
        return []
    return [sortable_table(["step or job", "wall (s)", "CPU (s)"], rows,
                           numeric=[False, True, True],
                           caption="Time of each step of the last run, and of each job as "
                                   "recorded by the job (a cached job keeps the time of the "
                                   "run that made it). CPU time counts every thread.")]


def render_methodology(run: RunData, options: ReportOptions) -> Html:
    """Definitions, then provenance: run.json, analysis inputs and options, environment."""
    m = run.metrics
    method = m.subgroup_method
    parts: list[Html] = []
    if method is not None and method.note:
        parts += [tag("h3", "What the intervals are about"), tag("p", f"{method.note}.")]
        if method.warning:
            parts.append(tag("p", tag("strong", "Warning: "), f"{method.warning}."))
    parts += [tag("h3", "Definitions"), tag(
        "dl", *(join([tag("dt", term), tag("dd", text)]) for term, text in DEFINITIONS),
        class_="defs")]
    parts += _run_info(run)
    inputs = m.inputs
    if inputs:
        rows = [[name, str(i.get("path", "n/a")), tag("code", i.get("sha256", "n/a")),
                 i.get("rows", "n/a")] for name, i in inputs.items() if isinstance(i, dict)]
        parts += [tag("h3", "Analysis inputs"), sortable_table(
            ["table", "path", "SHA-256", "rows"], rows, numeric=[False, False, False, True],
            caption="The files 'compaudit analyze' read; their hashes identify the data.")]
    pairs: list[tuple[str, Any]] = [("created_by", m.created_by)]
    pairs += [(f"environment.{k}", v) for k, v in m.environment.items()]
    pairs += [(f"options.{k}", v) for k, v in m.options.items()]
    pairs += [(f"task.{k}", v) for k, v in m.task.as_dict().items()]
    pairs += [(f"replicas.{k}", v["replicas"]) for k, v in m.variants.items()]
    if run.gate is not None:
        pairs.append(("gate.z", run.gate.z))
    parts += [tag("h3", "Analysis settings"),
              _kv_table(pairs, f"From metrics.json (schema {m.schema}).")]
    return join(parts)
