"""Statistical decisions with stated error rates, and their design twins.

A correct dropout layer can fail a statistical test by chance and a wrong one can pass it by
chance; every decision here bounds both. ``false_fail_rate`` (type I, α) is the probability of
rejecting a correct implementation; ``false_pass_rate`` (type II, β) is the probability of
missing an error of ``min_detectable_effect``. When one decision covers m elements, α is split
by Holm's step-down procedure (family-wise, valid under any dependence); β is not split
(TensorFlow Probability's ``statistical_testing`` reasons the same way).

Each decision has two design twins (TFP's naming) in :mod:`stats_dropout.inference.design`,
public here as well: ``min_<n>_for_<effect>`` gives the sample size needed to see an effect,
``min_<effect>_detectable_by_<method>`` the smallest effect a sample size sees.

References
----------
.. [1] S. Holm, "A simple sequentially rejective multiple test procedure",
   Scand. J. Statist. 6 (1979) 65-70.
.. [2] C. J. Clopper, E. S. Pearson, "The use of confidence or fiducial limits illustrated in
   the case of the binomial", Biometrika 26 (1934) 404-413.
.. [3] D. J. Schuirmann, "A comparison of the two one-sided tests procedure and the power
   approach for assessing the equivalence of average bioavailability",
   J. Pharmacokinet. Biopharm. 15 (1987) 657-680.
.. [4] W. G. Cochran, "Some methods for strengthening the common χ² tests",
   Biometrics 10 (1954) 417-451 (index of dispersion).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from stats_dropout._internal.validation import positive_int_iv, probability_iv
from stats_dropout.inference.design import (
    min_draws_for_mean_error,
    min_keep_rate_error_detectable_by_binomial,
    min_mean_error_detectable_by_t,
    min_trials_for_keep_rate_error,
    rates_iv,
    t_quantile_sum,
    tost_sample_size,
    z_quantile_sum,
)
from stats_dropout.inference.intervals import t_interval
from stats_dropout.inference.ratios import grouped_deviation_ratio, projection_ratio, squared_deviation_ratio
from stats_dropout.inference.results import Decision, EquivalenceResult, TrainMoments

__all__ = [
    "holm_adjust",
    "decide_mean_equal",
    "decide_keep_rate",
    "decide_dispersion",
    "decide_equivalence",
    "squared_deviation_ratio",
    "projection_ratio",
    "grouped_deviation_ratio",
    "min_draws_for_mean_error",
    "min_mean_error_detectable_by_t",
    "min_trials_for_keep_rate_error",
    "min_keep_rate_error_detectable_by_binomial",
    "t_interval",
    "tost_sample_size",
    "split_false_fail_rate",
]


# --- multiplicity ---------------------------------------------------------------------------
def split_false_fail_rate(total, n_decisions):
    """Bonferroni share of each of ``n_decisions`` decisions in a false-fail budget ``total``.

    ``total / n``: by the union bound, ``n`` decisions each at level ``total / n`` fail a correct
    implementation with probability at most ``total`` (Bonferroni; Holm within one decision
    keeps the same bound). The battery, the scheme checks, the sweeps and the experiments all
    split their budget here.

    Parameters
    ----------
    total : float in (0, 1)
    n_decisions : int ≥ 1

    Returns
    -------
    float
    """
    total = probability_iv(total, "false_fail_rate")  # the callers' name for their total
    n_decisions = positive_int_iv(n_decisions, "n_decisions")
    return total / n_decisions


def holm_adjust(pvalues):
    """Holm-adjusted p-values [1]_: reject element i at level α iff ``adjusted[i] < α``.

    ``adj_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))`` over the ascending order.
    """
    try:
        p = np.asarray(pvalues, dtype=float).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"`pvalues` must be numbers in [0, 1]; got {pvalues!r}") from None
    m = p.size
    if m == 0:
        return p
    if not np.all((p >= 0) & (p <= 1)):  # NaN fails too
        bad = p[~((p >= 0) & (p <= 1))][:3]
        raise ValueError(f"`pvalues` must lie in [0, 1]; got {', '.join(f'{v!r}' for v in bad.tolist())}")
    # Any sort order will do: tied p-values all get the first one's adjusted value (the running
    # maximum carries its larger (m − j + 1) p over the tie), so the fast unstable sort gives
    # the same result as a stable one.
    order = np.argsort(p)
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.reshape(np.shape(pvalues))


# --- means ----------------------------------------------------------------------------------
def _decide_mean_equal_iv(moments, expected, false_fail_rate, false_pass_rate, scale):
    if not isinstance(moments, TrainMoments):
        raise TypeError(f"`moments` must be a TrainMoments (from estimate_train_moments); got {moments!r}")
    expected = np.broadcast_to(np.asarray(expected, dtype=float), np.shape(moments.mean))
    if not np.all(np.isfinite(expected)):
        raise ValueError("`expected` must be finite; got NaN or infinite value(s)")
    if moments.n_draws < 2:
        raise ValueError(f"`moments` must come from at least 2 draws; got n_draws={moments.n_draws}")
    if scale is not None:
        scale = np.broadcast_to(np.asarray(scale, dtype=float), np.shape(moments.mean))
    return (moments, expected, *rates_iv(false_fail_rate, false_pass_rate), scale)


def decide_mean_equal(moments, expected, *, false_fail_rate=1e-6, false_pass_rate=1e-3,
                      property="train mean equals eval output", scale=None, rtol=0.0, atol=0.0,
                      null_sd=None):
    """Decide whether the true mean of every element equals ``expected``.

    One Student-t test per element (``n_draws − 1`` degrees of freedom), Holm-adjusted
    across elements so the family-wise false-fail rate is ``false_fail_rate``. An element
    with zero sample variance passes only if its mean equals the expectation exactly.

    Parameters
    ----------
    moments : TrainMoments
        Per-element estimates (:func:`~stats_dropout.estimate_train_moments`), or the moments
        of a per-draw scalar statistic (a *pooled* test, e.g. :func:`projection_ratio`).
    expected : array_like
        Broadcastable to ``moments.mean``.
    false_fail_rate, false_pass_rate : float in (0, 1)
    property : str
        Wording of the property for messages.
    scale : array_like, optional
        If given, the minimum detectable effect is reported relative to ``|scale|``
        (elements with zero scale are ignored for it).
    null_sd : array_like, optional
        Standard deviation of one draw *under the null* (known from theory). Then the test is a
        z test with standard error ``max(null_sd, sample sd) / sqrt(n)``: exact in its first two
        moments under the null, conservative when the sample spread is larger, and far more
        powerful than a t test at extreme levels with few draws. Use it only when one draw is
        itself close to normal (e.g. a sum over many independent units).
    rtol, atol : float, default 0
        Floating-point dead band: differences up to ``rtol · |expected| + atol`` count as zero.
        Needed when the statistic has (near) zero variance and rounding alone would be
        "significant"; callers set it from the output dtype's machine epsilon.

    Returns
    -------
    Decision
        Evidence for the element with the smallest p-value: its estimate, expectation and
        simultaneous ``1 − false_fail_rate`` confidence interval; ``details`` holds the number
        of elements rejected by Holm and the index of the reported element.

    Notes
    -----
    Sample size to detect an error δ with standard deviation σ: :func:`min_draws_for_mean_error`.
    """
    moments, expected, alpha, beta, scale = _decide_mean_equal_iv(
        moments, expected, false_fail_rate, false_pass_rate, scale)
    mean = np.asarray(moments.mean, dtype=float)
    se = np.asarray(moments.std_error, dtype=float)
    m = max(mean.size, 1)
    raw = mean - expected
    diff = np.sign(raw) * np.maximum(np.abs(raw) - rtol * np.abs(expected) - atol, 0.0)
    if null_sd is None:
        df = moments.n_draws - 1
        dist = stats.t(df)
    else:
        se = np.maximum(se, np.asarray(null_sd, dtype=float) / np.sqrt(moments.n_draws))
        df = None
        dist = stats.norm
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, diff / se, np.where(diff == 0, 0.0, np.inf))
    pvalues = 2 * dist.sf(np.abs(t))
    adjusted = holm_adjust(pvalues)
    if mean.size == 0:
        return Decision(property=property, method="t (no elements)", estimate=np.nan, expected=np.nan,
                        ci_low=np.nan, ci_high=np.nan, pvalue=1.0, false_fail_rate=alpha,
                        false_pass_rate=beta, min_detectable_effect=np.nan, n=moments.n_draws,
                        rejected=False)
    worst = int(np.argmin(pvalues.ravel()))
    half = dist.isf(alpha / (2 * m)) * se.ravel()[worst]
    est = float(mean.ravel()[worst])
    q = z_quantile_sum(alpha, beta, m) if df is None else t_quantile_sum(alpha, beta, df, m)
    mde = float(q * np.max(se))
    units = "absolute"
    if scale is not None:
        nz = np.abs(scale) > 0
        if np.any(nz):
            mde = float(q * np.max(se[nz] / np.abs(scale[nz])))
            units = "relative"
    method = ("Student t" if df is not None else "z, variance known under the null") + (
        f", Holm over {m} elements" if m > 1 else "")
    p_adj = float(np.min(adjusted))
    return Decision(
        property=property, method=method, estimate=est, expected=float(expected.ravel()[worst]),
        ci_low=est - half, ci_high=est + half, pvalue=p_adj, false_fail_rate=alpha,
        false_pass_rate=beta, min_detectable_effect=mde, n=moments.n_draws,
        rejected=bool(p_adj < alpha), effect_units=units, ci_level=1 - alpha / m,
        details={"n_elements": m, "n_rejected": int(np.sum(adjusted < alpha)), "ci_alpha": alpha / m,
                 "worst_index": np.unravel_index(worst, mean.shape) if mean.ndim else ()},
    )


# --- keep rates -----------------------------------------------------------------------------
def _binomial_two_sided_p(k, n, p):
    """Exact two-sided p-value by doubling the smaller tail: the test Clopper–Pearson inverts."""
    lower = stats.binom.cdf(k, n, p)
    upper = stats.binom.sf(k - 1, n, p)
    return np.minimum(1.0, 2 * np.minimum(lower, upper))


def _clopper_pearson(k, n, level):
    """Exact (Clopper–Pearson) interval [2]_ from beta quantiles, vectorised."""
    a = (1 - level) / 2
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    low = np.where(k > 0, stats.beta.ppf(a, k, n - k + 1), 0.0)
    high = np.where(k < n, stats.beta.ppf(1 - a, k + 1, n - k), 1.0)
    return low, high


def _decide_keep_rate_iv(kept, trials, keep_prob, false_fail_rate, false_pass_rate):
    kept = np.asarray(kept)
    trials = np.broadcast_to(np.asarray(trials), kept.shape)
    if kept.size == 0:
        raise ValueError("`kept` must not be empty")
    if not (np.issubdtype(kept.dtype, np.integer) and np.issubdtype(trials.dtype, np.integer)):
        raise TypeError(f"`kept` and `trials` must be integer counts; got dtypes {kept.dtype}, {trials.dtype}")
    if np.any(trials < 1) or np.any(kept < 0) or np.any(kept > trials):
        raise ValueError("`kept` must lie in [0, trials] and `trials` must be ≥ 1")
    keep_prob = probability_iv(keep_prob, "keep_prob", high_open=False)
    return (kept, trials, keep_prob, *rates_iv(false_fail_rate, false_pass_rate))


def decide_keep_rate(kept, trials, keep_prob, *, false_fail_rate=1e-6, false_pass_rate=1e-3,
                     property="keep rate equals keep_prob"):
    """Exact binomial decision that the keep rate equals ``keep_prob``.

    ``kept`` kept units out of ``trials`` (arrays for several groups — positions, channels —
    are Holm-adjusted). Exact two-sided p-values (doubled tails) and Clopper–Pearson
    intervals [2]_ at the simultaneous level ``1 − α/m``.

    Returns
    -------
    Decision
        For the group with the smallest p-value; ``min_detectable_effect`` is the absolute
        keep-rate error detected with probability ``1 − false_pass_rate`` in the smallest group.
    """
    kept, trials, keep_prob, alpha, beta = _decide_keep_rate_iv(
        kept, trials, keep_prob, false_fail_rate, false_pass_rate)
    k = kept.ravel().astype(np.int64)
    n = trials.ravel().astype(np.int64)
    m = k.size
    if keep_prob == 1.0:
        pvalues = np.where(k == n, 1.0, 0.0)
    else:
        # Per-unit decisions have 10^5–10^6 groups but few distinct (kept, trials) pairs (one
        # trial count, draws + 1 possible counts): evaluate the binomial tails once per pair.
        if m > 64 and np.all(n == n[0]):
            pvalues = _binomial_two_sided_p(np.arange(n[0] + 1), n[0], keep_prob)[k]
        elif m > 64:
            key, inverse = np.unique(n * (int(n.max()) + 1) + k, return_inverse=True)
            size = int(n.max()) + 1
            pvalues = _binomial_two_sided_p(key % size, key // size, keep_prob)[inverse.ravel()]
        else:
            pvalues = _binomial_two_sided_p(k, n, keep_prob)
    adjusted = holm_adjust(pvalues)
    worst = int(np.argmin(pvalues))
    low, high = _clopper_pearson(k[worst], n[worst], 1 - alpha / m)
    mde = min_keep_rate_error_detectable_by_binomial(
        int(n.min()), keep_prob, false_fail_rate=alpha, false_pass_rate=beta, n_tests=m)
    method = "exact binomial (Clopper-Pearson)" + (f", Holm over {m} groups" if m > 1 else "")
    p_adj = float(np.min(adjusted))
    return Decision(
        property=property, method=method, estimate=float(k[worst] / n[worst]), expected=keep_prob,
        ci_low=float(low), ci_high=float(high), pvalue=p_adj, false_fail_rate=alpha,
        false_pass_rate=beta, min_detectable_effect=mde, n=int(n.sum()), rejected=bool(p_adj < alpha),
        ci_level=1 - alpha / m,
        details={"n_groups": m, "n_rejected": int(np.sum(adjusted < alpha)), "worst_index": worst,
                 "ci_alpha": alpha / m},
    )


# --- dispersion -----------------------------------------------------------------------------
def decide_dispersion(counts, size, keep_prob=None, *, false_fail_rate=1e-6, false_pass_rate=1e-3,
                      property="kept counts per row are Binomial"):
    """Index-of-dispersion test that counts are ``Binomial(size, keep_prob)`` [4]_.

    ``size`` is one number of trials for all counts or one per count (rows with zero inputs
    have fewer observable units).
    ``D = Σ_r (K_r − n_r p)² / (n_r p (1 − p))`` is approximately ``χ²_R`` for R independent
    binomial counts; a mask that keeps a *fixed* number of units per row has D ≈ 0 (lower
    tail), one that keeps all-or-nothing has D ≫ R (upper tail). Two-sided.
    With ``keep_prob=None`` the rate is estimated from the counts and D has ``R − 1`` degrees
    of freedom, so a wrong keep rate (another check's business) does not masquerade as
    over-dispersion. The estimate reported is the dispersion ratio ``D / df`` (1 for binomial
    counts).
    """
    counts = np.asarray(counts, dtype=float).ravel()
    if np.any(counts != np.round(counts)):  # NaN fails too
        raise ValueError("`counts` must be integer counts; got non-integer value(s) "
                         f"{counts[counts != np.round(counts)][:3].tolist()}")
    if counts.size < 2:
        raise ValueError(f"`counts` must hold at least 2 counts; got {counts.size}")
    if np.ndim(size) == 0:
        size = np.full(counts.size, positive_int_iv(size, "size"), dtype=float)
    else:
        size = np.asarray(size, dtype=float).ravel()
        if size.shape != counts.shape or not np.all((size >= 1) & (size == np.round(size))):
            raise ValueError("`size` must be a positive integer or one positive size per count")
    bad = ~((counts >= 0) & (counts <= size))  # NaN fails too
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`counts` must lie in [0, size]; got count {counts[i]:g} of size {size[i]:g} at index {i}")
    alpha, beta = rates_iv(false_fail_rate, false_pass_rate)
    if keep_prob is None:
        p = float(counts.sum() / size.sum())
        r = counts.size - 1
        if not 0 < p < 1:
            raise ValueError("`counts` must not be all 0 or all `size` when keep_prob is estimated")
    else:
        p = probability_iv(keep_prob, "keep_prob")
        r = counts.size
    d = float(np.sum((counts - size * p) ** 2 / (size * p * (1 - p))))
    pvalue = float(min(1.0, 2 * min(stats.chi2.cdf(d, r), stats.chi2.sf(d, r))))
    low = d / stats.chi2.isf(alpha / 2, r)
    high = d / stats.chi2.ppf(alpha / 2, r)
    # Smallest relative change of the dispersion ratio seen with power 1 − β, worse side.
    up = stats.chi2.isf(alpha / 2, r) / stats.chi2.ppf(beta, r) - 1
    down = 1 - stats.chi2.ppf(alpha / 2, r) / stats.chi2.isf(beta, r)
    mde = float(max(up, down))
    return Decision(
        property=property, method=f"chi-square index of dispersion, {r} degrees of freedom",
        estimate=d / r, expected=1.0, ci_low=float(low), ci_high=float(high), pvalue=pvalue,
        false_fail_rate=alpha, false_pass_rate=beta, min_detectable_effect=mde, n=r,
        rejected=bool(pvalue < alpha), effect_units="relative",
    )


# --- equivalence ----------------------------------------------------------------------------
def _real_scalar_iv(value, name):
    """``value`` as a float, or a TypeError naming ``name`` (arrays and strings are not scalars)."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        raise TypeError(f"`{name}` must be a real number; got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number; got {value!r}") from None


def decide_equivalence(estimate, std_error, margin, *, df=None, alpha=0.05):
    """Two one-sided tests (TOST) [3]_ that a difference lies within ``±margin``.

    "Equal within ε" needs this, not a failed rejection: H0 is ``|θ| ≥ ε``; equivalence is
    declared when both one-sided tests reject at level ``alpha``, i.e. when the
    ``1 − 2α`` confidence interval lies inside ``(−ε, ε)``.

    Parameters
    ----------
    estimate, std_error : float
        Estimated difference and its standard error.
    margin : float
        ε > 0.
    df : int, optional
        Student-t degrees of freedom; normal if None.
    alpha : float
        Probability of declaring equivalence when ``|θ| ≥ ε``.
    """
    alpha = probability_iv(alpha, "alpha")
    estimate = _real_scalar_iv(estimate, "estimate")
    margin = _real_scalar_iv(margin, "margin")
    std_error = _real_scalar_iv(std_error, "std_error")
    if not np.isfinite(estimate):
        raise ValueError(f"`estimate` must be finite; got {estimate!r}")
    if not 0 < margin < np.inf:
        raise ValueError(f"`margin` must be positive and finite; got {margin!r}")
    if not 0 <= std_error < np.inf:
        raise ValueError(f"`std_error` must be non-negative and finite; got {std_error!r}")
    if df is not None and not (isinstance(df, (int, np.integer)) and df >= 1):
        raise ValueError(f"`df` must be a positive integer or None (normal); got {df!r}")
    dist = stats.norm if df is None else stats.t(df)
    if std_error == 0:
        p = 0.0 if abs(estimate) < margin else 1.0
        half = 0.0
    else:
        p_low = dist.sf((estimate + margin) / std_error)
        p_high = dist.cdf((estimate - margin) / std_error)
        p = float(max(p_low, p_high))
        half = float(dist.isf(alpha) * std_error)
    return EquivalenceResult(
        estimate=float(estimate), margin=float(margin), ci_low=float(estimate - half),
        ci_high=float(estimate + half), pvalue=p, alpha=alpha, equivalent=bool(p < alpha),
        n=-1 if df is None else int(df) + 1,
    )


# --- shared interval and sample-size helpers -------------------------------------------------
