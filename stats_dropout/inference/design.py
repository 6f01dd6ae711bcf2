"""Design twins of the decisions: the sample size an effect needs, the effect a sample size sees.

Each decision of :mod:`stats_dropout.inference.stats` has two twins (TensorFlow Probability's
naming): ``min_<n>_for_<effect>`` gives the sample size needed to detect an effect with
probability ``1 − false_pass_rate`` at ``false_fail_rate``, and ``min_<effect>_detectable_by_<method>``
the smallest effect a sample size detects. Sample sizes scale as ``O(1 / effect²)``. They are
sized for the test the decision really runs (t or z, the level split over ``n_tests``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import optimize, stats

from stats_dropout._internal.validation import positive_int_iv, probability_iv

#: Largest sample size a design returns; beyond it the request is an error, not an overflow.
MAX_SAMPLE_SIZE = 1e18
#: Quantiles of χ² over which :func:`power_of_z_with_max_sd` averages.
_POWER_GRID = 2000

__all__ = [
    "MAX_SAMPLE_SIZE",
    "rates_iv",
    "z_quantile_sum",
    "t_quantile_sum",
    "min_draws_for_mean_error",
    "power_of_z_with_max_sd",
    "min_mean_error_detectable_by_t",
    "min_trials_for_keep_rate_error",
    "min_keep_rate_error_detectable_by_binomial",
    "tost_sample_size",
]


def rates_iv(false_fail_rate, false_pass_rate):
    return (probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"))


def _real_iv(value, name, *checks):
    """``value`` as a float, or raise naming ``name``: ``checks`` are ``(ok, allowed)`` pairs, the
    first failing one says what is allowed (``"`effect` must be positive; got 0"``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {value!r}")
    v = float(value)
    for ok, allowed in checks:
        if not ok(v):  # NaN fails every comparison
            raise ValueError(f"`{name}` must be {allowed}; got {value!r}")
    return v


def _positive_finite_iv(value, name):
    return _real_iv(value, name, (lambda v: v > 0, "positive"), (lambda v: v < math.inf, "finite"))


def _sd_iv(sd):
    return _real_iv(sd, "sd", (lambda v: 0 <= v < math.inf, "finite and non-negative"))


def z_quantile_sum(false_fail_rate, false_pass_rate, n_tests=1):
    """``z_{1−α/(2m)} + z_{1−β}``: two-sided level α split over m tests, power 1 − β."""
    return stats.norm.isf(false_fail_rate / (2 * n_tests)) + stats.norm.isf(false_pass_rate)


def t_quantile_sum(false_fail_rate, false_pass_rate, df, n_tests=1):
    """``t_{1−α/(2m), df} + t_{1−β, df}``: the t-test analogue of :func:`z_quantile_sum`."""
    return stats.t.isf(false_fail_rate / (2 * n_tests), df) + stats.t.isf(false_pass_rate, df)


def _draws_iv(n_real, effect, sd, smallest):
    """``⌈n_real⌉`` (at least 2), or a clear error when it is beyond :data:`MAX_SAMPLE_SIZE`
    (``smallest``: about the smallest effect within it)."""
    if not n_real <= MAX_SAMPLE_SIZE:
        raise ValueError(f"a mean error `effect` = {effect!r} at `sd` = {sd!r} needs more than {MAX_SAMPLE_SIZE:.0e} "
                         f"draws: `effect` must be at least about {smallest:.3g} at this `sd`")
    return max(math.ceil(n_real), 2)


def min_draws_for_mean_error(effect, sd, *, false_fail_rate=1e-6, false_pass_rate=1e-3, n_tests=1,
                             null_sd_known=False):
    """Draws needed to detect a mean error ``effect`` when one draw has std ``sd``.

    ``n = ⌈((t_{1−α/(2m), n−1} + t_{1−β, n−1}) σ / δ)²⌉`` solved by fixed-point iteration from
    the normal approximation (two-sided, level α split over ``n_tests`` = m). Scales as
    ``O(1/δ²)``. With ``null_sd_known`` (the z test of :func:`decide_mean_equal` with
    ``null_sd``, which divides by ``max(sample sd, null sd)``) the smallest ``n`` whose exact
    power under that max step reaches ``1 − β`` (:func:`power_of_z_with_max_sd`): the plain
    normal formula ignores the step and gave a measured power of 0.974–0.979 at a design 0.999.
    """
    alpha, beta = rates_iv(false_fail_rate, false_pass_rate)
    effect, sd = _positive_finite_iv(effect, "effect"), _sd_iv(sd)
    n_tests = positive_int_iv(n_tests, "n_tests")
    z_sum = z_quantile_sum(alpha, beta, n_tests)
    smallest = z_sum * sd / math.sqrt(MAX_SAMPLE_SIZE)
    root = z_sum * sd / effect
    n = _draws_iv(root * root if root < MAX_SAMPLE_SIZE else math.inf, effect, sd, smallest)
    if null_sd_known:
        return _draws_for_z_with_max_sd(n, effect / sd if sd > 0 else math.inf, alpha, beta, n_tests)
    # The decision is a t test: at small n its quantiles are far above the normal ones at
    # extreme levels. The smallest n with n ≥ need(n) = ((t_{α,n−1} + t_{β,n−1}) σ / δ)²
    # (need falls as n grows): the normal n is a lower bound; double to an upper bound, then
    # bisect. (A fixed-point iteration from n = 2 jumps to need(2), far beyond the answer.)

    def enough(k):
        t_sum = t_quantile_sum(alpha, beta, k - 1, n_tests)
        return k >= (t_sum * sd / effect) ** 2

    return _smallest_n(enough, n, f"a mean error `effect` = {effect!r} at `sd` = {sd!r}")


def power_of_z_with_max_sd(n, standardized_effect, false_fail_rate, n_tests=1):
    """Power of :func:`~stats_dropout.inference.stats.decide_mean_equal`'s z test with ``null_sd``.

    That test divides by ``max(s, σ₀)/√n`` (the sample sd ``s`` or the null sd σ₀, whichever
    is larger), so it is less powerful than a z test with σ₀ alone. For normal draws with sd σ₀,
    ``V = (n − 1) s²/σ₀² ~ χ²_{n−1}`` independently of the mean, and with ``w = max(√(V/(n−1)), 1)``,
    ``d = δ√n/σ₀`` and ``z = z_{1−α/(2m)}``::

        power = E_V[Φ(d − z w) + Φ(−d − z w)]

    evaluated on 2,000 quantiles of ``χ²_{n−1}`` (midpoint rule in probability).
    """
    z = stats.norm.isf(false_fail_rate / (2 * n_tests))
    d = standardized_effect * math.sqrt(n)
    if n < 2:
        return float(stats.norm.sf(z - d) + stats.norm.cdf(-d - z))
    q = (np.arange(_POWER_GRID) + 0.5) / _POWER_GRID
    w = np.maximum(np.sqrt(stats.chi2.ppf(q, n - 1) / (n - 1)), 1.0)
    return float(np.mean(stats.norm.cdf(d - z * w) + stats.norm.cdf(-d - z * w)))


def _draws_for_z_with_max_sd(n0, standardized_effect, alpha, beta, n_tests):
    """Smallest n ≥ n0 with :func:`power_of_z_with_max_sd` ≥ 1 − β (doubling, then bisection)."""
    if not math.isfinite(standardized_effect):
        return n0
    return _smallest_n(lambda n: power_of_z_with_max_sd(n, standardized_effect, alpha, n_tests) >= 1 - beta,
                       n0, f"a standardised mean error {standardized_effect!r}")


def _smallest_n(enough, n0, what):
    """The smallest ``n ≥ n0`` with ``enough(n)`` (monotone in n): doubling from ``n0``, then bisection."""
    lo, hi = n0 - 1, n0
    while not enough(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_SAMPLE_SIZE:
            raise ValueError(f"{what} needs more than {MAX_SAMPLE_SIZE:.0e} draws; ask for a larger effect")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return max(hi, 2)


def min_mean_error_detectable_by_t(n, sd, *, false_fail_rate=1e-6, false_pass_rate=1e-3, n_tests=1):
    """Smallest mean error detected with probability ``1 − β`` from ``n`` draws of std ``sd``.

    ``δ = (t_{1−α/(2m), n−1} + t_{1−β, n−1}) σ / sqrt(n)``; the twin of
    :func:`min_draws_for_mean_error`.
    """
    alpha, beta = rates_iv(false_fail_rate, false_pass_rate)
    n = positive_int_iv(n, "n")
    sd = _sd_iv(sd)
    n_tests = positive_int_iv(n_tests, "n_tests")
    if n < 2:
        return math.inf
    return float(t_quantile_sum(alpha, beta, n - 1, n_tests) * sd / math.sqrt(n))


def _keep_rate_power_gap(effect, n, p, z_a, z_b):
    """Normal-approximation power equation for a binomial rate; zero at the detectable effect."""
    worst = -math.inf
    for p1 in (p - effect, p + effect):
        if 0 <= p1 <= 1:
            need = (z_a * math.sqrt(p * (1 - p)) + z_b * math.sqrt(p1 * (1 - p1))) / math.sqrt(n)
            worst = max(worst, need - effect)
    return worst


def min_keep_rate_error_detectable_by_binomial(trials, keep_prob, *, false_fail_rate=1e-6,
                                               false_pass_rate=1e-3, n_tests=1):
    """Smallest absolute keep-rate error the binomial test detects with power ``1 − β``.

    Solves ``δ √n = z_{1−α/(2m)} √(p(1−p)) + z_{1−β} √(p₁(1−p₁))`` for ``p₁ = p ± δ`` (the
    worse side), the normal approximation to the exact test. ``O(1/√n)``.
    """
    alpha, beta = rates_iv(false_fail_rate, false_pass_rate)
    n = positive_int_iv(trials, "trials")
    p = probability_iv(keep_prob, "keep_prob", high_open=False)
    n_tests = positive_int_iv(n_tests, "n_tests")
    if p == 1.0:
        return 0.0  # a single dropped unit refutes keep_prob = 1
    z_a = stats.norm.isf(alpha / (2 * n_tests))
    z_b = stats.norm.isf(beta)
    hi = max(p, 1 - p)
    if _keep_rate_power_gap(hi, n, p, z_a, z_b) > 0:
        return float(hi)  # not even the largest possible error is detectable
    return float(optimize.brentq(_keep_rate_power_gap, 1e-15, hi, args=(n, p, z_a, z_b)))


def min_trials_for_keep_rate_error(keep_prob, effect, *, false_fail_rate=1e-6, false_pass_rate=1e-3,
                                   n_tests=1):
    """Trials needed for the binomial test to detect a keep-rate error ``effect``.

    ``n = ⌈((z_{1−α/(2m)} √(p(1−p)) + z_{1−β} √(p₁(1−p₁))) / δ)²⌉``, worse of ``p₁ = p ± δ``.
    ``effect`` lies in ``(0, max(p, 1 − p)]`` (no keep rate is further from ``p``) and must not
    need more than :data:`MAX_SAMPLE_SIZE` trials.
    """
    alpha, beta = rates_iv(false_fail_rate, false_pass_rate)
    p = probability_iv(keep_prob, "keep_prob")
    n_tests = positive_int_iv(n_tests, "n_tests")
    largest = max(p, 1 - p)
    effect = _real_iv(effect, "effect", (lambda v: v > 0, "positive"), (
        lambda v: v <= largest, f"at most {largest:g} at keep_prob={p:g} (no keep rate is further from it)"))
    z_a = stats.norm.isf(alpha / (2 * n_tests))
    z_b = stats.norm.isf(beta)
    need = 0.0
    for p1 in (p - effect, p + effect):
        p1 = min(max(p1, 0.0), 1.0)
        root = (z_a * math.sqrt(p * (1 - p)) + z_b * math.sqrt(p1 * (1 - p1))) / effect
        need = max(need, root * root if root < MAX_SAMPLE_SIZE else math.inf)
    if not need <= MAX_SAMPLE_SIZE:
        smallest = (z_a + z_b) * math.sqrt(p * (1 - p)) / math.sqrt(MAX_SAMPLE_SIZE)
        raise ValueError(f"`effect` {effect!r} needs more than {MAX_SAMPLE_SIZE:.0e} trials: `effect` must be at "
                         f"least about {smallest:.3g} at keep_prob={p:g}")
    return math.ceil(need)


def tost_sample_size(sd, margin, *, alpha, power, min_draws):
    """Draws for a TOST at ``±margin`` to declare a truly zero difference equivalent.

    Normal approximation::

        n = max(min_draws, ⌈((z_{1−α} + z_{(1+power)/2}) σ / ε)²⌉)

    so that :func:`decide_equivalence` at level ``alpha`` declares equivalence with probability
    ``power`` when the true difference is 0 and one draw has standard deviation σ. When σ is
    not positive (or NaN) the answer is ``min_draws``. No upper cap: callers apply their own.

    Parameters
    ----------
    sd : float
        σ, the standard deviation of one draw of the statistic.
    margin : float
        ε > 0, the equivalence margin.
    alpha : float
        TOST level.
    power : float
        Probability of declaring a zero difference equivalent.
    min_draws : int
        Floor on the answer.

    Returns
    -------
    int
    """
    alpha, power = probability_iv(alpha, "alpha"), probability_iv(power, "power")
    margin = _positive_finite_iv(margin, "margin")
    if not sd > 0:
        return min_draws
    z = stats.norm.isf(alpha) + stats.norm.isf((1 - power) / 2)
    return max(min_draws, math.ceil((z * sd / margin) ** 2))
