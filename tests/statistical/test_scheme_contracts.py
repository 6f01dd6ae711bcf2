"""Every reference scheme keeps its contract and its closed-form variance; mis-specified pairings
are rejected.

All decisions of the sweep share one false-fail budget of 1e-6 (Bonferroni), so this file
fails by chance with probability below 1e-6 (seed 0). Each decision detects a relative error of
2 % with probability 0.999 (sample sizes computed from the schemes' exact noise variances).
"""

import dataclasses

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.reporting import DEFAULT_KEEP_PROBS
from stats_dropout.verification.scheme_checks import count_scheme_decisions

SCHEME_NAMES = [n for n in sd.SCHEMES]
GRID = [(n, p) for n in SCHEME_NAMES for p in DEFAULT_KEEP_PROBS]
N_DECISIONS = sum(count_scheme_decisions(n, p) for n, p in GRID)
RELATIVE_ERROR = 0.02


@pytest.mark.parametrize("name, keep_prob", GRID)
def test_scheme_keeps_its_contract_and_variance(name, keep_prob):
    res = sd.verify_scheme(name, keep_prob, relative_error=RELATIVE_ERROR, n_decisions=N_DECISIONS, seed=0)
    assert res.passed, str(res)
    if keep_prob < 1:
        assert "variance" in res.decisions
        # Draws are planned from the exact noise variance; the reported detectable error uses
        # the sample spread, which fluctuates around it by a few per cent at these draw counts.
        for d in res.decisions.values():
            assert d.min_detectable_effect <= RELATIVE_ERROR * 1.15, str(d)


# --- mis-specified pairings: each must be rejected by the named decision ---------------------
# Rejections are decided at the same per-decision level; every effect below is many times
# the minimum detectable effect, so a miss has probability < 1e-3 by design (false-pass rate).
ALPHA = 1e-6 / 10


class _Vectorised:
    """A train pass given only as vectorised draws (like a BoundScheme)."""

    def __call__(self, x):
        return self.sample_train(x, 1, np.random.default_rng())[0]


def _reject(name, keep_prob, decision, **kwargs):
    res = sd.verify_scheme(name, keep_prob, relative_error=RELATIVE_ERROR, false_fail_rate=ALPHA, **kwargs)
    d = res.decisions[decision]
    assert d.rejected, str(d)
    return d


@pytest.mark.parametrize("keep_prob", [0.2, 0.5, 0.9])
def test_inverted_train_with_standard_eval_is_rejected(keep_prob):
    d = _reject("inverted", keep_prob, "mean", eval=lambda x: keep_prob * x)
    assert d.estimate == pytest.approx(1 / keep_prob, rel=0.05)


@pytest.mark.parametrize("keep_prob", [0.2, 0.5, 0.9])
def test_standard_train_with_identity_eval_is_rejected(keep_prob):
    d = _reject("standard", keep_prob, "mean", eval=lambda x: x.copy())
    assert d.estimate == pytest.approx(keep_prob, rel=0.05)


@pytest.mark.parametrize("keep_prob", [0.2, 0.8])
def test_gaussian_with_wrong_std_is_rejected(keep_prob):
    wrong = dataclasses.replace(sd.get_scheme("gaussian"))

    class WrongStd(_Vectorised):
        def sample_train(self, x, n_draws, rng):
            noise = rng.normal(1.0, (1 - keep_prob) / keep_prob, size=(n_draws, *x.shape))
            return x * noise

    d = _reject(wrong, keep_prob, "variance", train=WrongStd())
    expected_ratio = ((1 - keep_prob) / keep_prob) ** 2 / ((1 - keep_prob) / keep_prob)
    assert d.estimate == pytest.approx(expected_ratio, rel=0.1)


@pytest.mark.parametrize("keep_prob", [0.5, 0.9])
def test_alpha_dropout_that_zeroes_dropped_units_is_rejected(keep_prob):
    from stats_dropout import theory

    class ZeroDropped(_Vectorised):
        def sample_train(self, x, n_draws, rng):
            a, b = theory.alpha_affine(keep_prob)
            keep = rng.random((n_draws, *x.shape)) < keep_prob
            return np.where(keep, a * x + b, 0.0)

    _reject("alpha", keep_prob, "output_mean", train=ZeroDropped())


@pytest.mark.parametrize("name, wrong_axes", [("channel", (1,)), ("time_locked", (2,)),
                                              ("batch_shared", (1, 2)), ("drop_path", (0,))])
def test_mask_shared_along_the_wrong_axis_is_rejected(name, wrong_axes):
    wrong = dataclasses.replace(sd.get_scheme(name), shared_axes=wrong_axes)
    _reject(name, 0.5, "sharing", train=wrong.bind(0.5, rng=1))
