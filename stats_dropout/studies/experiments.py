"""Experiments beyond one layer (issue #4): tidy DataFrames with CIs, settings and decisions.

Every function returns a ``pandas.DataFrame`` with one row per measured figure; each row
carries its settings (``seed``, ``n_draws``, ``keep_prob``), a confidence interval and, where a
closed form exists, the statistical decision against it (``stats_dropout.inference.stats``). The
``false_fail_rate`` option is the total for the table, split by Bonferroni across its
decisions; the CIs are the decisions' simultaneous intervals at ``confidence_level``.

Default sizes run in seconds; larger runs go through the options (``draws``, ``n_seeds``).
The training experiments live in :mod:`stats_dropout._experiments_training` and are
re-exported here.

References
----------
.. [1] N. Srivastava et al., "Dropout: a simple way to prevent neural networks from
   overfitting", JMLR 15 (2014) 1929-1958.
.. [2] P. Baldi, P. Sadowski, "The dropout learning algorithm", Artificial Intelligence 210
   (2014) 78-122.
.. [3] S. Wang, C. Manning, "Fast dropout training", ICML 2013.
.. [4] X. Li, S. Chen, X. Hu, J. Yang, "Understanding the disharmony between dropout and batch
   normalization by variance shift", CVPR 2019.
.. [5] X. Ma et al., "Dropout with expectation-linear regularization", ICLR 2017.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import integrate
from scipy import stats as sps

from stats_dropout._internal.rng import stream_rng
from stats_dropout._internal.validation import draws_iv, keep_probs_iv, positive_int_iv, probability_iv, seed_iv
from stats_dropout.inference import stats
from stats_dropout.inference.montecarlo import (
    RunningMoments,
    estimate_train_moments,
)
from stats_dropout.inference.results import TrainMoments
from stats_dropout.reference import theory
from stats_dropout.reference.activations import activate, gaussian_activation_mean
from stats_dropout.reference.networks import MLP, DenseLayer
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.studies.geometric_mean import enumerate_masks, nwgm_table, softmax_geometric_mean_check
from stats_dropout.studies.norms import norm_table, thread_matrix
from stats_dropout.studies.structured import dropblock_bias_table, stochastic_depth_bias_table
from stats_dropout.studies.training_experiments import (
    decide_with_dead_band,
    mc_averaging,
    regression_dropout,
    training_equivalence,
)

__all__ = [
    "inference_gap",
    "softmax_geometric_mean_check",
    "nwgm_table",
    "gaussian_approximation_table",
    "mc_averaging",
    "training_equivalence",
    "regression_dropout",
    "variance_shift_table",
    "norm_table",
    "enumerate_masks",
    "thread_matrix",
    "dropblock_bias_table",
    "stochastic_depth_bias_table",
]

DEFAULT_KEEP_PROBS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
GAP_ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "selu", "softmax")


# --- shared helpers -------------------------------------------------------------------------
# FP_RTOL (the floating-point dead band) and decide_with_dead_band live with the training
# experiments and are shared from there.


def _moments(samples, seed):
    """TrainMoments of per-draw values stacked on axis 0."""
    return RunningMoments.from_samples(samples).to_result(seed)


# --- §4 inference gap -----------------------------------------------------------------------
def _inference_gap_iv(keep_probs, seed, draws, n_units, false_fail_rate):
    keep_probs = keep_probs_iv(keep_probs)
    seed = seed_iv(seed)
    draws = 50_000 if draws is None else draws_iv(draws, "draws")
    if draws < 2:
        raise ValueError(f"`draws` must be at least 2; got {draws}")
    n_units = positive_int_iv(n_units, "n_units")
    if n_units > 12:
        raise ValueError(
            f"`n_units` must be at most 12 (exact enumeration of 2^n_units masks); got {n_units}")
    return keep_probs, seed, draws, n_units, probability_iv(false_fail_rate, "false_fail_rate")


def _relu_gaussian_mean(mu, s2):
    """``theory.relu_gaussian_mean`` with its s → 0 limit ``relu(μ)`` (keep_prob = 1)."""
    s = np.sqrt(s2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, theory.relu_gaussian_mean(mu, np.where(s > 0, s, 1.0)), np.maximum(mu, 0.0))


def _gap_setup(n_units, n_out, seed):
    """A fixed hidden activation ``h > 0`` and output weights with pre-activation mean ≈ 1."""
    rng = stream_rng(seed, "gap_network")
    h = np.abs(rng.standard_normal(n_units)) + 0.25
    w = rng.standard_normal((n_units, n_out)) / np.sqrt(n_units)
    b = 1.0 - h @ w  # centre the eval pre-activation at 1 (every unit), like THEORY's μ = 1
    return h, w, b


def _gap_network(act, depth, scheme, h, w, b, p, n_units, n_out, seed):
    """The network of one inference-gap row and its one-layer pre-activation moments ``μ, s²``."""
    if scheme == "dropconnect":
        # train f((M∘W)h + b), eval f(pWh + b); bias re-centred so the eval μ is 1 too
        b_dc = b + (1 - p) * h @ w
        net = MLP((DenseLayer(w, b_dc, act, "dropconnect", p),))
        return net, p * h @ w + b_dc, p * (1 - p) * (h**2) @ w**2  # Wan et al. 2013
    if depth == 1:
        net = MLP((DenseLayer(w, b, act, "inverted", p),))
        return net, h @ w + b, (1 - p) / p * (h**2) @ w**2
    rng = stream_rng(seed, "gap_draws")
    w1 = rng.standard_normal((n_units, n_units)) / np.sqrt(n_units)
    w2 = rng.standard_normal((n_units, n_units)) / np.sqrt(n_units)
    net = MLP((DenseLayer(w1, np.zeros(n_units), "identity", "inverted", p),
               DenseLayer(w2, np.full(n_units, 0.1), "identity", "inverted", p),
               DenseLayer(w, b, "identity", "inverted", p)))
    nan = np.full(n_out, np.nan)  # one-layer moments do not describe the deep net
    return net, nan, nan


#: The closed-form approximation of E f(u), u ~ N(μ, s²), compared with each activation's gap.
_APPROXIMATION_NAMES = {"identity": "exact (linear)", "relu": "relu of a Gaussian",
                        "sigmoid": "fast dropout (Wang & Manning)", "softmax": "normalised geometric mean",
                        "selu": "SELU of a Gaussian", "tanh": "tanh of a Gaussian (quadrature)"}


def _gap_approximation(act, mu, s2, eval_out):
    """``(name, value)`` of the closed-form approximation of ``E f(u)`` for one activation."""
    if act in ("identity", "softmax"):
        value = eval_out  # linear: exact; softmax: the normalised geometric mean is the eval output
    elif act == "relu":
        value = _relu_gaussian_mean(mu, s2)
    elif act == "sigmoid":
        value = theory.fast_dropout_sigmoid_mean(mu, s2)
    else:
        value = gaussian_activation_mean(act, mu, s2)[0]
    return _APPROXIMATION_NAMES[act], value


def inference_gap(keep_probs=DEFAULT_KEEP_PROBS, *, seed=0, draws=None, n_units=10, false_fail_rate=1e-6):
    """Inference gap ``Δ = E[train output] − eval output`` through one activation, per keep_prob.

    A dropped hidden layer ``h`` (inverted dropout, ``n_units`` units) feeds ``f(W(r∘h)/p + b)``.
    For each activation the gap is measured by Monte Carlo (``draws`` passes, the MLP engine),
    computed *exactly* by enumerating all ``2^n_units`` masks, and compared with its closed-form
    approximation: ReLU of a Gaussian ``μΦ(μ/s) + sφ(μ/s) − relu(μ)``, fast dropout
    ``σ(μ/√(1 + πs²/8)) − σ(μ)`` [3]_, the exact Gaussian means of SELU and (by quadrature)
    tanh, 0 for linear maps
    and for the softmax's normalised geometric mean [2]_ (whose arithmetic mean is what
    ``exact_gap`` shows). An ``identity`` row with ``depth=3`` (dropout before each of three
    linear layers) checks linear networks of any depth [2]_, [5]_. Rows with ``scheme =
    "dropconnect"`` drop the weights instead (``f((M∘W)h + b)`` vs ``f(pWh + b)``) and use
    DropConnect's moments ``μ = pWh + b``, ``s² = p(1−p)(W∘W)(h∘h)`` (Wan et al. 2013).
    ``moment_matching_gap`` is the network's own ``predict(rule="moment_matching")`` minus eval.

    Parameters
    ----------
    keep_probs : sequence of float
    seed : int
    draws : int, optional
        Monte-Carlo passes per row (default 50 000).
    n_units : int, ≤ 12
    false_fail_rate : float
        Total over the table's decisions (two per row, Bonferroni).

    Returns
    -------
    DataFrame
        Columns ``activation, scheme, depth, unit, keep_prob, gap, ci_low, ci_high, std_error,
        gap_zero_pvalue, gap_zero_rejected, exact_gap, vs_exact_pvalue, vs_exact_rejected,
        approximation, approx_value, approx_error, moment_matching_gap, mu, s2,
        min_detectable_effect, n_draws, seed,
        confidence_level``. ``approx_error = approx_value − exact_gap``.
    """
    keep_probs, seed, draws, n_units, alpha = _inference_gap_iv(keep_probs, seed, draws, n_units,
                                                              false_fail_rate)
    configs = ([(a, 1, "inverted") for a in GAP_ACTIVATIONS] + [("identity", 3, "inverted")]
               + [(a, 1, "dropconnect") for a in ("relu", "sigmoid")])
    n_rows = sum(3 if a == "softmax" else 1 for a, _, _ in configs) * len(keep_probs)
    alpha_row = alpha / (2 * n_rows)
    rows = []
    for ci, (act, depth, scheme) in enumerate(configs):
        n_out = 3 if act == "softmax" else 1
        h, w, b = _gap_setup(n_units, n_out, seed)
        for pi, p in enumerate(keep_probs):
            net, mu, s2 = _gap_network(act, depth, scheme, h, w, b, p, n_units, n_out, seed)
            x = h[None, :]
            eval_out = net.predict(x)[0]
            mom = estimate_train_moments(net.bind(), x, draws=draws, seed=seed + 7919 * (ci * 100 + pi))
            mom = TrainMoments(mean=mom.mean[0], var=mom.var[0], n_draws=mom.n_draws, seed=mom.seed)
            if depth == 1:
                masks, probs = enumerate_masks(n_units, p)
                kept = masks * h if scheme == "dropconnect" else masks * h / p
                exact = probs @ activate(act, kept @ w + net.layers[0].bias)
            else:
                exact = eval_out  # linear in every mask: E = forward pass of the means [2]_
            approx_name, approx_mean = _gap_approximation(act, mu, s2, eval_out)
            moment_matching = net.predict(x, rule="moment_matching")[0]
            for u in range(n_out):
                unit = TrainMoments(mean=mom.mean[u:u + 1], var=mom.var[u:u + 1], n_draws=draws,
                                    seed=mom.seed)
                d_zero = decide_with_dead_band(unit, eval_out[u], false_fail_rate=alpha_row,
                                               property="E[train output] equals eval output")
                d_exact = decide_with_dead_band(unit, exact[u], false_fail_rate=alpha_row,
                                                property="MC mean equals the enumerated expectation")
                rows.append({
                    "activation": act, "scheme": scheme, "depth": depth, "unit": u, "keep_prob": p,
                    "gap": d_zero.estimate - eval_out[u],
                    "ci_low": d_zero.ci_low - eval_out[u], "ci_high": d_zero.ci_high - eval_out[u],
                    "std_error": float(unit.std_error[0]),
                    "gap_zero_pvalue": d_zero.pvalue, "gap_zero_rejected": d_zero.rejected,
                    "exact_gap": exact[u] - eval_out[u],
                    "vs_exact_pvalue": d_exact.pvalue, "vs_exact_rejected": d_exact.rejected,
                    "approximation": approx_name,
                    "approx_value": approx_mean[u] - eval_out[u],
                    "approx_error": approx_mean[u] - exact[u],
                    "moment_matching_gap": moment_matching[u] - eval_out[u],
                    "mu": mu[u], "s2": s2[u],
                    "min_detectable_effect": d_zero.min_detectable_effect,
                    "n_draws": draws, "seed": seed, "confidence_level": 1 - alpha_row,
                })
    return pd.DataFrame(rows)


# --- §4 softmax: normalised geometric mean by enumeration ------------------------------------
# --- §4 NWGM of a sigmoid unit ---------------------------------------------------------------
# --- §4 Gaussian approximations on their own reference numbers --------------------------------
def gaussian_approximation_table(*, seed=0, draws=None, false_fail_rate=1e-6, false_pass_rate=1e-3):
    """THEORY.md §4's reference numbers for ``Y ~ N(μ, s²)``: MC, exact (quadrature), closed form.

    Rows: sigmoid at μ = 1, s² ∈ {1, 4} (exact 0.696735, 0.647726; fast-dropout [3]_ 0.700014,
    0.651056) and ReLU at the same settings (``μΦ(μ/s) + sφ(μ/s)``, exact). The MC mean is
    tested against the exact value (adaptive quadrature; must hold) and against the closed form
    (rejected for the fast-dropout approximation: by default ``draws`` is computed to see an
    error of 0.003 with power ``1 − false_pass_rate``).

    Returns
    -------
    DataFrame
        ``activation, mu, s2, mc_mean, ci_low, ci_high, exact, closed_form, closed_form_error,
        vs_exact_pvalue, vs_exact_rejected, vs_closed_form_pvalue, vs_closed_form_rejected,
        n_draws, seed, confidence_level``.
    """
    seed = seed_iv(seed)
    alpha = stats.split_false_fail_rate(false_fail_rate, 8)
    if draws is None:
        # enough to see the fast-dropout error (≥ 0.003 at THEORY's settings) with power
        # 1 − false_pass_rate; σ(Y) ∈ (0, 1) so its sd is at most 1/2
        draws = stats.min_draws_for_mean_error(0.003, 0.5, false_fail_rate=alpha,
                                               false_pass_rate=false_pass_rate)
    draws = draws_iv(draws, "draws")
    rows = []
    for i, (act, s2) in enumerate(itertools.product(("sigmoid", "relu"), (1.0, 4.0))):
        y = stream_rng(seed, "gaussian_approximation", i).normal(1.0, np.sqrt(s2), size=(draws, 1))
        mom = _moments(activate(act, y), seed)
        sd = np.sqrt(s2)
        exact = integrate.quad(lambda t: float(activate(act, np.array(t))) * sps.norm.pdf(t, 1.0, sd),
                               1.0 - 40 * sd, 1.0 + 40 * sd, points=[0.0], epsabs=1e-13, epsrel=1e-12)[0]
        closed = float(gaussian_activation_mean(act, np.array([1.0]), np.array([s2]))[0][0])
        d_exact = decide_with_dead_band(mom, exact, false_fail_rate=alpha)
        d_closed = decide_with_dead_band(mom, closed, false_fail_rate=alpha)
        rows.append({"activation": act, "mu": 1.0, "s2": s2, "mc_mean": d_exact.estimate,
                     "ci_low": d_exact.ci_low, "ci_high": d_exact.ci_high, "exact": exact,
                     "closed_form": closed, "closed_form_error": closed - exact,
                     "vs_exact_pvalue": d_exact.pvalue, "vs_exact_rejected": d_exact.rejected,
                     "vs_closed_form_pvalue": d_closed.pvalue, "vs_closed_form_rejected": d_closed.rejected,
                     "n_draws": draws, "seed": seed, "confidence_level": 1 - alpha})
    return pd.DataFrame(rows)


# --- §5 variance shift ------------------------------------------------------------------------
def variance_shift_table(*, keep_probs=(0.5, 0.8, 0.9), seed=0, draws=100_000, input_means=(0.0, 1.0),
                         input_var=1.0, n_units=16, false_fail_rate=1e-6):
    """Variance shift ``Var_test / Var_train`` of inverted dropout, measured vs Li et al. [4]_.

    Inputs ``x ~ N(c, v)`` per unit; train output ``r x / p``, test output ``x``.
    ``Var_train = (c² + v)/p − c²``, ``Var_test = v`` (``theory.variance_shift``). Setting
    ``dropout`` measures one unit; ``dropout+linear`` the sum ``Σ_j w_j r_j x_j / p`` over
    ``n_units`` independent units, whose shift is the same (every term scales alike) — what
    batch norm after a linear layer sees. Each variance is estimated by the per-draw statistic
    ``(y − E y)² / Var_formula`` (:func:`stats_dropout.inference.stats.squared_deviation_ratio`) and
    tested against 1 with a t test; the shift's CI combines the two by the delta method.

    Returns
    -------
    DataFrame
        ``setting, keep_prob, input_mean, input_var, var_train, var_train_expected,
        var_train_pvalue, var_train_rejected, var_test, var_test_expected, var_test_pvalue,
        var_test_rejected, shift, shift_ci_low, shift_ci_high, shift_expected, n_draws, seed,
        confidence_level``.
    """
    keep_probs = keep_probs_iv(keep_probs)
    seed = seed_iv(seed)
    draws = draws_iv(draws, "draws")
    n_units = positive_int_iv(n_units, "n_units")
    if not input_var > 0:
        raise ValueError(f"`input_var` must be positive; got {input_var!r}")
    settings = ("dropout", "dropout+linear")
    # two variance decisions and one shift interval per row share the false-fail rate
    n_dec = 3 * len(keep_probs) * len(input_means) * len(settings)
    alpha = stats.split_false_fail_rate(false_fail_rate, n_dec)
    rows = []
    w = stream_rng(seed, "variance_shift").standard_normal(n_units)
    scheme = get_scheme("inverted")
    idx = 0
    for p, c, setting in itertools.product(keep_probs, input_means, settings):
        idx += 1
        rng = stream_rng(seed, "variance_shift", idx)
        width = 1 if setting == "dropout" else n_units
        weights = np.ones(1) if setting == "dropout" else w
        x = rng.normal(c, np.sqrt(input_var), size=(draws, width))
        z = scheme.train(x, p, rng)
        y_train, y_test = z @ weights, x @ weights
        mean_true = c * weights.sum()
        vtr_f = float(np.sum(weights**2)) * ((c**2 + input_var) / p - c**2)
        vte_f = float(np.sum(weights**2)) * input_var
        m_tr = _moments(((y_train - mean_true) ** 2 / vtr_f)[:, None], seed)
        m_te = _moments(((y_test - mean_true) ** 2 / vte_f)[:, None], seed)
        d_tr = decide_with_dead_band(m_tr, 1.0, false_fail_rate=alpha, property="train variance ratio")
        d_te = decide_with_dead_band(m_te, 1.0, false_fail_rate=alpha, property="test variance ratio")
        r_tr, r_te = float(m_tr.mean[0]), float(m_te.mean[0])
        shift = (vte_f * r_te) / (vtr_f * r_tr)
        # delta method: relative se of a ratio of two independent estimates
        rel_se = np.sqrt((m_tr.std_error[0] / r_tr) ** 2 + (m_te.std_error[0] / r_te) ** 2)
        z_crit = sps.norm.isf(alpha / 2)
        rows.append({
            "setting": setting, "keep_prob": p, "input_mean": c, "input_var": input_var,
            "var_train": vtr_f * r_tr, "var_train_expected": vtr_f, "var_train_pvalue": d_tr.pvalue,
            "var_train_rejected": d_tr.rejected,
            "var_test": vte_f * r_te, "var_test_expected": vte_f, "var_test_pvalue": d_te.pvalue,
            "var_test_rejected": d_te.rejected,
            "shift": shift, "shift_ci_low": shift * (1 - z_crit * rel_se),
            "shift_ci_high": shift * (1 + z_crit * rel_se),
            "shift_expected": float(theory.variance_shift(c, input_var, p)),
            "n_draws": draws, "seed": seed, "confidence_level": 1 - alpha,
        })
    return pd.DataFrame(rows)


# --- §1 norms (claims C05, C06) ---------------------------------------------------------------
