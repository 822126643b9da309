"""Figures for the report (matplotlib's Agg renderer, seaborn styling), embedded as PNG.

Each public function takes tidy data prepared by a section and returns an ``<img>``
tag with a base64 PNG, or ``None`` when there is nothing to draw (the section then
says so instead of showing an empty plot). PNGs carry no timestamp or version metadata,
so the same run renders to the same bytes.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas,
never pyplot: the report neither switches the caller's backend nor leaves figures
open, and :func:`report_style` restores the caller's ``rcParams`` on exit.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, PercentFormatter

from compaudit.report.html import Html, tag
from compaudit.report.rundata import VariantPoint

__all__ = ["PALETTE", "HARM", "GOOD", "new_figure", "fig_to_img", "tradeoff_plot",
           "heatmap_plot", "class_impact_plot", "forest_plot", "report_style"]

#: The legend entries the panels share: a line, or the errorbar of a lone point.
_Handles = dict[str, "Artist | ErrorbarContainer"]

#: Okabe-Ito, readable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000"]
HARM = "#D55E00"   # vermillion: significant harm
GOOD = "#0072B2"   # blue: significant improvement
MUTED = "#9A9A9A"
_CAT_STEP = 0.14   # spacing of variants that have no sparsity, right of the axis
_REPAIR_STEP = 0.02  # a repaired variant, right of its base (same sparsity)
_LINESTYLES = ["-", "--", ":", "-."]
_MARKERS = ["o", "s", "^", "D", "v", "P"]


@contextmanager
def report_style() -> Iterator[None]:
    """The report's seaborn theme for the figures drawn inside; ``rcParams`` restored after."""
    with matplotlib.rc_context():
        sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.9,
                      rc={"axes.spines.right": False, "axes.spines.top": False,
                          "figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold",
                          "axes.titlesize": 11, "legend.frameon": False,
                          # Names are data: "$" in a variant or class name is not TeX.
                          "text.parse_math": False})
        yield


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
               **kw: Any) -> tuple[Figure, Any]:
    """A figure on the Agg canvas (no pyplot) and its axes, like ``plt.subplots``."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def fig_to_img(fig: Figure, alt: str) -> Html:
    """Render a figure to an ``<img>`` with an embedded PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return tag("img", src=f"data:image/png;base64,{data}", alt=alt, class_="plot")


def _positions(points: Mapping[str, VariantPoint], variants: Sequence[str]) -> dict[str, float]:
    """x of each variant: its sparsity, or a slot right of 100% when it has none; a
    derived variant (a repair) a little right of its base, at the same sparsity."""
    xs: dict[str, float] = {}
    cat = [v for v in variants if points[v].sparsity is None]
    for v in variants:
        sparsity = points[v].sparsity
        if sparsity is not None:
            xs[v] = float(sparsity) + _REPAIR_STEP * _depth(points, v)
    for i, v in enumerate(cat):
        xs[v] = 1.0 + _CAT_STEP * (i + 1)
    return xs


def _depth(points: Mapping[str, VariantPoint], v: str) -> int:
    """Derivations from a variant made from the dense model to ``v`` (0 for most)."""
    depth, base = 0, points[v].base
    while base is not None and base in points and depth < len(points):
        depth, base = depth + 1, points[base].base
    return depth


def _families(points: Mapping[str, VariantPoint], variants: Sequence[str],
              dense: str) -> dict[str, list[str]]:
    """Curves: dense plus each family's variants with a sparsity, sorted by sparsity;
    a derived variant (a repair) is a short curve of its own from its base to it, so
    the base and its repair sit side by side."""
    fam: dict[str, list[tuple[float, str]]] = {}
    repairs: dict[str, list[str]] = {}
    for v in variants:
        p = points[v]
        if v != dense and p.sparsity is not None:
            if p.base is not None and p.base in variants:
                repairs[f"{v} (from {p.base})"] = [p.base, v]
            else:
                fam.setdefault(p.family, []).append((p.sparsity, v))
    return {**{f: ([dense] if dense in variants else [])
               + [v for _, v in sorted(vs, key=lambda sv: sv[0])] for f, vs in fam.items()},
            **repairs}


def _decorate_x(ax: Axes, points: Mapping[str, VariantPoint], xs: Mapping[str, float],
                dense: str) -> None:
    ticks = sorted(xs.items(), key=lambda kv: kv[1])
    labels = []
    # A repair's tick would crowd its base's (same sparsity): its curve's legend names it.
    ticks = [(v, x) for v, x in ticks if points[v].base not in points]
    for v, x in ticks:
        if points[v].sparsity is None:
            labels.append(v)
        elif v == dense:
            labels.append(f"0%\n{v}")
        else:
            labels.append(f"{100 * x:.0f}%")
    ax.set_xticks([x for _, x in ticks], labels, fontsize=8)
    for lab, (v, _) in zip(ax.get_xticklabels(), ticks):
        if points[v].sparsity is None:
            lab.set_rotation(30)
            lab.set_horizontalalignment("right")
    cat = [x for v, x in ticks if points[v].sparsity is None]
    if cat:
        ax.axvspan(1.0 + _CAT_STEP / 2, max(cat) + _CAT_STEP / 2, color="#f2f2f2", zorder=0)
    right = max(cat) + _CAT_STEP / 2 if cat else 1.0
    ax.set_xlim(-0.05, right + 0.03)


@dataclass(frozen=True)
class _Curves:
    """What every trade-off panel shares: x of each variant and the curves joining them."""

    points: Mapping[str, VariantPoint]
    xs: Mapping[str, float]
    families: Mapping[str, list[str]]
    dense: str


def tradeoff_plot(
    data: pd.DataFrame,
    *,
    points: Mapping[str, VariantPoint],
    dense: str,
    panels: Sequence[str],
    ylabel: str,
    alt: str,
    ncols: int = 3,
) -> Html | None:
    """Metric vs sparsity with intervals: one panel per ``panel``, one curve per series.

    ``data`` columns: ``panel``, ``series``, ``variant``, ``mean``, ``lo``, ``hi``
    (fractions; ``lo``/``hi`` may be NaN). Variants without a sparsity sit in a grey
    band right of 100%. With one series per panel, curves are coloured by method family;
    otherwise by series, with a line style per family.
    """
    data = data[data["variant"].isin(list(points))].dropna(subset=["mean"]).copy()
    # Every plotted quantity is a rate: a t-interval reaching past 0 or 1 says only that
    # the rate is near the bound, so the bars stop there.
    data["lo"] = data["lo"].clip(lower=0.0)
    data["hi"] = data["hi"].clip(upper=1.0)
    panels = [p for p in panels if (data["panel"] == p).any()]
    if data.empty or not panels:
        return None
    variants = [v for v in points if v in set(data["variant"])]
    xs = _positions(points, variants)
    curves = _Curves(points, xs, _families(points, variants, dense), dense)
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    n_series = max(data.groupby("panel")["series"].nunique())
    # Panels with several series get their own legend below the axes: room for it.
    legend_h = 0.0 if n_series == 1 else 0.2 * math.ceil(n_series / 2) + 0.3
    width = 3.7 * ncols + 0.6 if ncols > 1 else 5.6
    fig, axes = new_figure(nrows, ncols, figsize=(width, (3.0 + legend_h) * nrows + 0.4),
                           squeeze=False, sharey=False)
    handles: _Handles = {}
    for ax, panel in zip(axes.flat, panels):
        _tradeoff_panel(ax, data[data["panel"] == panel], curves, handles=handles)
        ax.set_title(panel)
        ax.set_ylabel(ylabel, fontsize=9)
    _tradeoff_legends(fig, axes, curves, n_panels=len(panels), n_series=n_series,
                      handles=handles)
    return fig_to_img(fig, alt)


def _tradeoff_panel(ax: Axes, sub: pd.DataFrame, curves: _Curves, *,
                    handles: _Handles) -> None:
    """One panel: every series as family curves plus the variants without a sparsity."""
    series = list(dict.fromkeys(sub["series"]))
    by_family = len(series) == 1
    for si, name in enumerate(series):
        rows = sub[sub["series"] == name].set_index("variant")
        dodge = (si - (len(series) - 1) / 2) * 0.012
        _family_curves(ax, rows, curves, name=name, si=si, dodge=dodge, by_family=by_family,
                       handles=handles)
        _categorical_points(ax, rows, curves, si=si, dodge=dodge, by_family=by_family,
                            handles=handles)
    _decorate_x(ax, curves.points, curves.xs, curves.dense)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set_xlabel("sparsity (share of weights set to zero)", fontsize=8)
    if not by_family:
        own, labels = ax.get_legend_handles_labels()
        seen = dict(zip(labels, own))
        ax.legend(list(seen.values()), list(seen), loc="upper center", fontsize=7,
                  ncol=2, bbox_to_anchor=(0.5, -0.3), handlelength=2.4)


def _family_curves(ax: Axes, rows: pd.DataFrame, curves: _Curves, *, name: str, si: int,
                   dodge: float, by_family: bool, handles: _Handles) -> None:
    """One series' line per method family (dense, then the family by sparsity)."""
    for fi, (fam, members) in enumerate(curves.families.items()):
        members = [v for v in members if v in rows.index]
        if not members:
            continue
        colour = PALETTE[(fi if by_family else si) % len(PALETTE)]
        x = np.array([curves.xs[v] for v in members]) + dodge
        y = rows.loc[members, "mean"].to_numpy(float)
        lo = rows.loc[members, "lo"].to_numpy(float)
        hi = rows.loc[members, "hi"].to_numpy(float)
        label = fam if by_family else name
        line = ax.plot(x, y, linestyle="-" if by_family else _LINESTYLES[fi % 4],
                       marker=_MARKERS[fi % len(_MARKERS)], color=colour, lw=1.6,
                       ms=4.5, label=label)[0]
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none",
                        ecolor=colour, elinewidth=1.1, capsize=2.5)
        if by_family:
            handles.setdefault(label, line)


def _categorical_points(ax: Axes, rows: pd.DataFrame, curves: _Curves, *, si: int,
                        dodge: float, by_family: bool, handles: _Handles) -> None:
    """One series' variants without a sparsity, in the grey band, with the dense value
    as a dotted reference line."""
    cat = [v for v in rows.index if curves.points[v].sparsity is None and v in curves.xs]
    colour = PALETTE[(len(curves.families) if by_family else si) % len(PALETTE)]
    for v in cat:
        r = rows.loc[v]
        yerr = None
        if np.isfinite(r["lo"]) and np.isfinite(r["hi"]):
            yerr = [[r["mean"] - r["lo"]], [r["hi"] - r["mean"]]]
        h = ax.errorbar([curves.xs[v] + dodge], [r["mean"]], yerr=yerr, fmt="D", color=colour,
                        ms=5, capsize=2.5, elinewidth=1.1)
        if by_family:
            handles.setdefault("other variants", h)
    if curves.dense in rows.index and cat:
        ax.axhline(rows.loc[curves.dense, "mean"], color=colour if not by_family else MUTED,
                   lw=0.8, ls=":", zorder=1)


def _tradeoff_legends(fig: Figure, axes: Any, curves: _Curves, *, n_panels: int,
                      n_series: int, handles: _Handles) -> None:
    """Line-style key, hidden spare axes, the shared legend, and the final layout."""
    fams = curves.families
    if len(fams) > 1 and n_series > 1:
        fig.suptitle("line style per method: " + ", ".join(
            f"{f} {_LINESTYLES[i % 4]}" for i, f in enumerate(fams)), x=0.01, ha="left",
            fontsize=8, fontweight="normal")
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    if handles:
        # An ErrorbarContainer is a legend handle too (HandlerErrorbar); the stubs take
        # Artists only.
        fig.legend(list(handles.values()), list(handles), loc="lower center",  # type: ignore[call-overload]
                   ncol=min(len(handles), 5), bbox_to_anchor=(0.5, -0.02), fontsize=8)
        fig.tight_layout(rect=(0, 0.07 + 0.02 * (len(handles) > 5), 1, 1))
    else:
        fig.tight_layout()


def heatmap_plot(matrix: pd.DataFrame, annot: pd.DataFrame, *, alt: str,
                 colorbar: str) -> Html | None:
    """Diverging heatmap of ``matrix`` (log2 ratios; 0 = no change) with text ``annot``."""
    if matrix.empty:
        return None
    height = 0.42 * len(matrix) + 1.4
    width = min(1.6 * matrix.shape[1] + 3.8, 11)
    fig, ax = new_figure(figsize=(width, height))
    values = matrix.to_numpy(float)
    lim = max(1.0, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0)
    lim = min(lim, 4.0)
    cmap = matplotlib.colormaps["PuOr_r"].with_extremes(bad="#eeeeee")
    shown = np.ma.masked_invalid(np.clip(values, -lim, lim))
    im = ax.imshow(shown, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    labels = annot.to_numpy()
    for (i, j), value in np.ndenumerate(values):
        # White text on the darkest cells, black elsewhere.
        dark = np.isfinite(value) and abs(value) > 0.6 * lim
        ax.text(j, i, labels[i, j], ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns])
    ax.set_yticks(range(matrix.shape[0]), [str(r) for r in matrix.index])
    ax.set_xticks(np.arange(matrix.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(matrix.shape[0] + 1) - 0.5, minor=True)
    ax.grid(False)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="both", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(im, ax=ax, format=FuncFormatter(_ratio_label), fraction=0.05)
    bar.set_label(colorbar)
    fig.tight_layout()
    return fig_to_img(fig, alt)


def _ratio_label(value: float, _pos: int) -> str:
    ratio = 2.0 ** value
    return f"×{ratio:.2g}" if ratio >= 1 else f"×{ratio:.2f}"


def class_impact_plot(data: pd.DataFrame, *, variants: Iterable[str], labels: Mapping[int, str],
                      alpha: float, alt: str) -> Html | None:
    """Normalized recall difference per class, sorted, with significant classes marked.

    ``data`` columns: ``variant``, ``class``, ``normalized_recall_difference``,
    ``significant_raw``, ``significant_bh``. Few classes: labelled horizontal bars per
    variant; many: a sorted scatter of every class.
    """
    variants = [v for v in variants if (data["variant"] == v).any()]
    if data.empty or not variants:
        return None
    n_classes = int(data.groupby("variant").size().max())
    few = n_classes <= 30
    ncols = min(len(variants), 3 if few else 2)
    nrows = math.ceil(len(variants) / ncols)
    height = (0.26 * n_classes + 1.2) if few else 3.2
    fig, axes = new_figure(nrows, ncols, figsize=(4.6 * ncols + 0.4, height * nrows + 0.5),
                           squeeze=False, sharex=not few)
    for ax, v in zip(axes.flat, variants):
        sub = data[data["variant"] == v].sort_values("normalized_recall_difference")
        y = 100 * sub["normalized_recall_difference"].to_numpy(float)
        bh = sub["significant_bh"].astype(bool).to_numpy()
        raw = sub["significant_raw"].astype(bool).to_numpy() & ~bh
        # Strong colours for BH-significant classes, light ones for uncorrected p only;
        # warm for classes that lost recall, blue for classes that gained.
        colours = np.where(bh, np.where(y < 0, HARM, GOOD),
                           np.where(raw, np.where(y < 0, "#E69F00", "#56B4E9"), MUTED))
        if few:
            names = [labels.get(int(c), str(c)) for c in sub["class"]]
            ax.barh(np.arange(len(y)), y, color=colours)
            ax.set_yticks(np.arange(len(y)), names, fontsize=8)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_xlabel("normalized recall difference (pp)", fontsize=8)
        else:
            rank = np.arange(len(y))
            rest = ~(bh | raw)
            ax.scatter(rank[rest], y[rest], s=4, c=colours[rest], lw=0)
            ax.scatter(rank[raw], y[raw], s=12, c=colours[raw], lw=0)
            ax.scatter(rank[bh], y[bh], s=18, c=colours[bh], marker="D", lw=0)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xlabel("classes, sorted by normalized recall difference", fontsize=8)
            ax.set_ylabel("normalized recall difference (pp)", fontsize=8)
        ax.set_title(f"{v}: {int((bh | raw).sum())} significant of {len(y)}")
    for ax in list(axes.flat)[len(variants):]:
        ax.set_visible(False)
    def dot(colour: str, marker: str = "o") -> Line2D:
        return Line2D([], [], lw=0, marker=marker, color=colour, ms=5)

    fig.legend([dot(MUTED), dot("#E69F00"), dot("#56B4E9"), dot(HARM, "D"), dot(GOOD, "D")],
               ["not significant", f"lost recall, p ≤ {alpha:g} (uncorrected)",
                f"gained recall, p ≤ {alpha:g} (uncorrected)",
                f"lost recall, q ≤ {alpha:g} (Benjamini-Hochberg)",
                f"gained recall, q ≤ {alpha:g} (Benjamini-Hochberg)"],
               loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.1 / nrows + 0.02, 1, 1))
    return fig_to_img(fig, alt)


def forest_plot(data: pd.DataFrame, *, alt: str, xlabel: str, ncols: int = 2) -> Html | None:
    """Estimates with intervals per row label: one panel per ``panel``, colour per ``hue``.

    ``data`` columns: ``panel``, ``row``, ``hue``, ``est``, ``lo``, ``hi`` (fractions,
    drawn in percentage points) and ``sig`` (bool: filled marker when significant).
    """
    data = data.dropna(subset=["est"])
    if data.empty:
        return None
    panels = list(dict.fromkeys(data["panel"]))
    hues = list(dict.fromkeys(data["hue"]))
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    n_rows = max(data.groupby("panel")["row"].nunique())
    fig, axes = new_figure(nrows, ncols, squeeze=False,
                           figsize=(5.0 * ncols + 0.8, (0.32 * n_rows + 1.1) * nrows + 0.4))
    for ax, panel in zip(axes.flat, panels):
        sub = data[data["panel"] == panel]
        rows = list(dict.fromkeys(sub["row"]))
        ypos = {r: i for i, r in enumerate(reversed(rows))}
        for hi_, hue in enumerate(hues):
            h = sub[sub["hue"] == hue]
            if h.empty:
                continue
            off = (hi_ - (len(hues) - 1) / 2) * (0.7 / max(len(hues), 1))
            y = np.array([ypos[r] for r in h["row"]]) + off
            est = 100 * h["est"].to_numpy(float)
            lo = 100 * h["lo"].to_numpy(float)
            hi = 100 * h["hi"].to_numpy(float)
            colour = PALETTE[hi_ % len(PALETTE)]
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.errorbar(est[ok], y[ok], xerr=[est[ok] - lo[ok], hi[ok] - est[ok]], fmt="none",
                        ecolor=colour, elinewidth=1.2, capsize=2)
            sig = h["sig"].astype(bool).to_numpy()
            ax.scatter(est[sig], y[sig], color=colour, s=26, zorder=3)
            ax.scatter(est[~sig], y[~sig], facecolor="white", edgecolor=colour, s=26, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(list(ypos.values()), list(ypos.keys()), fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(panel)
        ax.set_xlabel(xlabel, fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=PALETTE[i % len(PALETTE)], marker="o", lw=1.2, ms=5)
               for i in range(len(hues))]
    handles.append(Line2D([], [], color="#555555", marker="o", lw=0, ms=5,
                          markerfacecolor="white"))
    fig.legend(handles, [*map(str, hues), "hollow: not significant"], loc="lower center",
               ncol=min(len(handles), 6), bbox_to_anchor=(0.5, -0.01), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.035, 1, 1))
    return fig_to_img(fig, alt)
