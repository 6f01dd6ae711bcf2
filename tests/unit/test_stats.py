"""Statistical decisions and their design twins."""

import numpy as np
import pytest
from scipy import stats

from stats_dropout import stats as sds
from stats_dropout.inference.results import TrainMoments


def test_holm_matches_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    adj = sds.holm_adjust(p)
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])


def test_keep_rate_decision_matches_scipy_exact_interval():
    d = sds.decide_keep_rate(412, 1000, 0.4, false_fail_rate=0.05)
    ci = stats.binomtest(412, 1000, 0.4).proportion_ci(0.95, method="exact")
    assert d.ci_low == pytest.approx(ci.low, rel=1e-10)
    assert d.ci_high == pytest.approx(ci.high, rel=1e-10)
    assert not d.rejected and d.estimate == 0.412


def test_keep_rate_rejects_randn_rate():
    n = sds.min_trials_for_keep_rate_error(0.8, 0.002)  # ≈ 2.6 million
    d = sds.decide_keep_rate(int(stats.norm.cdf(0.8) * n), n, 0.8)
    assert d.rejected and d.min_detectable_effect <= 0.002 * 1.001


def test_design_twins_are_inverse():
    n = sds.min_trials_for_keep_rate_error(0.8, 0.002)
    mde = sds.min_keep_rate_error_detectable_by_binomial(n, 0.8)
    assert mde == pytest.approx(0.002, rel=0.01)
    n = sds.min_draws_for_mean_error(0.01, 0.3, null_sd_known=True)
    assert n == pytest.approx(((stats.norm.isf(5e-7) + stats.norm.isf(1e-3)) * 30) ** 2, rel=0.01)
    m = sds.min_draws_for_mean_error(0.01, 0.3)
    assert sds.min_mean_error_detectable_by_t(m, 0.3) <= 0.01 < sds.min_mean_error_detectable_by_t(m - 5, 0.3)


def test_power_formula_holds_by_simulation():
    # At the computed sample size a shift of exactly the target effect is detected with
    # probability ≥ 1 − β. Checked at a relaxed design (α = 0.01, β = 0.1) over 400 seeds:
    # the count of misses is Binomial(400, ≤ 0.1); P(≥ 70 misses) < 1e-6.
    n = sds.min_draws_for_mean_error(0.5, 1.0, false_fail_rate=0.01, false_pass_rate=0.1)
    rng = np.random.default_rng(0)
    misses = 0
    for _ in range(400):
        s = rng.normal(0.5, 1.0, size=(n, 1))
        mom = TrainMoments(s.mean(0), s.var(0, ddof=1), n)
        misses += not sds.decide_mean_equal(mom, 0.0, false_fail_rate=0.01, false_pass_rate=0.1).rejected
    assert misses < 70


def test_mean_decision_dead_band_and_zero_variance():
    exact = TrainMoments(np.array([1.0 + 1e-16]), np.array([0.0]), 10)
    assert not sds.decide_mean_equal(exact, 1.0, rtol=1e-15).rejected
    assert sds.decide_mean_equal(exact, 1.1).rejected


def test_equivalence_tost():
    eq = sds.decide_equivalence(0.001, 0.001, 0.01)
    assert eq.equivalent and eq.ci_low > -0.01 and eq.ci_high < 0.01
    assert not sds.decide_equivalence(0.009, 0.005, 0.01).equivalent


def test_dispersion_detects_fixed_counts_and_passes_binomial():
    rng = np.random.default_rng(1)
    binomial = rng.binomial(100, 0.3, size=2000)
    assert not sds.decide_dispersion(binomial, 100, 0.3).rejected
    assert sds.decide_dispersion(np.full(2000, 30), 100, 0.3).rejected
    assert not sds.decide_dispersion(binomial, 100).rejected  # estimated rate


def test_variance_ratio_statistic_is_unbiased_for_bernoulli():
    # E R = 1 for the inverted scheme; exact expectation by enumerating both mask values.
    x, p = np.array([2.0]), 0.3
    stat = sds.squared_deviation_ratio(x, x**2 * (1 - p) / p)
    values = stat(np.array([[x[0] / p], [0.0]]))
    assert p * values[0] + (1 - p) * values[1] == pytest.approx(1.0, rel=1e-14)


def test_a_holm_split_decision_states_the_level_of_its_own_interval():
    from stats_dropout.inference.results import TrainMoments
    from stats_dropout.inference.stats import decide_keep_rate, decide_mean_equal

    moments = TrainMoments(np.zeros(100), np.ones(100), 50)
    d = decide_mean_equal(moments, 0.0, false_fail_rate=1e-3, false_pass_rate=1e-3)
    assert d.confidence_level == pytest.approx(1 - 1e-5)  # 1 − α/m, not 1 − α
    k = decide_keep_rate(np.array([80, 81]), np.array([100, 100]), 0.8, false_fail_rate=0.01, false_pass_rate=0.01)
    assert k.confidence_level == pytest.approx(1 - 0.005)
    assert "1 − 1e-05" in str(d)
