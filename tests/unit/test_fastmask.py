"""The optional C kernel gives the numpy path's results bit for bit, from the same random stream."""

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
