"""Exact design of many small binomial tests: what a per-unit decision can see at its draws.

A per-unit (or per-position) keep-rate decision runs one exact binomial test per unit and
Holm-adjusts over the m units, so its first step rejects only a p-value below ``α/m``. With
``n`` trials per unit the smallest attainable two-sided p-value is ``2 min(p, 1 − p)^n``: at
12 draws and m = 262,144 units that is above ``α/m`` for every keep_prob, and no unit can ever
be rejected. The normal approximation of :func:`~stats_dropout.inference.design.
min_keep_rate_error_detectable_by_binomial` hides that at small ``n``; here the power is the
exact binomial one, side by side:

* a unit kept too rarely is rejected when its count ``K ≤ k_lo``, the largest ``k`` with
  ``2 F(k; n, p) < α/m`` (``F`` the binomial cdf); the rate it is caught at with power
  ``1 − β`` solves ``F(k_lo; n, p₁) = 1 − β``;
* a unit kept too often likewise, with ``K ≥ k_hi``.

A side with no critical count cannot reject anything, whatever the unit does: a check says so
("not enough draws to judge") with the draws :func:`min_trials_for_silent_group` computes, never
a pass that cannot fail.
"""

from __future__ import annotations

import math

from scipy import optimize, stats

from stats_dropout._internal.validation import positive_int_iv, probability_iv

__all__ = ["min_trials_for_silent_group", "binomial_critical_counts", "min_rate_errors_detectable_exactly"]


def min_trials_for_silent_group(keep_prob, n_groups, *, false_fail_rate=1e-6):
    """Trials per group for a group that is never kept to be rejected among ``n_groups``.

    A never-kept group has count 0 with certainty, so it is rejected (power 1) exactly when
    ``2 (1 − p)^n < α/m``: ``n = ⌊log(α / 2m) / log(1 − p)⌋ + 1``.

    Parameters
    ----------
    keep_prob : float in (0, 1)
    n_groups : int ≥ 1
        m, the groups the decision is Holm-adjusted over.
    false_fail_rate : float in (0, 1)
        α of the whole decision.

    Returns
    -------
    int

    Examples
    --------
    >>> min_trials_for_silent_group(0.5, 262_144, false_fail_rate=1e-7)
    43
    """
    p = probability_iv(keep_prob, "keep_prob")
    m = positive_int_iv(n_groups, "n_groups")
    alpha = probability_iv(false_fail_rate, "false_fail_rate")
    n = math.floor(math.log(alpha / (2 * m)) / math.log1p(-p)) + 1
    while 2 * stats.binom.cdf(0, n, p) >= alpha / m:  # guard the floor against rounding
        n += 1
    return n


def binomial_critical_counts(trials, keep_prob, level):
    """``(k_lo, k_hi)``: the doubled-tail exact test at ``level`` rejects ``K ≤ k_lo`` or ``K ≥ k_hi``.

    ``k_lo = −1`` (``k_hi = trials + 1``) when that side cannot reject at any count.
    """
    n = positive_int_iv(trials, "trials")
    p = probability_iv(keep_prob, "keep_prob")
    level = probability_iv(level, "level")
    k_lo = int(stats.binom.ppf(level / 2, n, p))
    while k_lo >= 0 and 2 * stats.binom.cdf(k_lo, n, p) >= level:
        k_lo -= 1
    while k_lo + 1 <= n and 2 * stats.binom.cdf(k_lo + 1, n, p) < level:
        k_lo += 1
    k_hi = int(stats.binom.isf(level / 2, n, p)) + 1
    while k_hi <= n and 2 * stats.binom.sf(k_hi - 1, n, p) >= level:
        k_hi += 1
    while k_hi - 1 >= 0 and 2 * stats.binom.sf(k_hi - 2, n, p) < level:
        k_hi -= 1
    return k_lo, k_hi


def min_rate_errors_detectable_exactly(trials, keep_prob, *, false_fail_rate=1e-6, false_pass_rate=1e-3,
                                       n_tests=1):
    """Smallest keep-rate errors below and above ``keep_prob`` the exact test detects.

    At level ``α / n_tests`` (Holm's first step over ``n_tests`` groups), with power
    ``1 − β`` and ``trials`` per group. Returns ``(down, up)``: a group kept at rate
    ``p − down`` (``p + up``) is rejected with probability at least ``1 − β``; ``inf`` where no
    rate on that side ever is.
    """
    p = probability_iv(keep_prob, "keep_prob")
    beta = probability_iv(false_pass_rate, "false_pass_rate")
    level = probability_iv(false_fail_rate, "false_fail_rate") / positive_int_iv(n_tests, "n_tests")
    n = positive_int_iv(trials, "trials")
    k_lo, k_hi = binomial_critical_counts(n, p, level)
    down = up = math.inf
    if k_lo >= 0:  # P(K ≤ k_lo | p₁) falls from 1 at p₁ = 0: solve it = 1 − β
        p1 = 0.0 if k_lo >= n else optimize.brentq(
            lambda q: stats.binom.cdf(k_lo, n, q) - (1 - beta), 0.0, p, xtol=1e-12)
        down = p - p1
    if k_hi <= n:
        p1 = 1.0 if k_hi <= 0 else optimize.brentq(
            lambda q: stats.binom.sf(k_hi - 1, n, q) - (1 - beta), p, 1.0, xtol=1e-12)
        up = p1 - p
    return float(down), float(up)
