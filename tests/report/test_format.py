"""Number formats by hand; every formatter says "n/a" for what is not a finite number."""

from __future__ import annotations

import math

import pytest

from compaudit.report import format as fmt


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), ("0.25", 0.25), (3, 3.0), (None, None), (True, None), (math.nan, None),
    (-math.inf, None), ("x", None), ([1], None)])
def test_finite(value, expected):
    assert fmt.finite(value) == expected


def test_percent_and_points():
    assert fmt.pct(0.5) == "50.0%" and fmt.pct(1, 0) == "100%"
    assert fmt.signed_pct(87.24) == "+87.2%" and fmt.signed_pct(-3.0, 2) == "-3.00%"
    assert fmt.pp(0) == "+0.00 pp"
    assert fmt.pp_interval(0.0991, None, 0.1) == "+9.91 pp"
    assert fmt.pp_interval(None, 0.0, 0.1) == "n/a"
    assert fmt.pp_parts(-0.01, -0.02, 0.0) == ("-1.00 pp", "[-2.00, +0.00]")
    assert fmt.pp_parts(math.nan, 0, 1) == ("n/a", "")


def test_rates_with_intervals():
    assert fmt.pct_interval(0.9396, 0.9391, 0.9401) == "94.0% [93.9, 94.0]"
    assert fmt.pct_interval(0.9396, None, 0.9401, 2) == "93.96%"
    assert fmt.pct_interval("bad", 0, 1) == "n/a"
    assert fmt.signed_pct_parts(87.2, 46.1, 139.8) == ("+87.2%", "[+46.1, +139.8]")
    assert fmt.signed_pct_parts(87.2, None, 139.8) == ("+87.2%", "")
    assert fmt.signed_pct_parts(None, 1, 2) == ("n/a", "")


def test_p_and_q_values():
    assert fmt.pvalue(0.001) == "0.001" and fmt.pvalue(0.00099) == "<0.001"
    assert fmt.pvalue(1) == "1.000"
    assert fmt.q_text(None) == "q n/a" and fmt.q_text(0.0123, name="p") == "p = 0.012"


def test_counts_sizes_and_sort_keys():
    assert fmt.number(1234567) == "1,234,567" and fmt.number(3.14159, 2) == "3.14"
    assert fmt.number(None) == "n/a"
    assert fmt.nbytes(1023) == "1,023 B" and fmt.nbytes(1024) == "1.00 KiB"
    assert fmt.nbytes(5 * 2**40) == "5,120.00 GiB"  # GiB is the largest unit
    assert fmt.si(-2_500) == "-2.5k" and fmt.si(1_000) == "1k"
    assert fmt.sort_key("0.5") == 0.5 and math.isnan(fmt.sort_key(None))
    assert math.isnan(fmt.sort_key(math.inf))


@pytest.mark.parametrize("name", [n for n in fmt.__all__
                                  if n not in ("NA", "finite", "sort_key")])
def test_every_formatter_says_na_for_missing_values(name):
    f = getattr(fmt, name)
    if name in ("pp_interval", "pct_interval"):
        assert f(None, 0.1, 0.2) == "n/a"
    elif name in ("pp_parts", "signed_pct_parts"):
        assert f(None, 0.1, 0.2) == ("n/a", "")
    elif name == "q_text":
        assert f(math.nan) == "q n/a"
    else:
        assert f(None) == "n/a" and f(math.nan) == "n/a" and f("text") == "n/a"
