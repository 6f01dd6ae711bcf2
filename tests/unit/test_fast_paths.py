"""The fast paths of issue #14 give the general path's draws and (up to rounding) its moments."""

import numpy as np
import pytest

from stats_dropout.inference.montecarlo import estimate_mask_affine_moments, estimate_statistic_moments
from stats_dropout.inference.ratios import grouped_deviation_ratio, projection_ratio, squared_deviation_ratio
from stats_dropout.reference.schemes import SCHEMES, resolve_shared_axes


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("keep_prob", [0.3, 1.0])
def test_sample_train_chunks_are_sample_train(name, dtype, keep_prob):
    scheme = SCHEMES[name]
    x = np.random.default_rng(1).standard_normal((40, 4, 8)).astype(dtype)
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    whole = scheme.sample_train(x, keep_prob, 300, rng=g1)
    pieces = [(rows, block.copy()) for rows, block in scheme.sample_train_chunks(x, keep_prob, 300, rng=g2)]
    assert pieces[0][0].start == 0 and pieces[-1][0].stop == 300
    joined = np.concatenate([block for _, block in pieces])
    assert joined.dtype == whole.dtype
    np.testing.assert_array_equal(joined.view(np.uint8), whole.view(np.uint8))
    assert g1.bit_generator.state == g2.bit_generator.state


def test_grouped_deviation_ratio_is_the_per_draw_loop():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal((6, 3, 5)), rng.standard_normal((6, 3, 5))
    y = rng.standard_normal((50, 6, 3, 5))
    for axes in [(0,), (1, 2), (2,)]:
        gv = np.sum(np.abs(s), axis=axes) ** 2
        stat = grouped_deviation_ratio(mu, gv, axes, np.sign(s))
        loop = [np.sum(np.sum((d - mu) * np.sign(s), axis=axes) ** 2) / np.sum(gv) for d in y]
        np.testing.assert_allclose(stat(y), loop, rtol=1e-13)


@pytest.mark.parametrize("name", ["batch_shared", "channel", "time_locked", "drop_path"])
def test_mask_affine_moments_match_the_general_path(name):
    scheme = SCHEMES[name]
    x = np.random.default_rng(3).standard_normal((8, 4, 6))
    p = 0.4
    mu, var = scheme.train_mean(x, p), scheme.train_var(x, p)
    s, v, _ = scheme.noise_loadings(x, p)
    axes = resolve_shared_axes(scheme.shared_axes, x.ndim, name)
    gv = v * np.sum(np.abs(s), axis=axes) ** 2
    stats = [projection_ratio(x, mu), squared_deviation_ratio(mu, var),
             grouped_deviation_ratio(mu, gv, axes, np.sign(s))]

    def statistic(y):
        return np.column_stack([f(y) for f in stats])

    fast = estimate_mask_affine_moments(scheme.bind(p), x, statistic, draws=30_000, seed=5)
    slow = estimate_statistic_moments(scheme.bind(p), x, statistic, draws=30_000, seed=5)
    np.testing.assert_allclose(fast.mean, slow.mean, rtol=1e-12)
    np.testing.assert_allclose(fast.var, slow.var, rtol=1e-9)
    assert fast.n_draws == slow.n_draws


def test_mask_affine_moments_fall_back_for_a_statistic_not_affine_in_the_mask():
    scheme = SCHEMES["batch_shared"]
    x = np.random.default_rng(3).standard_normal((8, 4))

    def statistic(y):  # the square of a sum across mask groups: not affine in the mask
        return np.sum(y.reshape(len(y), -1), axis=1) ** 2

    fast = estimate_mask_affine_moments(scheme.bind(0.5), x, statistic, draws=5000, seed=2)
    slow = estimate_statistic_moments(scheme.bind(0.5), x, statistic, draws=5000, seed=2)
    np.testing.assert_array_equal(fast.mean, slow.mean)
    np.testing.assert_array_equal(fast.var, slow.var)


def test_grouped_ratio_counts_negative_axes_from_the_end_of_one_draw():
    from stats_dropout.inference.ratios import grouped_deviation_ratio

    mu, sign = np.zeros((3, 4)), np.ones((3, 4))
    y = np.random.default_rng(0).normal(size=(5, 3, 4))
    a = grouped_deviation_ratio(mu, np.ones(3), (-1,), sign)(y)
    b = grouped_deviation_ratio(mu, np.ones(3), (1,), sign)(y)
    assert a.shape == (5,) and np.array_equal(a, b)
