"""Figures of the report, drawn with matplotlib (imported lazily, Agg backend).

Each ``plot_*`` function takes a tidy DataFrame from :mod:`stats_dropout.reporting` or
:mod:`stats_dropout.studies.experiments` and returns a :class:`matplotlib.figure.Figure`;
the matching ``caption_*`` function says in words what that figure shows, built from the same
data, so a figure never has a caption (or a panel) for something the run did not compute.
:func:`save_figure` writes a figure as a standalone SVG (deterministic bytes: fixed hash salt,
no date) and a PNG at :data:`PNG_DPI` (for slides), and :func:`svg_text` gives the SVG markup
to inline in HTML.

Slide rules every figure follows (``tests/unit/test_figures.py`` checks them on the Figure
objects): a 16:9 canvas, every text at least :data:`MIN_FONT_PT` points, tick labels on every
panel, legends outside the data area, and no series hidden under another — series that would
coincide get distinct markers and line styles and a small horizontal offset (a "dodge"),
which the caption states.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = [
    "plot_bias",
    "plot_variance",
    "plot_norm_inflation",
    "plot_inference_gap",
    "plot_mc_averaging",
    "caption_bias",
    "caption_variance",
    "caption_norm_inflation",
    "caption_inference_gap",
    "caption_mc_averaging",
    "bias_panels",
    "variance_schemes",
    "gap_groups",
    "dodge_offsets",
    "save_figure",
    "svg_text",
    "PNG_DPI",
    "MIN_FONT_PT",
]

#: Fixed so that the same figure gives the same SVG bytes (matplotlib otherwise salts ids).
_SVG_HASHSALT = "stats_dropout"
#: Resolution of the PNG files (and of the Figure objects): sharp on a projector or a retina slide.
PNG_DPI = 200
#: Smallest font anywhere in a figure; a 16:9 figure shown at 1280×720 keeps 9 pt legible.
MIN_FONT_PT = 9
_TEXT_PT = 11      # axis labels
_TITLE_PT = 12     # panel titles
_TICK_PT = 10      # tick labels
_LEGEND_PT = 10    # legend entries
#: Distinct markers, so that series stay apart in grey-scale print too.
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; a no-op if a backend is already in use
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = _SVG_HASHSALT
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small files, selectable in browsers
    return plt


def _level_text(level):
    """A confidence level as the page prints it: 0.95 -> '95 %', 0.99999996 -> '99.999996 %'."""
    return f"{100 * float(level):.8g} %"


def _panels(plt, n, *, max_cols, width=12.8, height=7.2):
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
        ax.tick_params(labelsize=_TICK_PT, labelbottom=True, labelleft=True)
    return fig, used


def _legend_outside(fig, *, ncols=1, sort=False):
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
        fig.legend(handles, labels, loc="outside right upper", fontsize=_LEGEND_PT, ncols=ncols,
                   frameon=False)


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


def _plain_formatter():
    """Tick labels as plain numbers (0.2, 1, 1000), never 2×10⁻¹ or 10³."""
    import matplotlib.ticker as mticker

    return mticker.FuncFormatter(lambda v, _: f"{v:g}")


def _errorbar(ax, x, y, low, high, **kw):
    return ax.errorbar(x, y, yerr=[np.asarray(y) - np.asarray(low), np.asarray(high) - np.asarray(y)],
                       capsize=0, elinewidth=1, **kw)


# --- bias -----------------------------------------------------------------------------------
def bias_panels(summary):
    """``{scheme: kind}`` of the bias figure, one panel per scheme run, in run order: ``"mean"``
    for the schemes whose contract is the mean, ``"alpha"`` (a distribution-level contract)
    and ``"no_rescale"`` (the contrast with the missing 1/keep_prob)."""
    out = {}
    for name, contract in zip(summary["scheme"], summary["contract"]):
        out.setdefault(name, "no_rescale" if name == "no_rescale" else
                       ("mean" if contract == "mean" else "alpha"))
    return out


def plot_bias(summary, *, margin=None):
    """Relative bias of ``E[train]`` against the eval output vs keep_prob, with CI bars: one
    panel per scheme run (small multiples, so no scheme's markers hide another's).

    Schemes with a mean contract share one y range, zoomed to the TOST margin (grey band);
    alpha dropout (a distribution-level contract, so a per-input bias is expected) and the
    no-rescale bug (with its theoretical bias ``p − 1``, dashed) get their own.
    """
    plt = _pyplot()
    panels = bias_panels(summary)
    fig, axes = _panels(plt, len(panels), max_cols=5)
    margin = float(summary["tost_margin"].iloc[0]) if margin is None else margin
    mean_rows = summary[summary["scheme"].isin([n for n, k in panels.items() if k == "mean"])]
    if len(mean_rows):
        reach = max(1.25 * margin, float(np.nanmax(np.abs(mean_rows[["relative_bias_ci_low",
                                                                       "relative_bias_ci_high"]]))) * 1.1)
    for ax, (name, kind) in zip(axes, panels.items()):
        g = summary[summary["scheme"].eq(name)].sort_values("keep_prob")
        if kind == "mean":
            ax.axhspan(-margin, margin, color="0.9", zorder=0, label=f"±{margin:g} TOST margin")
            ax.set_ylim(-reach, reach)
        if kind == "no_rescale":
            kp = g["keep_prob"].to_numpy(dtype=float)
            grid = np.linspace(min(kp.min(), 1.0), 1.0, 100)
            ax.plot(grid, grid - 1, color="k", ls="--", lw=1.2, zorder=1, label="theory p − 1 (no_rescale)")
        _errorbar(ax, g["keep_prob"], g["relative_bias"], g["relative_bias_ci_low"],
                  g["relative_bias_ci_high"], fmt="o", ms=4, lw=1.2, color="C0",
                  label="Monte Carlo, with its interval", zorder=3)
        ax.axhline(0, color="k", lw=0.6, zorder=1)
        ax.set_title(name, fontsize=_TITLE_PT)
    fig.supxlabel("keep_prob", fontsize=_TEXT_PT)
    fig.supylabel("relative bias β of E[train] vs eval", fontsize=_TEXT_PT)
    _legend_outside(fig)
    return fig


def caption_bias(summary):
    panels = bias_panels(summary)
    level = _level_text(summary["confidence_level"].iloc[0])
    margin = float(summary["tost_margin"].iloc[0])
    parts = [f"Relative bias β of the train output, E[train] = (1 + β)·eval, with {level} "
             f"confidence bars, one panel per scheme run."]
    names = [n for n, k in panels.items() if k == "mean"]
    if names:
        eq = summary[summary["scheme"].isin(names)]["equivalent"]
        parts.append(f"Schemes with a mean contract ({', '.join(names)}) share one y range; the grey "
                     f"band is the ±{margin:g} TOST margin, and {int(eq.sum())} of {len(eq)} of their "
                     f"cells are declared unbiased within it.")
    if "alpha" in panels.values():
        parts.append("Alpha dropout promises moments over N(0, 1) inputs only, so per input its "
                     "mean moves.")
    if "no_rescale" in panels.values():
        parts.append("The no-rescale bug is biased by exactly p − 1 (dashed line).")
    return " ".join(parts)


# --- variance -------------------------------------------------------------------------------
def variance_schemes(summary):
    """Schemes with a positive theoretical variance at some keep_prob (the variance panels)."""
    rows = summary[summary["var_theory"] > 0]
    return list(dict.fromkeys(rows["scheme"]))


def plot_variance(summary):
    """Per-unit variance of the train output, Monte Carlo (with CI) against theory: one panel
    per scheme run with a non-zero variance (keep_prob = 1 has none)."""
    import matplotlib.ticker as mticker

    plt = _pyplot()
    names = variance_schemes(summary)
    fig, axes = _panels(plt, len(names), max_cols=5)
    for ax, name in zip(axes, names):
        g = summary[summary["scheme"].eq(name) & (summary["var_theory"] > 0)].sort_values("keep_prob")
        ax.plot(g["keep_prob"], g["var_theory"], "k-", lw=1.2, label="theory (THEORY.md)", zorder=2)
        low = g["var_ratio_ci_low"] * g["var_theory"]
        high = g["var_ratio_ci_high"] * g["var_theory"]
        _errorbar(ax, g["keep_prob"], g["var_empirical"], low, high, fmt="o", ms=5, lw=1.2,
                  color="C1", label="Monte Carlo", zorder=3)
        ax.set_yscale("log")
        # Plain numbers (0.2, 0.5, 1, 2, 5 …), never 2×10⁻¹; minor ticks unlabelled.
        ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(_plain_formatter())
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        ax.margins(y=0.15)
        ax.set_title(name, fontsize=_TITLE_PT)
    fig.supxlabel("keep_prob", fontsize=_TEXT_PT)
    fig.supylabel("per-unit variance of the train output", fontsize=_TEXT_PT)
    _legend_outside(fig)
    return fig


def caption_variance(summary):
    names = variance_schemes(summary)
    level = _level_text(summary["confidence_level"].iloc[0])
    text = (f"Per-unit variance of the train output (mean over the probe's units), one panel per "
            f"scheme run ({', '.join(names)}): dots are Monte-Carlo estimates with {level} "
            f"intervals, lines the closed forms of THEORY.md (x²(1−p)/p for inverted dropout); "
            f"log scale.")
    if "inverted" in names:
        text += " Inverted dropout's noise grows without bound as keep_prob falls."
    if (summary["keep_prob"] == 1).any():
        text += " keep_prob = 1 has no noise and is not plotted."
    return text


# --- norm inflation -------------------------------------------------------------------------
#: Matrix styles of the norm-inflation figure: (marker, colour), the thread's matrix first.
_MATRIX_STYLE = {"thread": ("o", "C0"), "random 3x4": ("s", "C1"), "random 20x30": ("^", "C2")}


def _norm_matrices(norms):
    names = list(dict.fromkeys(norms["matrix"]))
    # The thread's matrix is drawn last, on top: it is the one the learners asked about.
    return sorted(names, key=lambda m: m == "thread")


def plot_norm_inflation(norms):
    """``E‖D∘A/p‖ / ‖A‖`` vs keep_prob with the rescale (left, against ``1/√p``) and without it
    (right, against ``√p``), one dodged series per matrix."""
    plt = _pyplot()
    rescales = [r for r in (True, False) if norms["rescale"].astype(bool).eq(r).any()]
    fig, axes = _panels(plt, len(rescales), max_cols=2)
    matrices = _norm_matrices(norms)
    offsets = dict(zip(sorted(matrices), dodge_offsets(len(matrices), norms["keep_prob"])))
    kp = norms["keep_prob"].to_numpy(dtype=float)
    grid = np.linspace(max(0.05, kp.min() - 0.02), 1, 100)
    for ax, rescale in zip(axes, rescales):
        if rescale:
            ax.plot(grid, 1 / np.sqrt(grid), color="k", ls="--", lw=1, zorder=1,
                    label="1/√p (large matrices)")
        else:
            ax.plot(grid, np.sqrt(grid), color="k", ls=":", lw=1.2, zorder=1, label="√p (large matrices)")
        ax.axhline(1, color="0.6", lw=0.8, zorder=0)
        for z, matrix in enumerate(matrices):
            g = norms[norms["matrix"].eq(matrix) & norms["rescale"].astype(bool).eq(rescale)]
            g = g.sort_values("keep_prob")
            marker, colour = _MATRIX_STYLE.get(matrix, (_MARKERS[z % len(_MARKERS)], f"C{z + 3}"))
            label = "thread's matrix (3×4)" if matrix == "thread" else matrix.replace("x", "×")
            _errorbar(ax, g["keep_prob"] + offsets[matrix], g["norm_ratio"], g["norm_ratio_ci_low"],
                      g["norm_ratio_ci_high"], marker=marker, ms=6, lw=1.2, color=colour,
                      ls="-" if matrix == "thread" else "--",
                      mfc=colour if matrix == "thread" else "white", label=label, zorder=3 + z)
        ax.set_xlabel("keep_prob", fontsize=_TEXT_PT)
        ax.set_ylabel("E‖dropout(A)‖ / ‖A‖", fontsize=_TEXT_PT)
        ax.set_title("With 1/keep_prob: the norm grows" if rescale
                     else "Without 1/keep_prob: the norm shrinks", fontsize=_TITLE_PT)
    _legend_outside(fig)
    return fig


def caption_norm_inflation(norms):
    matrices = _norm_matrices(norms)
    level = _level_text(norms["confidence_level"].min())
    rescales = set(norms["rescale"].astype(bool))
    text = (f"E‖D∘A/p‖ / ‖A‖ on {', '.join(m if m != 'thread' else 'the thread’s 3×4 matrix' for m in matrices)}, "
            f"with {level} intervals (simultaneous over the table's decisions).")
    if True in rescales:
        text += (" The 1/keep_prob rescale keeps each unit's mean but inflates the 2-norm, by "
                 "about 1/√p for large matrices.")
    if False in rescales:
        text += " Without it the norm shrinks by about √p."
    if len(matrices) > 1:
        text += (" The matrices' points are shifted slightly left or right of their keep_prob "
                 "(open markers and dashed lines for the random matrices, the thread's matrix "
                 "filled and drawn on top) so that none hides another: at 3×4 the thread's and "
                 "the random matrix's ratios nearly coincide.")
    return text


# --- inference gap --------------------------------------------------------------------------
_GROUP_LABEL = {("inverted", 1): "inverted dropout, one layer", ("dropconnect", 1): "DropConnect",
                ("inverted", 3): "inverted dropout, 3 linear layers"}
_GROUP_STYLE = {("inverted", 1): ("o", "C0", "-"), ("dropconnect", 1): ("s", "C3", "--"),
                ("inverted", 3): ("^", "C2", ":")}


def gap_groups(gaps):
    """``{activation: [(scheme, depth), …]}``: the series of each inference-gap panel. Rows of
    one series share activation, scheme and depth (and the first unit: softmax has three)."""
    out = {}
    scheme = gaps["scheme"] if "scheme" in gaps else ["inverted"] * len(gaps)
    depth = gaps["depth"] if "depth" in gaps else [1] * len(gaps)
    for act, s, d in zip(gaps["activation"], scheme, depth):
        groups = out.setdefault(act, [])
        if (s, int(d)) not in groups:
            groups.append((s, int(d)))
    return out


def _gap_series(gaps, act, scheme, depth):
    sel = gaps["activation"].eq(act)
    if "scheme" in gaps:
        sel &= gaps["scheme"].eq(scheme)
    if "depth" in gaps:
        sel &= gaps["depth"].eq(depth)
    g = gaps[sel]
    if "unit" in g:
        g = g[g["unit"].eq(g["unit"].min())]
    return g.sort_values("keep_prob")


def plot_inference_gap(gaps):
    """Gap ``E[f(train)] − f(eval)`` per activation vs keep_prob: one panel per activation, one
    series per (scheme, depth) with its simultaneous intervals (markers) and its exact
    enumerated value (line), dodged horizontally."""
    plt = _pyplot()
    groups = gap_groups(gaps)
    fig, axes = _panels(plt, len(groups), max_cols=3)
    for ax, (act, series) in zip(axes, groups.items()):
        offsets = dodge_offsets(len(series), gaps["keep_prob"])
        ax.axhline(0, color="0.6", lw=0.8, zorder=0)
        for (scheme, depth), dx in zip(series, offsets):
            g = _gap_series(gaps, act, scheme, depth)
            marker, colour, ls = _GROUP_STYLE.get((scheme, depth), ("D", "C4", "-."))
            label = _GROUP_LABEL.get((scheme, depth), f"{scheme}, depth {depth}")
            _errorbar(ax, g["keep_prob"] + dx, g["gap"], g["ci_low"], g["ci_high"], fmt=marker,
                      ms=5, lw=1.2, color=colour, label=f"{label}: Monte Carlo", zorder=3)
            exact = g["exact_gap"] if "exact_gap" in g else None
            # An exact gap of 0 everywhere (linear maps) is the grey zero line; drawing it would
            # put one line exactly on another.
            if exact is not None and exact.notna().any() and (exact.abs() > 1e-12).any():
                ax.plot(g["keep_prob"] + dx, exact, color=colour, ls=ls, lw=1.2, zorder=2,
                        label=f"{label}: exact (enumeration)")
        title = f"{act} (first of {gaps[gaps['activation'].eq(act)]['unit'].nunique()} outputs)" \
            if "unit" in gaps and gaps[gaps["activation"].eq(act)]["unit"].nunique() > 1 else act
        ax.set_title(title, fontsize=_TITLE_PT)
    fig.supxlabel("keep_prob", fontsize=_TEXT_PT)
    fig.supylabel("E[f(train)] − f(eval)", fontsize=_TEXT_PT)
    _legend_outside(fig, sort=True)
    return fig


def caption_inference_gap(gaps):
    groups = gap_groups(gaps)
    level = _level_text(gaps["confidence_level"].min()) if "confidence_level" in gaps else None
    acts = list(groups)
    text = ("E[f(train)] − f(eval) for one dropped layer feeding an activation f, one panel per "
            f"activation ({', '.join(acts)}).")
    if "identity" in acts:
        text += " Zero for the identity: linear networks are exact, at any depth."
    nonlinear = [a for a in acts if a != "identity"]
    if nonlinear:
        text += f" Non-zero after {', '.join(nonlinear)}."
    kinds = sorted({g for v in groups.values() for g in v}, key=lambda g: list(_GROUP_LABEL).index(g)
                   if g in _GROUP_LABEL else 99)
    if len(kinds) > 1:
        text += (" Each series is one scheme: " + "; ".join(_GROUP_LABEL.get(k, f"{k[0]}, depth {k[1]}")
                                                        for k in kinds)
                 + " (DropConnect drops weights instead of units; its eval is f(pWh + b)). Series "
                 "sharing a panel are shifted slightly left or right of their keep_prob so that none "
                 "hides another.")
    text += (" Markers: Monte Carlo" + (f" with {level} simultaneous intervals" if level else "")
             + "; lines: the exact expectation by enumerating every mask (where it is not 0).")
    if "softmax" in acts:
        text += " Softmax has three outputs; the first is shown (all are in inference_gap.csv)."
    return text


# --- MC averaging ---------------------------------------------------------------------------
def plot_mc_averaging(table):
    """Test error of the average of k stochastic passes vs k, against weight scaling."""
    plt = _pyplot()
    fig, (ax,) = _panels(plt, 1, max_cols=1)
    t = table.sort_values("k")
    level = _level_text(t["confidence_level"].iloc[0]) if "confidence_level" in t else ""
    ax.axhspan(float(t["error_weight_scaling_ci_low"].iloc[0]),
               float(t["error_weight_scaling_ci_high"].iloc[0]), color="0.88", zorder=0,
               label=f"weight scaling, {level} interval".strip(", "))
    ws = float(t["error_weight_scaling"].iloc[0])
    ax.axhline(ws, color="k", lw=1.2, ls="--", zorder=1, label="weight scaling (one pass)")
    _errorbar(ax, t["k"], t["error_mc"], t["error_mc_ci_low"], t["error_mc_ci_high"], marker="o",
              ms=5, lw=1.5, color="C0", label=f"MC average of k passes, {level} interval".strip(", "),
              zorder=3)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_plain_formatter())
    ax.set_xlabel("k (stochastic passes averaged)", fontsize=_TEXT_PT)
    ax.set_ylabel("test error (digits)", fontsize=_TEXT_PT)
    ax.set_title("Monte-Carlo model averaging vs weight scaling", fontsize=_TITLE_PT)
    _legend_outside(fig)
    return fig


def caption_mc_averaging(table):
    t = table.sort_values("k")
    n = int(t["n_seeds"].iloc[0]) if "n_seeds" in t else None
    level = _level_text(t["confidence_level"].iloc[0]) if "confidence_level" in t else None
    ks = t["k"].astype(int).tolist()
    return ("Test error on scikit-learn's digits of the average of k stochastic passes "
            f"(k = {ks[0]} … {ks[-1]}) against the one-pass weight-scaled network (dashed, with its "
            "interval shaded)"
            + (f", across {n} independently trained networks" if n else "")
            + (f"; intervals are {level} Student-t intervals over those networks" if level else "")
            + ". The claims ledger (C16) reads the same numbers at its own 99 % level.")


# --- files ----------------------------------------------------------------------------------
def save_figure(fig, stem, formats=("svg", "png")):
    """Write ``stem.svg`` and/or ``stem.png`` (``formats``; PNG at :data:`PNG_DPI`); return the
    SVG text. Closes ``fig``."""
    import matplotlib.pyplot as plt

    from stats_dropout._internal.files import atomic_write_bytes, atomic_write_text

    unknown = set(formats) - {"svg", "png"}
    if unknown:
        raise ValueError(f"`formats` must hold 'svg' and/or 'png'; got {tuple(formats)!r}")
    text = svg_text(fig)
    # The SVG draw placed every panel and legend (constrained layout); keep those positions for
    # the PNG instead of solving the layout again (same picture, half the time).
    fig.set_layout_engine("none")
    if "svg" in formats:
        atomic_write_text(stem + ".svg", text)
    if "png" in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
        atomic_write_bytes(stem + ".png", buf.getvalue())
    plt.close(fig)
    return text


def svg_text(fig):
    """Standalone SVG markup of ``fig`` with no date, so equal figures give equal bytes."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
