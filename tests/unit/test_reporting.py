"""Unit tests of the report: tidy sweep, caching and resume, byte-identical CSVs, the CLI."""

import json
import os
import re

import numpy as np
import pandas as pd
import pytest

import stats_dropout as sd
from stats_dropout import reporting
from stats_dropout.cli import main

#: Small experiment options: every table and figure exists, in seconds.
SMALL_EXPERIMENTS = {
    "mc_averaging": {"ks": (1, 5, 20), "n_seeds": 2, "epochs": 2, "hidden": 16},
    "inference_gap": {"keep_probs": (0.5, 0.8)},
    "norm_table": {"keep_probs": (0.5, 0.8)},
    "variance_shift_table": {"keep_probs": (0.5,)},
    "regression_dropout": {"keep_probs": (0.8,), "n_seeds": 4, "steps": 1000},
    "dropblock_bias_table": {"feat_sizes": (7,), "block_sizes": (3,), "normalizations": ("ratio",),
                             "max_draws": 1000},
    "stochastic_depth_bias_table": {"batch_sizes": (1,), "variants": (("batch", "ratio"),), "max_draws": 1000},
}
SMALL = dict(keep_probs=(0.5, 1.0), schemes=("inverted", "alpha", "no_rescale"), draws=2000,
             parallel=False, experiment_options=SMALL_EXPERIMENTS)


def small_report(tmp_path_factory):
    """One small report per test session (test_report_html.py builds the same one)."""
    out = tmp_path_factory.getbasetemp() / "small-report"
    if not (out / "index.html").exists():
        reporting.write_report(str(out), **SMALL)
    return out


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return small_report(tmp_path_factory)


# --- the sweep ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_sweep():
    return reporting.sweep_summary(("inverted", "gaussian", "no_rescale", "channel"), (0.5, 1.0),
                                   seed=3, min_draws=500, max_draws=3000)


def test_sweep_is_tidy(small_sweep):
    assert list(small_sweep.columns) == reporting.SUMMARY_COLUMNS
    assert len(small_sweep) == 8
    assert small_sweep.groupby(["scheme", "keep_prob"]).size().eq(1).all()
    assert (small_sweep["seed"] == 3).all()
    assert small_sweep["cell_seed"].nunique() == 8


def test_sweep_values_follow_theory(small_sweep):
    s = small_sweep.set_index(["scheme", "keep_prob"])
    # keep_prob = 1: no noise at all, exactly.
    assert (s.xs(1.0, level="keep_prob")["relative_bias"] == 0).all()
    assert s.xs(1.0, level="keep_prob")["var_ratio"].isna().all()
    # The no-rescale bug is biased by p − 1 = −0.5. Its per-draw ratio has sd ≤ 0.06 here, so
    # with ≥ 500 draws the 95 % interval half-width is < 0.006: a 0.05 tolerance cannot be
    # missed by chance (> 100 standard errors), and a correct scheme would be 0.5 away.
    assert s.loc[("no_rescale", 0.5), "relative_bias"] == pytest.approx(-0.5, abs=0.05)
    assert not s.loc[("no_rescale", 0.5), "equivalent"]
    assert s.loc[("no_rescale", 0.5), "relative_bias_ci_high"] < 0
    # Gaussian noise has no mask; Bernoulli masks are counted over independent entries.
    assert np.isnan(s.loc[("gaussian", 0.5), "keep_rate"])
    assert s.loc[("channel", 0.5), "keep_trials"] == 32 * 4 * s.loc[("channel", 0.5), "n_draws"]
    # The inverted scheme at p = 0.5 has (y − x)² = x² on every draw: variance ratio exactly 1.
    assert s.loc[("inverted", 0.5), "var_ratio"] == 1.0


def test_cell_seed_does_not_depend_on_the_grid():
    a = reporting.sweep_summary(("inverted",), (0.3, 0.7), min_draws=200, max_draws=200)
    b = reporting.sweep_summary(("inverted",), (0.7,), min_draws=200, max_draws=200)
    pd.testing.assert_series_equal(a.iloc[1], b.iloc[0], check_names=False)


def test_draws_follow_the_margin():
    # n = ((z_{0.95} + z_{0.9995}) σ / ε)²: halving the margin quadruples the draws.
    n1 = reporting.sweep._draws_for_margin(1.0, 0.02, 0.05, 0.999, 2, None)
    n2 = reporting.sweep._draws_for_margin(1.0, 0.01, 0.05, 0.999, 2, None)
    assert n2 == pytest.approx(4 * n1, rel=1e-3)
    assert reporting.sweep._draws_for_margin(1.0, 0.01, 0.05, 0.999, 2, 500) == 500
    assert reporting.sweep._draws_for_margin(0.0, 0.01, 0.05, 0.999, 77, None) == 77


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"schemes": ()}, ValueError, "`schemes` must name at least one scheme"),
    ({"schemes": ("nope",)}, ValueError, "`schemes` must hold names from .*; got 'nope'"),
    ({"keep_probs": ()}, ValueError, "`keep_probs` must hold at least one value"),
    ({"keep_probs": (1.5,)}, ValueError, "`keep_probs` must be in \\(0, 1\\]; got 1.5"),
    ({"margin": 0}, ValueError, "`margin` must be a positive number; got 0"),
    ({"seed": -2}, ValueError, "`seed` must be a non-negative integer; got -2"),
    ({"level": 1.0}, ValueError, "`level` must be in \\(0, 1\\); got 1.0"),
    ({"max_draws": 0}, ValueError, "`max_draws` must be a positive integer; got 0"),
    ({"executor": "mpi"}, ValueError, "`executor` must be one of"),
])
def test_input_validation(kwargs, exc, match):
    options = {"schemes": ("inverted",), "keep_probs": (0.5,), "min_draws": 10, "max_draws": 10}
    options.update(kwargs)
    schemes, keep_probs = options.pop("schemes"), options.pop("keep_probs")
    with pytest.raises(exc, match=match):
        reporting.sweep_summary(schemes, keep_probs, **options)


# --- cache and resume -----------------------------------------------------------------------
def test_interrupted_sweep_resumes_from_its_cells(tmp_path, monkeypatch):
    real = reporting.sweep._compute_summary_cell  # summary_cell resolves it in reporting/sweep.py
    calls = []

    def flaky(cell):
        calls.append((cell["scheme"], cell["keep_prob"]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third cell
        return real(cell)

    monkeypatch.setattr(reporting.sweep, "_compute_summary_cell", flaky)
    options = dict(min_draws=100, max_draws=100, cache_dir=str(tmp_path))
    grid = (("inverted", "standard"), (0.4, 0.9))
    with pytest.raises(KeyboardInterrupt):
        reporting.sweep_summary(*grid, **options)
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".json")]) == 2
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    calls.clear()
    resumed = reporting.sweep_summary(*grid, **options)
    assert calls == [("standard", 0.4), ("standard", 0.9)]  # only the unfinished cells ran
    monkeypatch.setattr(reporting.sweep, "_compute_summary_cell", real)
    fresh = reporting.sweep_summary(*grid, min_draws=100, max_draws=100)
    pd.testing.assert_frame_equal(resumed, fresh)


def test_cache_key_covers_every_option():
    cell = {"scheme": "inverted", "keep_prob": 0.5, "seed": 0, "margin": 0.01, "max_draws": 10}
    key = reporting.sweep._cell_key(cell)
    assert key == reporting.sweep._cell_key(dict(cell, cache_dir="/elsewhere"))
    for k, v in (("seed", 1), ("margin", 0.02), ("max_draws", 11), ("keep_prob", 0.55)):
        assert reporting.sweep._cell_key(dict(cell, **{k: v})) != key


# --- files ----------------------------------------------------------------------------------
def test_write_csv_fixed_format_and_atomic(tmp_path):
    frame = pd.DataFrame({"a": [0.1 + 0.2, 1 / 3, np.nan], "b": [True, False, True]})
    path = tmp_path / "x.csv"
    reporting.write_csv(frame, str(path))
    assert path.read_bytes() == b"a,b\n0.3,True\n0.3333333333,False\n,True\n"
    assert os.listdir(tmp_path) == ["x.csv"]


def test_report_files(report_dir):
    names = set(os.listdir(report_dir))
    assert {"summary.csv", "claims.csv", "inference_gap.csv", "mc_averaging.csv",
            "training_equivalence.csv", "metadata.json", "index.html", "figures"} <= names
    figs = set(os.listdir(report_dir / "figures"))
    for stem in reporting.html.FIGURES:
        assert {f"{stem}.svg", f"{stem}.png"} <= figs
    ledger = pd.read_csv(report_dir / "claims.csv")
    assert list(ledger["id"]) == ["C01a", "C01b"] + [f"C{i:02d}" for i in range(2, 18)]
    assert {"id", "claim", "verdict", "figure", "ci_low", "ci_high", "explanation", "seed",
            "draws", "keep_prob"} <= set(ledger.columns)
    meta = json.loads((report_dir / "metadata.json").read_text())
    assert meta["seed"] == 0 and meta["options"]["draws"] == 2000
    assert {"numpy", "scipy", "pandas", "matplotlib", "python"} <= set(meta["versions"])
    assert "timestamp" in meta and "git_commit" in meta["source"]


def test_html_is_self_contained(report_dir):
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    assert html.count("<svg") >= len(reporting.html.FIGURES)
    # No network loads: no src/href pointing outside the file, no scripts or stylesheets.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    for cid in ("C01a", "C01b", "C09", "C17"):
        assert f"id='{cid}'" in html


def test_same_seed_gives_byte_identical_csvs(report_dir, tmp_path):
    again = tmp_path / "again"
    reporting.write_report(str(again), **dict(SMALL, figure_formats=("svg",)))
    for name in sorted(os.listdir(report_dir)):
        if name.endswith(".csv"):
            assert (again / name).read_bytes() == (report_dir / name).read_bytes(), name
    assert (again / "figures" / "bias.svg").read_bytes() == (report_dir / "figures" / "bias.svg").read_bytes()


# --- command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--keep-probs", "1.5"], "`--keep-probs` must lie in (0, 1]; got 1.5"),
    (["--draws", "1"], "`--draws` must be an integer ≥ 2; got 1"),
    (["--seed", "-1"], "`--seed` must be a non-negative integer; got -1"),
    (["--schemes", "nope"], "`--schemes`: unknown scheme 'nope'"),
    (["--scheduler", "tcp://x:1"], "`--scheduler` needs `--executor dask`"),
])
def test_report_usage_errors(tmp_path, capsys, argv, message):
    assert main(["report", "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_report_command_calls_write_report(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake(out, **kwargs):
        seen.update(kwargs, out=out)
        return {"index": os.path.join(out, "index.html"), "summary": "s"}

    monkeypatch.setattr(reporting.report, "write_report", fake)
    assert main(["report", "--out", str(tmp_path), "--seed", "4", "--draws", "900",
                 "--keep-probs", "0.5", "0.9", "--schemes", "inverted"]) == 0
    assert seen["seed"] == 4 and seen["draws"] == 900 and seen["keep_probs"] == (0.5, 0.9)
    assert seen["schemes"] == ["inverted"] and seen["executor"] == "local"
    assert "index.html" in capsys.readouterr().out


def test_claims_command(tmp_path, monkeypatch, capsys):
    from stats_dropout import claims

    small = claims.claims_ledger(claim_ids=["C04", "C06"])
    monkeypatch.setattr(claims.ledger, "claims_ledger", lambda **kw: small)
    csv = tmp_path / "ledger.csv"
    assert main(["claims", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "C04  FALSE" in out and "C06  HOLDS" in out
    assert pd.read_csv(csv)["id"].tolist() == ["C04", "C06"]
    assert main(["claims", "--seed", "-3"]) == 2


def test_schemes_command_still_works(capsys):
    assert main(["schemes", "--schemes", "inverted", "--keep-probs", "0.5", "--relative-error", "0.2"]) == 0
    assert "inverted" in capsys.readouterr().out


@pytest.mark.slow
def test_default_report_end_to_end(tmp_path):
    """The README's command with its defaults (about a minute on two cores)."""
    import time

    started = time.perf_counter()
    assert main(["report", "--out", str(tmp_path / "reports")]) == 0
    elapsed = time.perf_counter() - started
    out = tmp_path / "reports"
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(reporting.REPORT_KEEP_PROBS) * (len(sd.SCHEMES) + len(reporting.CONTRASTS))
    # Every scheme with a mean contract is declared unbiased within the margin at every
    # keep_prob (power 0.999 per cell: a chance miss has probability ≤ 160 × 0.001 overall).
    mean_contract = summary[summary["contract"].eq("mean") & ~summary["scheme"].eq("no_rescale")]
    assert mean_contract["equivalent"].all()
    assert elapsed < 240  # README promises about two minutes; generous for a loaded machine


def test_sweep_on_a_dask_cluster_equals_the_local_sweep():
    # The promise for `stats-dropout report --executor dask`: the same table, bit for bit.
    pytest.importorskip("distributed")
    options = {"schemes": ("inverted", "standard"), "keep_probs": (0.5, 0.8), "min_draws": 200,
               "max_draws": 200, "seed": 3}
    local = reporting.sweep_summary(**options)
    dask = reporting.sweep_summary(**options, executor="dask")
    pd.testing.assert_frame_equal(local, dask, check_exact=True)


def test_cached_cells_are_announced_and_keyed_by_the_source(tmp_path, capsys, monkeypatch):
    from stats_dropout.reporting import sweep

    options = dict(seed=0, keep_probs=(0.5, 0.9), max_draws=200, min_draws=100, cache_dir=str(tmp_path))
    first = reporting.sweep_summary(["inverted"], progress=True, **options)
    assert "from cache" not in capsys.readouterr().err
    again = reporting.sweep_summary(["inverted"], progress=True, **options)
    assert "2 of 2 sweep cells from cache" in capsys.readouterr().err
    pd.testing.assert_frame_equal(first, again)
    # Other code (another version or an edited source file) never reuses the cells.
    key = sweep._cell_key({"scheme": "inverted", "keep_prob": 0.5})
    monkeypatch.setattr(sweep, "source_fingerprint", lambda: "0.0.0+other")
    assert sweep._cell_key({"scheme": "inverted", "keep_prob": 0.5}) != key
