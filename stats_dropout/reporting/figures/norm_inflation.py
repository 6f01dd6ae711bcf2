"""The norm-inflation figure: ``E‖D∘A/p‖ / ‖A‖`` vs keep_prob, with and without the rescale.

It reads :func:`stats_dropout.studies.experiments.norm_table`, one dodged series per matrix,
the thread's 3×4 matrix drawn on top.
"""

from __future__ import annotations

import numpy as np

from stats_dropout.reporting.figures.style import (
    MARKERS,
    TEXT_PT,
    TITLE_PT,
    dodge_offsets,
    errorbar,
    legend_outside,
    level_text,
    panels,
    pyplot,
)

__all__ = ["plot_norm_inflation", "caption_norm_inflation"]

#: Matrix styles of the norm-inflation figure: (marker, colour), the thread's matrix first.
_MATRIX_STYLE = {"thread": ("o", "C0"), "random 3x4": ("s", "C1"), "random 20x30": ("^", "C2")}


def _norm_matrices(norms):
    names = list(dict.fromkeys(norms["matrix"]))
    # The thread's matrix is drawn last, on top: it is the one the learners asked about.
    return sorted(names, key=lambda m: m == "thread")


def plot_norm_inflation(norms):
    """``E‖D∘A/p‖ / ‖A‖`` vs keep_prob with the rescale (left, against ``1/√p``) and without it
    (right, against ``√p``), one dodged series per matrix."""
    plt = pyplot()
    rescales = [r for r in (True, False) if norms["rescale"].astype(bool).eq(r).any()]
    fig, axes = panels(plt, len(rescales), max_cols=2)
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
            marker, colour = _MATRIX_STYLE.get(matrix, (MARKERS[z % len(MARKERS)], f"C{z + 3}"))
            label = "thread's matrix (3×4)" if matrix == "thread" else matrix.replace("x", "×")
            errorbar(ax, g["keep_prob"] + offsets[matrix], g["norm_ratio"], g["norm_ratio_ci_low"],
                      g["norm_ratio_ci_high"], marker=marker, ms=6, lw=1.2, color=colour,
                      ls="-" if matrix == "thread" else "--",
                      mfc=colour if matrix == "thread" else "white", label=label, zorder=3 + z)
        ax.set_xlabel("keep_prob", fontsize=TEXT_PT)
        ax.set_ylabel("E‖dropout(A)‖ / ‖A‖", fontsize=TEXT_PT)
        ax.set_title("With 1/keep_prob: the norm grows" if rescale
                     else "Without 1/keep_prob: the norm shrinks", fontsize=TITLE_PT)
    legend_outside(fig)
    return fig


def caption_norm_inflation(norms):
    """What :func:`plot_norm_inflation` shows for this table, with its level."""
    matrices = _norm_matrices(norms)
    level = level_text(norms["confidence_level"].min())
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
