"""Figures of the schemes sweep: the relative bias and the per-unit variance of each scheme run.

Both read the sweep summary (:func:`stats_dropout.reporting.sweep.sweep_summary`), one panel
per scheme, and each ``caption_*`` describes only the schemes that summary holds.
"""

from __future__ import annotations

import numpy as np

from stats_dropout.reporting.figures.style import (
    TITLE_PT,
    errorbar,
    finish_keep_prob_figure,
    level_text,
    panels,
    plain_formatter,
    pyplot,
)

__all__ = ["bias_panels", "plot_bias", "caption_bias", "variance_schemes", "plot_variance",
           "caption_variance"]


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
    plt = pyplot()
    kinds = bias_panels(summary)
    fig, axes = panels(plt, len(kinds), max_cols=5)
    margin = float(summary["tost_margin"].iloc[0]) if margin is None else margin
    mean_rows = summary[summary["scheme"].isin([n for n, k in kinds.items() if k == "mean"])]
    if len(mean_rows):
        reach = max(1.25 * margin, float(np.nanmax(np.abs(mean_rows[["relative_bias_ci_low",
                                                                       "relative_bias_ci_high"]]))) * 1.1)
    for ax, (name, kind) in zip(axes, kinds.items()):
        g = summary[summary["scheme"].eq(name)].sort_values("keep_prob")
        if kind == "mean":
            ax.axhspan(-margin, margin, color="0.9", zorder=0, label=f"±{margin:g} TOST margin")
            ax.set_ylim(-reach, reach)
        if kind == "no_rescale":
            kp = g["keep_prob"].to_numpy(dtype=float)
            grid = np.linspace(min(kp.min(), 1.0), 1.0, 100)
            ax.plot(grid, grid - 1, color="k", ls="--", lw=1.2, zorder=1, label="theory p − 1 (no_rescale)")
        errorbar(ax, g["keep_prob"], g["relative_bias"], g["relative_bias_ci_low"],
                 g["relative_bias_ci_high"], fmt="o", ms=4, lw=1.2, color="C0",
                 label="Monte Carlo, with its interval", zorder=3)
        ax.axhline(0, color="k", lw=0.6, zorder=1)
        ax.set_title(name, fontsize=TITLE_PT)
    return finish_keep_prob_figure(fig, "relative bias β of E[train] vs eval")


def caption_bias(summary):
    """What :func:`plot_bias` shows for this summary, with its level and TOST margin."""
    kinds = bias_panels(summary)
    level = level_text(summary["confidence_level"].iloc[0])
    margin = float(summary["tost_margin"].iloc[0])
    parts = [f"Relative bias β of the train output, E[train] = (1 + β)·eval, with {level} "
             f"confidence bars, one panel per scheme run."]
    names = [n for n, k in kinds.items() if k == "mean"]
    if names:
        eq = summary[summary["scheme"].isin(names)]["equivalent"]
        parts.append(f"Schemes with a mean contract ({', '.join(names)}) share one y range; the grey "
                     f"band is the ±{margin:g} TOST margin, and {int(eq.sum())} of {len(eq)} of their "
                     f"cells are declared unbiased within it.")
    if "alpha" in kinds.values():
        parts.append("Alpha dropout promises moments over N(0, 1) inputs only, so per input its "
                     "mean moves.")
    if "no_rescale" in kinds.values():
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

    plt = pyplot()
    names = variance_schemes(summary)
    fig, axes = panels(plt, len(names), max_cols=5)
    for ax, name in zip(axes, names):
        g = summary[summary["scheme"].eq(name) & (summary["var_theory"] > 0)].sort_values("keep_prob")
        ax.plot(g["keep_prob"], g["var_theory"], "k-", lw=1.2, label="theory (THEORY.md)", zorder=2)
        low = g["var_ratio_ci_low"] * g["var_theory"]
        high = g["var_ratio_ci_high"] * g["var_theory"]
        errorbar(ax, g["keep_prob"], g["var_empirical"], low, high, fmt="o", ms=5, lw=1.2,
                 color="C1", label="Monte Carlo", zorder=3)
        ax.set_yscale("log")
        # Plain numbers (0.2, 0.5, 1, 2, 5 …), never 2×10⁻¹; minor ticks unlabelled.
        ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain_formatter())
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        ax.margins(y=0.15)
        ax.set_title(name, fontsize=TITLE_PT)
    return finish_keep_prob_figure(fig, "per-unit variance of the train output")


def caption_variance(summary):
    """What :func:`plot_variance` shows for this summary, with its level."""
    names = variance_schemes(summary)
    level = level_text(summary["confidence_level"].iloc[0])
    text = (f"Per-unit variance of the train output (mean over the probe's units), one panel per "
            f"scheme run ({', '.join(names)}): dots are Monte-Carlo estimates with {level} "
            f"intervals, lines the closed forms of THEORY.md (x²(1−p)/p for inverted dropout); "
            f"log scale.")
    if "inverted" in names:
        text += " Inverted dropout's noise grows without bound as keep_prob falls."
    if (summary["keep_prob"] == 1).any():
        text += " keep_prob = 1 has no noise and is not plotted."
    return text
