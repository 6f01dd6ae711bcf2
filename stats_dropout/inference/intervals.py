"""The one Student-t interval of the package (results, decisions, sweeps and claims all use it)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from stats_dropout._internal.validation import probability_iv

__all__ = ["t_interval"]


def _t_interval_iv(std_error, df, level):
    level = probability_iv(level, "level")
    try:
        df_arr = np.asarray(df, dtype=float)
        se_arr = np.asarray(std_error, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`df` and `std_error` must be real numbers or arrays of them; got df={df!r}, "
                        f"std_error={std_error!r}") from None
    if not np.all(df_arr > 0):  # NaN fails too
        bad = df_arr[~(df_arr > 0)].ravel()[0] if df_arr.ndim else df_arr.item()
        raise ValueError(f"`df` must be positive (n − 1 for the mean of n ≥ 2 draws); got {float(bad)!r}")
    if np.any(se_arr < 0):  # NaN passes: an unknown error gives an unknown interval
        bad = se_arr[se_arr < 0].ravel()[0] if se_arr.ndim else se_arr.item()
        raise ValueError(f"`std_error` must be non-negative; got {float(bad)!r}")
    return level


def t_interval(mean, std_error, df, level):
    """Two-sided Student-t confidence interval for a mean.

    ``mean ± t_{(1+level)/2, df} · se``, with the quantile computed as
    ``t.isf((1 − level) / 2, df)``. Works elementwise on arrays.

    Parameters
    ----------
    mean, std_error : float or array_like
        Estimate and its standard error (broadcast together); ``std_error ≥ 0`` (a NaN gives
        NaN bounds).
    df : float or array_like
        Student-t degrees of freedom, > 0 (``n − 1`` for the mean of ``n ≥ 2`` draws).
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    (low, high)
        ``mean − half`` and ``mean + half`` with ``half = t_{(1+level)/2, df} · se``.

    Raises
    ------
    ValueError
        ``level`` outside (0, 1), ``df`` not positive (or NaN), ``std_error`` negative.
    """
    level = _t_interval_iv(std_error, df, level)
    half = stats.t.isf((1 - level) / 2, df) * std_error
    return mean - half, mean + half
