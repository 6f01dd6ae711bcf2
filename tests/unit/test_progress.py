"""Progress bars (issue #13): on stderr for `report`, `claims` and `schemes` when stderr is a
terminal or `--progress` is given; nothing at all on a pipe (pytest's stderr is not a terminal);
the numbers never depend on them."""

import functools
import os
import sys

import pandas as pd
import pytest

from stats_dropout.cli import main
from stats_dropout.reporting.tables import REPORT_EXPERIMENTS

SCHEMES_ARGS = ["schemes", "--schemes", "inverted", "--keep-probs", "0.5", "--relative-error", "0.2"]

#: The report's experiments in seconds (as tests/unit/test_reporting.py's SMALL_EXPERIMENTS).
SMALL_EXPERIMENTS = {
    "mc_averaging": {"ks": (1, 5), "n_seeds": 2, "epochs": 1, "hidden": 8},
    "inference_gap": {"keep_probs": (0.5,)},
    "norm_table": {"keep_probs": (0.5,), "draws": 500},
    "variance_shift_table": {"keep_probs": (0.5,), "draws": 2000},
    "regression_dropout": {"keep_probs": (0.8,), "n_seeds": 4, "steps": 200, "draws": 500},
    "dropblock_bias_table": {"feat_sizes": (7,), "block_sizes": (3,), "normalizations": ("ratio",),
                             "max_draws": 1000},
    "stochastic_depth_bias_table": {"batch_sizes": (1,), "variants": (("batch", "ratio"),), "max_draws": 1000},
}
REPORT_ARGS = ["--draws", "500", "--keep-probs", "0.5", "--schemes", "inverted"]


@pytest.fixture
def small_claims(monkeypatch):
    """`claims` on three claims, C16 (a training run) included, with a tiny mc_averaging."""
    from stats_dropout.studies import experiments
    from stats_dropout.studies.claims import ledger

    monkeypatch.setattr(ledger, "CLAIMS", {c: ledger.CLAIMS[c] for c in ("C04", "C06", "C16")})
    monkeypatch.setattr(experiments, "mc_averaging", functools.partial(
        experiments.mc_averaging, ks=(1, 5), n_seeds=2, epochs=1, hidden=8))


@pytest.fixture
def fast_figures(monkeypatch):
    """Figures drawn but not rendered (rendering is most of a small report's time)."""
    import matplotlib.pyplot as plt

    from stats_dropout.reporting import figures

    def save_figure(fig, stem, formats=("svg", "png")):
        plt.close(fig)
        return "<svg></svg>"

    monkeypatch.setattr(figures, "save_figure", save_figure)


@pytest.fixture
def small_report(monkeypatch, fast_figures):
    """`report` through the CLI with the small experiments, in one process (spawning the
    experiments' process costs more than the small report; the slow test below covers it)."""
    from stats_dropout.reporting import report

    monkeypatch.setattr(report, "write_report", functools.partial(
        report.write_report, experiment_options=SMALL_EXPERIMENTS, figure_formats=("svg",),
        parallel=False))


def test_schemes_bar_with_progress_and_silence_without(capsys, monkeypatch):
    assert main(SCHEMES_ARGS + ["--progress"]) == 0
    forced = capsys.readouterr()
    assert "schemes × keep_prob" in forced.err and "1/1" in forced.err
    assert "schemes × keep_prob" not in forced.out  # bars never reach stdout
    assert main(SCHEMES_ARGS) == 0
    piped = capsys.readouterr()
    assert piped.err == "" and piped.out == forced.out
    # The rule: on by default exactly when stderr is a terminal; --no-progress wins.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(SCHEMES_ARGS) == 0
    assert "schemes × keep_prob" in capsys.readouterr().err
    assert main(SCHEMES_ARGS + ["--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_claims_bars_with_progress_and_silence_without(small_claims, tmp_path, capsys):
    with_bar, without = tmp_path / "with.csv", tmp_path / "without.csv"
    assert main(["claims", "--progress", "--csv", str(with_bar)]) == 0
    err = capsys.readouterr().err
    assert "claims" in err and "3/3" in err and "C16" in err  # the running claim is named
    assert "training (mc_averaging)" in err  # C16's training runs have their own bar
    assert main(["claims", "--csv", str(without)]) == 0
    assert capsys.readouterr().err == ""
    assert with_bar.read_bytes() == without.read_bytes()


def test_report_bars_every_phase_and_a_cached_rerun_says_so(small_report, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--progress"] + REPORT_ARGS) == 0
    fresh = capsys.readouterr()
    for phase in ("sweep (scheme × keep_prob)", "experiments", "claims", "figures"):
        assert phase in fresh.err, phase
    assert f"{len(REPORT_EXPERIMENTS)}/{len(REPORT_EXPERIMENTS)}" in fresh.err and "from cache" not in fresh.err
    assert "stats-dropout report: wrote" in fresh.out and "experiments" not in fresh.out
    first = {n: (out / n).read_bytes() for n in os.listdir(out) if n.endswith(".csv")}

    assert main(["report", "--out", str(out), "--progress"] + REPORT_ARGS) == 0
    cached = capsys.readouterr().err
    assert "1 of 1 sweep cells from cache" in cached and f"{len(REPORT_EXPERIMENTS)} from cache" in cached

    assert main(["report", "--out", str(out)] + REPORT_ARGS) == 0  # stderr not a terminal
    assert capsys.readouterr().err == ""
    assert {n: (out / n).read_bytes() for n in first} == first


def test_progress_changes_no_number():
    from stats_dropout import reporting
    from stats_dropout.studies import experiments

    small = dict(ks=(1, 5), n_seeds=2, epochs=1, hidden=8, seed=2)
    pd.testing.assert_frame_equal(experiments.mc_averaging(**small),
                                  experiments.mc_averaging(**small, progress=True), check_exact=True)
    sweep = dict(schemes=("inverted", "no_rescale"), keep_probs=(0.5, 1.0), seed=3, min_draws=200,
                 max_draws=200)
    pd.testing.assert_frame_equal(reporting.sweep_summary(**sweep),
                                  reporting.sweep_summary(**sweep, progress=True), check_exact=True)


@pytest.mark.slow
def test_report_with_the_process_pool_has_the_same_bars(fast_figures, tmp_path, capsys):
    from stats_dropout.reporting import write_report

    options = dict(seed=0, draws=500, keep_probs=(0.5,), schemes=("inverted",), progress=True,
                   experiment_options=SMALL_EXPERIMENTS, figure_formats=("svg",))  # parallel=True
    write_report(str(tmp_path), **options)
    err = capsys.readouterr().err
    tables = f"{len(REPORT_EXPERIMENTS)}/{len(REPORT_EXPERIMENTS)}"
    for phase in ("sweep (scheme × keep_prob)", "experiments", tables, "claims", "figures"):
        assert phase in err, phase
    write_report(str(tmp_path), **options)
    assert f"{len(REPORT_EXPERIMENTS)} from cache" in capsys.readouterr().err
