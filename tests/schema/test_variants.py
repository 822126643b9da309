"""``variants.json``'s records: what reading refuses, naming the file, variant and field."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from compaudit.errors import AuditInputError
from compaudit.schema import VARIANT_FIELDS, VariantRecord, Variants, dumps_variants, read_variants


def _record(sparsity):
    """A gradual-magnitude record (placed as its registry entry places it); the rest is
    not measured (None)."""
    unmeasured = dict.fromkeys(VARIANT_FIELDS, None)
    return VariantRecord(**{**unmeasured, "method": "gradual_magnitude",
                            "family": "gradual_magnitude", "axis": "sparsity",
                            "parameters": {}, "sparsity": sparsity})


GMP = {f"gmp-{s}": _record(s / 100) for s in (30, 50, 70, 90)}


def _write(folder, records):
    (folder / "variants.json").write_text(dumps_variants(Variants(variants=records)))


def test_variants_json_reads_back_as_written(tmp_path):
    _write(tmp_path, GMP)
    assert read_variants(tmp_path) == Variants(variants=GMP)
    assert read_variants(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("change, message", [
    ({"family": "DROP", "axis": "DROP"}, "variant 'gmp-30': field 'family' missing; "
                                          "field 'axis' missing"),
    ({"axis": "sparse"}, "variant 'gmp-30': field 'axis' must be one of sparsity, bits, "
                         "None, got 'sparse'"),
    ({"sparsity": "half"}, "variant 'gmp-30': field 'sparsity': got 'half'; expected a number"),
])
def test_variants_json_without_the_placement_is_refused(tmp_path, change, message):
    _write(tmp_path, GMP)
    doc = json.loads((tmp_path / "variants.json").read_text())
    record = doc["variants"]["gmp-30"]
    for key, value in change.items():
        record.pop(key) if value == "DROP" else record.update({key: value})
    (tmp_path / "variants.json").write_text(json.dumps(doc))
    with pytest.raises(AuditInputError, match=re.escape(message)):
        read_variants(tmp_path)


@pytest.mark.parametrize("doc", [{"variants": {}}, {"schema": "compaudit.variants/2",
                                                     "variants": {}}, [1]])
def test_variants_json_of_another_version_is_refused(tmp_path, doc):
    (tmp_path / "variants.json").write_text(json.dumps(doc))
    with pytest.raises(AuditInputError, match="field 'schema': .* expected "
                                              "'compaudit.variants/4'.*re-run 'compaudit run'"):
        read_variants(tmp_path)


@pytest.mark.parametrize("base, message", [
    (3, "variant 'v': field 'base': got 3; expected a string"),
    ("gmp-99", "variant 'v': field 'base' is 'gmp-99', which is not a variant; valid: "),
])
def test_a_base_that_is_no_variant_of_the_file_is_refused(tmp_path, base, message):
    repaired = replace(GMP["gmp-90"], method="constrained_finetune", base="gmp-90")
    _write(tmp_path, {**GMP, "v": repaired})
    doc = json.loads((tmp_path / "variants.json").read_text())
    doc["variants"]["v"]["base"] = base
    (tmp_path / "variants.json").write_text(json.dumps(doc))
    with pytest.raises(AuditInputError) as err:
        read_variants(tmp_path)
    assert f"{tmp_path / 'variants.json'}: {message}" in str(err.value)
