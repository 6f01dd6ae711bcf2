"""Calibration (slow): the real false-fail rate, measured by simulation at a relaxed level.

A formula that is self-consistent can still be wrong, so the nominal level of each decision is
checked against simulation: over N seeds of a *correct* reference scheme, the number of
rejections at level 0.01 must lie inside the two-sided 1e-6 binomial acceptance region of
Binomial(N, 0.01) — or below it, for decisions that are conservative by construction
(Clopper–Pearson, Holm). Run with `pytest -m slow` (tox -e slow).
"""

import numpy as np
import pytest
from scipy import stats

import stats_dropout as sd
from stats_dropout import stats as sds

pytestmark = pytest.mark.slow

N_SEEDS = 2000
LEVEL = 0.01


def _acceptance(n, level):
    return stats.binom.ppf(0.5e-6, n, level), stats.binom.isf(0.5e-6, n, level)


def _report(name, rejections):
    low, high = stats.binomtest(rejections, N_SEEDS).proportion_ci(0.95, method="exact")
    print(f"\n{name}: measured false-fail rate {rejections / N_SEEDS:.4f} "
          f"(95% CI [{low:.4f}, {high:.4f}]) at nominal {LEVEL} over {N_SEEDS} seeds")


@pytest.mark.parametrize("keep_prob", [0.2, 0.8])
def test_mean_decision_false_fail_rate(keep_prob):
    x = sd.reference.probes.scheme_probe((16, 16), seed=1)
    layer = sd.get_scheme("inverted").bind(keep_prob)
    stat = sds.projection_ratio(x, x)
    rejections = 0
    for seed in range(N_SEEDS):
        mom = sd.estimate_statistic_moments(layer, x, lambda s: stat(s)[:, None], draws=200, seed=seed)
        rejections += sds.decide_mean_equal(mom, 1.0, false_fail_rate=LEVEL).rejected
    _report(f"mean (t test), keep_prob={keep_prob}", rejections)
    low, high = _acceptance(N_SEEDS, LEVEL)
    assert low <= rejections <= high


@pytest.mark.parametrize("keep_prob", [0.2, 0.8])
def test_keep_rate_decision_false_fail_rate(keep_prob):
    rng = np.random.default_rng(7)
    threshold, bits, dtype = sd.schemes.keep_threshold(keep_prob)
    rejections = 0
    for _ in range(N_SEEDS):
        kept = int(np.count_nonzero(sd.schemes.bernoulli_mask(rng, 5000, keep_prob)))
        rejections += sds.decide_keep_rate(kept, 5000, keep_prob, false_fail_rate=LEVEL).rejected
    _report(f"keep rate (exact binomial), keep_prob={keep_prob}", rejections)
    _, high = _acceptance(N_SEEDS, LEVEL)
    assert rejections <= high  # exact test: conservative by construction
    assert rejections >= _acceptance(N_SEEDS, LEVEL / 4)[0]  # ...but not blind


def test_battery_false_fail_rate_on_correct_implementations():
    # 200 seeds of the whole default battery on two correct implementations at a relaxed total
    # false-fail rate of 0.05: the count of failing batteries must not exceed the 1e-6 upper
    # acceptance bound of Binomial(200, 0.05).
    def dropout(x, keep_prob):
        if not 0 < keep_prob <= 1:
            raise ValueError("keep_prob")
        return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob

    failures = 0
    probe = sd.reference.probes.scheme_probe((64, 256), seed=2)
    for seed in range(200):
        res = sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.8, seed=seed, false_fail_rate=0.05,
                                example_input=probe)
        failures += not res.passed
    print(f"\nbattery: {failures} of 200 seeds failed at total false-fail rate 0.05")
    assert failures <= stats.binom.isf(1e-6, 200, 0.05)


def test_correct_implementations_pass_at_the_default_level_on_200_seeds():
    # The default battery (total false-fail rate 1e-6) must pass a correct numpy implementation
    # and the reference scheme on every one of 200 seeds.
    def dropout(x, keep_prob):
        if not 0 < keep_prob <= 1:
            raise ValueError("keep_prob")
        return np.where(np.random.rand(*x.shape) < keep_prob, x / keep_prob, 0.0)

    probe = sd.reference.probes.scheme_probe((64, 256), seed=3)
    reference = sd.get_scheme("inverted").bind(0.7)
    failures = []
    for seed in range(200):
        for train, p in ((dropout, 0.8), (reference, 0.7)):
            res = sd.verify_dropout(train, keep_prob=p, seed=seed, example_input=probe)
            if not res.passed:
                failures.append((seed, [c.check for c in res.failed_checks]))
    print(f"\ndefault battery: {len(failures)} failures over 2 x 200 seeds: {failures}")
    assert not failures


def test_each_statistical_check_is_calibrated():
    # Per-check calibration: at a relaxed battery total the Bonferroni share of each check is
    # alpha_check = total / (statistical checks that run, at 1 keep_prob). Over N seeds of a correct implementation a
    # check fails Binomial(N, ≤ alpha_check) times; a check whose real rate were 10× its share
    # would exceed the 1e-6 upper acceptance bound with high probability. Run on a small probe
    # with the fixed-keep_prob signature (one keep_prob, no asymmetric extra).
    from collections import Counter

    total, n_seeds = 0.26, 1000
    probe = sd.reference.probes.scheme_probe((32, 64), seed=8)

    def dropout(x):
        return np.where(np.random.rand(*x.shape) < 0.7, x / 0.7, 0.0)

    failures = Counter()
    for seed in range(n_seeds):
        res = sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.7, seed=seed, example_input=probe,
                                false_fail_rate=total)
        failures.update(c.check.split("[")[0] for c in res.failed_checks)
    alpha_check = res.per_check_false_fail_rate
    n_checks = round(total / alpha_check)
    print(f"\nper-check failures over {n_seeds} seeds at alpha_check = {alpha_check:.3f}: {dict(failures)}")
    bound = stats.binom.isf(1e-6 / n_checks, n_seeds, alpha_check)
    assert all(count <= bound for count in failures.values()), (dict(failures), bound)
