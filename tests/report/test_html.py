"""HTML building blocks: escaping, tags, number formats, and table sorting in a real browser."""

from __future__ import annotations

import math
import shutil
from importlib import resources

import pytest

from compaudit.report.format import nbytes, pct, pp, pp_interval, pp_parts, pvalue, q_text, si
from compaudit.report.html import Cell, Html, esc, join, sortable_table, tag

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
EVIL = "<script>alert(1)</script>"


def test_esc_escapes_markup_and_quotes_but_not_trusted_html():
    assert esc(EVIL) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert esc('a"b\'c&d') == "a&quot;b&#x27;c&amp;d"
    assert esc(None) == ""
    assert esc(Html("<b>x</b>")) == "<b>x</b>"
    assert join(["<i>", Html("<br>")], sep="|") == "&lt;i&gt;|<br>"


def test_tag_escapes_children_and_attribute_values():
    out = tag("td", EVIL, title='x" onmouseover="alert(1)', data_sort=1.5, class_="num",
              hidden=True, missing=None)
    assert out == ('<td title="x&quot; onmouseover=&quot;alert(1)" data-sort="1.5" '
                   'class="num" hidden>&lt;script&gt;alert(1)&lt;/script&gt;</td>')
    assert tag("img", src="data:image/png;base64,AA", alt=EVIL) == (
        '<img src="data:image/png;base64,AA" alt="&lt;script&gt;alert(1)&lt;/script&gt;">')
    # Nested markup built by tag() is trusted and not escaped twice.
    assert tag("p", tag("b", "<")) == "<p><b>&lt;</b></p>"


def test_sortable_table_writes_sort_keys_and_escapes_cells():
    html = sortable_table([EVIL, "value"], [[EVIL, Cell("1.0%", sort=0.01, cls="sig-harm")],
                                            ["b", Cell("n/a", sort=math.nan)],
                                            ["c", 3]])
    assert "<script>" not in html
    assert html.count("&lt;script&gt;") == 2
    assert 'data-sort="0.01"' in html and 'class="num sig-harm"' in html
    assert 'data-sort=""' in html  # NaN sorts last in the browser
    assert 'data-sort="3.0"' in html
    assert html.count('aria-sort="none"') == 2


def test_number_formats_by_hand():
    assert pct(0.93956) == "94.0%"
    assert pct(0.93956, 2) == "93.96%"
    assert pp(0.0991) == "+9.91 pp"
    assert pp(-0.00042) == "-0.04 pp"
    assert pp_interval(0.0991, 0.0873, 0.1109) == "+9.91 pp [+8.73, +11.09]"
    assert pp_parts(0.0991, None, 0.1) == ("+9.91 pp", "")
    assert pvalue(0.0004) == "<0.001" and pvalue(0.03217) == "0.032"
    assert q_text(1e-9) == "q < 0.001" and q_text(0.5) == "q = 0.500"
    assert si(11_200_000) == "11.2M" and si(1.8e9) == "1.8G" and si(950) == "950"
    assert si(999_999) == "1M" and si(999.5) == "1k" and si(123_456) == "123k"
    assert si(25_557_032) == "25.6M" and si(4.1e9) == "4.1G" and si(0) == "0"
    assert nbytes(44_800_000) == "42.72 MiB" and nbytes(512) == "512 B"
    for f in (pct, pp, pvalue, si, nbytes):
        assert f(None) == "n/a" and f(math.nan) == "n/a" and f(math.inf) == "n/a"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the 'dev' extra")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _column(page, table: str, col: int) -> list[str]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{col}].textContent.trim())")


def test_clicking_a_header_sorts_numerically_with_missing_last(browser, tmp_path):
    script = resources.files("compaudit.report").joinpath("templates", "report.js").read_text()
    names = ["gmp-9", "gmp-100", "gmp-10", "dense", "gmp-2", "a", "b", "c"]
    # Negative numbers and decimals defeat text (even numeric-collation) sorting.
    values = [10.0, -5.0, 100.0, math.nan, 9.0, -10.0, 0.25, 0.5]
    rows = [[n, Cell(f"{v:+.2f} pp" if v == v else "n/a", sort=v)] for n, v in zip(names, values)]
    table = sortable_table(["variant", "change"], rows, table_id="t")
    page_file = tmp_path / "sort.html"
    page_file.write_text(f"<!DOCTYPE html><html><body>{table}<script>{script}</script>"
                         "</body></html>", encoding="utf-8")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    header = page.locator("#t thead th").nth(1)
    header.locator("button").click()
    # Numeric order, not text order ("+10.0" < "+100.0" < "+9.0" as strings).
    ascending = ["-10.00 pp", "-5.00 pp", "+0.25 pp", "+0.50 pp", "+9.00 pp", "+10.00 pp",
                 "+100.00 pp"]
    assert _column(page, "t", 1) == ascending + ["n/a"]
    assert header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    assert _column(page, "t", 1) == ascending[::-1] + ["n/a"]
    assert header.get_attribute("aria-sort") == "descending"
    # Text columns compare embedded numbers numerically: gmp-9 before gmp-10.
    page.locator("#t thead th").nth(0).locator("button").click()
    assert _column(page, "t", 0) == ["a", "b", "c", "dense", "gmp-2", "gmp-9", "gmp-10",
                                     "gmp-100"]
    assert page.locator("#t thead th").nth(1).get_attribute("aria-sort") == "none"
    assert errors == []
    page.close()
