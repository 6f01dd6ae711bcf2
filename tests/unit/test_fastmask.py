"""The optional C kernel gives the numpy path's results bit for bit, from the same random stream,
for any number of threads."""

import os

import numpy as np
import pytest

from stats_dropout import schemes
from stats_dropout.reference import masks

pytestmark = pytest.mark.skipif(masks._fastmask is None, reason="C kernel not built")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep_prob", [0.8, 0.5, 0.3, 0.123456, 0.999, 1 / 3])
@pytest.mark.parametrize("shape, n_draws", [((1000, 37), None), ((3, 5), 7), ((300_000,), None),
                                            ((10, 20_000), 3), ((0, 4), None)])
@pytest.mark.parametrize("rescale", ["train", "eval"])
def test_fused_kernel_equals_numpy_path(monkeypatch, dtype, keep_prob, shape, n_draws, rescale):
    scheme = schemes.get_scheme("inverted" if rescale == "train" else "standard")
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    if x.size > 2:
        x.flat[0] = -0.0
        x.flat[1] = np.finfo(dtype).max  # x / keep_prob overflows: a kept unit is inf, a dropped one 0
        x.flat[2] = -np.finfo(dtype).tiny
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    with np.errstate(over="ignore"):
        fused = scheme._sample(x, keep_prob, rng_a, n_draws)
        monkeypatch.setattr(masks, "_fastmask", None)
        plain = scheme._sample(x, keep_prob, rng_b, n_draws)
    assert fused.dtype == plain.dtype == dtype
    np.testing.assert_array_equal(fused, plain)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(plain))
    assert rng_a.bit_generator.state == rng_b.bit_generator.state  # same stream consumed


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_validates_x_and_leaves_the_generator_untouched(dtype, bad):
    # The kernel's pass replaces the up-front finiteness check: the error and the generator's
    # state must be exactly as if the check had run first.
    x = np.ones(300_000, dtype=dtype)
    x[200_000] = bad  # in a later chunk: earlier chunks have already drawn their bytes
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    with pytest.raises(ValueError, match=r"`x` must be finite; got 1 NaN or infinite value\(s\)"):
        schemes.get_scheme("inverted").train(x, 0.8, rng)
    assert rng.bit_generator.state == state


# --- the threaded kernel -----------------------------------------------------------------------
# The kernel draws from the caller's bit generator through numpy's C API (the "BitGenerator"
# capsule), or runs numpy's PCG64 itself from its public state, chunk after chunk in the numpy
# path's order whatever the number of threads.

BIT_GENERATORS = [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64]
B = masks.CHUNK  # the chunk: the unit of the stream, fixed whatever the number of threads
SIZES = [0, 1, B - 1, B, B + 1, 3 * B + 5]
# Widths 8 (no tie draws), 32 (24-bit tie draws), 16 (8-bit tie draws); the last one's
# threshold is 2^32, whose top byte (256) no random byte is below.
KEEP_PROBS = [0.5, 0.9, 0.86, 1 / 3, 19661 / 65536, 1 - 1e-12]
THREADS = [1, 2, 3, 7]


def _same_state(a, b):
    """Bit generator states (nested dicts, MT19937's with an array) are equal."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


def _pcg64_spec(bit_generator):
    """The kernel's description of a PCG64 it runs itself (as masks.masked_full_fused makes it)."""
    st = bit_generator.state
    s, inc = st["state"]["state"], st["state"]["inc"]
    return (s >> 64, s & masks._LOW64, inc >> 64, inc & masks._LOW64, st["has_uint32"], st["uinteger"])


DRAWS = [(1001, 64), (3, 24), (7, 8), (5, 64), (2, 32), (1, 24), (999, 64), (4, 8), (0, 64), (1, 64)]


@pytest.mark.parametrize("bit_generator", BIT_GENERATORS)
def test_kernel_draws_are_numpys_integers(bit_generator):
    # The claims the kernel relies on: full-range uint64 `integers` returns next_uint64
    # outputs, and `integers(0, 2**k, dtype=uint32)` is next_uint32 >> (32 - k) (Lemire's
    # method never rejects for a power-of-two range), with next_uint32's buffered half-words
    # interleaved as numpy interleaves them.
    a, b = np.random.Generator(bit_generator(12345)), np.random.Generator(bit_generator(12345))
    for n, bits in DRAWS:
        dtype = np.uint64 if bits == 64 else np.uint32
        raw, moved = masks._fastmask.draws(a.bit_generator.capsule, n, bits)
        assert moved is None  # through numpy's C functions: numpy's own state moved
        np.testing.assert_array_equal(np.frombuffer(raw, dtype=dtype), b.integers(0, 2**bits, size=n, dtype=dtype))
    assert _same_state(a.bit_generator.state, b.bit_generator.state)


@pytest.mark.skipif(masks._fastmask is None or not masks._fastmask.PCG64_STATE, reason="needs 128-bit integers")
@pytest.mark.parametrize("seed", [0, 1, 2**64 + 7, 123456789])
def test_kernels_own_pcg64_is_numpys(seed):
    # For PCG64 the kernel runs the generator itself from its public state (two interleaved
    # chains): the same words, half-words and final state as numpy's, odd and even counts.
    ours, numpys = np.random.PCG64(seed), np.random.Generator(np.random.PCG64(seed))
    for n, bits in DRAWS:
        dtype = np.uint64 if bits == 64 else np.uint32
        raw, moved = masks._fastmask.draws(_pcg64_spec(ours), n, bits)
        np.testing.assert_array_equal(np.frombuffer(raw, dtype=dtype), numpys.integers(0, 2**bits, size=n, dtype=dtype))
        inc = ours.state["state"]["inc"]
        ours.state = {"bit_generator": "PCG64", "state": {"state": moved[0] << 64 | moved[1], "inc": inc},
                      "has_uint32": moved[2], "uinteger": moved[3]}
        assert ours.state == numpys.bit_generator.state


def _input(size, dtype):
    x = np.random.default_rng(size).standard_normal(size).astype(dtype)
    if size > 2:
        x[0], x[1], x[-1] = -0.0, -np.finfo(dtype).tiny, np.finfo(dtype).max
    return x


def _numpy_path(monkeypatch, x, keep_prob, seed, n_draws=None):
    with monkeypatch.context() as m:
        m.setattr(masks, "_fastmask", None)
        rng = np.random.default_rng(seed)
        with np.errstate(over="ignore"):
            out = masks.masked_full(x, keep_prob, rng, n_draws, keep_prob)
    return out, rng.bit_generator.state


def _assert_same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    width = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}[a.dtype]
    np.testing.assert_array_equal(a.view(width), b.view(width))  # ±0, inf and all


def _assert_every_thread_count(x, keep_prob, seed, n_draws, expected, state):
    """The kernel at every count of THREADS gives ``expected`` and leaves the generator seeded
    with ``seed`` in ``state`` (the same stream consumed as by the numpy path)."""
    for threads in THREADS:
        rng = np.random.default_rng(seed)
        with np.errstate(over="ignore"):
            got = masks.masked_full(x, keep_prob, rng, n_draws, keep_prob, threads=threads)
        _assert_same_bits(got, expected)
        assert rng.bit_generator.state == state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep_prob", KEEP_PROBS)
@pytest.mark.parametrize("size", SIZES)
def test_any_thread_count_gives_the_numpy_paths_bits(monkeypatch, dtype, keep_prob, size):
    x = _input(size, dtype)
    expected, state = _numpy_path(monkeypatch, x, keep_prob, seed=size + 1)
    _assert_every_thread_count(x, keep_prob, size + 1, None, expected, state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep_prob", [0.9, 1 / 3, 19661 / 65536])
@pytest.mark.parametrize("n_draws, size", [(3, B + 1), (2, 2 * B), (300, 999), (131, 1000), (5, 7)])
def test_stacked_draws_any_thread_count(monkeypatch, dtype, keep_prob, n_draws, size):
    # Chunks of whole rows (size < B; 999 makes chunks that are not a multiple of 8 units)
    # and rows cut in pieces (size >= B).
    x = _input(size, dtype)
    expected, state = _numpy_path(monkeypatch, x, keep_prob, 9, n_draws)
    _assert_every_thread_count(x, keep_prob, 9, n_draws, expected, state)


@pytest.mark.parametrize("bit_generator", BIT_GENERATORS)
def test_every_numpy_bit_generator(monkeypatch, bit_generator):
    x = _input(2 * B + 3, np.float64)
    with monkeypatch.context() as m:
        m.setattr(masks, "_fastmask", None)
        plain_rng = np.random.Generator(bit_generator(4))
        with np.errstate(over="ignore"):
            plain = schemes.get_scheme("inverted").train(x, 0.86, plain_rng)
    rng = np.random.Generator(bit_generator(4))
    with np.errstate(over="ignore"):
        fused = masks.masked_full(x, 0.86, rng, None, 0.86, threads=2)
    _assert_same_bits(fused, plain)
    assert _same_state(rng.bit_generator.state, plain_rng.bit_generator.state)


def test_keep_prob_next_to_one_keeps_every_unit():
    # keep_threshold gives t = 2^32 (top byte 256): every unit is kept, as in the numpy path.
    x = _input(1000, np.float64)[2:-1]
    p = 1 - 1e-12
    assert masks._mask_params(p)[0] == 256
    y = schemes.get_scheme("inverted").train(x, p, np.random.default_rng(0))
    _assert_same_bits(y, x / p)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("where", [0, B - 1, 2 * B + 17])
def test_nonfinite_input_any_thread_count(threads, where):
    x = np.ones(3 * B + 5)
    x[where] = np.nan
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    with pytest.raises(ValueError, match=r"`x` must be finite; got 1 NaN or infinite value\(s\)"):
        masks.masked_full(x, 0.9, rng, None, 0.9, threads=threads)
    assert rng.bit_generator.state == state


def test_thread_count_from_argument_or_environment(monkeypatch):
    monkeypatch.delenv(masks.THREADS_ENV, raising=False)
    assert masks.kernel_threads() == (os.cpu_count() or 1)
    assert masks.kernel_threads(3) == 3
    monkeypatch.setenv(masks.THREADS_ENV, "5")
    assert masks.kernel_threads() == 5
    assert masks.kernel_threads(2) == 2  # the argument wins
    monkeypatch.setenv(masks.THREADS_ENV, "many")
    with pytest.raises(ValueError, match=r"\$STATS_DROPOUT_THREADS must be a positive integer; got 'many'"):
        masks.kernel_threads()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="`threads` must be a positive integer"):
            masks.kernel_threads(bad)


def test_environment_thread_count_changes_nothing(monkeypatch):
    x = _input(3 * B + 5, np.float32)
    results = []
    for threads in ("1", "2", "7"):
        monkeypatch.setenv(masks.THREADS_ENV, threads)
        with np.errstate(over="ignore"):
            results.append(schemes.get_scheme("inverted").train(x, 0.86, np.random.default_rng(8)))
    for r in results[1:]:
        _assert_same_bits(r, results[0])


def test_other_bit_generators_take_the_numpy_path(monkeypatch):
    # A bit generator the kernel does not know (here: all of them) is drawn from by numpy,
    # after the finiteness check that DropoutScheme._train_iv left to the kernel.
    x = _input(B + 1, np.float64)
    with np.errstate(over="ignore"):
        fused = schemes.get_scheme("inverted").train(x, 0.9, np.random.default_rng(2))
    monkeypatch.setattr(masks, "KERNEL_BIT_GENERATORS", ())
    with np.errstate(over="ignore"):
        plain = schemes.get_scheme("inverted").train(x, 0.9, np.random.default_rng(2))
    _assert_same_bits(fused, plain)
    x[5] = np.inf
    with pytest.raises(ValueError, match=r"`x` must be finite"):
        schemes.get_scheme("inverted").train(x, 0.9, np.random.default_rng(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep_prob", [0.9, 19661 / 65536])
def test_pcg64_in_kernel_with_a_buffered_half_word(monkeypatch, dtype, keep_prob):
    # PCG64 run from its state: a pending next_uint32 half-word (has_uint32 = 1) must be the
    # first tie draw, as in numpy; and the same bits and state through numpy's C functions.
    x = _input(2 * B + 3, dtype)

    def generator():
        rng = np.random.default_rng(21)
        rng.integers(0, 256, size=3, dtype=np.uint32)  # three half-words: one left in the buffer
        assert rng.bit_generator.state["has_uint32"] == 1
        return rng

    expected_rng = generator()
    with monkeypatch.context() as m:
        m.setattr(masks, "_fastmask", None)
        with np.errstate(over="ignore"):
            expected = masks.masked_full(x, keep_prob, expected_rng, None, keep_prob)
    for threshold in (masks._PCG64_IN_KERNEL, 2**62):  # in the kernel, then through the capsule
        monkeypatch.setattr(masks, "_PCG64_IN_KERNEL", threshold)
        for threads in (1, 3):
            rng = generator()
            with np.errstate(over="ignore"):
                got = masks.masked_full(x, keep_prob, rng, None, keep_prob, threads=threads)
            _assert_same_bits(got, expected)
            assert rng.bit_generator.state == expected_rng.bit_generator.state


# --- the division replaced by a multiplication where that is proven to give the same bits ----------

def _float32_binades():
    """Float32 bit patterns: the whole binade [1, 2) (the proof does not depend on the binade, only
    on the significand), subnormals (and 0), the top binade's last values, and a sample of every
    exponent."""
    rng = np.random.default_rng(5)
    binade = np.arange(0x3F800000, 0x40000000, dtype=np.uint32)
    subnormal = np.concatenate([np.arange(0, 1 << 16, dtype=np.uint32), rng.integers(0, 0x00800000, size=1 << 16,
                                                                                    dtype=np.uint32)])
    top = np.arange(0x7F7F0000, 0x7F800000, dtype=np.uint32)
    rest = rng.integers(0, 0x7F800000, size=1 << 18, dtype=np.uint32)
    return np.concatenate([binade, subnormal, top, rest]).view(np.float32)


@pytest.mark.parametrize("keep_prob", [0.8, 0.5, 0.4, 0.25, 0.2, 0.1, 0.64, 1.0, 0.05])
def test_float32_reciprocal_gives_the_quotients_bits(keep_prob):
    # masks._exact_reciprocal's proof, checked: the float32 product x * r is the float32 rounding
    # of the double quotient x / keep_prob (what the numpy path computes), for both signs.
    r = masks._exact_reciprocal(keep_prob, True)
    assert r != 0.0 and np.float32(r) == r
    for x in (_float32_binades(), -_float32_binades()):
        with np.errstate(over="ignore"):
            quotient = (x.astype(np.float64) / keep_prob).astype(np.float32)
            product = x * np.float32(r)
        np.testing.assert_array_equal(product.view(np.uint32), quotient.view(np.uint32))


@pytest.mark.parametrize("keep_prob", [0.5, 0.25, 1.0, 2.0**-10])
def test_float64_reciprocal_only_for_powers_of_two(keep_prob):
    r = masks._exact_reciprocal(keep_prob, False)
    assert r == 1 / keep_prob
    x = np.random.default_rng(6).integers(0, 0x7FF0000000000000, size=1 << 18, dtype=np.uint64).view(np.float64)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal((x * r).view(np.uint64), (x / keep_prob).view(np.uint64))


@pytest.mark.parametrize("keep_prob", [0.9, 0.75, 0.3, 1 / 3, 2 / 3, 0.123456, 0.999, 1 - 1e-12])
def test_no_reciprocal_without_a_proof(keep_prob):
    assert masks._exact_reciprocal(keep_prob, True) == 0.0
    assert masks._exact_reciprocal(keep_prob, False) == 0.0


def test_reciprocal_edge_cases():
    assert masks._exact_reciprocal(0.8, False) == 0.0  # float64: 1.25 is not 1 / 0.8
    assert masks._exact_reciprocal(0.2 * 2.0**-100, True) == 0.0  # float32: below 2^-100
    assert masks._exact_reciprocal(2.0**-101, False) == 2.0**101  # float64: any power of two


@pytest.mark.parametrize("keep_prob", [0.8, 0.4])
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_kernel_with_reciprocal_equals_numpy_path_on_whole_binades(monkeypatch, keep_prob, threads):
    # Through the kernel (multiplying) against the numpy path (dividing): every unit of [1, 2),
    # every subnormal, the top binade, with a few values at the end of rows of chunks.
    x = _float32_binades()[: 9 * B + 7]
    expected, state = _numpy_path(monkeypatch, x, keep_prob, seed=8)
    rng = np.random.default_rng(8)
    with np.errstate(over="ignore"):
        got = masks.masked_full(x, keep_prob, rng, None, keep_prob, threads=threads)
    _assert_same_bits(got, expected)
    assert rng.bit_generator.state == state


def test_reciprocal_only_when_rounding_to_nearest(monkeypatch):
    # Rounding downwards (set through libm, put back after), the kernel divides like the numpy path:
    # the multiplication's proof is for rounding to nearest (here x / 0.8 is just below x * 1.25).
    import ctypes
    import ctypes.util
    import platform

    name = ctypes.util.find_library("m")
    if name is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("needs x86-64's libm")
    libm = ctypes.CDLL(name)
    fe_downward = 0x400  # x86-64 glibc's FE_DOWNWARD
    x = _float32_binades()[: 2 * B + 3]
    before = libm.fegetround()
    if libm.fesetround(fe_downward) != 0:
        pytest.skip("cannot set the rounding mode")
    try:
        expected, _ = _numpy_path(monkeypatch, x, 0.8, seed=4)
        with np.errstate(over="ignore"):
            got = masks.masked_full(x, 0.8, np.random.default_rng(4), None, 0.8, threads=1)
            multiplied = x * np.float32(1.25)
    finally:
        libm.fesetround(before)
    _assert_same_bits(got, expected)
    assert not np.array_equal(np.where(got != 0, multiplied, got).view(np.uint32), got.view(np.uint32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep_prob", [0.86, 0.5, 19661 / 65536])
def test_many_runs_of_chunks_any_thread_count(monkeypatch, dtype, keep_prob):
    # Enough chunks for several 2-MiB runs of them in either dtype, so that threads start from
    # published states or skip over chunks drawn by others: same bits and final state as numpy.
    x = _input(17 * B + 3, dtype)
    expected, state = _numpy_path(monkeypatch, x, keep_prob, seed=12)
    _assert_every_thread_count(x, keep_prob, 12, None, expected, state)


def test_avx2_and_portable_loops_give_the_same_bits():
    # The kernel's AVX2 loops (where the CPU has them) against its portable ones, forced by
    # $STATS_DROPOUT_NO_AVX2 in a child interpreter: same bits, dividing and multiplying.
    import subprocess
    import sys

    script = (
        "import hashlib, numpy as np\n"
        "from stats_dropout.reference import masks\n"
        "for dtype in (np.float32, np.float64):\n"
        "    for p in (0.8, 0.9, 0.5, 19661 / 65536, 1 - 1e-12):\n"
        "        x = np.random.default_rng(1).standard_normal(3 * masks.CHUNK + 29).astype(dtype)\n"
        "        x[:3] = (-0.0, np.finfo(dtype).tiny / 3, np.finfo(dtype).max)\n"
        "        with np.errstate(over='ignore'):\n"
        "            for n_draws, threads in ((None, 1), (5, 2)):\n"
        "                out = masks.masked_full(x[: 999 if n_draws else None], p, np.random.default_rng(2),"
        " n_draws, p, threads=threads)\n"
        "                print(hashlib.sha256(out.tobytes()).hexdigest())\n"
    )

    def run(no_avx2):
        env = dict(os.environ, STATS_DROPOUT_NO_AVX2="1" if no_avx2 else "0")
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              check=True).stdout

    assert run(True) == run(False)
    assert len(run(True).split()) == 20
