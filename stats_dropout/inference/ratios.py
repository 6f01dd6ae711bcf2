"""Per-draw pooled statistics whose mean is 1 exactly when the contract holds.

Each maps a stack of outputs ``(draws, *x.shape)`` to one number per draw; a decision on
those numbers (:func:`~stats_dropout.inference.stats.decide_mean_equal`) estimates their
variance across independent draws, so it is valid under any dependence between the elements of
one draw (masks shared along axes, rows of a network).
"""

from __future__ import annotations

import numpy as np

__all__ = ["projection_ratio", "squared_deviation_ratio", "grouped_deviation_ratio"]


def projection_ratio(x, expected):
    """Per-draw statistic ``r = Σ_i y_i e_i / Σ_i e_i²`` (projection of y on ``expected``).

    ``E r = 1`` exactly when ``E y = expected``; if ``E y = (1 + β) expected`` then
    ``E r = 1 + β``, so a t test of ``r`` against 1 is a pooled test of the *relative* mean
    error, valid under any dependence between elements (masks shared along axes) because
    its variance is estimated across independent draws.
    """
    e = np.asarray(expected, dtype=np.float64)
    denom = float(np.sum(e**2))
    if denom == 0:
        raise ValueError("`expected` must have a non-zero element for a projection ratio")
    axes = tuple(range(1, 1 + e.ndim))

    def statistic(samples):
        return np.sum(np.asarray(samples, dtype=np.float64) * e, axis=axes) / denom

    return statistic


def squared_deviation_ratio(mean, var):
    """Per-draw statistic ``R = Σ_i (y_i − μ_i)² / Σ_i σ_i²`` for theoretical ``μ, σ²``.

    ``E R = Σ Var_true / Σ σ²`` when the true mean is ``μ``, so a t test of ``R`` against 1
    (variance estimated across independent draws) is a valid test and confidence interval
    for the variance ratio. A naive z test on sample variances is not: dropout outputs are
    far from normal, and the variance of a sample variance depends on the fourth moment.
    """
    mu = np.asarray(mean, dtype=np.float64)
    total = float(np.sum(var))
    if not total > 0:
        raise ValueError("`var` must have a positive sum for a variance ratio")
    axes = tuple(range(1, 1 + mu.ndim))

    def statistic(samples):
        return np.sum((np.asarray(samples, dtype=np.float64) - mu) ** 2, axis=axes) / total

    return statistic


def grouped_deviation_ratio(mean, group_var, reduce_groups, signs):
    """Per-draw statistic ``Q = Σ_g G_g² / Σ_g Var G_g`` with ``G_g = Σ_{i∈g} sign_i (y_i − μ_i)``.

    ``reduce_groups`` sums an array over the mask-sharing axes (one value per group). When
    elements of a group share one mask, ``Var G_g = v (Σ_{i∈g} |s_i|)²`` and ``E Q = 1``;
    if they are drawn independently ``E Q ≈ Σ s² / (Σ |s|)²`` per group — about ``1/|g|`` —
    so a test of ``Q`` against 1 checks *that* and *along which axes* masks are shared.
    """
    mu = np.asarray(mean, dtype=np.float64)
    sign = np.asarray(signs, dtype=np.float64)
    total = float(np.sum(group_var))
    if not total > 0:
        raise ValueError("`group_var` must have a positive sum")

    def statistic(samples):
        dev = (np.asarray(samples, dtype=np.float64) - mu) * sign
        g = np.stack([reduce_groups(d) for d in dev])
        return np.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) / total

    return statistic
