"""Closed forms against THEORY.md's worked numbers and against direct computation."""

import itertools

import numpy as np
import pytest
from scipy import integrate, special, stats

from stats_dropout import theory


def test_nwgm_worked_example():
    o = special.expit(np.array([0.5, 1.0]))
    assert np.mean(o) == pytest.approx(0.676759, abs=1e-6)
    assert theory.nwgm_sigmoid(o, [0.5, 0.5]) == pytest.approx(0.679179, abs=1e-6)
    assert theory.nwgm_sigmoid(o, [0.5, 0.5]) == pytest.approx(special.expit(0.75), rel=1e-14)
    assert float(np.max(theory.nwgm_bound(np.linspace(0, 1, 10001)))) == pytest.approx(0.1501, abs=1e-4)


@pytest.mark.parametrize("s2, exact, approx", [(1.0, 0.696735, 0.700014), (4.0, 0.647726, 0.651056)])
def test_fast_dropout_reference_numbers(s2, exact, approx):
    assert float(theory.fast_dropout_sigmoid_mean(1.0, s2)) == pytest.approx(approx, abs=1e-6)
    quad = integrate.quad(lambda z: special.expit(1 + np.sqrt(s2) * z) * stats.norm.pdf(z), -40, 40)[0]
    assert quad == pytest.approx(exact, abs=1e-6)


def test_relu_gaussian_mean_matches_quadrature():
    mu, s = 0.3, 1.7
    quad = integrate.quad(lambda z: max(mu + s * z, 0) * stats.norm.pdf(z), -40, 40, points=[-mu / s])[0]
    assert float(theory.relu_gaussian_mean(mu, s)) == pytest.approx(quad, rel=1e-9)


def test_linear_regression_loss_matches_mask_enumeration():
    rng = np.random.default_rng(0)
    X, y, w, p = rng.standard_normal((3, 2)), rng.standard_normal(3), rng.standard_normal(2), 0.6
    total = 0.0
    for bits in itertools.product([0, 1], repeat=6):
        r = np.array(bits).reshape(3, 2)
        prob = np.prod(np.where(r == 1, p, 1 - p))
        total += prob * np.sum((y - (r * X) @ w) ** 2)
    assert theory.linear_regression_dropout_loss(X, y, w, p) == pytest.approx(total, rel=1e-12)


def test_expected_squared_norm_by_enumeration():
    a = np.array([[0.5, -1.0], [2.0, 0.25]])
    p = 0.8
    for rescale in (True, False):
        total = 0.0
        for bits in itertools.product([0, 1], repeat=4):
            r = np.array(bits).reshape(2, 2)
            prob = np.prod(np.where(r == 1, p, 1 - p))
            total += prob * np.sum((r * a / (p if rescale else 1)) ** 2)
        assert theory.expected_squared_norm(a, p, rescale=rescale) == pytest.approx(total, rel=1e-12)


def test_variance_shift_zero_mean_is_p():
    assert theory.variance_shift(0.0, 2.0, 0.7) == pytest.approx(0.7, rel=1e-15)


def test_dropblock_gamma_reference():
    # keep 0.9, block 7, map 14 (THEORY.md §5)
    assert theory.dropblock_gamma(0.9, 7, 14) == pytest.approx(0.1 / 49 * 196 / 64, rel=1e-15)


def test_weighted_sum_and_batch_mean_variances():
    w, a, p = np.array([1.0, 2.0]), np.array([3.0, -1.0]), 0.5
    assert theory.weighted_sum_var(w, a, p) == pytest.approx(1.0 * (9 + 4))
    assert theory.weighted_sum_var(w, a, p, shared=True) == pytest.approx(1.0 * (3 - 2) ** 2)
    b = np.full(10, 2.0)
    assert theory.batch_mean_var(b, p, shared=True) / theory.batch_mean_var(b, p) == pytest.approx(10)
