"""Figures of the report, drawn with matplotlib (imported lazily, Agg backend).

Each ``plot_*`` function takes a tidy DataFrame from :mod:`stats_dropout.reporting` or
:mod:`stats_dropout.experiments` and returns a :class:`matplotlib.figure.Figure`;
:func:`save_figure` writes it as a standalone SVG (deterministic bytes: fixed hash salt, no
date) and PNG (for slides), and :func:`svg_text` gives the SVG markup to inline in HTML.
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
    "save_figure",
    "svg_text",
]

#: Fixed so that the same figure gives the same SVG bytes (matplotlib otherwise salts ids).
_SVG_HASHSALT = "stats_dropout"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; a no-op if a backend is already in use
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = _SVG_HASHSALT
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small files, selectable in browsers
    return plt


def _figure(plt, ncols=1, nrows=1, width=6.4, height=4.0, **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)
    return fig, axes


def plot_bias(summary, *, margin=None):
    """Relative bias of ``E[train]`` against the eval output vs keep_prob, with CI bands.

    Left: schemes whose contract is the mean (zoomed to the TOST margin). Right: alpha dropout
    (a distribution-level contract, so a per-input bias is expected) and the no-rescale bug,
    with its theoretical bias ``p − 1``.
    """
    plt = _pyplot()
    fig, axes = _figure(plt, ncols=2, width=11, height=4.2)
    left, right = axes[0]
    mean_contract = summary["contract"].eq("mean") & ~summary["scheme"].eq("no_rescale")
    margin = float(summary["tost_margin"].iloc[0]) if margin is None else margin
    for name, g in summary[mean_contract].groupby("scheme", sort=False):
        g = g.sort_values("keep_prob")
        left.plot(g["keep_prob"], g["relative_bias"], marker="o", ms=3, lw=1, label=name)
        left.fill_between(g["keep_prob"], g["relative_bias_ci_low"], g["relative_bias_ci_high"], alpha=0.15)
    left.axhspan(-margin, margin, color="0.85", zorder=0, label=f"±{margin:g} TOST margin")
    left.axhline(0, color="k", lw=0.6)
    left.set(xlabel="keep_prob", ylabel="relative bias of E[train] vs eval",
             title="Schemes with a mean contract: unbiased")
    left.legend(fontsize=6, ncol=4, loc="lower center")
    others = summary[~mean_contract]
    for name, g in others.groupby("scheme", sort=False):
        g = g.sort_values("keep_prob")
        right.plot(g["keep_prob"], g["relative_bias"], marker="o", ms=3, lw=1, label=name)
        right.fill_between(g["keep_prob"], g["relative_bias_ci_low"], g["relative_bias_ci_high"], alpha=0.2)
    if others["scheme"].eq("no_rescale").any():
        grid = np.linspace(0.01, 1, 100)
        right.plot(grid, grid - 1, "k--", lw=0.8, label="no rescale, theory p − 1")
    right.axhline(0, color="k", lw=0.6)
    right.set(xlabel="keep_prob", ylabel="relative bias of E[train] vs eval",
              title="Alpha dropout (per input) and the missing 1/keep_prob")
    if len(others):
        right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _panels(plt, n, *, max_cols, width, height):
    """A grid of ``n`` panels (at most ``max_cols`` a row, shared x axis); spare panels hidden."""
    ncols = min(max_cols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = _figure(plt, ncols=ncols, nrows=nrows, width=width * ncols, height=height * nrows,
                        sharex=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes


def plot_variance(summary):
    """Per-unit variance of the train output, Monte Carlo (with CI) against theory, per scheme."""
    plt = _pyplot()
    names = list(dict.fromkeys(summary["scheme"]))
    fig, axes = _panels(plt, len(names), max_cols=4, width=3.0, height=2.5)
    for ax, name in zip(axes.ravel(), names):
        g = summary[summary["scheme"].eq(name) & (summary["var_theory"] > 0)].sort_values("keep_prob")
        ax.plot(g["keep_prob"], g["var_theory"], "k-", lw=1, label="theory")
        low = g["var_ratio_ci_low"] * g["var_theory"]
        high = g["var_ratio_ci_high"] * g["var_theory"]
        ax.errorbar(g["keep_prob"], g["var_empirical"],
                    yerr=[g["var_empirical"] - low, high - g["var_empirical"]],
                    fmt="o", ms=3, lw=1, color="C1", label="Monte Carlo")
        if len(g):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("keep_prob", fontsize=9)
    fig.supylabel("per-unit variance of train output", fontsize=9)
    fig.tight_layout()
    return fig


def plot_norm_inflation(norms):
    """``E‖D∘A/p‖ / ‖A‖`` (and without the rescale) vs keep_prob, against ``1/√p`` and ``√p``."""
    plt = _pyplot()
    fig, axes = _figure(plt, width=6.4, height=4.2)
    ax = axes[0, 0]
    for (matrix, rescale), g in norms.groupby(["matrix", "rescale"], sort=False):
        g = g.sort_values("keep_prob")
        label = f"{matrix}, {'with' if rescale else 'without'} 1/p"
        ax.errorbar(g["keep_prob"], g["norm_ratio"],
                    yerr=[g["norm_ratio"] - g["norm_ratio_ci_low"], g["norm_ratio_ci_high"] - g["norm_ratio"]],
                    marker="o" if rescale else "s", ms=3, lw=1, label=label)
    grid = np.linspace(max(0.05, norms["keep_prob"].min() - 0.02), 1, 100)
    ax.plot(grid, 1 / np.sqrt(grid), "k--", lw=0.8, label="1/√p (large matrices)")
    ax.plot(grid, np.sqrt(grid), "k:", lw=0.8, label="√p")
    ax.axhline(1, color="0.5", lw=0.6)
    ax.set(xlabel="keep_prob", ylabel="E‖dropout(A)‖ / ‖A‖",
           title="The rescale keeps the mean, not the 2-norm")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_inference_gap(gaps):
    """Gap ``E[f(train)] − f(eval)`` per activation vs keep_prob, with CIs and exact values."""
    plt = _pyplot()
    acts = list(dict.fromkeys(gaps["activation"]))
    fig, axes = _panels(plt, len(acts), max_cols=3, width=3.4, height=2.6)
    unit0 = gaps["unit"].eq(gaps["unit"].min()) if "unit" in gaps else True
    depth1 = gaps["depth"].eq(gaps["depth"].min()) if "depth" in gaps else True
    for ax, act in zip(axes.ravel(), acts):
        g = gaps[gaps["activation"].eq(act) & unit0 & depth1].sort_values("keep_prob")
        ax.errorbar(g["keep_prob"], g["gap"], yerr=[g["gap"] - g["ci_low"], g["ci_high"] - g["gap"]],
                    fmt="o", ms=3, lw=1, label="Monte Carlo")
        if "exact_gap" in g and g["exact_gap"].notna().any():
            ax.plot(g["keep_prob"], g["exact_gap"], "k-", lw=0.8, label="exact (enumeration)")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_title(act, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.supxlabel("keep_prob", fontsize=9)
    fig.supylabel("E[f(train)] − f(eval)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_mc_averaging(table):
    """Test error of the average of k stochastic passes vs k, against weight scaling."""
    plt = _pyplot()
    fig, axes = _figure(plt, width=6.4, height=4.2)
    ax = axes[0, 0]
    t = table.sort_values("k")
    ax.plot(t["k"], t["error_mc"], "o-", ms=3, lw=1, label="MC average of k passes")
    ax.fill_between(t["k"], t["error_mc_ci_low"], t["error_mc_ci_high"], alpha=0.2)
    ws = float(t["error_weight_scaling"].iloc[0])
    ax.axhline(ws, color="k", lw=1, ls="--", label="weight scaling (one pass)")
    ax.axhspan(float(t["error_weight_scaling_ci_low"].iloc[0]),
               float(t["error_weight_scaling_ci_high"].iloc[0]), color="0.85", zorder=0)
    ax.set_xscale("log")
    ax.set(xlabel="k (stochastic passes averaged)", ylabel="test error (digits)",
           title="Monte-Carlo model averaging vs weight scaling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, stem, formats=("svg", "png")):
    """Write ``stem.svg`` and/or ``stem.png`` (``formats``); return the SVG text. Closes ``fig``."""
    import matplotlib.pyplot as plt

    from stats_dropout._internal.files import atomic_write_bytes, atomic_write_text

    unknown = set(formats) - {"svg", "png"}
    if unknown:
        raise ValueError(f"`formats` must hold 'svg' and/or 'png'; got {tuple(formats)!r}")
    text = svg_text(fig)
    if "svg" in formats:
        atomic_write_text(stem + ".svg", text)
    if "png" in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        atomic_write_bytes(stem + ".png", buf.getvalue())
    plt.close(fig)
    return text


def svg_text(fig):
    """Standalone SVG markup of ``fig`` with no date, so equal figures give equal bytes."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
