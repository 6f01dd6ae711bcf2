"""Seeded Monte Carlo against the exact theory of structured dropout, with stated error rates.

Each test is one decision of :mod:`stats_dropout.inference.stats` at a false-fail rate of 1e-6
(split where a test makes several), with its minimum detectable effect asserted, so that a wrong
closed form would be caught and a right one fails by chance with probability ≤ 1e-6.
"""

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.inference.stats import decide_keep_rate, decide_mean_equal, split_false_fail_rate
from stats_dropout.reference import structured_theory as st
from stats_dropout.reference.structured import DropBlockScheme, dropblock_mask, get_structured_scheme
from stats_dropout.studies import structured as study

ALPHA = 1e-6


@pytest.mark.parametrize("keep, bs, fs", [(0.9, 3, 7), (0.8, 5, 14), (0.9, 7, 14)])
def test_per_unit_keep_rates_are_exact(keep, bs, fs):
    """Exact binomial decision per distinct cover count: P(M_u = 1) = (1 − γ)^{c_u}."""
    n = 60_000
    masks = dropblock_mask(np.random.default_rng(11), (n, fs, fs), keep, bs)
    counts = st.cover_counts(bs, fs)
    groups = np.unique(counts)
    alpha = split_false_fail_rate(ALPHA, len(groups) + 1)
    for c in groups:
        r, col = np.argwhere(counts == c)[0]  # one unit per count: independent across draws
        d = decide_keep_rate(np.int64(masks[:, r, col].sum()), np.int64(n),
                             (1 - st.seed_rate(keep, bs, fs)) ** int(c), false_fail_rate=alpha)
        assert not d.rejected, d
        assert d.min_detectable_effect < 0.02
    # the map's kept fraction per draw (a mean over dependent units: t test across draws)
    frac = masks.reshape(n, -1).mean(axis=1)
    mom = sd.TrainMoments(mean=np.array([frac.mean()]), var=np.array([frac.var(ddof=1)]), n_draws=n)
    d = decide_mean_equal(mom, st.kept_fraction(keep, bs, fs), false_fail_rate=alpha)
    assert not d.rejected, d
    # ... and the nominal keep_prob is not what DropBlock keeps (power against 1 − γ-formula naivety)
    if bs not in (1, fs):
        assert decide_mean_equal(mom, keep, false_fail_rate=alpha).rejected


def orbit_moments(keep, bs, fs, n_maps, normalize, draws, seed):
    labels, reps = st.orbits(fs)
    scheme = DropBlockScheme(block_size=bs, normalize=normalize)
    stat = study._orbit_statistic(labels, len(reps), n_maps)
    mom = sd.estimate_statistic_moments(scheme.bind(keep), np.ones((n_maps, fs, fs)), stat, draws=draws, seed=seed)
    return mom, reps


@pytest.mark.parametrize("keep, bs, fs, n_maps", [(0.8, 3, 7, 1), (0.9, 5, 7, 1), (0.9, 7, 7, 1), (0.7, 2, 5, 3),
                                                  (0.9, 3, 7, 4)])
def test_exact_ratio_bias_matches_monte_carlo(keep, bs, fs, n_maps):
    mom, reps = orbit_moments(keep, bs, fs, n_maps, "ratio", 60_000, seed=bs * 100 + n_maps)
    exact = st.ratio_bias_exact(keep, bs, fs, n_maps)
    expected = 1 + np.array([exact[u] for u in reps])
    d = decide_mean_equal(mom, expected, false_fail_rate=ALPHA, property="E[M_u N/ΣM] = 1 + exact bias")
    assert not d.rejected, d
    assert d.min_detectable_effect < 0.025
    # power: the fixed-rescale bias (a different law) is refuted where the two differ by > 2 mde
    wrong = 1 + np.array([st.fixed_rescale_bias(keep, bs, fs)[u] for u in reps])
    if np.max(np.abs(wrong - expected)) > 2 * d.min_detectable_effect:
        assert decide_mean_equal(mom, wrong, false_fail_rate=ALPHA).rejected


def test_fixed_rescale_bias_matches_monte_carlo():
    mom, reps = orbit_moments(0.9, 3, 14, 1, "keep_prob", 60_000, seed=7)
    exact = st.fixed_rescale_bias(0.9, 3, 14)
    d = decide_mean_equal(mom, 1 + np.array([exact[u] for u in reps]), false_fail_rate=ALPHA)
    assert not d.rejected, d
    # the statistic's sd used for the sample size is exact for the fixed rescale
    sd_theory = st.orbit_statistic_sd(0.9, 3, 14, "keep_prob")
    np.testing.assert_allclose(np.sqrt(mom.var), sd_theory, rtol=0.05)


@pytest.mark.parametrize("name, b, p", [("stochastic_depth_ratio", 3, 0.5), ("stochastic_depth_ratio", 1, 0.8),
                                        ("stochastic_depth", 4, 0.7), ("stochastic_depth_batch", 4, 0.7)])
def test_stochastic_depth_closed_forms_match_monte_carlo(name, b, p):
    s = get_structured_scheme(name)
    x = np.linspace(0.5, 2.0, b * 3).reshape(b, 3)
    est = sd.estimate_train_moments(s.bind(p), x, draws=200_000, seed=3)
    alpha = split_false_fail_rate(ALPHA, 2)
    d = decide_mean_equal(est, s.train_mean(x, p), false_fail_rate=alpha)
    assert not d.rejected, d
    # variance ratio: per-element sample variance against the exact one (chi-square-free: t test
    # on the squared deviations, which have finite variance for these bounded outputs)
    dev = sd.estimate_statistic_moments(
        s.bind(p), x, lambda y: ((y - s.train_mean(x, p)) ** 2).reshape(len(y), -1), draws=200_000, seed=4)
    d = decide_mean_equal(dev, s.train_var(x, p).ravel(), false_fail_rate=alpha, property="variance")
    assert not d.rejected, d


def test_ratio_per_sample_bias_is_minus_q_to_the_b():
    s = get_structured_scheme("stochastic_depth_ratio")
    for b in (1, 2, 4):
        assert s.relative_bias(b, 0.6) == pytest.approx(-(0.4**b))


@pytest.mark.slow
@pytest.mark.parametrize("keep, bs, fs", [(0.9, 3, 14), (0.9, 7, 28), (0.8, 5, 28)])
def test_delta_method_against_a_high_precision_monte_carlo(keep, bs, fs):
    """Where no exact value exists: the delta method is within 1 percentage point of the MC CI."""
    r = study.measure_dropblock_bias(fs, bs, keep, false_fail_rate=ALPHA, false_pass_rate=1e-2)
    gap = max(r.row["mc_ci_low"] - r.row["approx_bias"], r.row["approx_bias"] - r.row["mc_ci_high"], 0.0)
    assert gap < 0.01, r.sentence
    assert r.verdict == "biased"


@pytest.mark.slow
def test_study_verdicts_on_known_cells():
    """Unbiased cells come out within margin, biased ones biased, at the table's error rates."""
    assert study.measure_dropblock_bias(14, 1, 0.9, normalize="keep_prob", false_fail_rate=1e-4).verdict == \
        "within margin"
    assert study.measure_dropblock_bias(7, 7, 0.95, false_fail_rate=1e-4).verdict == "biased"  # −5 %
    assert study.measure_dropblock_bias(7, 7, 0.95, normalize="keep_prob", false_fail_rate=1e-4).verdict == \
        "within margin"  # one block position: M/keep is exactly unbiased
