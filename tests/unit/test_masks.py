"""Exact fast masks: the keep rate proven by enumeration, outputs exact, results thread-independent."""

from fractions import Fraction

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.reference.masks import (
    _keep_first_stage,
    _keep_tie_stage,
    _threshold_split,
    bernoulli_mask,
    keep_threshold,
    mask_chunks,
    masked_full,
)

# Dyadic keep probabilities at each width, extremes included, and non-dyadic ones.
DYADIC = [1 / 256, 0.5, 0.75, 255 / 256,  # width 8
          1 / 65536, 19661 / 65536, 65535 / 65536,  # width 16
          2**-32, 3 / 2**32, 858993459 / 2**32, 1 - 2**-32]  # width 32
NON_DYADIC = [0.1, 0.2, 0.8, 0.9, 1 / 3, 2 / 3, 0.999, 1e-12, 1 - 1e-12, 0.7071067811865476]


def _kept_count_by_enumeration(threshold, bits):
    """How many of the 2^bits equally likely random words the two-stage decision keeps.

    Runs the very comparisons the sampler uses on every top byte (0..255) and, for the tied
    byte, on every value of the remaining ``bits - 8`` bits.
    """
    hi, lo, tie_bits = _threshold_split(threshold, bits)
    top = np.arange(256, dtype=np.uint16).astype(np.uint8)
    if tie_bits == 0:
        return int(np.count_nonzero(top < hi))
    keep, ties = _keep_first_stage(top, hi)
    assert ties.size <= 1  # exactly one top byte can tie with the threshold's
    rest = np.arange(1 << tie_bits, dtype=np.uint32)
    kept_on_tie = int(np.count_nonzero(_keep_tie_stage(rest, lo)))
    return int(np.count_nonzero(keep)) * (1 << tie_bits) + ties.size * kept_on_tie


@pytest.mark.parametrize("keep_prob", DYADIC + NON_DYADIC)
def test_keep_rate_exact_by_enumeration(keep_prob):
    threshold, bits, dtype = keep_threshold(keep_prob)
    assert np.iinfo(dtype).bits == bits
    # P(keep) = kept words / all words, with every word equally likely: exactly t / 2^m.
    rate = Fraction(_kept_count_by_enumeration(threshold, bits), 2**bits)
    assert rate == Fraction(threshold, 2**bits)
    exact = Fraction(keep_prob)
    smallest = next((m for m in (8, 16, 32) if (exact * 2**m).denominator == 1), None)
    if smallest is not None:
        assert bits == smallest and rate == exact  # exactly keep_prob, at the narrowest width
    else:
        assert bits == 32 and abs(rate - exact) <= Fraction(1, 2**33) < Fraction(1, 2**32)


def test_dyadic_list_is_dyadic():
    for p in DYADIC:
        assert (Fraction(p) * 2**32).denominator == 1


@pytest.mark.parametrize("keep_prob", [0.5, 0.8, 0.9, 1 / 65536 * 3, 0.1])
def test_sampled_keep_rate(keep_prob):
    # Fixed seed: deterministic. 8 sigma of Binomial(n, p) — a law error of 1e-3 would show.
    n = 2_000_003  # not a multiple of 8 nor of the chunk size
    mask = bernoulli_mask(np.random.default_rng(7), (n,), keep_prob)
    sigma = np.sqrt(n * keep_prob * (1 - keep_prob))
    assert abs(int(mask.sum()) - n * keep_prob) < 8 * sigma


def test_byte_lanes_independent():
    # The eight bytes of one random word feed eight neighbouring elements: adjacent elements
    # must be kept together with probability p^2 (each lane pair within 8 sigma).
    p, n = 0.8, 8 * 250_000
    mask = bernoulli_mask(np.random.default_rng(3), (n // 8, 8), p)
    both = (mask[:, :-1] & mask[:, 1:]).mean(axis=0)
    sigma = np.sqrt(p**2 * (1 - p**2) / (n // 8))
    assert np.all(np.abs(both - p**2) < 8 * sigma)


def test_mask_edge_shapes_and_keep_prob_one():
    rng = np.random.default_rng(0)
    assert bernoulli_mask(rng, (0, 3), 0.5).shape == (0, 3)
    assert bernoulli_mask(rng, (), 0.5).shape == ()
    assert bernoulli_mask(rng, (2, 3), 1.0).all()
    for name in ("inverted", "standard"):
        assert sd.get_scheme(name).train(np.zeros((0, 4)), 0.5, rng).shape == (0, 4)
        assert sd.get_scheme(name).sample_train(np.zeros((0, 4)), 0.5, 3, rng).shape == (3, 0, 4)
        assert sd.get_scheme(name).train(np.float32(2.0), 0.5, rng).shape == ()
    a = bernoulli_mask(np.random.default_rng(5), (3, 70_001), 0.8)
    b = bernoulli_mask(np.random.default_rng(5), (3, 70_001), 0.8)
    np.testing.assert_array_equal(a, b)
    # Any bit generator works (MT19937 makes 32-bit raw words; full-range draws hide that).
    mt = np.random.Generator(np.random.MT19937(1))
    assert abs(bernoulli_mask(mt, (400_000,), 0.5).mean() - 0.5) < 0.005


def _special_inputs(dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(11)
    body = rng.standard_normal(5000) * rng.choice([1e-3, 1.0, 1e3], 5000)
    edges = [0.0, -0.0, info.tiny, -info.tiny, info.smallest_subnormal, -info.smallest_subnormal,
             info.max, -info.max, info.max / 2, 1.0, -1.0, 3.0]
    return np.concatenate([body, edges]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("keep_prob", [0.8, 0.5, 0.9, 1e-3, 0.3])
@pytest.mark.parametrize("name", ["inverted", "standard"])
def test_outputs_exact(dtype, keep_prob, name):
    """Kept units are fl(x / p) (correctly rounded in x's dtype via float64), dropped ±0."""
    scheme = sd.get_scheme(name)
    x = _special_inputs(dtype)
    with np.errstate(over="ignore"):  # max / p overflows to inf, as the reference does
        y = scheme.train(np.tile(x, 40), keep_prob, np.random.default_rng(2)).reshape(40, -1)
        divisor = keep_prob if name == "inverted" else 1.0
        kept_ref = (x.astype(np.float64) / divisor).astype(dtype)
    assert y.dtype == dtype
    dropped_ref = (x.astype(np.float64) * 0.0).astype(dtype)  # +0 or -0, the sign of x
    # Compare bit patterns so that -0.0 vs +0.0 and inf are checked too.
    as_bits = {np.float16: np.uint16, np.float32: np.uint32, np.float64: np.uint64}[dtype]
    yb = y.view(as_bits)
    is_kept = yb == kept_ref.view(as_bits)[None, :]
    is_dropped = yb == dropped_ref.view(as_bits)[None, :]
    assert np.all(is_kept | is_dropped)
    assert not np.isnan(y).any()
    informative = kept_ref != 0
    rate = is_kept[:, informative].mean()
    n = is_kept[:, informative].size
    assert abs(rate - keep_prob) < 0.02 + 6 * np.sqrt(keep_prob * (1 - keep_prob) / n)


def test_overflowing_quotient_of_dropped_unit_is_zero():
    x = np.full(4000, np.finfo(np.float64).max)
    with np.errstate(over="ignore"):
        y = sd.get_scheme("inverted").train(x, 0.5, np.random.default_rng(0))
    assert set(np.unique(y).tolist()) == {0.0, np.inf}


@pytest.mark.parametrize(
    "name", ["inverted", "standard", "channel", "time_locked", "drop_path", "batch_shared"]
)
def test_sample_train_shapes_and_dtypes(name):
    scheme = sd.get_scheme(name)
    for dtype in (np.float32, np.float64):
        x = np.arange(1, 2 * 3 * 5 + 1, dtype=dtype).reshape(2, 3, 5)
        y = scheme.sample_train(x, 0.7, 6, np.random.default_rng(0))
        assert y.shape == (6, 2, 3, 5) and y.dtype == dtype
        kept = (x.astype(np.float64) / (1.0 if name == "standard" else 0.7)).astype(dtype)
        assert np.all((y == 0) | (y == kept))  # exact, through the shared-mask path too
        assert 0 < np.count_nonzero(y) < y.size


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("rows, cols", [(1, 3 * 2**17 + 5), (40, 9999), (3, 2**17 + 1)])
def test_mask_chunks_are_the_train_pass_masks(threads, rows, cols):
    # The Monte-Carlo mask-mean shortcut (inference.montecarlo) counts the masks of mask_chunks
    # as the train pass's: with or without the C kernel, on any number of threads.
    x = np.ones(cols)
    y = masked_full(x, 0.86, np.random.default_rng(4), rows, 0.86, threads=threads)
    keep = np.empty((rows, cols), dtype=bool)
    for r, c, k in mask_chunks(np.random.default_rng(4), rows, cols, 0.86):
        keep[r, c] = k
    np.testing.assert_array_equal(y != 0, keep)
