"""Reference schemes: registry, exact paths, sharing, alpha constants, properties over shapes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import stats_dropout as sd
from stats_dropout import theory

DESIGN_NAMES = ["inverted", "standard", "batch_shared", "channel", "time_locked", "drop_path",
                "gaussian", "alpha", "dropconnect"]
MIN_NDIM = {"batch_shared": 1, "channel": 2, "time_locked": 2, "drop_path": 1}


def test_registry_has_every_design_name():
    assert set(DESIGN_NAMES) <= set(sd.SCHEMES)
    for name in DESIGN_NAMES:
        assert sd.get_scheme(name).name == name


def test_unknown_scheme_lists_known_names():
    with pytest.raises(ValueError, match=r"`name` must be one of .*'inverted'.*got 'droput'"):
        sd.get_scheme("droput")


def test_one_type_parametrised_not_copies():
    kinds = {type(s) for s in sd.SCHEMES.values()}
    assert kinds == {sd.DropoutScheme}
    assert sd.get_scheme("channel").shared_axes == "spatial"
    assert sd.get_scheme("standard").rescale == "eval"
    assert sd.get_scheme("alpha").contract == "moments"


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_keep_prob_one_is_identity(name):
    x = np.random.default_rng(0).standard_normal((4, 3, 5))
    s = sd.get_scheme(name)
    np.testing.assert_array_equal(s.train(x, 1.0, 0), x)
    np.testing.assert_array_equal(s.eval(x, 1.0), x)


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_eval_is_identity_or_weight_scaled(name):
    x = np.linspace(-2, 2, 24).reshape(2, 3, 4)
    s = sd.get_scheme(name)
    expected = 0.3 * x if s.rescale == "eval" and s.noise == "bernoulli" else x
    np.testing.assert_allclose(s.eval(x, 0.3), expected, rtol=1e-15)


def test_inverted_kept_units_are_exactly_x_over_p():
    x = np.random.default_rng(1).standard_normal(10_000)
    y = sd.get_scheme("inverted").train(x, 0.7, 3)
    kept = y != 0
    assert 0 < kept.sum() < x.size
    np.testing.assert_array_equal(y[kept], x[kept] / 0.7)  # bit-exact: fl(x / p)


def test_standard_kept_units_are_exactly_x():
    x = np.random.default_rng(1).standard_normal(10_000)
    y = sd.get_scheme("standard").train(x, 0.7, 3)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])


def test_alpha_constants_match_theory_reference_numbers():
    a, b = theory.alpha_affine(0.9)
    assert a == pytest.approx(0.921285, abs=1e-6)
    assert b == pytest.approx(0.161971, abs=1e-6)
    assert theory.alpha_dropped_value(0.9) == pytest.approx(-1.457739, abs=1e-6)
    assert theory.ALPHA_PRIME == pytest.approx(-1.7580993408473766, rel=1e-15)
    for q in (0.1, 0.5, 0.9, 1.0):
        mean, var = theory.alpha_output_moments_over_normal(q)
        assert mean == pytest.approx(0.0, abs=1e-14)
        assert var == pytest.approx(1.0, rel=1e-14)


def test_alpha_train_values_are_kept_or_saturated():
    x = np.random.default_rng(2).standard_normal(5000)
    y = sd.get_scheme("alpha").train(x, 0.9, 5)
    a, b = theory.alpha_affine(0.9)
    dropped = np.isclose(y, theory.alpha_dropped_value(0.9), rtol=0, atol=1e-12)
    np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-14)
    assert 0 < dropped.sum() < x.size


@pytest.mark.parametrize("name, axes", [("batch_shared", (0,)), ("time_locked", (1,)),
                                        ("channel", (2, 3)), ("drop_path", (1, 2, 3))])
def test_masks_are_constant_along_shared_axes(name, axes):
    x = np.random.default_rng(3).standard_normal((6, 5, 4, 3)) + 10  # no zero inputs
    y = sd.get_scheme(name).train(x, 0.5, 7)
    kept = y != 0
    first = kept[tuple(slice(0, 1) if i in axes else slice(None) for i in range(4))]
    np.testing.assert_array_equal(kept, np.broadcast_to(first, kept.shape))
    assert 0 < kept.mean() < 1


def test_train_never_modifies_its_input():
    x = np.random.default_rng(4).standard_normal((8, 8))
    before = x.copy()
    for name in DESIGN_NAMES:
        sd.get_scheme(name).train(x, 0.5, 0)
        sd.get_scheme(name).eval(x, 0.5)
    np.testing.assert_array_equal(x, before)


def test_bound_scheme_and_sample_train_agree_in_shape():
    layer = sd.get_scheme("inverted").bind(0.8, rng=0)
    x = np.ones((3, 4))
    assert layer(x).shape == x.shape
    assert layer.sample_train(x, 5).shape == (5, 3, 4)
    np.testing.assert_array_equal(layer.eval(x), x)


def test_too_few_dimensions_for_shared_axes():
    with pytest.raises(ValueError, match=r"`x` must have at least 2 dimension\(s\) for scheme 'time_locked'"):
        sd.get_scheme("time_locked").train(np.ones(3), 0.5)


@pytest.mark.parametrize("name", ["inverted", "standard", "gaussian", "alpha", "batch_shared"])
def test_linear_statistic_var_matches_simulation(name):
    # Var Σ w_i y_i from noise loadings vs a Monte-Carlo estimate; the sample variance of 20000
    # draws has relative sd ≈ sqrt(2/20000)·(kurtosis factor) < 3 %, so 15 % is > 5 sd.
    s = sd.get_scheme(name)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6))
    w = rng.standard_normal((4, 6))
    draws = s.sample_train(x, 0.3, 20_000, rng)
    sim = np.var(np.sum(draws * w, axis=(1, 2)), ddof=1)
    assert sim == pytest.approx(s.linear_statistic_var(w, x, 0.3), rel=0.15)


shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
dtypes = st.sampled_from([np.float16, np.float32, np.float64])
keep_probs = st.floats(min_value=0.01, max_value=1.0)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(DESIGN_NAMES), shape=shapes, dtype=dtypes, p=keep_probs,
       seed=st.integers(0, 2**32 - 1))
def test_train_preserves_shape_dtype_and_values_are_admissible(name, shape, dtype, p, seed):
    s = sd.get_scheme(name)
    if len(shape) < MIN_NDIM.get(name, 0):
        return
    x = np.random.default_rng(seed).uniform(-3, 3, size=shape).astype(dtype)
    y = s.train(x, p, seed)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.all(np.isfinite(y)) or dtype == np.float16  # x/p may overflow float16 at tiny p
    if s.noise == "bernoulli":
        kept = y != 0
        x64 = x.astype(np.float64)
        expected = (x64 / p if s.rescale == "train" else x64).astype(dtype)
        np.testing.assert_array_equal(y[kept], expected[kept])


def test_verify_scheme_returns_a_result_like_verify_dropout():
    import stats_dropout as sd

    res = sd.verify_scheme("inverted", 0.8, relative_error=0.05)
    assert isinstance(res, sd.SchemeVerificationResult) and res.passed
    assert set(res.decisions) == {"mean", "variance"} and res.draws >= 2
    frame = res.to_frame()
    assert list(frame["decision"]) == ["mean", "variance"] and not frame["rejected"].any()
    assert str(res).startswith("stats_dropout scheme check 'inverted' at keep_prob=0.8: PASSED")
