"""Shared argument validators with uniform messages.

Every public function has one ``_<name>_iv`` validator that calls these; messages put the
parameter in backticks and echo the value: ``"`keep_prob` must be in (0, 1]; got 1.5"``.
"""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def is_real_float_dtype(dtype):
    """True for a real floating dtype: numpy's (float16 … longdouble) or an ``ml_dtypes`` one.

    ``ml_dtypes`` types (``bfloat16``, ``float8_*``) are not subclasses of ``np.floating``
    (their kind is ``'V'``); they are recognised by ``ml_dtypes.finfo``, imported only when a
    dtype is not a numpy one (ml_dtypes is optional).
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return True
    if dtype.kind != "V" or type(dtype.type).__module__ == "numpy":
        return False
    try:
        import ml_dtypes
    except ImportError:  # an ml_dtypes array cannot exist without ml_dtypes
        return False
    try:
        ml_dtypes.finfo(dtype)
    except (TypeError, ValueError):
        return False
    return True


def keep_prob_iv(keep_prob, name="keep_prob"):
    """Return ``keep_prob`` as a Python float in (0, 1] or raise naming ``name``."""
    if isinstance(keep_prob, (bool, np.bool_)) or not isinstance(keep_prob, numbers.Real):
        raise TypeError(f"`{name}` must be a real number in (0, 1]; got {keep_prob!r}")
    value = float(keep_prob)
    if not (0.0 < value <= 1.0):  # also rejects NaN
        raise ValueError(f"`{name}` must be in (0, 1]; got {keep_prob!r}")
    return value


def keep_probs_iv(keep_probs, name="keep_probs", *, distinct=False):
    """One keep probability or several, as a tuple of floats in (0, 1], or raise naming ``name``.

    0-d arrays count as numbers. With ``distinct``, a value given twice is an error (the battery
    would run every check twice under one id).
    """
    given = (keep_probs,) if np.ndim(keep_probs) == 0 else tuple(np.asarray(keep_probs, dtype=object).ravel())
    values = tuple(keep_prob_iv(p.item() if isinstance(p, (np.ndarray, np.generic)) else p, name) for p in given)
    if not values:
        raise ValueError(f"`{name}` must hold at least one value; got {keep_probs!r} (`{name}` must not be empty)")
    repeated = sorted({v for v in values if values.count(v) > 1}) if distinct else ()
    if repeated:
        raise ValueError(f"`{name}` holds {', '.join(f'{v:g}' for v in repeated)} more than once; got {keep_probs!r}")
    return values


def probability_iv(value, name, *, low_open=True, high_open=True):
    """Return a float probability strictly inside (0, 1) (the default) or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number in (0, 1); got {value!r}")
    v = float(value)
    ok_low = v > 0 if low_open else v >= 0
    ok_high = v < 1 if high_open else v <= 1
    if not (ok_low and ok_high):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"`{name}` must be in {interval}; got {value!r}")
    return v


def positive_int_iv(value, name):
    """Return ``value`` as an int ≥ 1 or raise naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer; got {value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
    return int(value)


#: Most Monte-Carlo draws any function accepts: 2^40 ≈ 1.1e12 passes is days of computing
#: for the smallest input; beyond it a request is a typo (``1e30``), not a plan.
MAX_DRAWS = 2**40


def draws_iv(value, name="draws"):
    """Return ``value`` as an int in [1, :data:`MAX_DRAWS`] or raise naming ``name``."""
    value = positive_int_iv(value, name)
    if value > MAX_DRAWS:
        raise ValueError(f"`{name}` must be an integer in [1, 2**40]; got {value!r}")
    return value


def seed_iv(seed, name="seed"):
    """Return ``seed`` as a non-negative int or raise naming ``name``."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`{name}` must be a non-negative integer; got {seed!r}")
    if seed < 0:
        raise ValueError(f"`{name}` must be a non-negative integer; got {seed!r}")
    return int(seed)


def _all_finite(arr):
    """``np.all(np.isfinite(arr))``, fast for large contiguous float32/float64 arrays.

    ``Σ x²`` (one BLAS dot, no temporary array) is finite only if every element is: a NaN or an
    infinity makes it NaN or inf and squares cannot cancel. If it is not finite (possibly just
    overflow of huge finite values) the exact elementwise test decides.
    """
    if arr.dtype.type in (np.float32, np.float64) and arr.flags.c_contiguous and arr.size > 4096:
        flat = arr.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(flat, flat)):
                return True
    return bool(np.all(np.isfinite(arr)))


def float_array_iv(x, name="x", *, allow_empty=True, allow_0d=True, allow_nonfinite=False):
    """Return ``x`` as a floating ndarray (no copy when it already is one) or raise.

    Integer and boolean arrays are rejected rather than silently cast: dropout of an integer
    tensor cannot represent ``x / keep_prob``, and casting would hide the caller's bug. Real
    floating dtypes are accepted, including ``ml_dtypes`` ones (``bfloat16``): statistics convert
    them to float64.
    """
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"`{name}` must be a floating-point array; got {x!r}")
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"`{name}` must be a floating-point array; got dtype object")
    if not is_real_float_dtype(arr.dtype):
        raise TypeError(
            f"`{name}` must have a floating dtype (float16, float32, float64, or an ml_dtypes one such "
            f"as bfloat16); got dtype {arr.dtype}"
        )
    if not allow_0d and arr.ndim == 0:
        raise ValueError(f"`{name}` must have at least one dimension; got a 0-d array")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"`{name}` must not be empty; got shape {arr.shape}")
    if not allow_nonfinite and arr.size and not _all_finite(arr):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` must be finite; got {bad} NaN or infinite value(s)")
    return arr


def choice_iv(value, name, choices):
    """Return ``value`` if it is one of ``choices`` or raise listing them."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}")
    return value


def callable_iv(obj, name, *, optional=False, what="callable"):
    """Return ``obj`` if it is callable (or None when ``optional``) or raise naming ``name``."""
    if obj is None and optional:
        return obj
    if not callable(obj):
        raise TypeError(f"`{name}` must be {what}{' or None' if optional else ''}; got {obj!r}")
    return obj


def rng_iv(rng, name="rng"):
    """Return a ``numpy.random.Generator`` from anything ``default_rng`` accepts."""
    if isinstance(rng, np.random.Generator):
        return rng
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"`{name}` must be a numpy.random.Generator or a seed default_rng accepts; got {rng!r}"
        ) from exc
