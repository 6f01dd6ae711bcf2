"""The report's figures are slide-ready, checked on the matplotlib Figure objects themselves.

Slide rules (issue #13): readable at 1280×720 (16:9, every text ≥ 9 pt, legends outside the
data), tick labels on every panel, no series hidden under another, PNG at ≥ 200 dpi, and panels
and captions only for what the run computed. And each plotted series comes from exactly one
group of its table (the inference-gap figure once zig-zagged between two schemes).
"""

import struct

import numpy as np
import pandas as pd
import pytest

from stats_dropout.reporting import figures as fg
from stats_dropout.reporting.sweep import sweep_summary
from stats_dropout.studies import experiments

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402


@pytest.fixture(scope="module")
def summary():
    return sweep_summary(("inverted", "gaussian", "alpha", "no_rescale"), (0.5, 0.8, 1.0), seed=1,
                         min_draws=200, max_draws=200)


@pytest.fixture(scope="module")
def gaps():
    return experiments.inference_gap((0.5, 0.8), seed=0, draws=500, n_units=6)


@pytest.fixture(scope="module")
def norms():
    return experiments.norm_table(keep_probs=(0.5, 0.8), seed=0, draws=500)


@pytest.fixture(scope="module")
def mc_table():
    ks = [1, 10, 100]
    err = np.array([0.15, 0.05, 0.04])
    return pd.DataFrame({
        "k": ks, "error_mc": err, "error_mc_ci_low": err - 0.01, "error_mc_ci_high": err + 0.01,
        "error_weight_scaling": 0.04, "error_weight_scaling_ci_low": 0.03,
        "error_weight_scaling_ci_high": 0.05, "n_seeds": 4, "confidence_level": 0.95})


def _figures(summary, gaps, norms, mc_table):
    return {"bias": fg.plot_bias(summary), "variance": fg.plot_variance(summary),
            "norm_inflation": fg.plot_norm_inflation(norms),
            "inference_gap": fg.plot_inference_gap(gaps), "mc_averaging": fg.plot_mc_averaging(mc_table)}


@pytest.fixture(scope="module")
def drawn(summary, gaps, norms, mc_table):
    figs = _figures(summary, gaps, norms, mc_table)
    for fig in figs.values():
        fig.canvas.draw()
    yield figs
    for fig in figs.values():
        plt.close(fig)


def _data_lines(ax):
    """Lines drawn in data coordinates (the series), not axhline / axhspan references."""
    return [ln for ln in ax.get_lines() if ln.get_transform() == ax.transData and len(ln.get_xdata())]


# --- the inference-gap figure: one series, one group ------------------------------------------
def test_each_inference_gap_series_comes_from_one_group(drawn, gaps):
    fig = drawn["inference_gap"]
    groups = fg.gap_groups(gaps)
    assert {"relu", "sigmoid"} <= set(groups) and len(groups["relu"]) == 2  # inverted + dropconnect
    assert len(fig.axes) == len(groups)
    seen = set()
    for ax in fig.axes:
        act = ax.get_title().split(" ")[0]
        lines = _data_lines(ax)
        assert lines, act
        for line in lines:
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            matches = []
            for scheme, depth in groups[act]:
                g = gaps[gaps["activation"].eq(act) & gaps["scheme"].eq(scheme) & gaps["depth"].eq(depth)]
                g = g[g["unit"].eq(g["unit"].min())].sort_values("keep_prob")
                kp = g["keep_prob"].to_numpy(float)
                if len(x) != len(kp) or np.ptp(x - kp) > 1e-12:  # same keep_probs, one constant dodge
                    continue
                for column in ("gap", "exact_gap"):
                    if np.allclose(y, g[column].to_numpy(float), rtol=0, atol=1e-15):
                        matches.append((scheme, depth, column))
            # A series that alternated between the inverted and DropConnect rows (the old bug)
            # matches no group; one that matched two would be ambiguous.
            assert len({m[:2] for m in matches}) == 1, (act, y, matches)
            seen.add((act,) + matches[0][:2])
    assert seen == {(a, s, d) for a, v in groups.items() for s, d in v}
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("DropConnect" in t for t in labels) and any("inverted" in t for t in labels)


# --- slide rules ----------------------------------------------------------------------------
NAMES = ["bias", "variance", "norm_inflation", "inference_gap", "mc_averaging"]


@pytest.mark.parametrize("name", NAMES)
def test_slide_rules(drawn, name):
    fig = drawn[name]
    assert fig.dpi >= 200
    w, h = fig.get_size_inches()
    assert w / h == pytest.approx(16 / 9, rel=0.01)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    small = sorted({(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < fg.MIN_FONT_PT})
    assert not small, small
    renderer = fig.canvas.get_renderer()
    panels = [ax.get_window_extent(renderer) for ax in fig.axes]
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            shown = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            assert shown, f"{name}: panel {ax.get_title()!r} has no {axis.axis_name} tick labels"
        assert ax.get_legend() is None  # legends are the figure's, outside the panels
    assert fig.legends, name
    figure_box = fig.bbox
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(p) for p in panels), f"{name}: legend over a panel"
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 + 1
        assert figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1 + 1


def test_png_is_written_at_200_dpi(tmp_path, mc_table):
    fig = fg.plot_mc_averaging(mc_table)
    w, h = fig.get_size_inches()
    fg.save_figure(fig, str(tmp_path / "mc"), formats=("png",))
    header = (tmp_path / "mc.png").read_bytes()[:24]
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (round(w * fg.PNG_DPI), round(h * fg.PNG_DPI))
    assert fg.PNG_DPI >= 200


# --- no hidden series ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["norm_inflation", "inference_gap"])
def test_no_series_hidden_under_another(drawn, name):
    for ax in drawn[name].axes:
        markers = [ln for ln in _data_lines(ax) if ln.get_marker() not in ("None", None, "")]
        styles = {(ln.get_marker(), ln.get_markerfacecolor(), ln.get_color()) for ln in markers}
        assert len(styles) == len(markers), ax.get_title()  # every series looks different
        xs = [tuple(np.round(np.asarray(ln.get_xdata(), float), 12)) for ln in markers]
        assert len(set(xs)) == len(xs), ax.get_title()  # and sits at its own (dodged) x


def test_thread_matrix_is_drawn_on_top(drawn):
    for ax in drawn["norm_inflation"].axes:
        # errorbar containers carry the labels; their first line is the series
        lines = {c.get_label(): c.lines[0] for c in ax.containers}
        thread = next(v for k, v in lines.items() if k.startswith("thread"))
        others = [v for k, v in lines.items() if "random" in k]
        assert others and all(thread.get_zorder() > o.get_zorder() for o in others)


def test_dodge_offsets_are_centred_and_small():
    off = fg.dodge_offsets(3, [0.1, 0.2, 0.3])
    assert off.mean() == pytest.approx(0) and np.ptp(off) <= 0.05 + 1e-12
    assert list(fg.dodge_offsets(1, [0.5])) == [0.0]


# --- panels and captions for what the run computed -----------------------------------------
def test_panels_and_captions_follow_the_schemes_run(summary):
    only = summary[summary["scheme"].eq("inverted")]
    for plot in (fg.plot_bias, fg.plot_variance):
        fig = plot(only)
        assert len(fig.axes) == 1 and fig.axes[0].get_title() == "inverted"
        plt.close(fig)
    for caption in (fg.caption_bias(only), fg.caption_variance(only)):
        assert "alpha" not in caption.lower() and "no-rescale" not in caption and "gaussian" not in caption
    fig = fg.plot_bias(summary)
    assert [ax.get_title() for ax in fig.axes] == ["inverted", "gaussian", "alpha", "no_rescale"]
    plt.close(fig)
    assert "alpha" in fg.caption_bias(summary).lower() and "p − 1" in fg.caption_bias(summary)


def test_captions_state_the_tables_levels(summary, norms, gaps, mc_table):
    assert "95 %" in fg.caption_bias(summary)
    level = f"{100 * norms['confidence_level'].min():.8g} %"
    assert level in fg.caption_norm_inflation(norms) and "95 %" not in fg.caption_norm_inflation(norms)
    assert "simultaneous" in fg.caption_inference_gap(gaps) and "shifted" in fg.caption_inference_gap(gaps)
    assert "95 % Student-t" in fg.caption_mc_averaging(mc_table)
