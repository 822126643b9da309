"""The gate's terminal table: columns as wide as their cells, so names never run together."""

from __future__ import annotations

from compaudit.gate import run_gate
from compaudit.gate.outputs import format_table
from compaudit.schema import DeltaRow, Metrics


def test_table_columns_fit_long_variant_and_subject_names(only_rates):
    long = "gmp-90-repaired-with-a-long-name"
    rows = tuple(DeltaRow(variant=v, subgroup=s, grouping="G", metric="fpr", n=500,
                          abs_diff=0.02, abs_diff_se=0.01)
                 for v, s in ((long, "Male=True & Young=False"), ("c", "G=a")))
    metrics = Metrics(options={"dense": "dense"}, variants={"dense": {}, "c": {}, long: {}},
                      deltas=rows)
    lines = format_table(run_gate(metrics, only_rates)).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("verdict"))
    table = lines[header:header + 3]
    start = table[0].index("variant")
    subject = table[0].index("subject")
    # Every row's variant sits under "variant" and ends two spaces or more before "subject".
    assert {line[start:subject].strip() for line in table[1:]} == {long, "c"}
    assert all(line[start:subject].endswith("  ") for line in table[1:])
    assert "Male=True & Young=False" in "\n".join(table)
    # Tolerances line up as the last column.
    assert len({line.index(t) for line, t in zip(table, ["tolerance", "2.00 pp", "2.00 pp"])}) == 1
