"""Unit tests for stats_dropout.reference.networks and the exact (non-sampling) experiments.

Every tolerance below is a floating-point tolerance with its reason in a comment; nothing here
is random beyond seeded Generators, so nothing here can fail by chance.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special
from scipy import stats as sps

from stats_dropout import experiments as ex
from stats_dropout import networks as nw
from stats_dropout import theory
from stats_dropout.reference.training import train_mlp

ONES23, ONES3, X25, Y2 = np.ones((2, 3)), np.ones(3), np.ones((2, 5)), [0, 1]


def _net(dropout=("inverted", "inverted"), keep=(0.8, 0.5), acts=("relu", "softmax"), seed=0):
    return nw.init_mlp([5, 7, 3], list(acts), dropout=list(dropout), keep_prob=list(keep), seed=seed)


# --- activations and moment matching ---------------------------------------------------------
def test_activations_values():
    u = np.array([-2.0, 0.0, 1.5])
    assert np.array_equal(nw.activate("relu", u), [0.0, 0.0, 1.5])
    np.testing.assert_allclose(nw.activate("selu", u)[[0, 2]],
                               [theory.LAMBDA * theory.ALPHA * np.expm1(-2.0), theory.LAMBDA * 1.5],
                               rtol=1e-15)
    # softmax rows sum to one to rounding
    assert abs(nw.activate("softmax", u).sum() - 1) < 1e-15
    with pytest.raises(ValueError, match="`activation` must be one of"):
        nw.activate("gelu", u)


@pytest.mark.parametrize("name", ["relu", "selu", "tanh", "sigmoid"])
@pytest.mark.parametrize("mu,s2", [(1.0, 1.0), (-0.5, 4.0), (0.3, 0.01)])
def test_gaussian_activation_mean_against_quadrature(name, mu, s2):
    sd = np.sqrt(s2)

    def moment(k):
        return integrate.quad(lambda t: float(nw.activate(name, np.array(t))) ** k * sps.norm.pdf(t, mu, sd),
                              mu - 40 * sd, mu + 40 * sd, points=[0.0], epsabs=1e-13, epsrel=1e-12)[0]

    mean, var = nw.gaussian_activation_mean(name, np.array([mu]), np.array([s2]))
    exact_mean, exact_var = moment(1), moment(2) - moment(1) ** 2
    if name == "sigmoid":
        # the fast-dropout closed form is an approximation; its error is bounded by ~0.02 [Wang & Manning]
        assert abs(mean[0] - exact_mean) < 0.02
    else:
        # closed forms (ReLU, SELU) and 64-node Gauss–Hermite on a smooth integrand (tanh):
        # adaptive quadrature is good to ~1e-12; 1e-9 leaves room for erf rounding
        assert abs(mean[0] - exact_mean) < 1e-9
    assert abs(var[0] - exact_var) < (1e-9 if name != "sigmoid" else 1e-6)


# --- forward passes ---------------------------------------------------------------------------
def test_keep_prob_one_train_equals_eval():
    net = _net(keep=(1.0, 1.0))
    x = np.random.default_rng(1).standard_normal((4, 5))
    # no noise: the train pass is the eval pass bit for bit
    assert np.array_equal(net.train_pass(x, 3), net.predict(x))


def test_standard_and_inverted_twins_agree_pass_by_pass():
    std = _net(dropout=("standard", "standard"))
    inv = nw.to_inverted(std)
    x = np.random.default_rng(2).standard_normal((6, 5))
    a = std.sample_train(x, 50, np.random.default_rng(9))
    b = inv.sample_train(x, 50, np.random.default_rng(9))
    # W'(r∘a)/p vs W(r∘a): same masks, so only rounding of the p and 1/p products differs
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    np.testing.assert_allclose(std.predict(x), inv.predict(x), rtol=0, atol=1e-13)
    assert std.layers[0].dropout == "standard"  # the input network is not modified


def test_linear_network_moment_matching_equals_weight_scaling():
    net = nw.init_mlp([4, 6, 2], ["identity", "identity"], dropout=["inverted", "dropconnect"],
                      keep_prob=[0.6, 0.7], seed=3)
    x = np.random.default_rng(4).standard_normal((3, 4))
    # the mean of a linear map is the map of the means: exact up to rounding
    np.testing.assert_allclose(net.predict(x, rule="moment_matching"), net.predict(x), atol=1e-13)


def test_dropconnect_eval_is_p_w():
    w = np.arange(6.0).reshape(3, 2)
    net = nw.MLP((nw.DenseLayer(w, np.zeros(2), "identity", "dropconnect", 0.25),))
    x = np.array([[1.0, 2.0, 3.0]])
    # 0.25 is a power of two: exact
    assert np.array_equal(net.predict(x), x @ (0.25 * w))
    out = net.sample_train(x, 200, 0)
    assert out.shape == (200, 1, 2)


@pytest.mark.parametrize("scheme", ["inverted", "standard", "gaussian", "alpha", "batch_shared", "drop_path"])
def test_every_unit_scheme_runs_in_a_layer(scheme):
    net = nw.init_mlp([3, 4, 2], ["tanh", "identity"], dropout=[None, scheme], keep_prob=[1.0, 0.7], seed=0)
    x = np.ones((5, 3))
    out = net.sample_train(x, 7, 0)
    assert out.shape == (7, 5, 2) and np.all(np.isfinite(out))
    for rule in nw.INFERENCE_RULES:
        assert net.predict(x, rule=rule, n_passes=3, rng=0).shape == (5, 2)


def test_bound_mlp_is_reproducible_and_does_not_modify_input():
    net = _net()
    x = np.random.default_rng(5).standard_normal((2, 5))
    x0 = x.copy()
    a = net.bind(11).sample_train(x, 4)
    b = net.bind(11).sample_train(x, 4)
    assert np.array_equal(a, b) and np.array_equal(x, x0)
    assert net.bind(1)(x).shape == (2, 3)


# --- training ---------------------------------------------------------------------------------
def _loss(net, X, y):
    out = net.predict(X)
    return -np.mean(np.log(out[np.arange(len(y)), y]))


def test_backprop_matches_finite_differences():
    net = nw.init_mlp([4, 5, 5, 3], ["tanh", "selu", "softmax"], seed=1)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    lr = 1e-3
    trained, _ = train_mlp(net, X, y, lr=lr, epochs=1, batch_size=8)
    for li in range(3):
        grad = (net.layers[li].weights - trained.layers[li].weights) / lr
        num = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            for sign in (1, -1):
                w = net.layers[li].weights.copy()
                w[idx] += sign * 1e-6
                layers = list(net.layers)
                layers[li] = layers[li].replace(weights=w)
                num[idx] += sign * _loss(nw.MLP(tuple(layers)), X, y) / 2e-6
        # central differences: truncation O(h²) ~ 1e-12, rounding ~ eps/h ~ 1e-10; the
        # division by lr amplifies the update's rounding (~1e-16/1e-3); 1e-7 covers both
        np.testing.assert_allclose(grad, num, atol=1e-7)


def test_training_equivalence_is_exact_under_the_lr_mapping():
    df = ex.training_equivalence(keep_probs=(0.5, 0.8), epochs=3)
    mapped = df[df.lr_mapping == "mapped"]
    same = df[df.lr_mapping == "same"]
    # identical masks: only rounding of p·W, 1/p and eps/p separates the runs; observed
    # ≤ 1.3e-15 over the run, 1e-12 allows 40 steps of accumulated ulps with a wide margin
    assert (mapped.max_abs_deviation <= 1e-12).all()
    assert (mapped.prediction_max_abs_deviation <= 1e-12).all()
    assert np.allclose(mapped.weight_ratio, mapped.keep_prob, rtol=0, atol=1e-12)
    # the unmapped runs move 1/p² (SGD) or ~1/p (Adam) faster: a drift 10^9 times larger
    assert (same.max_abs_deviation > 1e-3).all()
    assert set(df.columns) >= {"optimizer", "lr_mapping", "keep_prob", "max_abs_deviation", "weight_ratio"}


# --- exact experiments ------------------------------------------------------------------------
@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("n_units", [1, 7, 12])
def test_softmax_geometric_mean_identity_by_enumeration(n_units, keep_prob):
    df = ex.softmax_geometric_mean_check(n_units, keep_prob=keep_prob, seed=n_units)
    assert df.n_masks.iloc[0] == 2**n_units
    # exact identity; the only error is rounding of log-softmax sums over ≤ 4096 masks (~1e-15)
    assert df.max_abs_deviation.iloc[0] <= 1e-12
    assert abs(df.nwgm.sum() - 1) < 1e-12


def test_softmax_arithmetic_mean_differs():
    df = ex.softmax_geometric_mean_check(10, keep_prob=0.5, seed=0)
    assert df.max_arithmetic_gap.iloc[0] > 1e-3  # measured 0.17: a real difference, not rounding


def test_nwgm_table_reproduces_theory_worked_example():
    df = ex.nwgm_table()
    row = df.iloc[0]
    # THEORY.md quotes six decimals: half a unit in the last place
    for col, value in (("expectation", 0.676759), ("geometric_mean", 0.674577),
                       ("geometric_mean_complement", 0.318648), ("nwgm", 0.679179)):
        assert abs(row[col] - value) <= 5e-7, col
    assert abs(row["nwgm"] - special.expit(0.75)) < 1e-15
    assert df.within_bound.all() and df.ordering_holds.all()
    assert (df.bound <= 0.1502).all()  # the bound's maximum is 0.1501
    # NWGM(σ(S)) = σ(E S) exactly; rounding of 256-term sums of logs
    assert (df.nwgm_identity_error <= 1e-12).all()


def test_enumerate_masks_probabilities():
    masks, probs = ex.enumerate_masks(5, 0.3)
    assert masks.shape == (32, 5) and abs(probs.sum() - 1) < 1e-15
    np.testing.assert_allclose(probs @ masks, np.full(5, 0.3), atol=1e-15)


def test_thread_matrix_keeps_global_rng_state():
    before = np.random.get_state()[1].copy()
    a = ex.thread_matrix()
    assert np.array_equal(np.random.get_state()[1], before)
    np.random.seed(42)
    expected = np.random.randn(3, 4)
    np.random.set_state(("MT19937", before, 624, 0, 0.0))
    assert np.array_equal(a, expected)
    assert np.linalg.norm(a) == 2.672810732482017
    assert np.linalg.norm(a / 0.8) == pytest.approx(3.3410134156025215, rel=1e-15)


def test_experiments_are_deterministic():
    a = ex.norm_table(keep_probs=(0.5,), draws=200, random_shapes=())
    b = ex.norm_table(keep_probs=(0.5,), draws=200, random_shapes=())
    pd.testing.assert_frame_equal(a, b)
    assert {"seed", "n_draws", "keep_prob"} <= set(a.columns)


# --- input validation -------------------------------------------------------------------------
@pytest.mark.parametrize("call,exc,message", [
    (lambda: nw.DenseLayer(np.ones((2, 3)), np.ones(2)), ValueError, "`weights` must be"),
    (lambda: nw.DenseLayer(ONES23, ONES3, "gelu"), ValueError, "`activation` must be one of"),
    (lambda: nw.DenseLayer(ONES23, ONES3, dropout="nope"), ValueError, "`dropout` must be one of"),
    (lambda: nw.DenseLayer(ONES23, ONES3, keep_prob=1.5), ValueError,
     r"`keep_prob` must be in \(0, 1\]; got 1.5"),
    (lambda: nw.MLP(()), TypeError, "`layers` must be"),
    (lambda: nw.init_mlp([2, 3], ["relu", "relu"]), ValueError, "`activations` must have 1"),
    (lambda: nw.init_mlp([2, 3], ["relu"], scale="x"), ValueError, "`scale` must be one of"),
    (lambda: _net().predict(np.ones((2, 4))), ValueError, r"`x` must have shape \(batch, 5\)"),
    (lambda: _net().predict(np.ones((2, 5)), rule="bayes"), ValueError, "`rule` must be one of"),
    (lambda: _net().sample_train(X25, 0), ValueError, "`n_draws` must be a positive integer; got 0"),
    (lambda: train_mlp("net", X25, Y2), TypeError, "`net` must be an MLP"),
    (lambda: train_mlp(_net(), X25, Y2, optimizer="rmsprop"), ValueError, "`optimizer` must be one of"),
    (lambda: train_mlp(_net(), X25, Y2, lr=-1.0), ValueError, "`lr` must be a positive number; got -1.0"),
    (lambda: train_mlp(_net(), X25, Y2, loss="mse"), ValueError, "`loss`='mse' needs"),
    (lambda: train_mlp(_net(dropout=("alpha", None)), X25, Y2), ValueError, "multiplicative"),
    (lambda: train_mlp(_net(), X25, Y2, weight_lr_scale=[1.0]), ValueError, "`weight_lr_scale` must have"),
    (lambda: ex.inference_gap((0.5, 0.0)), ValueError, r"`keep_probs` must be in \(0, 1\]; got 0.0"),
    (lambda: ex.inference_gap(n_units=13), ValueError, "`n_units` must be at most 12"),
    (lambda: ex.inference_gap(draws=1), ValueError, "`draws` must be at least 2"),
    (lambda: ex.inference_gap(seed=-1), ValueError, "`seed` must be a non-negative integer; got -1"),
    (lambda: ex.softmax_geometric_mean_check(13), ValueError, "`n_units` must be at most 12"),
    (lambda: ex.softmax_geometric_mean_check(keep_prob="a"), TypeError, "`keep_prob` must be a real number"),
    (lambda: ex.nwgm_table(n_units=0), ValueError, "`n_units` must be a positive integer; got 0"),
    (lambda: ex.gaussian_approximation_table(false_fail_rate=2.0), ValueError,
     r"`false_fail_rate` must be in \(0, 1\)"),
    (lambda: ex.mc_averaging(n_seeds=1), ValueError, "`n_seeds` must be at least 2"),
    (lambda: ex.mc_averaging(ks=()), ValueError, "`ks` must be a non-empty sequence"),
    (lambda: ex.mc_averaging(keep_prob=2), ValueError, r"`keep_prob` must be in \(0, 1\]; got 2"),
    (lambda: ex.training_equivalence(keep_probs=()), ValueError, "`keep_probs` must not be empty"),
    (lambda: ex.training_equivalence(epochs=0), ValueError, "`epochs` must be a positive integer; got 0"),
    (lambda: ex.regression_dropout(n_seeds=1), ValueError, "`n_seeds` and `draws` must be at least 2"),
    (lambda: ex.variance_shift_table(input_var=0.0), ValueError, "`input_var` must be positive; got 0.0"),
    (lambda: ex.norm_table(draws=1), ValueError, "`draws` must be at least 2; got 1"),
    (lambda: ex.norm_table(seed=1.5), TypeError, "`seed` must be a non-negative integer; got 1.5"),
])
def test_input_validation(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# --- properties ---------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(keep_prob=st.floats(0.05, 1.0), seed=st.integers(0, 2**16), depth=st.integers(1, 3))
def test_property_linear_nets_and_standard_inverted_twins(keep_prob, seed, depth):
    sizes = [3] + [4] * depth
    net = nw.init_mlp(sizes, ["identity"] * depth, dropout=["standard"] * depth, keep_prob=keep_prob,
                      seed=seed)
    x = np.random.default_rng(seed).standard_normal((2, 3))
    ws = net.predict(x)
    scale = 1 + np.abs(ws).max()
    # linearity: moment matching is the forward pass of the means (rounding ~1e-15 · scale)
    np.testing.assert_allclose(net.predict(x, rule="moment_matching"), ws, rtol=0, atol=1e-12 * scale)
    twin = nw.to_inverted(net)
    np.testing.assert_allclose(twin.predict(x), ws, rtol=0, atol=1e-12 * scale)
    a, b = net.sample_train(x, 3, seed), twin.sample_train(x, 3, seed)
    # same masks; W'(r∘a)/p vs W(r∘a) differ by rounding of p·W and 1/p, amplified by at most 1/p
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * (1 + np.abs(a).max()) / keep_prob)


def test_train_mlp_does_not_modify_its_inputs():
    net = _net()
    w0 = [l.weights.copy() for l in net.layers]
    X = np.random.default_rng(0).standard_normal((10, 5))
    X0 = X.copy()
    y = np.arange(10) % 3
    train_mlp(net, X, y, epochs=2, batch_size=4)
    assert np.array_equal(X, X0) and all(np.array_equal(a, l.weights) for a, l in zip(w0, net.layers))


def test_keep_prob_one_is_exact_and_not_significant():
    # no noise: every draw equals the eval output, so decisions rest on the rounding dead band
    g = ex.inference_gap(keep_probs=(1.0,), draws=10)
    assert not g.gap_zero_rejected.any() and not g.vs_exact_rejected.any()
    assert (g.gap.abs() < 1e-12).all()
    n = ex.norm_table(keep_probs=(1.0,), draws=10, random_shapes=())
    assert not n.sq_rejected.any() and not n.norm_equals_A_rejected.any()
