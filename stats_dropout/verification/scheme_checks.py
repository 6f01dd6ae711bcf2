"""Reference-scheme checks: hold a DropoutScheme to its contract and closed forms.

This module holds the reference-scheme battery :func:`verify_scheme`, which holds a
:class:`~stats_dropout.reference.schemes.DropoutScheme` (or a train/eval pair claiming to implement it) to
its contract and to the closed forms of :mod:`stats_dropout.reference.theory`. Every decision is "the mean
of a per-draw statistic equals its theoretical value", and because each statistic is linear (or
quadratic) in the scheme's noise, its variance is known exactly; the number of draws is computed
from the requested error, never guessed.
"""

from __future__ import annotations

import numpy as np

from stats_dropout._internal.numerics import MOMENT_ULPS, ulp_tol
from stats_dropout._internal.rng import stream_rng
from stats_dropout._internal.validation import draws_iv, keep_prob_iv, positive_int_iv, probability_iv, seed_iv
from stats_dropout.inference.montecarlo import estimate_mask_affine_moments, estimate_statistic_moments
from stats_dropout.inference.stats import (
    decide_mean_equal,
    grouped_deviation_ratio,
    min_draws_for_mean_error,
    projection_ratio,
    split_false_fail_rate,
    squared_deviation_ratio,
)
from stats_dropout.inference.verdicts import SchemeVerificationResult
from stats_dropout.reference.probes import scheme_probe
from stats_dropout.reference.schemes import DropoutScheme, get_scheme, resolve_shared_axes

__all__ = ["verify_scheme", "count_scheme_decisions"]

#: Dead band for floating-point rounding in exact-zero-variance cases (float64 outputs).
_RTOL = ulp_tol(np.float64, MOMENT_ULPS)


def _statistics(scheme, x, keep_prob, eval_out):
    """``(name, expected, sd, statistic)`` for every decision that applies to the scheme."""
    p = keep_prob
    mu = scheme.train_mean(x, p)
    var = scheme.train_var(x, p)
    s, v, kappa = scheme.noise_loadings(x, p)
    out = []

    target = eval_out if scheme.contract == "mean" else mu
    e = np.asarray(target, dtype=np.float64)
    label = "train mean equals eval output" if scheme.contract == "mean" else "train mean equals theory"
    sd = scheme.projection_ratio_sd(e, x, p)
    out.append(("mean", label, 1.0, sd, projection_ratio(x, e)))

    if np.sum(var) > 0:
        sd = scheme.squared_deviation_sd(var, x, p)
        out.append(("variance", "train variance equals theory", 1.0, sd, squared_deviation_ratio(mu, var)))
        axes = resolve_shared_axes(scheme.shared_axes, x.ndim, scheme.name)
        if axes:
            abs_sum = np.sum(np.abs(s), axis=axes)
            group_var = v * abs_sum**2
            sd = np.sqrt(kappa * np.sum(abs_sum**4)) / np.sum(group_var)
            out.append(("sharing", f"masks shared along axes {axes}", 1.0, sd,
                        grouped_deviation_ratio(mu, group_var, axes, np.sign(s))))
    if scheme.contract == "moments":
        n = x.size
        from stats_dropout.reference.theory import alpha_dropped_value

        c = alpha_dropped_value(p)
        sd1 = np.sqrt(scheme.linear_statistic_var(np.full(x.shape, 1 / n), x, p))
        sd2 = np.sqrt(v * np.sum(((2 * c * s + s**2) / n) ** 2))
        out.append(("output_mean", "output mean is 0 over N(0,1) inputs", 0.0, sd1,
                    lambda y: np.asarray(y, np.float64).reshape(len(y), -1).mean(axis=1)))
        out.append(("output_second_moment", "output variance is 1 over N(0,1) inputs", 1.0, sd2,
                    lambda y: (np.asarray(y, np.float64).reshape(len(y), -1) ** 2).mean(axis=1)))
    return out


def count_scheme_decisions(scheme, keep_prob):
    """Number of decisions :func:`verify_scheme` makes for ``scheme`` at ``keep_prob``."""
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    x = scheme_probe()
    return len(_statistics(scheme, x, keep_prob, scheme.eval(x, keep_prob)))


def _verify_scheme_iv(scheme, keep_prob, relative_error, false_fail_rate, false_pass_rate, seed,
                      n_decisions, max_draws):
    if isinstance(scheme, str):
        scheme = get_scheme(scheme)
    if not isinstance(scheme, DropoutScheme):
        raise TypeError(f"`scheme` must be a DropoutScheme or a registered name; got {scheme!r}")
    return (
        scheme,
        keep_prob_iv(keep_prob),
        probability_iv(relative_error, "relative_error"),
        probability_iv(false_fail_rate, "false_fail_rate"),
        probability_iv(false_pass_rate, "false_pass_rate"),
        seed_iv(seed),
        None if n_decisions is None else positive_int_iv(n_decisions, "n_decisions"),
        None if max_draws is None else draws_iv(max_draws, "max_draws"),
    )


def verify_scheme(scheme, keep_prob, *, train=None, eval=None, x=None, relative_error=0.01,
                  false_fail_rate=1e-6, false_pass_rate=1e-3, seed=0, n_decisions=None,
                  max_draws=None):
    """Hold a reference scheme (or a train/eval pair claiming to be it) to its theory.

    Decisions, each "mean of a per-draw statistic equals its theoretical value":

    ``mean``
        Projection ratio ``Σ y e / Σ e²`` equals 1, with ``e`` the eval output (``mean``
        contract) or the closed-form train mean (``moments`` contract): detects a relative
        mean error of ``relative_error``.
    ``variance``
        ``Σ (y − μ)² / Σ σ²`` equals 1 (closed-form ``μ, σ²``).
    ``sharing`` (schemes with ``shared_axes``)
        Grouped deviation ratio equals 1: masks are shared along exactly those axes.
    ``output_mean``, ``output_second_moment`` (``moments`` contract)
        For a standardised N(0,1) probe, the output's mean is 0 and mean square is 1.

    Parameters
    ----------
    scheme : DropoutScheme or str
    keep_prob : float in (0, 1]
    train : callable, optional
        ``x -> y`` to test instead of the scheme's own train pass (bound to a seeded
        Generator; vectorised when it is a ``BoundScheme``).
    eval : callable, optional
        ``x -> y`` to test instead of the scheme's own eval pass.
    x : array_like, optional
        Probe; default :func:`scheme_probe`.
    relative_error : float
        Smallest error each decision must detect, relative to its expected value (absolute
        for ``output_mean``), with probability ``1 − false_pass_rate``.
    false_fail_rate : float
        Total over the decisions (``n_decisions`` of them; Bonferroni split).
    n_decisions : int, optional
        Split ``false_fail_rate`` over this many decisions instead (a sweep over many
        schemes and keep probabilities passes its total here).
    max_draws : int, optional
        Cap on draws; if the computed size exceeds it, the detectable error grows and the
        decisions say so.

    Returns
    -------
    SchemeVerificationResult
        ``.passed``, ``.decisions`` (name -> :class:`~stats_dropout.inference.results.Decision`),
        ``.draws``, ``.seed``, ``.to_frame()`` and a readable ``print``.

    Notes
    -----
    On the scheme's own train pass (``train`` not given) with masks shared along axes, every
    statistic above is affine in the mask entries, and the moments come from the masks alone
    (:func:`~stats_dropout.inference.montecarlo.estimate_mask_affine_moments`): the same masks
    as the general path, the same values up to floating-point rounding.
    """
    (scheme, keep_prob, relative_error, false_fail_rate, false_pass_rate, seed, n_decisions,
     max_draws) = _verify_scheme_iv(scheme, keep_prob, relative_error, false_fail_rate,
                                    false_pass_rate, seed, n_decisions, max_draws)
    x = scheme_probe(seed=seed) if x is None else np.asarray(x, dtype=np.float64)
    own_train = train is None
    train = scheme.bind(keep_prob, stream_rng(seed, "scheme_check_train")) if own_train else train
    eval_out = np.asarray((eval or (lambda z: scheme.eval(z, keep_prob)))(x.copy()), dtype=np.float64)
    specs = _statistics(scheme, x, keep_prob, eval_out)
    alpha_each = split_false_fail_rate(false_fail_rate, n_decisions or len(specs))
    # The largest of the decisions' sizes: min_draws_for_mean_error is non-decreasing in sd (its
    # criterion n ≥ ((t-quantiles) sd / δ)² only gets harder), so that is the size for the
    # largest sd — one sample-size search per cell instead of one per decision.
    sd_max = max(sd for _, _, _, sd, _ in specs)
    draws = (min_draws_for_mean_error(relative_error, sd_max, false_fail_rate=alpha_each,
                                      false_pass_rate=false_pass_rate) if sd_max > 0 else 2)
    if max_draws is not None:
        draws = min(draws, max_draws)

    def statistic(samples):
        return np.column_stack([f(samples) for *_, f in specs])

    # The scheme's own shared masks: every statistic above is affine in the mask entries (a
    # linear form, a separable sum, squares of sums over the sharing groups), so the moments
    # come from the masks alone — the same masks, values equal up to rounding.
    estimate = estimate_mask_affine_moments if own_train else estimate_statistic_moments
    moments = estimate(train, x, statistic, draws=draws, seed=seed)
    decisions = {}
    for j, (name, label, expected, _, _) in enumerate(specs):
        column = type(moments)(moments.mean[j:j + 1], moments.var[j:j + 1], moments.n_draws, seed)
        decisions[name] = decide_mean_equal(
            column, expected, false_fail_rate=alpha_each, false_pass_rate=false_pass_rate,
            property=label, scale=expected if expected else None, rtol=_RTOL, atol=_RTOL)
    return SchemeVerificationResult(scheme.name, keep_prob, draws, seed, decisions)
