"""Closed forms that every check is held against (``docs/THEORY.md``).

Notation: ``p`` (``keep_prob``) is the probability that a unit is *kept*;
``r ~ Bernoulli(p)``. Each function states one formula and where it comes from:

[paper]   stated in the cited paper;
[derived] follows in a line or two and is checked by simulation in the tests;
[approx]  an approximation whose error is itself measured.

All functions are vectorised over numpy arrays and never modify their inputs.

References
----------
.. [1] N. Srivastava, G. Hinton, A. Krizhevsky, I. Sutskever, R. Salakhutdinov,
   "Dropout: a simple way to prevent neural networks from overfitting",
   JMLR 15 (2014) 1929-1958.
.. [2] P. Baldi, P. Sadowski, "The dropout learning algorithm",
   Artificial Intelligence 210 (2014) 78-122.
.. [3] S. Wang, C. Manning, "Fast dropout training", ICML 2013.
.. [4] G. Klambauer, T. Unterthiner, A. Mayr, S. Hochreiter,
   "Self-normalizing neural networks", NeurIPS 2017.
.. [5] L. Wan, M. Zeiler, S. Zhang, Y. LeCun, R. Fergus, "Regularization of
   neural networks using DropConnect", ICML 2013.
.. [6] X. Li, S. Chen, X. Hu, J. Yang, "Understanding the disharmony between
   dropout and batch normalization by variance shift", CVPR 2019.
.. [7] G. Ghiasi, T.-Y. Lin, Q. Le, "DropBlock: a regularization method for
   convolutional networks", NeurIPS 2018.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = [
    "ALPHA",
    "LAMBDA",
    "ALPHA_PRIME",
    "inverted_mean",
    "inverted_var",
    "standard_mean",
    "standard_var",
    "gaussian_std",
    "gaussian_mean",
    "gaussian_var",
    "alpha_affine",
    "alpha_dropped_value",
    "alpha_mean",
    "alpha_var",
    "alpha_output_moments_over_normal",
    "expected_squared_norm",
    "weighted_sum_var",
    "batch_mean_var",
    "linear_regression_dropout_loss",
    "adaptive_ridge_solution",
    "nwgm_sigmoid",
    "nwgm_bound",
    "fast_dropout_sigmoid_mean",
    "relu_gaussian_mean",
    "dropconnect_moments",
    "variance_shift",
    "dropblock_gamma",
]

#: SELU scale and alpha [4]_, and the saturation value ``alpha' = -lambda * alpha``.
LAMBDA = 1.0507009873554805
ALPHA = 1.6732632423543772
ALPHA_PRIME = -LAMBDA * ALPHA  # -1.7580993408473766


# --- §1 the two classic Bernoulli schemes -------------------------------------------------
def inverted_mean(x, keep_prob):
    """E[r x / p] = x  [derived from [1]_ §10]."""
    return np.asarray(x, dtype=float) * 1.0


def inverted_var(x, keep_prob):
    """Var[r x / p] = x² (1 − p) / p  [derived]."""
    x = np.asarray(x, dtype=float)
    return x**2 * (1.0 - keep_prob) / keep_prob


def standard_mean(x, keep_prob):
    """E[r x] = p x: the train mean that test-time weight scaling ``W_test = pW`` matches [1]_ §4."""
    return np.asarray(x, dtype=float) * keep_prob


def standard_var(x, keep_prob):
    """Var[r x] = x² p (1 − p)  [derived]."""
    x = np.asarray(x, dtype=float)
    return x**2 * keep_prob * (1.0 - keep_prob)


# --- §5 Gaussian multiplicative noise -----------------------------------------------------
def gaussian_std(keep_prob):
    """Std of the multiplicative noise ``r' ~ N(1, (1 − p)/p)`` [1]_ §10.

    Keras' ``GaussianDropout(rate)`` uses ``sqrt(rate / (1 − rate))``, the same number.
    """
    return np.sqrt((1.0 - keep_prob) / keep_prob)


def gaussian_mean(x, keep_prob):
    """E[x r'] = x  [1]_ §10."""
    return np.asarray(x, dtype=float) * 1.0


def gaussian_var(x, keep_prob):
    """Var[x r'] = x² (1 − p)/p: the same first two moments as inverted Bernoulli [1]_ §10."""
    return inverted_var(x, keep_prob)


# --- §5 alpha dropout ---------------------------------------------------------------------
def alpha_affine(keep_prob):
    """Affine correction ``(a, b)`` of alpha dropout [4]_ (keep probability ``q``).

    ``a = (q + α'² q (1 − q))^(-1/2)``, ``b = −a (1 − q) α'``. At q = 0.9:
    a = 0.921285, b = 0.161971.
    """
    q = np.asarray(keep_prob, dtype=float)
    a = (q + ALPHA_PRIME**2 * q * (1.0 - q)) ** -0.5
    b = -a * (1.0 - q) * ALPHA_PRIME
    return a, b


def alpha_dropped_value(keep_prob):
    """Value a dropped unit takes: ``a α' + b`` (−1.457739 at q = 0.9) [4]_."""
    a, b = alpha_affine(keep_prob)
    return a * ALPHA_PRIME + b


def alpha_mean(x, keep_prob):
    """Per-input train mean ``E[y | x] = a (q x + α'(1 − q)) + b`` [4]_ — not equal to x."""
    a, b = alpha_affine(keep_prob)
    x = np.asarray(x, dtype=float)
    return a * (keep_prob * x + ALPHA_PRIME * (1.0 - keep_prob)) + b


def alpha_var(x, keep_prob):
    """Per-input train variance ``a² q (1 − q) (x − α')²``  [derived].

    ``y = a (α' + d (x − α')) + b`` is affine in ``d ~ Bernoulli(q)``.
    """
    a, _ = alpha_affine(keep_prob)
    x = np.asarray(x, dtype=float)
    return a**2 * keep_prob * (1.0 - keep_prob) * (x - ALPHA_PRIME) ** 2


def alpha_output_moments_over_normal(keep_prob):
    """Mean and variance of the alpha-dropout output when ``x ~ N(0, 1)``: (0, 1) [4]_.

    Computed from the formulas rather than assumed, so a test can hold the
    constants to the contract: mean ``a(α'(1−q)) + b``, variance
    ``a² (q + α'² q (1−q))`` for ``E x = 0, E x² = 1``.
    """
    a, b = alpha_affine(keep_prob)
    q = keep_prob
    mean = a * (ALPHA_PRIME * (1.0 - q)) + b
    second = a**2 * (q * 1.0 + ALPHA_PRIME**2 * (1.0 - q)) + 2 * a * b * ALPHA_PRIME * (1.0 - q) + b**2
    return mean, second - mean**2


# --- §1 norms, sums and batch means -------------------------------------------------------
def expected_squared_norm(a, keep_prob, *, rescale=True):
    """``E ||D∘A/p||² = ||A||² / p``; without the rescale ``E ||D∘A||² = p ||A||²``  [derived].

    The mean of every unit is preserved by ``1/p``; the squared 2-norm is not.
    """
    sq = float(np.sum(np.asarray(a, dtype=float) ** 2))
    return sq / keep_prob if rescale else sq * keep_prob


def weighted_sum_var(w, a, keep_prob, *, shared=False):
    """Var of ``S = Σ_j w_j a_j r_j / p``  [derived].

    Independent masks: ``(1−p)/p Σ w_j² a_j²``; one mask shared by all units:
    ``(1−p)/p (Σ w_j a_j)²``.
    """
    wa = np.asarray(w, dtype=float) * np.asarray(a, dtype=float)
    factor = (1.0 - keep_prob) / keep_prob
    return factor * (np.sum(wa) ** 2 if shared else np.sum(wa**2))


def batch_mean_var(a, keep_prob, *, shared=False):
    """Var of the batch mean of inverted-dropout outputs of activations ``a_b``  [derived].

    Per-sample masks: ``(1−p)/p Σ_b a_b² / B²``; one mask shared across the batch:
    ``(1−p)/p · ā²``.
    """
    a = np.asarray(a, dtype=float)
    factor = (1.0 - keep_prob) / keep_prob
    return factor * (np.mean(a) ** 2 if shared else np.sum(a**2) / a.size**2)


# --- §2 linear regression -----------------------------------------------------------------
def linear_regression_dropout_loss(X, y, w, keep_prob):
    """``E_R ||y − (R∘X) w||² = ||y − pXw||² + p(1−p) ||Γw||²``, ``Γ = diag(XᵀX)^½`` [1]_ §9.1."""
    X = np.asarray(X, dtype=float)
    w = np.asarray(w, dtype=float)
    resid = np.asarray(y, dtype=float) - keep_prob * X @ w
    gamma_sq = np.sum(X**2, axis=0)
    return float(resid @ resid + keep_prob * (1.0 - keep_prob) * np.sum(gamma_sq * w**2))


def adaptive_ridge_solution(X, y, keep_prob):
    """Minimiser ``w~`` of ``||y − X w~||² + (1−p)/p ||Γ w~||²`` [1]_ §9.1.

    ``w~ = (XᵀX + (1−p)/p diag(XᵀX))⁻¹ Xᵀ y``; the dropout weights are ``w = w~ / p``.
    """
    X = np.asarray(X, dtype=float)
    gram = X.T @ X
    penalty = (1.0 - keep_prob) / keep_prob * np.diag(np.diag(gram))
    return np.linalg.solve(gram + penalty, X.T @ np.asarray(y, dtype=float))


# --- §4 through nonlinearities ------------------------------------------------------------
def nwgm_sigmoid(outputs, probs):
    """Normalised weighted geometric mean ``G / (G + G')`` of sigmoid outputs [2]_.

    ``G = Π O_i^{P_i}``, ``G' = Π (1 − O_i)^{P_i}``. For O = (σ(0.5), σ(1)) with equal
    weights it is 0.679179 = σ(0.75).
    """
    o = np.asarray(outputs, dtype=float)
    w = np.asarray(probs, dtype=float)
    log_g = np.sum(w * np.log(o))
    log_g1 = np.sum(w * np.log1p(-o))
    return float(special.expit(log_g - log_g1))


def nwgm_bound(expectation):
    """Baldi–Sadowski bound ``|E − NWGM| ≤ E(1−E)|1−2E| / (1 − 2E(1−E))`` [2]_ (max 0.1501)."""
    e = np.asarray(expectation, dtype=float)
    return e * (1 - e) * np.abs(1 - 2 * e) / (1 - 2 * e * (1 - e))


def fast_dropout_sigmoid_mean(mu, s2):
    """``E σ(Y) ≈ σ(μ / sqrt(1 + π s² / 8))`` for ``Y ~ N(μ, s²)``  [3]_ [approx]."""
    return special.expit(np.asarray(mu, dtype=float) / np.sqrt(1.0 + np.pi * np.asarray(s2) / 8.0))


def relu_gaussian_mean(mu, s):
    """``E relu(Y) = μ Φ(μ/s) + s φ(μ/s)`` for ``Y ~ N(μ, s²)``  [derived]; ≥ relu(μ) (Jensen)."""
    mu = np.asarray(mu, dtype=float)
    s = np.asarray(s, dtype=float)
    z = mu / s
    return mu * stats.norm.cdf(z) + s * stats.norm.pdf(z)


def dropconnect_moments(W, v, keep_prob):
    """Mean and variance of ``u = (M∘W) v``, ``M_ij ~ Bernoulli(p)``: ``pWv``, ``p(1−p)(W∘W)(v∘v)`` [5]_."""
    W = np.asarray(W, dtype=float)
    v = np.asarray(v, dtype=float)
    return keep_prob * W @ v, keep_prob * (1.0 - keep_prob) * (W**2) @ (v**2)


def variance_shift(mean, var, keep_prob):
    """Test/train variance ratio of inverted dropout feeding batch norm [6]_.

    ``Var_train = (c² + v)/p − c²``, ``Var_test = v`` for input mean ``c`` and variance
    ``v``; returns ``Var_test / Var_train`` (= p when c = 0).
    """
    var_train = (mean**2 + var) / keep_prob - mean**2
    return var / var_train


def dropblock_gamma(keep_prob, block_size, feat_size):
    """Seed rate ``γ = (1 − keep)/bs² · fs²/(fs − bs + 1)²`` of DropBlock [7]_."""
    return (1.0 - keep_prob) / block_size**2 * feat_size**2 / (feat_size - block_size + 1) ** 2
