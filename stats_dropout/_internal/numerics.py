"""Floating-point tolerances: one dead band for "equal up to rounding", named by its dtype.

Exact checks compare a user's output with the value a contract promises. The two are computed in
different orders (``x * (1/p)`` against ``x / p``, a fused multiply-add, a lower compute dtype),
so they may differ by a few units in the last place (ulp) of the output dtype; nothing else is
allowed. Every such comparison in the package takes its tolerance from :func:`ulp_tol`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ulp_tol", "unit_exponent", "EXACT_ULPS", "MOMENT_ULPS", "TWO_ROUTE_RTOL"]

#: Ulps allowed where one value is computed in another order (one or two roundings, each ≤ 1 ulp,
#: with headroom): kept units, eval outputs, keep_prob = 1.
EXACT_ULPS = 8
#: Ulps allowed for statistics that sum many rounded terms (zero-variance moment comparisons).
MOMENT_ULPS = 64
#: Relative dead band for a float64 quantity computed along two routes (a few network layers,
#: sums of up to 10^6 terms; they agree to ~1e-13): far below any effect a Monte-Carlo decision
#: detects, and it keeps zero-variance cases (keep_prob = 1) from being "significant" by rounding.
TWO_ROUTE_RTOL = 1e-12


def ulp_tol(dtype=np.float64, ulps=EXACT_ULPS):
    """Relative tolerance of ``ulps`` units in the last place of ``dtype``: ``ulps · eps(dtype)``.

    Parameters
    ----------
    dtype : dtype-like
        A floating dtype, including ``ml_dtypes`` types such as ``bfloat16`` (their ``finfo``
        comes from ``ml_dtypes.finfo``).
    ulps : int

    Returns
    -------
    float
    """
    try:
        eps = np.finfo(dtype).eps
    except (TypeError, ValueError):  # ml_dtypes (bfloat16, float8_*) carry their own finfo
        import ml_dtypes

        eps = ml_dtypes.finfo(dtype).eps
    return float(ulps * eps)


def unit_exponent(x):
    """The exponent ``k`` with ``max|x| · 2^-k`` in ``[0.5, 1)`` (0 for an all-zero or empty ``x``).

    ``np.ldexp(x, -k)`` rescales ``x`` to unit magnitude *exactly*: multiplying by a power of two
    changes only the exponent, including for subnormal inputs (scaled up, they gain bits rather
    than lose them). Statistics computed on the rescaled values neither underflow (squares of
    ``|x| ≲ 1e-154``) nor overflow (``x · 1e300``), so a decision is the same for ``x`` and ``c·x``.
    """
    a = np.abs(np.asarray(x, dtype=np.float64))
    top = float(a.max()) if a.size else 0.0
    if not (top > 0 and np.isfinite(top)):
        return 0
    return int(np.frexp(top)[1])
