"""Figures of test-time inference: the inference gap after an activation, and MC averaging.

:func:`plot_inference_gap` reads :func:`stats_dropout.studies.experiments.inference_gap`
(``E[f(train)] − f(eval)`` per activation, one series per scheme and depth);
:func:`plot_mc_averaging` reads :func:`stats_dropout.studies.experiments.mc_averaging` (the
test error of k averaged stochastic passes against weight scaling).
"""

from __future__ import annotations

from stats_dropout.reporting.figures.style import (
    TEXT_PT,
    TITLE_PT,
    dodge_offsets,
    errorbar,
    finish_keep_prob_figure,
    legend_outside,
    level_text,
    panels,
    plain_formatter,
    pyplot,
)

__all__ = ["gap_groups", "plot_inference_gap", "caption_inference_gap", "plot_mc_averaging",
           "caption_mc_averaging"]


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
    plt = pyplot()
    groups = gap_groups(gaps)
    fig, axes = panels(plt, len(groups), max_cols=3)
    for ax, (act, series) in zip(axes, groups.items()):
        offsets = dodge_offsets(len(series), gaps["keep_prob"])
        ax.axhline(0, color="0.6", lw=0.8, zorder=0)
        for (scheme, depth), dx in zip(series, offsets):
            g = _gap_series(gaps, act, scheme, depth)
            marker, colour, ls = _GROUP_STYLE.get((scheme, depth), ("D", "C4", "-."))
            label = _GROUP_LABEL.get((scheme, depth), f"{scheme}, depth {depth}")
            errorbar(ax, g["keep_prob"] + dx, g["gap"], g["ci_low"], g["ci_high"], fmt=marker,
                      ms=5, lw=1.2, color=colour, label=f"{label}: Monte Carlo", zorder=3)
            exact = g["exact_gap"] if "exact_gap" in g else None
            # An exact gap of 0 everywhere (linear maps) is the grey zero line; drawing it would
            # put one line exactly on another.
            if exact is not None and exact.notna().any() and (exact.abs() > 1e-12).any():
                ax.plot(g["keep_prob"] + dx, exact, color=colour, ls=ls, lw=1.2, zorder=2,
                        label=f"{label}: exact (enumeration)")
        title = f"{act} (first of {gaps[gaps['activation'].eq(act)]['unit'].nunique()} outputs)" \
            if "unit" in gaps and gaps[gaps["activation"].eq(act)]["unit"].nunique() > 1 else act
        ax.set_title(title, fontsize=TITLE_PT)
    return finish_keep_prob_figure(fig, "E[f(train)] − f(eval)", sort=True)


def caption_inference_gap(gaps):
    """What :func:`plot_inference_gap` shows for this table, with its level."""
    groups = gap_groups(gaps)
    level = level_text(gaps["confidence_level"].min()) if "confidence_level" in gaps else None
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
    plt = pyplot()
    fig, (ax,) = panels(plt, 1, max_cols=1)
    t = table.sort_values("k")
    level = level_text(t["confidence_level"].iloc[0]) if "confidence_level" in t else ""
    ax.axhspan(float(t["error_weight_scaling_ci_low"].iloc[0]),
               float(t["error_weight_scaling_ci_high"].iloc[0]), color="0.88", zorder=0,
               label=f"weight scaling, {level} interval".strip(", "))
    ws = float(t["error_weight_scaling"].iloc[0])
    ax.axhline(ws, color="k", lw=1.2, ls="--", zorder=1, label="weight scaling (one pass)")
    errorbar(ax, t["k"], t["error_mc"], t["error_mc_ci_low"], t["error_mc_ci_high"], marker="o",
              ms=5, lw=1.5, color="C0", label=f"MC average of k passes, {level} interval".strip(", "),
              zorder=3)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plain_formatter())
    ax.set_xlabel("k (stochastic passes averaged)", fontsize=TEXT_PT)
    ax.set_ylabel("test error (digits)", fontsize=TEXT_PT)
    ax.set_title("Monte-Carlo model averaging vs weight scaling", fontsize=TITLE_PT)
    legend_outside(fig)
    return fig


def caption_mc_averaging(table):
    """What :func:`plot_mc_averaging` shows for this table, with its level and seeds."""
    t = table.sort_values("k")
    n = int(t["n_seeds"].iloc[0]) if "n_seeds" in t else None
    level = level_text(t["confidence_level"].iloc[0]) if "confidence_level" in t else None
    ks = t["k"].astype(int).tolist()
    return ("Test error on scikit-learn's digits of the average of k stochastic passes "
            f"(k = {ks[0]} … {ks[-1]}) against the one-pass weight-scaled network (dashed, with its "
            "interval shaded)"
            + (f", across {n} independently trained networks" if n else "")
            + (f"; intervals are {level} Student-t intervals over those networks" if level else "")
            + ". The claims ledger (C16) reads the same numbers at its own 99 % level.")
