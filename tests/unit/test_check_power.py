"""Every statistical check can fail at the defaults, and is blind to the scale of its input.

Issue #12: a never-kept unit, a never-kept position and a 1.01 scale on one unit in ten are each
caught; a mask with a fixed count per call fails the variance check (the one that is no longer a
copy of check_mean); the verdict is the same on x·1e-300, x and x·1e300; an all-zero probe says
"nothing observable".
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import stats_dropout as sd
from stats_dropout.inference.design import min_draws_for_mean_error, power_of_z_with_max_sd, z_quantile_sum
from stats_dropout.inference.units import (
    binomial_critical_counts,
    min_rate_errors_detectable_exactly,
    min_trials_for_silent_group,
)
from stats_dropout.verification.checks.groups import decide_per_group

SEED = 20261202


def inverted(x, keep_prob):
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def never_kept_unit(x, keep_prob):
    y = inverted(x, keep_prob)
    y.flat[12345 % y.size] = 0.0
    return y


def never_kept_position(x, keep_prob):
    y = inverted(x, keep_prob)
    y[..., 7] = 0.0
    return y


def scale_on_one_unit_in_ten(x, keep_prob):
    y = inverted(x, keep_prob)
    y.reshape(-1)[::10] *= 1.01
    return y


def fixed_count(x, keep_prob):
    """Keeps exactly round(p·N) units per call: right rate, right mean, wrong variance."""
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")
    mask = np.zeros(x.size, dtype=bool)
    mask[np.random.permutation(x.size)[: round(keep_prob * x.size)]] = True
    return x * mask.reshape(x.shape) / keep_prob


def failing(result):
    return {c.check.split("[")[0] for c in result.failed_checks}


@pytest.mark.parametrize(("bug", "caught_by"), [
    (never_kept_unit, "check_mean_per_unit"),
    (never_kept_position, "check_keep_rate_per_position"),
    (scale_on_one_unit_in_ten, "check_kept_scale"),
    (fixed_count, "check_variance"),
])
def test_each_bug_is_caught_at_the_defaults(bug, caught_by):
    result = sd.verify_dropout(bug, keep_prob=0.8, seed=SEED)
    assert caught_by in failing(result), f"seed {SEED}: {result.summary()}"


@pytest.fixture(scope="module")
def correct_result():
    """The battery at its defaults on correct code (seed SEED): one run, read by two tests."""
    return sd.verify_dropout(inverted, keep_prob=0.8, seed=SEED)


def test_per_unit_check_states_the_effect_it_has(correct_result):
    result = correct_result
    assert result.passed, f"seed {SEED}: {result.summary()}"
    unit = next(c for c in result.checks if c.check == "check_mean_per_unit[keep_prob=0.8]")
    # At the battery's draws a never-kept unit (keep rate 0.8 too low) is within reach; an
    # always-kept one is not, and the property says which side it sees.
    assert 0 < unit.decision.min_detectable_effect <= 0.8
    assert "too high: not at these draws" in unit.decision.property


def test_per_unit_check_without_enough_draws_says_so():
    # 12 draws of 262,144 units (the audit's case): no count of any unit can reach α/m. The
    # battery draws enough (BatteryRun.unit_draws), so this is driven with the evidence alone.
    class Run:
        alpha, beta = 1e-7, 1e-3

        def evidence(self, p):
            return types.SimpleNamespace(draws=12)

    counts = np.zeros(262_144, dtype=np.int64)  # every unit never kept: still no decision
    out = decide_per_group(Run(), "check_mean_per_unit", 0.8, counts, np.full(counts.shape, 12), "prop", "unit")
    assert out.status == "skipped" and "not enough draws to judge" in out.message
    assert "caught from 19 draws" in out.message, out.message
    assert not out.passed


def test_variance_check_is_not_a_copy_of_the_mean_check(correct_result):
    result = correct_result
    mean = next(c for c in result.checks if c.check == "check_mean[keep_prob=0.8]").decision
    var = next(c for c in result.checks if c.check == "check_variance[keep_prob=0.8]").decision
    assert "kept units per call" in var.property
    assert var.pvalue != mean.pvalue


def _verdicts(result):
    return [(c.check, c.status) for c in result.checks]


SCALING_PROBE = np.random.default_rng(SEED).standard_normal((32, 128))


@functools.lru_cache(maxsize=None)
def _unscaled():
    """The battery on the unscaled probe: the same for every example, so run once."""
    return sd.verify_dropout(inverted, keep_prob=0.8, example_input=SCALING_PROBE.copy(), seed=SEED)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exponent=st.sampled_from([-300, -160, -40, 40, 160, 300]))
def test_verdict_is_invariant_under_scaling(exponent):
    x = SCALING_PROBE
    base = _unscaled()
    scaled = sd.verify_dropout(inverted, keep_prob=0.8, example_input=x * 10.0**exponent, seed=SEED)
    assert _verdicts(scaled) == _verdicts(base), f"seed {SEED}, scale 1e{exponent}"
    for a, b in zip(base.checks, scaled.checks):
        if a.decision is not None and b.decision is not None:
            assert b.decision.estimate == pytest.approx(a.decision.estimate, rel=1e-6, abs=1e-12), a.check


@pytest.mark.parametrize("x", [
    np.random.default_rng(SEED).standard_normal((32, 128)) * 1e-310,             # float64 subnormals
    (np.random.default_rng(SEED).standard_normal((32, 128)) * 1e-5).astype(np.float16),  # float16 ones
], ids=["float64-subnormal", "float16-subnormal"])
def test_subnormal_inputs_pass(x):
    def layer(x, keep_prob):
        return inverted(x, keep_prob).astype(x.dtype)

    result = sd.verify_dropout(layer, keep_prob=0.8, example_input=x, seed=SEED)
    assert result.passed, f"seed {SEED}: {result.summary()}"


def test_all_zero_probe_says_nothing_observable():
    result = sd.verify_dropout(inverted, keep_prob=0.8, example_input=np.zeros((16, 16)), seed=SEED)
    assert not result.failed_checks
    assert any("nothing observable" in w for w in result.warnings)
    statistical = [c for c in result.checks if c.check.startswith(("check_keep_rate", "check_mean", "check_var"))]
    assert statistical and all(c.status == "skipped" and "nothing observable" in c.message for c in statistical)


# --- the designs themselves -------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8, 0.9])
@pytest.mark.parametrize("m", [1, 1000, 262_144])
def test_silent_group_trials_are_the_smallest_that_reject(p, m):
    alpha = 1e-7
    n = min_trials_for_silent_group(p, m, false_fail_rate=alpha)
    assert 2 * stats.binom.cdf(0, n, p) < alpha / m
    assert n == 1 or 2 * stats.binom.cdf(0, n - 1, p) >= alpha / m


@pytest.mark.parametrize(("n", "p", "level"), [(12, 0.8, 3.8e-13), (19, 0.8, 3.8e-13), (44, 0.5, 1e-9),
                                                (300, 0.3, 1e-4), (5000, 0.9, 1e-8)])
def test_critical_counts_match_brute_force(n, p, level):
    k = np.arange(n + 1)
    pvalue = np.minimum(1, 2 * np.minimum(stats.binom.cdf(k, n, p), stats.binom.sf(k - 1, n, p)))
    rejected = k[pvalue < level]
    k_lo, k_hi = binomial_critical_counts(n, p, level)
    assert set(rejected) == set(range(0, k_lo + 1)) | set(range(k_hi, n + 1))


def test_exact_detectable_errors_have_their_power():
    n, p, level, beta = 5000, 0.9, 1e-8, 1e-3
    down, up = min_rate_errors_detectable_exactly(n, p, false_fail_rate=level, false_pass_rate=beta)
    k_lo, k_hi = binomial_critical_counts(n, p, level)
    assert stats.binom.cdf(k_lo, n, p - down) == pytest.approx(1 - beta, abs=1e-6)
    assert stats.binom.sf(k_hi - 1, n, p + up) == pytest.approx(1 - beta, abs=1e-6)
    assert min_rate_errors_detectable_exactly(12, 0.8, false_fail_rate=1e-7, n_tests=262_144) == (
        math.inf, math.inf)


@pytest.mark.parametrize("effect", [0.25, 1.0, 2.0])
def test_z_design_accounts_for_the_max_sd_step(effect):
    alpha, beta = 1e-7, 1e-3
    n = min_draws_for_mean_error(effect, 1.0, false_fail_rate=alpha, false_pass_rate=beta, null_sd_known=True)
    plain = math.ceil((z_quantile_sum(alpha, beta) / effect) ** 2)
    assert n >= plain
    assert power_of_z_with_max_sd(n, effect, alpha) >= 1 - beta
    assert power_of_z_with_max_sd(n - 1, effect, alpha) < 1 - beta


def test_max_sd_power_matches_simulation():
    rng = np.random.default_rng(SEED)
    n, effect, alpha = 22, 1.0, 1e-3
    draws = rng.standard_normal((20_000, n)) + effect
    se = np.maximum(draws.std(axis=1, ddof=1), 1.0) / math.sqrt(n)
    simulated = np.mean(np.abs(draws.mean(axis=1)) / se > stats.norm.isf(alpha / 2))
    assert simulated == pytest.approx(power_of_z_with_max_sd(n, effect, alpha), abs=0.01)


def test_a_failing_gaussian_mean_has_a_message_not_a_crash():
    """A Gaussian-contract layer whose mean is off fails check_mean with its figure (its hint
    once read keep/drop evidence that Gaussian noise does not have, and the check 'raised')."""
    def biased_gaussian(x, keep_prob):
        return x * (1.02 + np.sqrt((1 - keep_prob) / keep_prob) * np.random.standard_normal(x.shape))

    x = np.random.default_rng(SEED).standard_normal((64, 128))
    result = sd.verify_dropout(biased_gaussian, keep_prob=0.8, contract="gaussian", example_input=x, seed=SEED)
    mean = next(c for c in result.checks if c.check == "check_mean[keep_prob=0.8]")
    assert mean.failed and "the check raised" not in mean.message, mean.message
    assert "projection ratio" in mean.message
