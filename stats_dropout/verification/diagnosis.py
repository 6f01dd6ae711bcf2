"""Which bug is it? Match measured keep rates and kept-unit scales against known signatures.

A failed battery should name the most likely cause. At keep probability ``p`` the common bugs
leave fingerprints (DESIGN.md "Diagnosis"):

=========================  =============================================================
keep rate ≈ Φ(p)           mask drawn with ``np.random.randn`` instead of ``rand``
keep rate ≈ 1 − p          comparison reversed (``>`` for ``<``) or keep/drop confused
keep rate ≈ 1 − Φ(p)       both of the above
keep rate = 1 or 0         no mask applied, or a mask that is always true / false
scale ≈ 1                  the ``1/keep_prob`` rescale is missing
scale ≈ 1/p²               divided by ``keep_prob`` twice
scale ≈ p                  multiplied by ``keep_prob`` instead of dividing
scale ≈ 1/(1 − p)          divided by the drop probability
rate ≈ 1 − p, scale ≈ 1/(1 − p)   ``keep_prob`` used as the drop probability
outputs only 0 and 1       the mask was returned instead of the masked input
identical masks per call   the RNG is reseeded inside the function
eval ≈ p·x (inverted)      test-time scaling left in an inverted implementation
=========================  =============================================================

A candidate is reported only when the measurement's confidence interval contains it; an
unknown pattern gets the raw evidence and no guess.
"""

from __future__ import annotations

from scipy import stats

__all__ = ["rate_candidates", "scale_candidates", "diagnose"]


def rate_candidates(p):
    """Keep rates that known bugs produce at keep probability ``p``: ``{rate: cause}``."""
    phi = float(stats.norm.cdf(p))
    return {
        "correct": (p, "keep rate equals keep_prob"),
        "randn": (phi, f"keep rate ≈ Φ(keep_prob) = {phi:.4f}: the mask was drawn with "
                       "np.random.randn (normal) instead of np.random.rand (uniform)"),
        "reversed": (1 - p, f"keep rate ≈ 1 − keep_prob = {1 - p:.4f}: the comparison is reversed "
                            "(rand > keep_prob) or keep and drop probabilities are confused"),
        "randn_reversed": (1 - phi, f"keep rate ≈ 1 − Φ(keep_prob) = {1 - phi:.4f}: randn instead of "
                                    "rand and a reversed comparison"),
        "nothing_dropped": (1.0, "nothing is dropped (keep rate 1): no mask is applied, or the mask "
                                 "is always true"),
        "everything_dropped": (0.0, "every unit is dropped (keep rate 0): the mask is always false"),
    }


def scale_candidates(p, contract="inverted"):
    """Kept-unit scales that known bugs produce: ``{name: (scale, cause)}``."""
    if contract == "standard":
        return {
            "correct": (1.0, "kept units equal x"),
            "inverted_rescale": (1 / p, f"kept units scaled by 1/keep_prob = {1 / p:.4f}: an inverted "
                                        "rescale in a standard (eval-scaled) implementation"),
        }
    return {
        "correct": (1 / p, "kept units scaled by 1/keep_prob"),
        "missing": (1.0, "kept units are not rescaled: did you forget to divide by keep_prob?"),
        "twice": (1 / p**2, f"kept units scaled by 1/keep_prob² = {1 / p**2:.4f}: divided by keep_prob twice"),
        "multiplied": (p, f"kept units scaled by keep_prob = {p:.4f}: multiplied by keep_prob instead of "
                          "dividing"),
        "multiplied_twice": (p**2, f"kept units scaled by keep_prob² = {p**2:.4f}: multiplied by keep_prob "
                                   "twice"),
        "drop_prob": (1 / (1 - p) if p < 1 else float("inf"),
                      "kept units scaled by 1/(1 − keep_prob): divided by the drop probability"),
    }


def _contains(low, high, value, slack=0.0):
    return low - slack <= value <= high + slack


def diagnose(*, keep_prob, contract, rate=None, rate_ci=None, scale=None, only_zero_one=False,
             identical_calls=False, eval_ratio=None):
    """Most likely causes of a failure, each with its evidence (a tuple of sentences).

    Parameters
    ----------
    keep_prob : float
    contract : str
    rate : float, optional
        Measured keep rate, with ``rate_ci = (low, high)``.
    scale : float, optional
        Measured kept-unit scale (exact per unit, so compared with a relative tolerance).
    only_zero_one : bool
        Every output value was 0 or 1.
    identical_calls : bool
        Consecutive calls produced identical masks.
    eval_ratio : float, optional
        Measured eval output / input.
    """
    p = keep_prob
    found = []
    if identical_calls:
        found.append("every call drops the same units: the function reseeds the random number "
                     "generator (e.g. np.random.seed(...) inside it), so masks are identical across "
                     "calls — remove the reseed from the forward pass")
    if only_zero_one:
        found.append("the output contains only 0s and 1s: the function returns the mask instead of "
                     "the masked input (return x * mask / keep_prob)")
    rate_match = None
    if rate is not None and rate_ci is not None and p < 1:
        low, high = rate_ci
        matches = [k for k, (v, _) in rate_candidates(p).items() if _contains(low, high, v, 1e-12)]
        if "correct" not in matches and matches:
            rate_match = matches[0]
    scale_match = None
    if scale is not None and contract in ("inverted", "standard"):
        cands = scale_candidates(p, contract)
        matches = [k for k, (v, _) in cands.items() if abs(scale - v) <= 1e-6 * max(abs(v), 1)]
        if "correct" not in matches and matches:
            scale_match = matches[0]
    if rate_match in ("nothing_dropped", "everything_dropped"):
        found.append(rate_candidates(p)[rate_match][1])
        if scale_match and rate_match == "nothing_dropped":
            found.append(scale_candidates(p, contract)[scale_match][1])
    elif rate_match == "reversed" and scale_match == "drop_prob":
        found.append(f"keep rate ≈ 1 − keep_prob = {1 - p:.4f} and kept units scaled by 1/(1 − keep_prob): "
                     "the argument is used as the drop probability — a parameter documented as one "
                     "probability but used as the other")
    else:
        if rate_match:
            found.append(rate_candidates(p)[rate_match][1])
        if scale_match:
            found.append(scale_candidates(p, contract)[scale_match][1])
    if eval_ratio is not None and contract != "standard" and abs(eval_ratio - p) <= 1e-6 and p < 1:
        found.append(f"eval output ≈ keep_prob·x ({p:g}·x): test-time scaling left in an inverted "
                     "implementation — the eval path of inverted dropout is the identity")
    if eval_ratio is not None and contract != "standard" and p < 1 and abs(eval_ratio - 1 / p) <= 1e-6:
        found.append("eval output ≈ x/keep_prob: the eval path divides by keep_prob — at test time "
                     "inverted dropout is the identity (no mask, no 1/keep_prob)")
    return tuple(found)
