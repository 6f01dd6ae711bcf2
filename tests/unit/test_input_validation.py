"""One input-validation test per public function, covering every message (SciPy style)."""

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout import stats as sds
from stats_dropout.inference.results import TrainMoments

X = np.ones((2, 3))
INVERTED = sd.get_scheme("inverted")


@pytest.mark.parametrize("keep_prob, err, msg", [
    (1.5, ValueError, r"`keep_prob` must be in \(0, 1\]; got 1.5"),
    (0.0, ValueError, r"`keep_prob` must be in \(0, 1\]; got 0.0"),
    (-0.2, ValueError, r"`keep_prob` must be in \(0, 1\]; got -0.2"),
    (float("nan"), ValueError, r"`keep_prob` must be in \(0, 1\]; got nan"),
    ("0.5", TypeError, r"`keep_prob` must be a real number in \(0, 1\]; got '0.5'"),
    (True, TypeError, r"`keep_prob` must be a real number"),
])
def test_scheme_train_and_eval_keep_prob(keep_prob, err, msg):
    with pytest.raises(err, match=msg):
        INVERTED.train(X, keep_prob)
    with pytest.raises(err, match=msg):
        INVERTED.eval(X, keep_prob)
    with pytest.raises(err, match=msg):
        INVERTED.bind(keep_prob)


@pytest.mark.parametrize("x, err, msg", [
    (np.array([1.0, np.nan]), ValueError, r"`x` must be finite; got 1 NaN or infinite value\(s\)"),
    (np.array([np.inf]), ValueError, r"`x` must be finite"),
    (np.array([1, 2]), TypeError, r"`x` must have a floating dtype .*got dtype int64"),
    (np.array([True]), TypeError, r"`x` must have a floating dtype .*got dtype bool"),
    ("abc", TypeError, r"`x` must be a floating-point array; got 'abc'"),
    (None, TypeError, r"`x` must be a floating-point array; got None"),
    (np.array([object()]), TypeError, r"`x` must be a floating-point array; got dtype object"),
])
def test_scheme_train_x(x, err, msg):
    with pytest.raises(err, match=msg):
        INVERTED.train(x, 0.5)


def test_scheme_train_accepts_0d_and_empty():
    assert INVERTED.train(np.float64(2.0), 0.5, 0).shape == ()
    assert INVERTED.train(np.ones((0, 3)), 0.5, 0).shape == (0, 3)


def test_scheme_rng_and_n_draws():
    with pytest.raises(TypeError, match=r"`rng` must be a numpy.random.Generator or a seed"):
        INVERTED.train(X, 0.5, rng="seed")
    with pytest.raises(ValueError, match=r"`n_draws` must be a positive integer; got 0"):
        INVERTED.sample_train(X, 0.5, 0)
    with pytest.raises(TypeError, match=r"`n_draws` must be a positive integer; got 2.5"):
        INVERTED.sample_train(X, 0.5, 2.5)


def test_get_scheme():
    with pytest.raises(ValueError, match=r"`name` must be one of 'inverted', .*; got 'nope'"):
        sd.get_scheme("nope")
    with pytest.raises(TypeError, match=r"`name` must be a scheme name \(str\); got 3"):
        sd.get_scheme(3)


def test_estimate_train_moments():
    layer = INVERTED.bind(0.5)
    with pytest.raises(TypeError, match=r"`train` must be callable \(x -> y\); got 3"):
        sd.estimate_train_moments(3, X, draws=2)
    with pytest.raises(ValueError, match=r"`draws` must be a positive integer; got 0"):
        sd.estimate_train_moments(layer, X, draws=0)
    with pytest.raises(ValueError, match=r"`draws` must be a positive integer; got -5"):
        sd.estimate_train_moments(layer, X, draws=-5)
    with pytest.raises(ValueError, match=r"`seed` must be a non-negative integer; got -1"):
        sd.estimate_train_moments(layer, X, draws=2, seed=-1)
    with pytest.raises(TypeError, match=r"`seed` must be a non-negative integer; got 'a'"):
        sd.estimate_train_moments(layer, X, draws=2, seed="a")
    with pytest.raises(ValueError, match=r"`workers` must be a positive integer; got 0"):
        sd.estimate_train_moments(layer, X, draws=2, workers=0)
    with pytest.raises(TypeError, match=r"`x` must have a floating dtype"):
        sd.estimate_train_moments(layer, np.ones(3, dtype=int), draws=2)


def test_confidence_interval_level():
    est = TrainMoments(np.zeros(1), np.ones(1), 10)
    with pytest.raises(ValueError, match=r"`level` must be in \(0, 1\); got 1.5"):
        est.confidence_interval(1.5)


def test_decide_mean_equal():
    mom = TrainMoments(np.zeros(2), np.ones(2), 10)
    with pytest.raises(TypeError, match=r"`moments` must be a TrainMoments"):
        sds.decide_mean_equal([0.0], 0.0)
    with pytest.raises(ValueError, match=r"`expected` must be finite"):
        sds.decide_mean_equal(mom, np.nan)
    with pytest.raises(ValueError, match=r"`moments` must come from at least 2 draws; got n_draws=1"):
        sds.decide_mean_equal(TrainMoments(np.zeros(1), np.ones(1), 1), 0.0)
    with pytest.raises(ValueError, match=r"`false_fail_rate` must be in \(0, 1\); got 0"):
        sds.decide_mean_equal(mom, 0.0, false_fail_rate=0)
    with pytest.raises(ValueError, match=r"`false_pass_rate` must be in \(0, 1\); got 1.0"):
        sds.decide_mean_equal(mom, 0.0, false_pass_rate=1.0)


def test_decide_keep_rate():
    with pytest.raises(ValueError, match=r"`kept` must not be empty"):
        sds.decide_keep_rate(np.array([], dtype=int), 10, 0.5)
    with pytest.raises(TypeError, match=r"`kept` and `trials` must be integer counts"):
        sds.decide_keep_rate(2.5, 10, 0.5)
    with pytest.raises(ValueError, match=r"`kept` must lie in \[0, trials\]"):
        sds.decide_keep_rate(11, 10, 0.5)
    with pytest.raises(ValueError, match=r"`keep_prob` must be in \(0, 1\]; got 0"):
        sds.decide_keep_rate(1, 10, 0)


def test_design_twins():
    with pytest.raises(ValueError, match=r"`effect` must be positive; got 0"):
        sds.min_draws_for_mean_error(0, 1.0)
    with pytest.raises(ValueError, match=r"`sd` must be finite and non-negative; got -1"):
        sds.min_draws_for_mean_error(0.1, -1)
    with pytest.raises(ValueError, match=r"`effect` must be positive; got -0.1"):
        sds.min_trials_for_keep_rate_error(0.5, -0.1)
    with pytest.raises(ValueError, match=r"`n` must be a positive integer; got 0"):
        sds.min_mean_error_detectable_by_t(0, 1.0)
    with pytest.raises(ValueError, match=r"`trials` must be a positive integer; got 0"):
        sds.min_keep_rate_error_detectable_by_binomial(0, 0.5)


def test_decide_dispersion_and_equivalence():
    with pytest.raises(ValueError, match=r"`counts` must hold at least 2 counts; got 1"):
        sds.decide_dispersion([3], 10, 0.5)
    with pytest.raises(ValueError, match=r"`size` must be a positive integer; got 0"):
        sds.decide_dispersion([3, 4], 0, 0.5)
    with pytest.raises(ValueError, match=r"`margin` must be positive and finite; got 0"):
        sds.decide_equivalence(0.0, 1.0, 0)
    with pytest.raises(ValueError, match=r"`std_error` must be non-negative and finite; got -1"):
        sds.decide_equivalence(0.0, -1, 0.1)
    with pytest.raises(ValueError, match=r"`alpha` must be in \(0, 1\); got 2"):
        sds.decide_equivalence(0.0, 1.0, 0.1, alpha=2)


def test_verify_scheme():
    with pytest.raises(TypeError, match=r"`scheme` must be a DropoutScheme or a registered name; got 3"):
        sd.verify_scheme(3, 0.5)
    with pytest.raises(ValueError, match=r"`relative_error` must be in \(0, 1\); got 0"):
        sd.verify_scheme("inverted", 0.5, relative_error=0)
    with pytest.raises(ValueError, match=r"`max_draws` must be a positive integer; got 0"):
        sd.verify_scheme("inverted", 0.5, max_draws=0)
    with pytest.raises(ValueError, match=r"`n_decisions` must be a positive integer; got 0"):
        sd.verify_scheme("inverted", 0.5, n_decisions=0)


def test_verify_dropout():
    def f(x):
        return x

    with pytest.raises(TypeError, match=r"`train` must be callable"):
        sd.verify_dropout(None, keep_prob=0.5)
    with pytest.raises(TypeError, match=r"`eval` must be callable or None; got 3"):
        sd.verify_dropout(f, 3, keep_prob=0.5)
    with pytest.raises(TypeError, match=r"`keep_prob` is required"):
        sd.verify_dropout(f, keep_prob=None)
    with pytest.raises(ValueError, match=r"`keep_prob` must be in \(0, 1\]; got 1.5"):
        sd.verify_dropout(f, keep_prob=1.5)
    with pytest.raises(ValueError, match=r"`keep_prob` must hold at least one value"):
        sd.verify_dropout(f, keep_prob=[])
    with pytest.raises(ValueError, match=r"`contract` must be one of 'inverted', 'standard', 'gaussian', "
                                         r"'moments'; got 'inverse'"):
        sd.verify_dropout(f, keep_prob=0.5, contract="inverse")
    with pytest.raises(ValueError, match=r"`example_input` must have at least one dimension"):
        sd.verify_dropout(f, keep_prob=0.5, example_input=np.float64(1))
    with pytest.raises(ValueError, match=r"`example_input` must not be empty"):
        sd.verify_dropout(f, keep_prob=0.5, example_input=np.ones((0, 2)))
    with pytest.raises(ValueError, match=r"`false_fail_rate` must be in \(0, 1\); got 0"):
        sd.verify_dropout(f, keep_prob=0.5, false_fail_rate=0)
    with pytest.raises(ValueError, match=r"`seed` must be a non-negative integer; got -3"):
        sd.verify_dropout(f, keep_prob=0.5, seed=-3)


def test_iter_checks():
    with pytest.raises(TypeError, match=r"`implementation` must be a stats_dropout.Implementation"):
        sd.iter_checks(lambda x: x)
    with pytest.raises(ValueError, match=r"`contract` must be one of"):
        sd.iter_checks(sd.Implementation(lambda x: x, contract="x"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finiteness_fast_path_is_exact(dtype):
    from stats_dropout._internal.validation import _all_finite

    x = np.ones(10_000, dtype=dtype)
    assert _all_finite(x)
    x[7] = np.finfo(dtype).max  # Σ x² overflows, yet every element is finite
    assert _all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[123] = bad
        assert not _all_finite(y)


@pytest.mark.parametrize("call, err, msg", [
    (lambda: sds.holm_adjust([-0.5, 2]), ValueError, r"`pvalues` must lie in \[0, 1\]; got -0.5, 2.0"),
    (lambda: sds.holm_adjust([np.nan]), ValueError, r"`pvalues` must lie in \[0, 1\]; got nan"),
    (lambda: sds.t_interval(0.0, 1.0, 5, 1.5), ValueError, r"`level` must be in \(0, 1\); got 1.5"),
    (lambda: sds.decide_equivalence(np.nan, 1.0, 0.1), ValueError, r"`estimate` must be finite; got nan"),
    (lambda: sds.decide_dispersion(np.array([5, 12]), 10, 0.5), ValueError,
     r"`counts` must lie in \[0, size\]; got count 12 of size 10 at index 1"),
    (lambda: sds.min_draws_for_mean_error(0.01, np.inf), ValueError, r"`sd` must be finite and non-negative; got inf"),
    (lambda: sds.min_draws_for_mean_error(1e-300, 1.0), ValueError, r"needs more than 1e\+18 draws"),
    (lambda: sds.min_trials_for_keep_rate_error(0.5, 1e-300), ValueError, r"`effect` 1e-300 needs more than 1e\+18"),
    (lambda: sds.split_false_fail_rate(1.5, 3), ValueError, r"`false_fail_rate` must be in \(0, 1\); got 1.5"),
    (lambda: sd.verify_dropout(lambda x, keep_prob: x, keep_prob=(0.8, 0.8)), ValueError,
     r"`keep_prob` holds 0.8 more than once"),
])
def test_helpers_validate_their_arguments(call, err, msg):
    with pytest.raises(err, match=msg):
        call()


def test_a_zero_dimensional_keep_prob_array_is_a_number():
    impl = sd.Implementation(lambda x: x, keep_prob=np.array(0.8))
    assert impl.keep_probs() == (0.8,)
