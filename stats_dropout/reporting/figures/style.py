"""The slide rules every figure follows: a 16:9 canvas, font sizes, one legend outside, error bars.

The shared drawing helpers of :mod:`stats_dropout.reporting.figures`: matplotlib is imported
lazily (:func:`pyplot`, Agg backend, fixed SVG hash salt), :func:`panels` lays out a 16:9 grid
of small multiples with tick labels on every panel, :func:`legend_outside` puts one legend
right of the data, :func:`dodge_offsets` shifts series that would coincide, and
:func:`finish_keep_prob_figure` labels a figure whose panels share a keep_prob x axis.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PNG_DPI",
    "MIN_FONT_PT",
    "TEXT_PT",
    "TITLE_PT",
    "TICK_PT",
    "LEGEND_PT",
    "MARKERS",
    "SVG_HASHSALT",
    "pyplot",
    "level_text",
    "panels",
    "legend_outside",
    "finish_keep_prob_figure",
    "dodge_offsets",
    "plain_formatter",
    "errorbar",
]

#: Fixed so that the same figure gives the same SVG bytes (matplotlib otherwise salts ids).
SVG_HASHSALT = "stats_dropout"
#: Resolution of the PNG files (and of the Figure objects): sharp on a projector or a retina slide.
PNG_DPI = 200
#: Smallest font anywhere in a figure; a 16:9 figure shown at 1280×720 keeps 9 pt legible.
MIN_FONT_PT = 9
TEXT_PT = 11      # axis labels
TITLE_PT = 12     # panel titles
TICK_PT = 10      # tick labels
LEGEND_PT = 10    # legend entries
#: Distinct markers, so that series stay apart in grey-scale print too.
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def pyplot():
    """``matplotlib.pyplot``, headless (Agg unless a backend is in use), with deterministic SVG."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; a no-op if a backend is already in use
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = SVG_HASHSALT
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small files, selectable in browsers
    return plt


def level_text(level):
    """A confidence level as the page prints it: 0.95 -> '95 %', 0.99999996 -> '99.999996 %'."""
    return f"{100 * float(level):.8g} %"


def panels(plt, n, *, max_cols, width=12.8, height=7.2):
    """A 16:9 figure of ``n`` panels (at most ``max_cols`` a row), constrained layout; spare
    grid cells removed. Every panel keeps its own x tick labels (a shared x axis would hide
    them on panels without a panel below, as the variance figure's did)."""
    ncols = max(1, min(max_cols, n))
    nrows = int(np.ceil(max(n, 1) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                             layout="constrained", dpi=PNG_DPI)
    for ax in axes.ravel()[n:]:
        ax.remove()
    used = list(axes.ravel()[:n])
    for ax in used:
        ax.tick_params(labelsize=TICK_PT, labelbottom=True, labelleft=True)
    return fig, used


def legend_outside(fig, *, ncols=1, sort=False):
    """One legend for the whole figure, right of the panels (constrained layout makes room)."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels and not label.startswith("_"):
                handles.append(h)
                labels.append(label)
    if sort:
        order = sorted(range(len(labels)), key=lambda i: labels[i].lower())
        handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=LEGEND_PT, ncols=ncols,
                   frameon=False)


def finish_keep_prob_figure(fig, ylabel, *, sort=False):
    """Label a figure of small multiples over keep_prob (one x and one y label for all panels),
    add its legend outside (:func:`legend_outside`) and return it."""
    fig.supxlabel("keep_prob", fontsize=TEXT_PT)
    fig.supylabel(ylabel, fontsize=TEXT_PT)
    legend_outside(fig, sort=sort)
    return fig


def dodge_offsets(n, keep_probs, *, share=0.5):
    """Horizontal offsets for ``n`` series drawn at the same keep_probs, so their markers and
    error bars sit side by side: together they span ``share`` of the closest keep_prob spacing
    (at most 0.05), centred on the true value."""
    kp = np.unique(np.asarray(keep_probs, dtype=float))
    spacing = float(np.min(np.diff(kp))) if len(kp) > 1 else 0.1
    span = min(share * spacing, 0.05)
    if n <= 1:
        return np.zeros(max(n, 0))
    return (np.arange(n) - (n - 1) / 2) * span / (n - 1)


def plain_formatter():
    """Tick labels as plain numbers (0.2, 1, 1000), never 2×10⁻¹ or 10³."""
    import matplotlib.ticker as mticker

    return mticker.FuncFormatter(lambda v, _: f"{v:g}")


def errorbar(ax, x, y, low, high, **kw):
    """``ax.errorbar`` from interval bounds ``low``/``high`` (not half-widths), without caps."""
    return ax.errorbar(x, y, yerr=[np.asarray(y) - np.asarray(low), np.asarray(high) - np.asarray(y)],
                       capsize=0, elinewidth=1, **kw)
