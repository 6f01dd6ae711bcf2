"""The normalised geometric mean (NWGM): exact over every mask, for softmax and sigmoid units.

Baldi & Sadowski (Artificial Intelligence 210, 2014) show that one dropped layer followed by a
softmax has an ensemble whose normalised geometric mean equals the weight-scaled output; for a
sigmoid unit NWGM = σ(E[input]). Both are checked here by enumerating all ``2^n`` masks
(THEORY.md §4), as DataFrames.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import special

from stats_dropout._internal.rng import stream_rng
from stats_dropout._internal.validation import keep_prob_iv, keep_probs_iv, positive_int_iv, seed_iv
from stats_dropout.reference import theory

__all__ = ["enumerate_masks", "softmax_geometric_mean_check", "nwgm_table"]


def enumerate_masks(n_units, keep_prob):
    """All ``2^n_units`` binary masks (rows) and their probabilities ``p^k (1 − p)^(n − k)``.

    The exact expectation over dropout masks is ``probs @ f(masks)``: no sampling error.
    """
    n_units = positive_int_iv(n_units, "n_units")
    if n_units > 20:
        raise ValueError(f"`n_units` must be at most 20 for enumeration; got {n_units}")
    masks = np.array(list(itertools.product((0.0, 1.0), repeat=n_units)))
    k = masks.sum(axis=1)
    probs = keep_prob**k * (1.0 - keep_prob) ** (n_units - k)
    return masks, probs


def _softmax_check_iv(n_units, keep_prob, seed, n_classes):
    n_units = positive_int_iv(n_units, "n_units")
    if n_units > 12:
        raise ValueError(f"`n_units` must be at most 12 (2^n_units masks are enumerated); got {n_units}")
    return n_units, keep_prob_iv(keep_prob), seed_iv(seed), positive_int_iv(n_classes, "n_classes")


def softmax_geometric_mean_check(n_units=10, *, keep_prob=0.5, seed=0, n_classes=4):
    """Normalised geometric mean of the softmax over all ``2^n_units`` masks vs weight scaling.

    For ``z(r) = W(r∘h) + b`` (standard dropout of a hidden layer ``h``), the normalised
    weighted geometric mean ``NWGM_c = Π_r softmax_c(z(r))^{P(r)} / Σ_k Π_r softmax_k(z(r))^{P(r)}``
    equals ``softmax(W(p h) + b)`` exactly for every p (log-softmax is linear in the mask up
    to a class-independent term; Hinton et al. 2012 for p = 1/2, Baldi & Sadowski [2]_). The
    arithmetic mean of the softmaxes differs. No sampling: the check is exact up to rounding.

    Returns
    -------
    DataFrame
        One row per class: ``class, nwgm, weight_scaled, abs_deviation, arithmetic_mean,
        arithmetic_gap, max_abs_deviation, max_arithmetic_gap, n_units, n_masks, keep_prob,
        seed`` (``max_*`` over classes, repeated on every row).

    Examples
    --------
    >>> from stats_dropout.studies.experiments import softmax_geometric_mean_check
    >>> df = softmax_geometric_mean_check(10, keep_prob=0.5)
    >>> bool(df.max_abs_deviation.iloc[0] < 1e-12), bool(df.max_arithmetic_gap.iloc[0] > 0.01)
    (True, True)
    """
    n_units, p, seed, n_classes = _softmax_check_iv(n_units, keep_prob, seed, n_classes)
    rng = stream_rng(seed, "softmax_nwgm")
    h = rng.standard_normal(n_units)
    w = rng.standard_normal((n_units, n_classes))
    b = rng.standard_normal(n_classes)
    masks, probs = enumerate_masks(n_units, p)
    logits = (masks * h) @ w + b
    log_sm = logits - special.logsumexp(logits, axis=1, keepdims=True)
    log_g = probs @ log_sm  # log of the weighted geometric mean, per class
    nwgm = special.softmax(log_g)
    weight_scaled = special.softmax((p * h) @ w + b)
    arithmetic = probs @ np.exp(log_sm)
    dev = np.abs(nwgm - weight_scaled)
    agap = arithmetic - weight_scaled
    return pd.DataFrame({
        "class": np.arange(n_classes), "nwgm": nwgm, "weight_scaled": weight_scaled,
        "abs_deviation": dev, "arithmetic_mean": arithmetic, "arithmetic_gap": agap,
        "max_abs_deviation": dev.max(), "max_arithmetic_gap": np.abs(agap).max(),
        "n_units": n_units, "n_masks": masks.shape[0], "keep_prob": p, "seed": seed,
    })


def _nwgm_row(case, outputs, probs, keep_prob, mean_input):
    outputs = np.asarray(outputs, dtype=float)
    probs = np.asarray(probs, dtype=float)
    e = float(probs @ outputs)
    g = float(np.exp(probs @ np.log(outputs)))
    g1 = float(np.exp(probs @ np.log1p(-outputs)))
    nwgm = theory.nwgm_sigmoid(outputs, probs)
    bound = float(theory.nwgm_bound(e))
    if np.all(outputs >= 0.5):
        ordering, holds = "NWGM >= E", nwgm >= e
    elif np.all(outputs <= 0.5):
        ordering, holds = "NWGM <= E", nwgm <= e
    else:
        ordering, holds = "mixed", True
    sig_mean = float(special.expit(mean_input))
    return {"case": case, "keep_prob": keep_prob, "n_outputs": outputs.size, "expectation": e,
            "geometric_mean": g, "geometric_mean_complement": g1, "nwgm": nwgm,
            "sigmoid_of_mean_input": sig_mean, "nwgm_identity_error": abs(nwgm - sig_mean),
            "abs_difference": abs(e - nwgm), "bound": bound, "within_bound": bool(abs(e - nwgm) <= bound),
            "ordering": ordering, "ordering_holds": bool(holds)}


def nwgm_table(*, seed=0, n_units=8, keep_probs=(0.2, 0.5, 0.8)):
    """NWGM vs expectation of a sigmoid unit under dropout, with Baldi–Sadowski's bounds [2]_.

    First row: THEORY.md's worked example ``O = (σ(0.5), σ(1))`` with equal weights
    (E = 0.676759, G = 0.674577, G' = 0.318648, NWGM = 0.679179 = σ(0.75)). Then, for each
    keep_prob, sigmoid units ``σ(w·(r∘x) + b)`` over all ``2^n_units`` masks (exact, no sampling)
    with all outputs ≥ 1/2, all ≤ 1/2, and mixed. Checks: ``NWGM = σ(E S)`` (identity),
    ``|E − NWGM| ≤ E(1−E)|1−2E| / (1 − 2E(1−E))`` and the ordering rule.

    Returns
    -------
    DataFrame
        ``case, keep_prob, n_outputs, expectation, geometric_mean, geometric_mean_complement,
        nwgm, sigmoid_of_mean_input, nwgm_identity_error, abs_difference, bound, within_bound,
        ordering, ordering_holds, seed``.

    Examples
    --------
    >>> from stats_dropout.studies.experiments import nwgm_table
    >>> row = nwgm_table().iloc[0]
    >>> round(float(row.expectation), 6), round(float(row.nwgm), 6)
    (0.676759, 0.679179)
    """
    seed = seed_iv(seed)
    n_units = positive_int_iv(n_units, "n_units")
    if n_units > 12:
        raise ValueError(f"`n_units` must be at most 12; got {n_units}")
    keep_probs = keep_probs_iv(keep_probs)
    rows = [_nwgm_row("THEORY worked example", special.expit([0.5, 1.0]), [0.5, 0.5], np.nan, 0.75)]
    rng = stream_rng(seed, "nwgm_inputs")
    x = np.abs(rng.standard_normal(n_units)) + 0.1
    w = rng.standard_normal(n_units)
    for p in keep_probs:
        masks, probs = enumerate_masks(n_units, p)
        for case, wc, b in (("all outputs >= 1/2", np.abs(w), 0.0), ("all outputs <= 1/2", -np.abs(w), 0.0),
                            ("mixed", w, 0.3)):
            s = (masks * x) @ wc + b
            rows.append(_nwgm_row(case, special.expit(s), probs, p, p * x @ wc + b))
    out = pd.DataFrame(rows)
    out["seed"] = seed
    return out
