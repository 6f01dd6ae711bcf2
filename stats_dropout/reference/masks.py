"""Exact Bernoulli masks from integer thresholds, and the fused train pass of unshared dropout.

With ``m`` random bits ``U`` uniform on ``{0, …, 2^m − 1}``, ``P(U < t) = t / 2^m`` exactly. The
width is the smallest of 8, 16, 32 for which ``keep_prob · 2^m`` is an integer (then the keep rate
is exactly ``keep_prob``); otherwise ``m = 32`` and ``t = round(keep_prob · 2^32)``, a bias below
``2^-33``. The top byte decides all but 1/256 of units; ties draw the remaining bits. The optional
C kernel (``_fastmask.c``, built by setup.py) makes the whole unshared train pass (random bits
included) in one pass, split over threads, and gives the same bits as the numpy path for any
number of threads; it multiplies by ``1 / keep_prob`` instead of dividing only where
:func:`_exact_reciprocal` proves the same bits.
"""

from __future__ import annotations

import functools
import os
from fractions import Fraction

import numpy as np

from stats_dropout._internal.validation import float_array_iv, keep_prob_iv

try:  # optional C kernel (setup.py); the numpy path gives the same bits without it
    from stats_dropout.reference import _fastmask
except ImportError:  # pragma: no cover - depends on the build
    _fastmask = None

__all__ = ["keep_threshold", "mask_chunks", "bernoulli_mask", "masked_full", "apply_mask", "kernel_applies",
           "kernel_threads",
           "masked_full_fused", "CHUNK", "KERNEL_BIT_GENERATORS", "THREADS_ENV"]

#: Environment variable capping the C kernel's threads (default: ``os.cpu_count()``).
THREADS_ENV = "STATS_DROPOUT_THREADS"

#: The bit generators whose C functions the kernel may call without the GIL (numpy's own).
KERNEL_BIT_GENERATORS = (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox,
                          np.random.SFC64)

_WIDTHS = ((8, np.uint8), (16, np.uint16), (32, np.uint32))


def keep_threshold(keep_prob):
    """Integer threshold ``t`` and bit width ``m`` with ``P(U < t) = t / 2^m ≈ keep_prob``.

    Returns ``(t, m, dtype)``. Exact when ``keep_prob · 2^m`` is an integer for some
    ``m ∈ {8, 16, 32}``; otherwise ``|t / 2^32 − keep_prob| ≤ 2^-33``.
    """
    keep_prob = keep_prob_iv(keep_prob)
    for bits, dtype in _WIDTHS:
        scaled = keep_prob * 2.0**bits
        if scaled == int(scaled):
            return int(scaled), bits, dtype
    return round(keep_prob * 2.0**32), 32, np.uint32


# --- fast exact masks ------------------------------------------------------------------------
# ``U < t`` for an m-bit uniform U is decided on U's top byte first: a top byte below ``t``'s
# keeps, above it drops, and only a tie (probability 1/256) needs U's remaining m − 8 bits.
# Same law as drawing all m bits (P(keep) = hi/2^8 + 2^-8 · lo/2^(m−8) = t/2^m, proven by
# enumeration in tests/unit/test_masks.py), at about 8 random bits per element instead of m.

#: Elements per chunk: its random bytes, mask and float64 output (1 MiB) stay in L2 cache;
#: larger chunks also spread the ~15 numpy calls per chunk over more elements.
CHUNK = 1 << 17


def _threshold_split(threshold, bits):
    """``(hi, lo, tie_bits)``: ``U < t`` ⇔ ``top byte < hi`` or (``top byte == hi`` and ``rest < lo``)."""
    tie_bits = bits - 8
    return threshold >> tie_bits, threshold & ((1 << tie_bits) - 1), tie_bits


def _keep_first_stage(top, hi):
    """Kept by the top byte alone, and the positions of ties that need the remaining bits."""
    return top < hi, np.flatnonzero(top == hi)


def _keep_tie_stage(rest, lo):
    """Decision for tied elements from their remaining ``tie_bits`` uniform bits."""
    return rest < lo


def _draw_keep(rng, count, hi, lo, tie_bits):
    """``count`` independent keep decisions with ``P(keep) = (hi · 2^tie_bits + lo) / 2^(8 + tie_bits)``."""
    # Full-range uint64 words split into bytes: each byte is uniform and independent whatever
    # the bit generator (unlike ``random_raw``, which is 32-bit for MT19937).
    words = rng.integers(0, 2**64, size=-(-count // 8), dtype=np.uint64)
    top = words.view(np.uint8)[:count]
    if tie_bits == 0:
        return top < hi
    keep, ties = _keep_first_stage(top, hi)
    if ties.size:
        rest = rng.integers(0, 1 << tie_bits, size=ties.size, dtype=np.uint32)
        keep[ties] = _keep_tie_stage(rest, lo)
    return keep


def _mask_params(keep_prob):
    threshold, bits, _ = keep_threshold(keep_prob)
    return _threshold_split(threshold, bits)


def _chunks(rows, cols):
    """Row-major ``(row_slice, col_slice)`` pieces of about ``CHUNK`` elements of a (rows, cols) array."""
    if cols >= CHUNK:
        for r in range(rows):
            for c in range(0, cols, CHUNK):
                yield slice(r, r + 1), slice(c, min(cols, c + CHUNK))
    else:
        per = max(1, CHUNK // max(cols, 1))
        for r in range(0, rows, per):
            yield slice(r, min(rows, r + per)), slice(0, cols)


def apply_mask(out, x, keep, divisor):
    """``out = keep · x / divisor``, the division in float64, rounded once to ``out.dtype``.

    A kept unit is exactly ``fl(x / keep_prob)`` (a division, not a multiplication by
    ``1/keep_prob``), correctly rounded to float16/float32 from float64 as ``astype`` would,
    and a dropped unit is ``±0`` with the sign of ``x``. Dividing first and masking second is
    the fast order (the mask pass runs in cache, in place), but it turns a dropped unit whose
    ``x / keep_prob`` overflows (in float64, or when rounded to a narrower dtype) into
    ``0 · inf = nan`` (the caller silences that warning); a nan maximum of the chunk detects
    it, cheaply and in cache, and the chunk is redone in the safe order.
    """
    if divisor == 1.0:
        np.multiply(x, keep, out=out)  # x · 1 and x · 0 are exact in x's own dtype
        return
    # The division runs in float64 and its result is rounded once, on output, to out's dtype.
    np.divide(x, divisor, out=out, dtype=np.float64, casting="same_kind")
    np.multiply(out, keep, out=out)  # exact: q · 1 or ±0
    if out.size and np.isnan(np.maximum.reduce(out, axis=None)):  # maximum propagates nan
        work = np.multiply(x, keep, dtype=np.float64)
        np.divide(work, divisor, out=work)
        np.copyto(out, work, casting="same_kind")


def mask_chunks(rng, rows, cols, keep_prob):
    """Masks of a (rows, cols) array, chunk by chunk in row-major order: ``(rows, cols, keep)``.

    The one place that fixes the order in which unshared masks consume ``rng``: the train
    pass and :mod:`stats_dropout.inference.montecarlo`'s mask-mean shortcut both iterate it, so they
    see the very same masks for the same generator.
    """
    hi, lo, tie_bits = _mask_params(keep_prob)
    for r, c in _chunks(rows, cols):
        shape = (r.stop - r.start, c.stop - c.start)
        yield r, c, _draw_keep(rng, shape[0] * shape[1], hi, lo, tie_bits).reshape(shape)


def masked_full(x, keep_prob, rng, n_draws, divisor, *, threads=None):
    """Unshared Bernoulli dropout of ``x`` (``n_draws`` passes or one), one mask entry per element.

    Chunk by chunk: draw the chunk's mask, then rescale it while it is in cache; only ``x``
    and the output ever travel to and from memory. The C kernel does the same in one pass,
    on up to ``threads`` threads (see :func:`kernel_threads`), with the very same results and
    random stream whatever the number of threads.
    """
    rows = 1 if n_draws is None else n_draws
    out = np.empty(((rows,) if n_draws is not None else ()) + x.shape, dtype=x.dtype)
    out2, x1 = out.reshape(rows, x.size), x.reshape(x.size)
    if kernel_applies(x):
        if isinstance(rng.bit_generator, KERNEL_BIT_GENERATORS):
            # The kernel validates x in the pass it makes anyway (DropoutScheme._train_iv deferred
            # the finiteness check here); on a non-finite input the generator is left untouched.
            if not masked_full_fused(x1, out2, keep_prob, rng, divisor, threads=threads):
                float_array_iv(x)  # raises the usual "`x` must be finite" error
            return out
        float_array_iv(x)  # another bit generator: the numpy path, after the deferred check
    # "invalid" can only come from the 0 · inf that apply_mask detects and redoes; one
    # errstate for the whole loop (entering one costs microseconds, a chunk ~30 µs).
    with np.errstate(invalid="ignore"):
        for r, c, keep in mask_chunks(rng, rows, x.size, keep_prob):
            apply_mask(out2[r, c], x1[c], keep, divisor)
    return out


def kernel_applies(x):
    """Whether the C kernel handles ``x`` (it also checks its finiteness)."""
    return _fastmask is not None and x.dtype.type in (np.float32, np.float64) and x.size > 0


def kernel_threads(threads=None):
    """Most threads the C kernel may use: ``threads``, else ``$STATS_DROPOUT_THREADS``, else the CPUs.

    The kernel uses at most one thread per run of chunks (``CHUNK`` elements, runs of 2 MiB of
    output or more): a smaller array runs on the calling thread alone. Results never depend on it.
    """
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"${THREADS_ENV} must be a positive integer; got {env!r}") from None
            name = f"${THREADS_ENV}"
        else:
            return os.cpu_count() or 1
    else:
        name = "`threads`"
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"{name} must be a positive integer; got {threads!r}")
    return int(threads)


def _n_chunks(rows, cols):
    """Number of pieces :func:`_chunks` cuts a (rows, cols) array into (cols ≥ 1)."""
    if cols >= CHUNK:
        return rows * -(-cols // CHUNK)
    return -(-rows // max(1, CHUNK // cols))


#: From this many units on, numpy's PCG64 is run inside the kernel from its public ``state``
#: (same numbers, about twice as fast as a call per word); below, the saved time is smaller
#: than setting the state back.
_PCG64_IN_KERNEL = 1 << 13
_LOW64 = (1 << 64) - 1


@functools.lru_cache(maxsize=256)
def _exact_reciprocal(divisor, single):
    """``r`` such that ``x * r`` gives the bits of ``x / divisor`` for every finite ``x``, or 0.0.

    A division is the dearest step of the kernel's pass (about four times the rest of it);
    a multiplication is used when it is proven to give the same result:

    - float64: ``r = 1 / divisor`` exactly (a power of two): the same real number, rounded once.
    - float32 (divided in double, then rounded to float32): ``2^-100 ≤ divisor ≤ 1``, the odd
      part of ``r``'s significand has at most 24 bits (``r`` is a float32), and
      ``|1 / (divisor · r) − 1| < 2^-54`` (exact rationals). Then for a float32 ``x ≠ 0``,
      ``q = x · r`` is exact in double (24 + 24 bits, ``2^-149 ≤ |q| < 2^229``) and
      ``x / divisor = q (1 + ε)``, ``|ε| < 2^-54``: with ``|q| = s · 2^e``, ``1 ≤ s < 2``,
      ``|x / divisor − q| < s · 2^(e−54)``, below half the gap to either neighbour of ``q``
      (``2^(e−53)``; ``2^(e−54)`` below a power of two, where ``s = 1``). So the double quotient
      is ``q`` itself, and its float32 rounding is the float32 product ``x · r`` (the exact
      product rounded once, subnormal or overflowing alike). ``x = ±0`` gives ``±0`` both ways.
      Among others 0.8 (``r = 1.25``), 0.5, 0.4, 0.25, 0.2, 0.1, 0.64; not 0.9, 0.75, 0.3, 1/3.

    The kernel uses ``r`` only when rounding to nearest without flushing subnormals (IEEE's
    default, Python's). tests/unit/test_fastmask.py checks both cases against numpy's division,
    on whole binades of float32.
    """
    d = float(divisor)
    if not (d > 0.0 and np.isfinite(d)):
        return 0.0
    r = 1.0 / d
    if not np.isfinite(r):
        return 0.0
    product = Fraction(d) * Fraction(r)
    if product == 1:
        return r
    if not single or not (2.0**-100 <= d <= 1.0):
        return 0.0
    odd = Fraction(r).numerator
    odd >>= (odd & -odd).bit_length() - 1
    if odd.bit_length() > 24 or abs(1 / product - 1) >= Fraction(1, 2**54):
        return 0.0
    return r


def masked_full_fused(x1, out2, keep_prob, rng, divisor, *, threads=None):
    """:func:`masked_full` with the optional C kernel: same random stream, same bits.

    The kernel draws each chunk's words and tie bits from ``rng``'s bit generator exactly as
    ``_draw_keep`` does (chunk after chunk, whatever the number of threads), keeps, rescales
    or zeroes each unit, and stops early if it sees a NaN or infinite input: then it returns
    False and the generator is as it was. The bit generator's lock is held for the whole call.
    """
    hi, lo, tie_bits = _mask_params(keep_prob)
    rows, cols = out2.shape
    n_threads = min(kernel_threads(threads), _n_chunks(rows, cols))
    single = x1.dtype.type is np.float32
    x1 = np.ascontiguousarray(x1)
    bit_generator = rng.bit_generator
    with bit_generator.lock:
        state = bit_generator.state
        if type(bit_generator) is np.random.PCG64 and rows * cols >= _PCG64_IN_KERNEL and _fastmask.PCG64_STATE:
            s, inc = state["state"]["state"], state["state"]["inc"]
            generator = (s >> 64, s & _LOW64, inc >> 64, inc & _LOW64, state["has_uint32"], state["uinteger"])
        else:
            generator = bit_generator.capsule  # numpy's C functions: the state moves in place
        finite, moved = _fastmask.dropout(generator, x1, out2, rows, cols, CHUNK, hi, lo, tie_bits,
                                          float(divisor), _exact_reciprocal(float(divisor), single), single,
                                          n_threads)
        if moved is None:
            if not finite:
                bit_generator.state = state
        elif finite:
            bit_generator.state = {"bit_generator": "PCG64", "state": {"state": moved[0] << 64 | moved[1], "inc": inc},
                                   "has_uint32": moved[2], "uinteger": moved[3]}
    return finite


def bernoulli_mask(rng, shape, keep_prob):
    """Boolean mask of ``shape`` with independent ``Bernoulli(keep_prob)`` entries.

    Uses the integer threshold of :func:`keep_threshold`, so the keep rate is exact
    (see the module docstring), decided on the top byte first (see ``_draw_keep``).
    ``keep_prob == 1`` keeps everything without drawing.
    """
    if keep_prob == 1.0:
        return np.ones(shape, dtype=bool)
    hi, lo, tie_bits = _mask_params(keep_prob)
    mask = np.empty(shape, dtype=bool)
    flat = mask.reshape(-1)
    for start in range(0, flat.size, CHUNK):  # bounded temporaries for large masks
        stop = min(flat.size, start + CHUNK)
        flat[start:stop] = _draw_keep(rng, stop - start, hi, lo, tie_bits)
    return mask
