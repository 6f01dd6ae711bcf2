"""The Monte-Carlo engine at scale: worker-independent bits, flat memory, linearity shortcut."""

import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.inference import montecarlo
from stats_dropout.inference.montecarlo import (
    RunningMoments,
    block_draws,
    estimate_masked_matmul_moments,
    estimate_statistic_moments,
    estimate_train_moments,
)


def _bits(a):
    return np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)


@pytest.mark.parametrize("name", ["inverted", "standard", "gaussian", "channel", "alpha"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_result_bit_identical_for_any_number_of_workers(name, dtype):
    x = np.random.default_rng(0).standard_normal((2, 4, 1024)).astype(dtype)
    per_block = block_draws(x.size)
    draws = 6 * per_block + 3  # a partial last block too
    layer = sd.get_scheme(name).bind(0.7)
    ref = estimate_train_moments(layer, x, draws=draws, seed=11, workers=1)
    for workers in (2, 3, 8):
        got = estimate_train_moments(layer, x, draws=draws, seed=11, workers=workers)
        np.testing.assert_array_equal(_bits(got.mean), _bits(ref.mean))
        np.testing.assert_array_equal(_bits(got.var), _bits(ref.var))
        assert got.n_draws == draws


def test_statistic_bit_identical_for_any_number_of_workers():
    x = np.random.default_rng(1).standard_normal((8, 4096))
    layer = sd.get_scheme("inverted").bind(0.8)

    def row_norms(samples):
        return np.sqrt((samples**2).sum(axis=-1))

    draws = 5 * block_draws(x.size) + 1
    ref = estimate_statistic_moments(layer, x, row_norms, draws=draws, seed=3, workers=1)
    got = estimate_statistic_moments(layer, x, row_norms, draws=draws, seed=3, workers=2)
    np.testing.assert_array_equal(_bits(got.mean), _bits(ref.mean))
    np.testing.assert_array_equal(_bits(got.var), _bits(ref.var))


def test_in_place_block_moments_equal_from_samples():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        samples = (rng.standard_normal((37, 5, 3)) * 10).astype(dtype)
        ref = RunningMoments.from_samples(samples)
        got = RunningMoments._from_owned_samples(samples.copy())
        assert got.n == ref.n
        np.testing.assert_array_equal(_bits(got.mean), _bits(ref.mean))
        np.testing.assert_array_equal(_bits(got.m2), _bits(ref.m2))


def test_user_sample_train_array_is_not_overwritten():
    class Cached:
        """A duck-typed vectorised train that hands out views of an array it keeps."""

        cache = np.full((100, 3), 2.0)

        def __call__(self, x):
            return self.cache[0]

        def sample_train(self, x, n_draws, rng=None):
            return self.cache[:n_draws]

    est = estimate_train_moments(Cached(), np.ones(3), draws=40, seed=0)
    np.testing.assert_array_equal(Cached.cache, 2.0)
    np.testing.assert_array_equal(est.mean, 2.0)
    np.testing.assert_array_equal(est.var, 0.0)


def test_ordered_map_keeps_order_and_a_bounded_window():
    consumed = []
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def items():
        for i in range(50):
            consumed.append(i)
            yield i

    def fn(i):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        with lock:
            in_flight[0] -= 1
        return i * i

    results = []
    for value in montecarlo._ordered_map(fn, items(), workers=3):
        # Never more than 2·workers items taken ahead of what has been handed back.
        assert len(consumed) <= len(results) + 1 + 2 * 3
        results.append(value)
    assert results == [i * i for i in range(50)]
    assert peak[0] <= 3


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, tracemalloc
    import numpy as np
    import stats_dropout as sd
    from stats_dropout.inference import montecarlo


    def peak_rss_kib():
        # VmHWM is this address space's peak and restarts at exec; ru_maxrss survives exec and
        # can report the parent's (pytest's) size instead of ours.
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    factor, block_elements = int(sys.argv[1]), int(sys.argv[2])
    montecarlo.BLOCK_ELEMENTS = block_elements
    x = np.random.default_rng(0).standard_normal(4096)
    per_block = montecarlo.block_draws(x.size)
    layer = sd.get_scheme("inverted").bind(0.8)
    peaks = {}
    tracemalloc.start()
    for workers in (1, 2):
        tracemalloc.reset_peak()
        # 32 blocks at factor 1: the two workers' window reaches its steady state already.
        sd.estimate_train_moments(layer, x, draws=32 * per_block * factor, seed=1, workers=workers)
        peaks[f"vectorised_workers{workers}"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    sd.estimate_train_moments(lambda v: v * (np.random.rand(*v.shape) < 0.8) / 0.8, x,
                              draws=8 * per_block * factor, seed=1)
    peaks["sequential"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peaks["maxrss_kib"] = peak_rss_kib()
    print(json.dumps(peaks))
    """
)


def _measure(factor, block_elements):
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(factor), str(block_elements)],
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a performance property (two child processes); benchmarks/run.py measures it too
def test_memory_flat_in_the_number_of_draws():
    """10× the draws → < 1.2× the peak memory (tracemalloc per run, and the process's peak RSS).

    Blocks of 2^19 elements instead of 2^20 keep the test fast; flatness does not depend on
    the block size. Peaks here are about two blocks (9 MB, one per worker); an engine that kept
    all draws would need 134 MB, then 1.3 GB, and one that kept all block results 2, then 20 MB.
    """
    pytest.importorskip("resource")  # POSIX only
    one, ten = _measure(1, 1 << 19), _measure(10, 1 << 19)
    for key in ("vectorised_workers1", "vectorised_workers2", "sequential", "maxrss_kib"):
        assert ten[key] < 1.2 * one[key], (key, one[key], ten[key])


def test_masked_matmul_equals_the_direct_computation():
    """Linearity: the mean of (D∘A/p)W over the engine's masks = (mean mask ∘ A/p) W."""
    rng = np.random.default_rng(5)
    a, w = rng.standard_normal((16, 96)), rng.standard_normal((96, 7))
    for keep_prob in (0.8, 0.5, 1.0):
        draws = 3 * block_draws(a.size) + 5
        direct = estimate_statistic_moments(sd.get_scheme("inverted").bind(keep_prob), a, lambda y: y @ w,
                                            draws=draws, seed=9)
        fast = estimate_masked_matmul_moments(a, w, keep_prob, draws=draws, seed=9)
        scale = np.abs(a / keep_prob) @ np.abs(w)  # bounds every partial sum: rounding is relative to it
        np.testing.assert_allclose(fast.mean, direct.mean, rtol=0, atol=1e-13 * scale.max())
        assert fast.n_draws == direct.n_draws == draws
        if keep_prob < 1:
            # The exact variance against the direct estimate (chi-square with draws-1 dof: 1 ± 0.1).
            ratio = direct.var / fast.var
            assert np.all(np.abs(ratio - 1) < 0.25) and abs(np.median(ratio) - 1) < 0.05


def test_masked_matmul_binomial_method_is_unbiased():
    rng = np.random.default_rng(6)
    a, w = rng.standard_normal((20, 30)), rng.standard_normal((30, 4))
    est = estimate_masked_matmul_moments(a, w, 0.8, draws=200_000, seed=1, method="binomial")
    z = (est.mean - a @ w) / est.std_error
    assert np.all(np.abs(z) < 6)  # 80 elements, P(any |z| > 6) < 2e-7


def test_masked_matmul_input_validation():
    a, w = np.ones((2, 3)), np.ones((3, 1))
    with pytest.raises(ValueError, match="must be 2-D"):
        estimate_masked_matmul_moments(np.ones(3), w, 0.5, draws=2)
    with pytest.raises(ValueError, match="`activations` has 3 columns but `weights` has 2 rows"):
        estimate_masked_matmul_moments(a, np.ones((2, 1)), 0.5, draws=2)
    with pytest.raises(ValueError, match="`keep_prob` must be in"):
        estimate_masked_matmul_moments(a, w, 1.5, draws=2)
    with pytest.raises(ValueError, match="`draws` must be a positive integer"):
        estimate_masked_matmul_moments(a, w, 0.5, draws=0)
    with pytest.raises(ValueError, match="`method` must be one of"):
        estimate_masked_matmul_moments(a, w, 0.5, draws=2, method="exact")
