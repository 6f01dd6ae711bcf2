"""Measured error rates of the ``linear`` contract's decisions (slow tier: ``pytest -m slow``).

A formula that is self-consistent can still be wrong: here each statistic's false-fail rate is
measured over many seeds at a relaxed level (where it can be measured), and its false-pass rate
at the effect it states it detects (a planted scale error, variance error, mask correlation).
The default tier checks the null moments against simulation (tests/unit/test_linear.py).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
from scipy import stats

from stats_dropout.verification.linear import dropout_then_linear, verify_linear

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 16)), rng.normal(size=(8, 16)), rng.normal(size=8)


def rejections(make_op, seeds, **kwargs):
    counts, any_failed = collections.Counter(), 0
    for seed in seeds:
        res = verify_linear(make_op(), seed=seed, **kwargs)
        any_failed += not res.passed
        for c in res.failed_checks:
            counts[c.check.split("[")[0]] += 1
    return counts, any_failed


def upper(n, rate, tail=1e-4):
    """The count a Binomial(n, rate) exceeds with probability ``tail``."""
    return stats.binom.isf(tail, n, rate)


@pytest.mark.parametrize("keep_prob", [0.9, 0.6])
def test_false_fail_rate_per_check_numpy_op(layer, keep_prob):
    x, w, b = layer
    n, total = 400, 0.25

    def op():
        def train():
            return (x * (np.random.random_sample(x.shape) < keep_prob) / keep_prob) @ w.T + b
        return dropout_then_linear(train, x, w, b, keep_prob=keep_prob)

    counts, any_failed = rejections(op, range(n), draws=20, false_fail_rate=total)
    per_check = total / 5
    assert any_failed <= upper(n, total), (any_failed, counts)
    for name, k in counts.items():
        assert k <= upper(n, per_check), (name, k, counts)


def test_false_fail_rate_per_check_torch_sdpa():
    torch = pytest.importorskip("torch")
    from stats_dropout.verification.adapters.attention import from_sdpa

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=g) for _ in range(3))
    op = from_sdpa(q, k, v, 0.2)
    n, total = 300, 0.3
    counts, any_failed = rejections(lambda: op, range(n), draws=20, false_fail_rate=total)
    assert any_failed <= upper(n, total), (any_failed, counts)
    for name, c in counts.items():
        assert c <= upper(n, total / 6), (name, c, counts)


def planted(x, w, b, keep_prob, *, scale=1.0, keep_drawn=None, reuse=0.0, reuse_rows=0.0):
    """A dropout-then-linear op with one planted error: a scale, a keep probability with its own
    rescale (a variance error), or masks correlated with the previous call's / row's by ``reuse``."""
    state = {"mask": None}
    drawn = keep_prob if keep_drawn is None else keep_drawn

    def train():
        mask = np.random.random_sample(x.shape) < drawn
        if reuse and state["mask"] is not None:
            mask = np.where(np.random.random_sample(x.shape) < reuse, state["mask"], mask)
        if reuse_rows:
            for r in range(1, x.shape[0]):
                mask[r] = np.where(np.random.random_sample(x.shape[1]) < reuse_rows, mask[r - 1], mask[r])
        state["mask"] = mask
        return scale * (x * mask / drawn) @ w.T + b

    return dropout_then_linear(train, x, w, b, keep_prob=keep_prob)


@pytest.mark.parametrize("error, check", [
    ("scale", "check_linear_mean"),
    ("variance", "check_linear_variance"),
    ("calls", "check_linear_independence_calls"),
    ("rows", "check_linear_independence_batch"),
])
def test_false_pass_rate_at_the_stated_effect(layer, error, check):
    """At exactly the stated effect the check fails with probability ≥ 1 − false_pass_rate.

    The draws are sized for the statistic with the smallest standardised effect, so each case
    makes its own statistic the binding one (the other effects 10, out of reach; for "calls"
    no independent axes): then the power measured is the design's, not more.
    """
    x, w, b = layer
    p, beta, n = 0.8, 0.1, 150
    far = {"relative_bias": 10.0, "variance_error": 10.0, "correlation": 10.0}
    effects, planted_kw = {
        "scale": ({"relative_bias": 0.02}, {"scale": 1.02}),
        "variance": ({"variance_error": 0.1}, {"keep_drawn": 1 / (1 + 1.1 * (1 - p) / p)}),
        "calls": ({"correlation": 0.05}, {"reuse": 0.05}),
        "rows": ({"correlation": 0.1}, {"reuse_rows": 0.1}),
    }[error]
    detected, draws = 0, set()
    for seed in range(n):
        op = planted(x, w, b, p, **planted_kw)
        if error == "calls":
            op = dataclasses.replace(op, independent_axes={})
        res = verify_linear(op, seed=seed, false_fail_rate=1e-3, false_pass_rate=beta, **{**far, **effects})
        detected += check in {c.check.split("[")[0] for c in res.failed_checks}
        draws.add(res.convention)
    assert len(draws) == 1 and "20 draws" not in draws.pop()  # sized by the effect, above the floor
    # power ≥ 1 − β at the design; allow for the binomial spread of n runs (lower 1e-4 tail)
    assert detected >= stats.binom.ppf(1e-4, n, 1 - beta), (error, detected, n)
