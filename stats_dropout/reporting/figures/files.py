"""Writing a figure: a standalone SVG with deterministic bytes, and a PNG at :data:`PNG_DPI`."""

from __future__ import annotations

import io

from stats_dropout.reporting.figures.style import PNG_DPI

__all__ = ["save_figure", "svg_text"]


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
