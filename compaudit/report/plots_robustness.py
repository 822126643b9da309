"""Robustness figures: corruption error bars and accuracy against severity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from compaudit.report.html import Html
from compaudit.report.plots import PALETTE, fig_to_img, new_figure

__all__ = ["corruption_error_plot", "severity_plot"]


def corruption_error_plot(data: pd.DataFrame, *, variants: Sequence[str], reference: str,
                          alt: str) -> Html | None:
    """Corruption error (CE, %) per corruption and variant, with mCE last.

    ``data``: the rows of ``corruption_errors.csv`` (``variant``, ``corruption``, ``ce``).
    A dashed line marks 100 (the reference's error).
    """
    if data.empty or "ce" not in data or data["ce"].notna().sum() == 0:
        return None
    variants = [v for v in variants if (data["variant"] == v).any()]
    corruptions = [c for c in dict.fromkeys(data["corruption"]) if c != "mCE"]
    if (data["corruption"] == "mCE").any():
        corruptions.append("mCE")
    table = data.pivot_table(index="corruption", columns="variant", values="ce", aggfunc="first")
    table = table.reindex(index=corruptions, columns=variants)
    width = 0.8 / max(len(variants), 1)
    fig_width = 1.2 + 0.3 * len(corruptions) * max(len(variants), 2)
    fig, ax = new_figure(figsize=(min(max(fig_width, 6.0), 11.0), 3.4))
    x = np.arange(len(corruptions))
    for i, v in enumerate(variants):
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, table[v].to_numpy(float), width,
               color=PALETTE[i % len(PALETTE)], label=v)
    ax.axhline(100, color="black", lw=0.9, ls="--")
    ax.set_xticks(x, corruptions, rotation=30, ha="right", fontsize=8)
    if "mCE" in corruptions:
        ax.axvline(len(corruptions) - 1.5, color="#777777", lw=0.8)
    ax.set_ylabel(f"corruption error (%, {reference} = 100)", fontsize=8)
    ax.set_ylim(bottom=0.0)  # bars start at zero: their lengths compare honestly
    ax.legend(fontsize=8, ncol=min(len(variants), 6), loc="lower left",
              bbox_to_anchor=(0.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig_to_img(fig, alt)


def severity_plot(data: pd.DataFrame, *, variants: Sequence[str], alt: str,
                  ncols: int = 3) -> Html | None:
    """Top-1 against severity (0 = clean), one panel per corruption, one line per variant.

    ``data`` columns: ``shift``, ``severity``, ``variant``, ``mean``, ``lo``, ``hi``.
    """
    if data.empty:
        return None
    shifts = list(dict.fromkeys(data["shift"]))
    variants = [v for v in variants if (data["variant"] == v).any()]
    ncols = min(ncols, len(shifts))
    nrows = math.ceil(len(shifts) / ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(3.5 * ncols + 0.5, 2.7 * nrows + 0.5),
                           squeeze=False, sharey=True)
    for ax, shift in zip(axes.flat, shifts):
        sub = data[data["shift"] == shift]
        for i, v in enumerate(variants):
            rows = sub[sub["variant"] == v].sort_values("severity")
            if rows.empty:
                continue
            colour = PALETTE[i % len(PALETTE)]
            x = rows["severity"].to_numpy(float) + (i - (len(variants) - 1) / 2) * 0.06
            y = rows["mean"].to_numpy(float)
            ax.plot(x, y, marker="o", ms=3.5, lw=1.5, color=colour, label=v)
            lo, hi = rows["lo"].to_numpy(float), rows["hi"].to_numpy(float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none",
                            ecolor=colour, elinewidth=1, capsize=2)
        ax.set_title(shift)
        ax.set_xticks(range(0, 6), ["clean", "1", "2", "3", "4", "5"], fontsize=8)
        ax.set_xlabel("severity", fontsize=8)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1 accuracy", fontsize=8)
    for ax in list(axes.flat)[len(shifts):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8,
               bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig_to_img(fig, alt)
