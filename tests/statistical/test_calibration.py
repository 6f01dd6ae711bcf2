"""Calibration (slow): the real false-fail rate, measured by simulation at a relaxed level.

A formula that is self-consistent can still be wrong, so the nominal level of each decision is
checked against simulation: over N seeds of a *correct* reference scheme, the number of
rejections at level 0.01 must lie inside the two-sided 1e-6 binomial acceptance region of
Binomial(N, 0.01) — or below it, for decisions that are conservative by construction
(Clopper–Pearson, Holm). Run with `pytest -m slow` (tox -e slow). The seed loops run through
``map_cells`` on every core (``STATS_DROPOUT_WORKERS``, ``STATS_DROPOUT_SCHEDULER``): each seed
is a cell of a module-level function, so the counts are those of one process.
"""

from collections import Counter

import numpy as np
import pytest
from scipy import stats

import stats_dropout as sd
from stats_dropout import stats as sds
from stats_dropout._internal.executors import executor_options, map_cells

pytestmark = pytest.mark.slow

N_SEEDS = 2000
LEVEL = 0.01


def _acceptance(n, level):
    return stats.binom.ppf(0.5e-6, n, level), stats.binom.isf(0.5e-6, n, level)


def _report(name, rejections):
    low, high = stats.binomtest(rejections, N_SEEDS).proportion_ci(0.95, method="exact")
    print(f"\n{name}: measured false-fail rate {rejections / N_SEEDS:.4f} "
          f"(95% CI [{low:.4f}, {high:.4f}]) at nominal {LEVEL} over {N_SEEDS} seeds")


def seed_loop(fn, cells):
    """``[fn(cell) for cell in cells]`` on the slow tier's executor (the same list in any)."""
    return map_cells(fn, cells, **executor_options())


def mean_rejected(cell):
    """Whether the t test rejects the inverted scheme's mean at ``(keep_prob, seed)``."""
    keep_prob, seed = cell
    x = sd.reference.probes.scheme_probe((16, 16), seed=1)
    stat = sds.projection_ratio(x, x)
    mom = sd.estimate_statistic_moments(sd.get_scheme("inverted").bind(keep_prob), x, lambda s: stat(s)[:, None],
                                        draws=200, seed=seed)
    return bool(sds.decide_mean_equal(mom, 1.0, false_fail_rate=LEVEL).rejected)


@pytest.mark.parametrize("keep_prob", [0.2, 0.8])
def test_mean_decision_false_fail_rate(keep_prob):
    rejections = sum(seed_loop(mean_rejected, [(keep_prob, seed) for seed in range(N_SEEDS)]))
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


# Correct numpy dropouts (module-level: worker processes import them by name). They draw from
# numpy's global RNG, which the battery seeds per pass.
def masked_dropout(x, keep_prob):
    """``x · 1[u < p] / p``, keep_prob an argument."""
    if not 0 < keep_prob <= 1:
        raise ValueError("keep_prob")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def where_dropout(x, keep_prob):
    """``where(u < p, x / p, 0)``, keep_prob an argument."""
    if not 0 < keep_prob <= 1:
        raise ValueError("keep_prob")
    return np.where(np.random.rand(*x.shape) < keep_prob, x / keep_prob, 0.0)


def fixed_dropout(x):
    """``where(u < 0.7, x / 0.7, 0)``: the fixed-keep_prob signature."""
    return np.where(np.random.rand(*x.shape) < 0.7, x / 0.7, 0.0)


def copy_eval(x):
    return x.copy()


def relaxed_battery_failed(seed):
    """Whether the battery at total false-fail rate 0.05 fails ``masked_dropout`` at ``seed``."""
    probe = sd.reference.probes.scheme_probe((64, 256), seed=2)
    res = sd.verify_dropout(masked_dropout, copy_eval, keep_prob=0.8, seed=seed, false_fail_rate=0.05,
                            example_input=probe)
    return not res.passed


def test_battery_false_fail_rate_on_correct_implementations():
    # 200 seeds of the whole default battery on a correct implementation at a relaxed total
    # false-fail rate of 0.05: the count of failing batteries must not exceed the 1e-6 upper
    # acceptance bound of Binomial(200, 0.05).
    failures = sum(seed_loop(relaxed_battery_failed, range(200)))
    print(f"\nbattery: {failures} of 200 seeds failed at total false-fail rate 0.05")
    assert failures <= stats.binom.isf(1e-6, 200, 0.05)


def default_battery_failures(cell):
    """The checks the default battery fails at ``(implementation, seed)``: "numpy" or "reference"."""
    impl, seed = cell
    probe = sd.reference.probes.scheme_probe((64, 256), seed=3)
    train, p = (where_dropout, 0.8) if impl == "numpy" else (sd.get_scheme("inverted").bind(0.7), 0.7)
    res = sd.verify_dropout(train, keep_prob=p, seed=seed, example_input=probe)
    return [c.check for c in res.failed_checks]


def test_correct_implementations_pass_at_the_default_level_on_200_seeds():
    # The default battery (total false-fail rate 1e-6) must pass a correct numpy implementation
    # and the reference scheme on every one of 200 seeds.
    cells = [(impl, seed) for seed in range(200) for impl in ("numpy", "reference")]
    failures = [(cell, checks) for cell, checks in zip(cells, seed_loop(default_battery_failures, cells)) if checks]
    print(f"\ndefault battery: {len(failures)} failures over 2 x 200 seeds: {failures}")
    assert not failures


#: Relaxed battery total of the per-check calibration.
PER_CHECK_TOTAL = 0.26


def per_check_failures(seed):
    """``(failed check names, per-check rate)`` of the battery at total 0.26 on ``fixed_dropout``."""
    probe = sd.reference.probes.scheme_probe((32, 64), seed=8)
    res = sd.verify_dropout(fixed_dropout, copy_eval, keep_prob=0.7, seed=seed, example_input=probe,
                            false_fail_rate=PER_CHECK_TOTAL)
    return [c.check.split("[")[0] for c in res.failed_checks], res.per_check_false_fail_rate


def test_each_statistical_check_is_calibrated():
    # Per-check calibration: at a relaxed battery total the Bonferroni share of each check is
    # alpha_check = total / (statistical checks that run, at 1 keep_prob). Over N seeds of a correct implementation a
    # check fails Binomial(N, ≤ alpha_check) times; a check whose real rate were 10× its share
    # would exceed the 1e-6 upper acceptance bound with high probability. Run on a small probe
    # with the fixed-keep_prob signature (one keep_prob, no asymmetric extra).
    n_seeds = 1000
    runs = seed_loop(per_check_failures, range(n_seeds))
    failures = Counter(name for failed, _ in runs for name in failed)
    alpha_check = runs[-1][1]
    n_checks = round(PER_CHECK_TOTAL / alpha_check)
    print(f"\nper-check failures over {n_seeds} seeds at alpha_check = {alpha_check:.3f}: {dict(failures)}")
    bound = stats.binom.isf(1e-6 / n_checks, n_seeds, alpha_check)
    assert all(count <= bound for count in failures.values()), (dict(failures), bound)
