"""Norms of dropped-out matrices (claims C05, C06): ``E‖D∘A/p‖`` against ``‖A‖`` (THEORY.md §1).

Dividing by keep_prob keeps the expected *entries*, not the norm: by Jensen's inequality the
expected norm of the rescaled matrix exceeds the norm of the original. The forum thread's
matrix is :func:`thread_matrix`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from stats_dropout._internal.rng import stream_rng
from stats_dropout._internal.validation import keep_probs_iv, positive_int_iv, seed_iv
from stats_dropout.inference import stats
from stats_dropout.inference.montecarlo import estimate_statistic_moments
from stats_dropout.inference.results import TrainMoments
from stats_dropout.reference import theory
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.studies.training_experiments import decide_with_dead_band

__all__ = ["thread_matrix", "norm_table"]


def thread_matrix():
    """The forum thread's matrix ``np.random.seed(42); np.random.randn(3, 4)``.

    Drawn from a private ``RandomState(42)`` (the same numbers) so numpy's global RNG state
    is left untouched; its 2-norm (Frobenius) is 2.672810732482017.

    Examples
    --------
    >>> import numpy as np
    >>> from stats_dropout.studies.experiments import thread_matrix
    >>> float(np.linalg.norm(thread_matrix()))
    2.672810732482017
    """
    return np.random.RandomState(42).randn(3, 4)


def _norm_statistic(samples):
    flat = np.asarray(samples, dtype=np.float64).reshape(samples.shape[0], -1)
    sq = np.sum(flat**2, axis=1)
    return np.stack([sq, np.sqrt(sq)], axis=1)


def norm_table(*, keep_probs=(0.5, 0.8), seed=0, draws=100_000, random_shapes=((3, 4), (20, 30)),
               false_fail_rate=1e-6):
    """``E‖D∘A/p‖²`` vs ``‖A‖²/p`` and ``E‖D∘A/p‖`` vs ``‖A‖``, with and without rescale.

    Matrices: the forum thread's ``np.random.seed(42); np.random.randn(3, 4)`` (:func:`thread_matrix`,
    ‖A‖ = 2.672810732482017) and standard-normal matrices of ``random_shapes``. ``‖·‖`` is the
    2-norm of the thread (numpy's default matrix norm, Frobenius). The squared norm has a closed
    form (``theory.expected_squared_norm``): ``‖A‖²/p`` with the rescale, ``p‖A‖²`` without —
    the mean of each unit is preserved by ``1/p``, the energy is not. The norm itself has none;
    it is tested against ``‖A‖`` (the thread's claim that the rescale keeps the 2-norm) and
    lies below ``sqrt(E‖·‖²)`` by Jensen. ``norm_A_scaled`` is ``‖A‖/p`` (the thread's
    2.6728 → 3.3410 at p = 0.8: ``‖mA‖ = |m|‖A‖``).

    Returns
    -------
    DataFrame
        ``matrix, shape, keep_prob, rescale, norm_A, norm_A_scaled, mean_sq_norm, sq_ci_low,
        sq_ci_high, sq_expected, sq_pvalue, sq_rejected, mean_norm, norm_ci_low, norm_ci_high,
        norm_ratio, norm_ratio_ci_low, norm_ratio_ci_high, norm_equals_A_pvalue,
        norm_equals_A_rejected, jensen_bound, n_draws, seed, confidence_level``.
    """
    keep_probs = keep_probs_iv(keep_probs)
    seed = seed_iv(seed)
    draws = positive_int_iv(draws, "draws")
    if draws < 2:
        raise ValueError(f"`draws` must be at least 2; got {draws}")
    matrices = [("thread", thread_matrix())]
    for i, shape in enumerate(random_shapes):
        matrices.append((f"random {shape[0]}x{shape[1]}", stream_rng(seed, "norm_matrices", i).standard_normal(shape)))
    n_dec = 2 * len(matrices) * len(keep_probs) * 2
    alpha = stats.split_false_fail_rate(false_fail_rate, n_dec)
    rows = []
    k = 0
    for (name, a), p, rescale in itertools.product(matrices, keep_probs, (True, False)):
        k += 1
        scheme = get_scheme("inverted" if rescale else "standard").bind(p)
        mom = estimate_statistic_moments(scheme, a, _norm_statistic, draws=draws, seed=seed + 104729 * k)
        norm_a = float(np.linalg.norm(a))
        sq = TrainMoments(mean=mom.mean[:1], var=mom.var[:1], n_draws=draws, seed=mom.seed)
        nm = TrainMoments(mean=mom.mean[1:], var=mom.var[1:], n_draws=draws, seed=mom.seed)
        expected_sq = theory.expected_squared_norm(a, p, rescale=rescale)
        d_sq = decide_with_dead_band(sq, expected_sq, false_fail_rate=alpha, property="E squared norm")
        d_n = decide_with_dead_band(nm, norm_a, false_fail_rate=alpha, property="E norm equals ||A||")
        rows.append({
            "matrix": name, "shape": "x".join(map(str, a.shape)), "keep_prob": p, "rescale": rescale,
            "norm_A": norm_a, "norm_A_scaled": float(np.linalg.norm(a / p)),
            "mean_sq_norm": d_sq.estimate, "sq_ci_low": d_sq.ci_low, "sq_ci_high": d_sq.ci_high,
            "sq_expected": expected_sq, "sq_pvalue": d_sq.pvalue, "sq_rejected": d_sq.rejected,
            "mean_norm": d_n.estimate, "norm_ci_low": d_n.ci_low, "norm_ci_high": d_n.ci_high,
            "norm_ratio": d_n.estimate / norm_a, "norm_ratio_ci_low": d_n.ci_low / norm_a,
            "norm_ratio_ci_high": d_n.ci_high / norm_a, "norm_equals_A_pvalue": d_n.pvalue,
            "norm_equals_A_rejected": d_n.rejected, "jensen_bound": float(np.sqrt(expected_sq)),
            "n_draws": draws, "seed": seed, "confidence_level": 1 - alpha,
        })
    return pd.DataFrame(rows)
