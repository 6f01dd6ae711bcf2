"""Per-draw pooled statistics whose mean is 1 exactly when the contract holds.

Each maps a stack of outputs ``(draws, *x.shape)`` to one number per draw; a decision on
those numbers (:func:`~stats_dropout.inference.stats.decide_mean_equal`) estimates their
variance across independent draws, so it is valid under any dependence between the elements of
one draw (masks shared along axes, rows of a network).

Each statistic works on the whole stack at once — a few vectorised passes per block of draws,
never a Python loop over draws — with at most one stack-sized temporary.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

__all__ = ["projection_ratio", "squared_deviation_ratio", "grouped_deviation_ratio"]


def _stack(samples, ndim):
    """``samples`` as float64 (no copy if it is one already), checked to be ``(draws, ...)`` with
    ``ndim`` trailing axes."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != ndim + 1:
        raise ValueError(f"`samples` must have shape (draws, *shape) with {ndim} trailing axes; "
                         f"got shape {samples.shape}")
    return samples


def _row_sums_of_squares(d):
    """``Σ_j d[i, j]²`` for each row ``i`` of a 2-D array ``d`` that nobody else holds: squared
    in place (no second temporary), then summed as ``np.sum`` sums."""
    np.square(d, out=d)
    return d.sum(axis=1)


def projection_ratio(x, expected):
    """Per-draw statistic ``r = Σ_i y_i e_i / Σ_i e_i²`` (projection of y on ``expected``).

    ``E r = 1`` exactly when ``E y = expected``; if ``E y = (1 + β) expected`` then
    ``E r = 1 + β``, so a t test of ``r`` against 1 is a pooled test of the *relative* mean
    error, valid under any dependence between elements (masks shared along axes) because
    its variance is estimated across independent draws.

    The returned callable maps ``(draws, *expected.shape)`` to ``(draws,)`` (``samples``
    broadcast against ``expected``, summed over its axes). It keeps the elementwise product and
    the summation order of ``Σ e²``, so a draw equal to ``expected`` gives exactly 1 (a
    matrix-vector product is ~5× faster on a block but sums in another order, which breaks
    that: ``keep_prob = 1`` must show a bias of exactly 0).
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

    The returned callable maps ``(draws, *mean.shape)`` to ``(draws,)`` (axes after the first
    are summed, ``samples`` broadcast against ``mean``); it forms the deviations ``y − μ``
    once and squares them in place (no second temporary).
    """
    mu = np.asarray(mean, dtype=np.float64)
    total = float(np.sum(var))
    if not total > 0:
        raise ValueError("`var` must have a positive sum for a variance ratio")
    axes = tuple(range(1, 1 + mu.ndim))

    def statistic(samples):
        dev = np.asarray(samples, dtype=np.float64) - mu
        if dev.ndim != 1 + mu.ndim:  # extra leading axes: the elementwise form
            return np.sum(dev**2, axis=axes) / total
        return _row_sums_of_squares(dev.reshape(dev.shape[0], -1)) / total

    return statistic


def grouped_deviation_ratio(mean, group_var, axes, signs):
    """Per-draw statistic ``Q = Σ_g G_g² / Σ_g Var G_g`` with ``G_g = Σ_{i∈g} sign_i (y_i − μ_i)``.

    Parameters
    ----------
    mean : array_like
        ``μ``, the theoretical train mean, shape of one output.
    group_var : array_like
        ``Var G_g`` per group (its sum is the denominator).
    axes : tuple of int
        The mask-sharing axes of one output (non-negative, 0 is its batch axis): a group ``g``
        is one index of the remaining axes, and ``G_g`` sums over these.
    signs : array_like
        ``sign_i``, shape of one output (the signs of the noise loadings ``s_i``).

    Returns
    -------
    callable
        Maps a stack ``(draws, *mean.shape)`` to ``Q`` per draw, ``(draws,)``: the groups of
        every draw are summed in one reduction over ``axes`` shifted by one (the draw axis).

    Notes
    -----
    When elements of a group share one mask, ``Var G_g = v (Σ_{i∈g} |s_i|)²`` and ``E Q = 1``;
    if they are drawn independently ``E Q ≈ Σ s² / (Σ |s|)²`` per group — about ``1/|g|`` —
    so a test of ``Q`` against 1 checks *that* and *along which axes* masks are shared.
    """
    mu = np.asarray(mean, dtype=np.float64)
    sign = np.asarray(signs, dtype=np.float64)
    total = float(np.sum(group_var))
    if not total > 0:
        raise ValueError("`group_var` must have a positive sum")
    # Negative axes count from the end of one draw, not of the stack (which has one more axis).
    axes = normalize_axis_tuple(tuple(int(a) for a in np.atleast_1d(axes)), mu.ndim, "axes")
    stack_axes = tuple(a + 1 for a in axes)

    def statistic(samples):
        dev = _stack(samples, mu.ndim) - mu  # the one block-sized temporary
        np.multiply(dev, sign, out=dev)
        g = np.sum(dev, axis=stack_axes)
        return _row_sums_of_squares(g.reshape(g.shape[0], -1)) / total

    return statistic
