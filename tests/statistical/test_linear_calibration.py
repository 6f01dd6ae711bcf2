"""Measured error rates of the ``linear`` contract's decisions (slow tier: ``pytest -m slow``).

A formula that is self-consistent can still be wrong: here each statistic's false-fail rate is
measured over many seeds at a relaxed level (where it can be measured), and its false-pass rate
at the effect it states it detects (a planted scale error, variance error, mask correlation).
The default tier checks the null moments against simulation (tests/unit/test_linear.py). The
seeds run through ``map_cells`` on every core (``STATS_DROPOUT_WORKERS``,
``STATS_DROPOUT_SCHEDULER``): a cell is ``(op builder, its arguments, seed, verify_linear
options)``, and each builds its own op, so no seed sees state another left.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import numpy as np
import pytest
from scipy import stats

from stats_dropout._internal.executors import executor_options, map_cells
from stats_dropout.verification.linear import dropout_then_linear, verify_linear

pytestmark = pytest.mark.slow


@functools.lru_cache(maxsize=None)
def layer():
    """``(x, w, b)`` of the linear layer, the same in every process (seed 0)."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 16)), rng.normal(size=(8, 16)), rng.normal(size=8)


def linear_run(cell):
    """``(failed check names, convention)`` of ``verify_linear`` on a fresh op at one seed."""
    make_op, args, seed, kwargs = cell
    res = verify_linear(make_op(*args), seed=seed, **kwargs)
    return [c.check.split("[")[0] for c in res.failed_checks], res.convention


def runs(make_op, args, seeds, *, run=linear_run, **kwargs):
    """``run`` (:func:`linear_run` by default) of every seed, through the slow tier's executor."""
    return map_cells(run, [(make_op, args, seed, kwargs) for seed in seeds], **executor_options())


def rejections(make_op, args, seeds, **kwargs):
    """``(failures per check, batteries with a failure)`` over ``seeds``; ``kwargs`` as in :func:`runs`."""
    results = runs(make_op, args, seeds, **kwargs)
    counts = collections.Counter(name for failed, _ in results for name in failed)
    return counts, sum(bool(failed) for failed, _ in results)


def upper(n, rate, tail=1e-4):
    """The count a Binomial(n, rate) exceeds with probability ``tail``."""
    return stats.binom.isf(tail, n, rate)


def numpy_op(keep_prob):
    """Correct inverted dropout then the layer, on numpy's global RNG (the battery seeds it)."""
    x, w, b = layer()

    def train():
        return (x * (np.random.random_sample(x.shape) < keep_prob) / keep_prob) @ w.T + b

    return dropout_then_linear(train, x, w, b, keep_prob=keep_prob)


@pytest.mark.parametrize("keep_prob", [0.9, 0.6])
def test_false_fail_rate_per_check_numpy_op(keep_prob):
    n, total = 400, 0.25
    counts, any_failed = rejections(numpy_op, (keep_prob,), range(n), draws=20, false_fail_rate=total)
    per_check = total / 5
    assert any_failed <= upper(n, total), (any_failed, counts)
    for name, k in counts.items():
        assert k <= upper(n, per_check), (name, k, counts)


def sdpa_op():
    """torch's scaled_dot_product_attention with dropout 0.2 on fixed q, k, v (seed 0)."""
    import torch

    from stats_dropout.verification.adapters.attention import from_sdpa

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=g) for _ in range(3))
    return from_sdpa(q, k, v, 0.2)


def sdpa_run(cell):
    """:func:`linear_run` with torch on one thread (small tensors: threads only cost), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return linear_run(cell)
    finally:
        torch.set_num_threads(threads)


def test_false_fail_rate_per_check_torch_sdpa():
    pytest.importorskip("torch")
    n, total = 300, 0.3
    counts, any_failed = rejections(sdpa_op, (), range(n), run=sdpa_run, draws=20, false_fail_rate=total)
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


def planted_op(keep_prob, planted_kw, no_independent_axes):
    """:func:`planted` on the layer; without independent axes when ``no_independent_axes``."""
    op = planted(*layer(), keep_prob, **planted_kw)
    return dataclasses.replace(op, independent_axes={}) if no_independent_axes else op


@pytest.mark.parametrize("error, check", [
    ("scale", "check_linear_mean"),
    ("variance", "check_linear_variance"),
    ("calls", "check_linear_independence_calls"),
    ("rows", "check_linear_independence_batch"),
])
def test_false_pass_rate_at_the_stated_effect(error, check):
    """At exactly the stated effect the check fails with probability ≥ 1 − false_pass_rate.

    The draws are sized for the statistic with the smallest standardised effect, so each case
    makes its own statistic the binding one (the other effects 10, out of reach; for "calls"
    no independent axes): then the power measured is the design's, not more.
    """
    p, beta, n = 0.8, 0.1, 150
    far = {"relative_bias": 10.0, "variance_error": 10.0, "correlation": 10.0}
    effects, planted_kw = {
        "scale": ({"relative_bias": 0.02}, {"scale": 1.02}),
        "variance": ({"variance_error": 0.1}, {"keep_drawn": 1 / (1 + 1.1 * (1 - p) / p)}),
        "calls": ({"correlation": 0.05}, {"reuse": 0.05}),
        "rows": ({"correlation": 0.1}, {"reuse_rows": 0.1}),
    }[error]
    results = runs(planted_op, (p, planted_kw, error == "calls"), range(n), false_fail_rate=1e-3,
                   false_pass_rate=beta, **{**far, **effects})
    detected = sum(check in failed for failed, _ in results)
    draws = {convention for _, convention in results}
    assert len(draws) == 1 and "20 draws" not in draws.pop()  # sized by the effect, above the floor
    # power ≥ 1 − β at the design; allow for the binomial spread of n runs (lower 1e-4 tail)
    assert detected >= stats.binom.ppf(1e-4, n, 1 - beta), (error, detected, n)
