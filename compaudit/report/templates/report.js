/* Sortable tables: click a column title to sort by it; click again to reverse.
   Cells sort by their data-sort attribute when present (numbers, as written by the
   report), else by their text with numeric-aware comparison. Missing values (empty
   data-sort) always sort last. No libraries, no network. */
(function () {
  "use strict";

  function sortValue(cell) {
    var raw = cell ? cell.getAttribute("data-sort") : "";
    if (raw === null) {
      raw = cell.textContent.trim();
      if (raw === "" || raw === "n/a") { return { missing: true }; }
      return { text: raw };
    }
    if (raw === "" || raw === "nan") { return { missing: true }; }
    var num = Number(raw);
    return isFinite(num) ? { num: num } : { text: raw };
  }

  function compare(a, b) {
    if (a.num !== undefined && b.num !== undefined) { return a.num - b.num; }
    if (a.num !== undefined) { return -1; }
    if (b.num !== undefined) { return 1; }
    return a.text.localeCompare(b.text, undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(table, th, column) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var keyed = Array.prototype.map.call(body.rows, function (row, index) {
      return { row: row, value: sortValue(row.cells[column]), index: index };
    });
    keyed.sort(function (x, y) {
      if (x.value.missing || y.value.missing) {
        if (x.value.missing && y.value.missing) { return x.index - y.index; }
        return x.value.missing ? 1 : -1;
      }
      var c = compare(x.value, y.value);
      if (c === 0) { return x.index - y.index; }
      return ascending ? c : -c;
    });
    var fragment = document.createDocumentFragment();
    keyed.forEach(function (k) { fragment.appendChild(k.row); });
    body.appendChild(fragment);
  }

  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      var button = th.querySelector("button.sort");
      if (button) {
        button.addEventListener("click", function () { sortBy(table, th, column); });
      }
    });
  });

  /* Highlight the table-of-contents entry of the section in view. */
  var links = document.querySelectorAll("nav.toc a[href^='#']");
  if ("IntersectionObserver" in window && links.length) {
    var byId = {};
    Array.prototype.forEach.call(links, function (a) { byId[a.getAttribute("href").slice(1)] = a; });
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting && byId[entry.target.id]) {
          Array.prototype.forEach.call(links, function (a) { a.classList.remove("active"); });
          byId[entry.target.id].classList.add("active");
        }
      });
    }, { rootMargin: "0px 0px -70% 0px" });
    Array.prototype.forEach.call(document.querySelectorAll("section.report-section"),
      function (s) { observer.observe(s); });
  }
})();
