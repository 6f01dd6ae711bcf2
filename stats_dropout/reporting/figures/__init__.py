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

Layout, by what the modules plot:

``style``           the slide rules: canvas, font sizes, legend, error bars, dodge;
``schemes``         the sweep's figures: ``bias`` and ``variance``, one panel per scheme;
``norm_inflation``  ``norm_inflation``, the 2-norm with and without the rescale;
``inference``       test-time inference: ``inference_gap`` and ``mc_averaging``;
``files``           :func:`save_figure` and :func:`svg_text`.

The public names of the modules are importable from here.
"""

from stats_dropout.reporting.figures.files import save_figure, svg_text
from stats_dropout.reporting.figures.inference import (
    caption_inference_gap,
    caption_mc_averaging,
    gap_groups,
    plot_inference_gap,
    plot_mc_averaging,
)
from stats_dropout.reporting.figures.norm_inflation import caption_norm_inflation, plot_norm_inflation
from stats_dropout.reporting.figures.schemes import (
    bias_panels,
    caption_bias,
    caption_variance,
    plot_bias,
    plot_variance,
    variance_schemes,
)
from stats_dropout.reporting.figures.style import MIN_FONT_PT, PNG_DPI, dodge_offsets

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
