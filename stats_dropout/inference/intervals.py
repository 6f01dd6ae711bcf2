"""The one Student-t interval of the package (results, decisions, sweeps and claims all use it)."""

from __future__ import annotations

from scipy import stats

from stats_dropout._internal.validation import probability_iv

__all__ = ["t_interval"]


def t_interval(mean, std_error, df, level):
    """Two-sided Student-t confidence interval for a mean.

    ``mean ± t_{(1+level)/2, df} · se``, with the quantile computed as
    ``t.isf((1 − level) / 2, df)``. Works elementwise on arrays.

    Parameters
    ----------
    mean, std_error : float or array_like
        Estimate and its standard error (broadcast together).
    df : int
        Student-t degrees of freedom (``n − 1`` for the mean of ``n`` draws).
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    (low, high)
        ``mean − half`` and ``mean + half`` with ``half = t_{(1+level)/2, df} · se``.
    """
    level = probability_iv(level, "level")
    half = stats.t.isf((1 - level) / 2, df) * std_error
    return mean - half, mean + half
