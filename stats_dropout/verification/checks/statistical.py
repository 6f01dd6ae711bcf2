"""Statistical checks: one decision each, at the battery's split false-fail rate.

The per-group ones (every unit, position, channel) live in
:mod:`~stats_dropout.verification.checks.groups`; they are listed here too, in battery order.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

from stats_dropout.inference.montecarlo import RunningMoments
from stats_dropout.inference.results import Decision
from stats_dropout.inference.stats import decide_dispersion, decide_keep_rate, decide_mean_equal
from stats_dropout.verification.checks.common import (
    failed,
    from_decision,
    identical_calls_of,
    identical_masks_message,
    lazy_hint,
    skipped,
    unusable,
)
from stats_dropout.verification.checks.exact import rounding_rtol
from stats_dropout.verification.checks.groups import (
    check_keep_rate_per_channel,
    check_keep_rate_per_position,
    check_mean_per_unit,
)

__all__ = [
    "check_keep_rate",
    "check_keep_rate_per_position",
    "check_keep_rate_per_channel",
    "check_keep_rate_vs_input",
    "check_mean",
    "check_mean_per_unit",
    "check_variance",
    "check_row_dispersion",
    "check_independence_units",
    "check_independence_rows",
    "check_independence_calls",
    "check_noise_distribution",
    "check_output_moments",
]

def check_keep_rate(run, p):
    """The fraction of kept units equals keep_prob (exact binomial, Clopper–Pearson)."""
    name = "check_keep_rate"
    if (reason := unusable(run, name, p, need_masks=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    d = decide_keep_rate(ev.masks.kept, ev.masks.trials, p, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                         property="fraction of kept units equals keep_prob")
    return from_decision(name, p, d, lazy_hint(run, p))


def _homogeneity_mde(rate, trials, alpha, beta):
    """Smallest difference δ between two groups' keep rates the chi-square test sees with power 1 − β.

    The test has ``g − 1`` degrees of freedom; two groups of the smallest size n at ``r ± δ/2``
    (the others at r) give it the noncentrality ``λ = n δ² / (2 r (1 − r))``. δ solves
    ``P(χ'²_{g−1}(λ) > χ²_{g−1, 1−α}) = 1 − β`` (noncentral chi-square), not the two-group z
    formula, which ignores the extra degrees of freedom (measured false-pass 0.19 at a stated 0.1).
    """
    df = len(trials) - 1
    crit = sps.chi2.isf(alpha, df)
    lam = optimize.brentq(lambda nc: sps.ncx2.sf(crit, df, nc) - (1 - beta), 1e-9, 1e6)
    return float(math.sqrt(2 * lam * rate * (1 - rate) / trials.min()))


def check_keep_rate_vs_input(run, p):
    """The keep rate does not depend on the input's sign or magnitude (chi-square homogeneity)."""
    name = "check_keep_rate_vs_input"
    if (reason := unusable(run, name, p, need_masks=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    if run.contract.shared_axes:
        return skipped(name, p, "masks are shared across inputs of different values")
    used = ev.masks.group_trials > 0
    if used.sum() < 2 or p == 1:
        return skipped(name, p, "fewer than two input groups (e.g. an all-positive probe) or keep_prob = 1")
    kept, trials = ev.masks.group_kept[used], ev.masks.group_trials[used]
    table = np.vstack([kept, trials - kept])
    if np.any(table.sum(axis=1) == 0):
        stat, pvalue = 0.0, 1.0
    else:
        stat, pvalue = sps.chi2_contingency(table, correction=False)[:2]
    rates = kept / trials
    g = len(rates)
    pooled = kept.sum() / trials.sum()
    mde = _homogeneity_mde(pooled, trials, run.alpha, run.beta)
    # The figure: the pair of groups whose rates differ most, with a Bonferroni interval over
    # the g(g − 1)/2 pairs at level 1 − α: all pairs are covered at once with probability
    # ≥ 1 − α, so the selected pair is too (a max − min spread with a per-pair interval is not:
    # the spread is biased upwards under the null, and its interval excluded 0 in 20 % of runs).
    hi, lo = int(np.argmax(rates)), int(np.argmin(rates))
    pairs = g * (g - 1) // 2
    level = run.alpha / max(pairs, 1)
    se = math.sqrt(rates[hi] * (1 - rates[hi]) / trials[hi] + rates[lo] * (1 - rates[lo]) / trials[lo])
    spread = float(rates[hi] - rates[lo])
    half = float(sps.norm.isf(level / 2) * se)
    labels = np.array(ev.masks.group_labels)[used]
    d = Decision(property=f"difference of keep rates between input groups ({labels[hi]} − {labels[lo]})",
                 method=f"chi-square homogeneity over {g} groups", estimate=spread, expected=0.0,
                 ci_low=spread - half, ci_high=spread + half, pvalue=float(pvalue), false_fail_rate=run.alpha,
                 false_pass_rate=run.beta, min_detectable_effect=mde, n=int(trials.sum()),
                 rejected=bool(pvalue < run.alpha), ci_level=1 - level,
                 details={"groups": dict(zip(labels, rates.round(5))), "ci_alpha": level, "n_elements": pairs})
    hint = ("Keep rates by input group: " + ", ".join(f"{k}: {v:.4f}" for k, v in d.details["groups"].items())
            + ". The mask must not depend on the input's values (e.g. comparing x or x*rand with keep_prob).")
    return from_decision(name, p, d, hint)


def _pooled_moments(ev, column):
    s = ev.statistics()[:, column : column + 1]
    return RunningMoments.from_samples(s).to_result(None)


def check_mean(run, p):
    """``E[train(x)]`` equals the contract's mean, pooled over units (0.5 % relative target)."""
    name = "check_mean"
    if (reason := unusable(run, name, p)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    mom = _pooled_moments(ev, 0)
    d = decide_mean_equal(mom, 1.0, false_fail_rate=run.alpha, false_pass_rate=run.beta, scale=1.0,
                          rtol=rounding_rtol(run, p), null_sd=run.null_sd(p, "mean"),
                          property="train-time mean / expected mean (projection ratio)")
    want = "the eval output" if run.contract.name != "moments" else "the alpha-dropout mean"
    return from_decision(name, p, d, lazy_hint(run, p, prefix=f"E[train(x)] should equal {want} unit by unit. "))


def check_variance(run, p):
    """The spread across calls matches theory: kept counts under masks, the noise variance otherwise.

    Under a keep/drop contract the output is a function of the mask (check_kept_scale), so
    ``Σ (y − μ)²`` is affine in the mask, like the projection ratio of check_mean: a test of it
    repeats check_mean (identical p-values in 868 of 868 audited runs). What the other checks do
    not see is a correlation between *distant* units: the number of kept units per call,
    ``K = Σ_i m_i``, has variance ``N p (1 − p)`` only if the N mask entries are independent
    (``Var K = Σ Var m_i + Σ_{i≠j} Cov``). A mask that keeps a fixed count per call (sampling
    without replacement) has ``Var K = 0``; one that draws a per-call rate has ``Var K ∝ N²``.
    Index of dispersion of K across calls (rate estimated, ``draws − 1`` degrees of freedom).
    With Gaussian noise: pooled ``Σ (y − μ)² / Σ σ²`` against 1 (THEORY.md §1, §5).
    """
    name = "check_variance"
    if (reason := unusable(run, name, p)):
        return skipped(name, p, reason)
    if p == 1:
        return skipped(name, p, "keep_prob = 1: zero variance, covered by check_keep_prob_one")
    ev = run.evidence(p)
    if run.contract.has_masks:
        size = int(ev.masks.row_sizes.sum()) if ev.masks.row_sizes is not None else 0
        totals = np.array([int(c.sum()) for c in ev.masks.row_counts], dtype=np.int64)
        if size < 2 or totals.size < 3 or np.all(totals == 0) or np.all(totals == size):
            return skipped(name, p, "fewer than 3 calls, or every unit kept (or dropped) in every call")
        d = decide_dispersion(totals, size, None, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                              property="variance of the number of kept units per call / binomial variance")
        return from_decision(name, p, d, (
            "Far below 1: every call keeps (almost) the same number of units, as sampling a fixed count "
            "does; units must be kept independently (e.g. rand(...) < keep_prob). Far above 1: the "
            "keep rate itself varies from call to call, or units far apart share their mask."))
    mom = _pooled_moments(ev, 1)
    d = decide_mean_equal(mom, 1.0, false_fail_rate=run.alpha, false_pass_rate=run.beta, scale=1.0,
                          rtol=rounding_rtol(run, p, power=2), null_sd=run.null_sd(p, "variance"),
                          property="train variance / theoretical variance")
    hint = ""
    if run.contract.noise == "gaussian":
        hint = ("The multiplicative noise must have standard deviation sqrt((1 − keep_prob)/keep_prob) = "
                f"{math.sqrt((1 - p) / p):.4f}; estimated ratio {d.estimate:.4f} of the expected variance.")
    return from_decision(name, p, d, hint or lazy_hint(run, p))


def check_row_dispersion(run, p):
    """Kept counts per row are Binomial (a mask that keeps a fixed number per row fails)."""
    name = "check_row_dispersion"
    if (reason := unusable(run, name, p, need_masks=True, need_variation=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    usable = ev.masks.row_sizes >= 10
    if p == 1 or usable.sum() < 2 or not ev.masks.row_counts:
        return skipped(name, p, "fewer than 2 rows with 10 or more observable mask entries, or keep_prob = 1")
    counts = np.concatenate([c[usable] for c in ev.masks.row_counts])
    sizes = np.tile(ev.masks.row_sizes[usable], len(ev.masks.row_counts))
    d = decide_dispersion(counts, sizes, None, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                          property="variance of kept counts per row / binomial variance")
    hint = ("Dispersion far below 1 means every row keeps (almost) the same number of units: "
            "units must be kept independently (e.g. rand(...) < keep_prob), not by sampling a fixed "
            "count. Far above 1 means rows are kept or dropped together.")
    return from_decision(name, p, d, hint)


def worst_of(decisions, alpha):
    """One check's decision from k decisions made at α/k each (Bonferroni): the smallest p-value's.

    Its p-value is adjusted (×k) and stated at the check's level α, the rate at which the check
    as a whole fails a correct implementation; its interval stays at 1 − α/k, one of k that hold
    together at 1 − α (``Decision.coverage``). Reporting the selected decision at α/k (as both
    users of this once did) understated the check's false-fail rate and overstated the coverage
    of its interval (check_output_moments: excluded its target 0.015 of the time at a stated 0.0087).
    """
    k = len(decisions)
    d = min(decisions, key=lambda q: q.pvalue)
    if k == 1:
        return d
    return dataclasses.replace(d, pvalue=min(1.0, d.pvalue * k), false_fail_rate=alpha, ci_level=1 - alpha / k,
                               details={**d.details, "ci_alpha": alpha / k, "n_elements": k})


def _correlation_decision(prop, sums, alpha, beta):
    r = sums.correlation()
    n = sums.n
    if not np.isfinite(r):
        r = 0.0 if n == 0 else (1.0 if sums.sab == sums.sa == sums.sb else 0.0)
    z = r * math.sqrt(max(n, 1))
    pvalue = float(2 * sps.norm.sf(abs(z)))
    half = sps.norm.isf(alpha / 2) / math.sqrt(max(n, 1))
    mde = float((sps.norm.isf(alpha / 2) + sps.norm.isf(beta)) / math.sqrt(max(n, 1)))
    return Decision(property=prop, method="phi correlation z test", estimate=float(r), expected=0.0,
                    ci_low=float(r - half), ci_high=float(r + half), pvalue=pvalue, false_fail_rate=alpha,
                    false_pass_rate=beta, min_detectable_effect=mde, n=int(n), rejected=bool(pvalue < alpha))


def check_independence_units(run, p):
    """Masks of neighbouring units (along each non-batch axis) are uncorrelated."""
    name = "check_independence_units"
    if (reason := unusable(run, name, p, need_masks=True, need_variation=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    axes = [a for a in ev.pairs.axis_pairs if a != 0 and ev.pairs.axis_pairs[a].n]
    if not axes or p == 1:
        return skipped(name, p, "no pair of independent units along a non-batch axis, or keep_prob = 1")
    alpha = run.alpha / len(axes)
    decisions = [_correlation_decision(f"correlation of neighbouring masks along axis {a}",
                                       ev.pairs.axis_pairs[a], alpha, run.beta) for a in axes]
    d = worst_of(decisions, run.alpha)
    return from_decision(name, p, d, lazy_hint(
        run, p, fallback="Units must be dropped independently; a mask shared along an axis must be declared "
                         "with shared_axes."))


def check_independence_rows(run, p):
    """Masks of neighbouring batch rows are uncorrelated (unless the batch axis is shared)."""
    name = "check_independence_rows"
    if (reason := unusable(run, name, p, need_masks=True, need_variation=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    if 0 not in ev.pairs.axis_pairs or p == 1:
        return skipped(name, p, "batch axis shared by design, a single row, or keep_prob = 1")
    d = _correlation_decision("correlation of masks of neighbouring batch rows", ev.pairs.axis_pairs[0],
                              run.alpha, run.beta)
    return from_decision(name, p, d, lazy_hint(
        run, p, fallback="Every example in a batch must get its own mask (per-sample dropout); if one mask "
                         "per batch is intended, declare shared_axes=(0,)."))


def check_independence_calls(run, p):
    """Masks of successive calls are uncorrelated (a reseeded RNG repeats them)."""
    name = "check_independence_calls"
    if (reason := unusable(run, name, p, need_masks=True, need_variation=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    if p == 1:
        return skipped(name, p, "keep_prob = 1: nothing is dropped")
    d = _correlation_decision("correlation of masks of successive calls", ev.pairs.call_pairs, run.alpha, run.beta)
    if d.rejected and identical_calls_of(run, p):
        return failed(name, p, identical_masks_message(run, p).rstrip(".") + ".", d)
    return from_decision(name, p, d, "Successive calls must draw fresh masks.")


def check_noise_distribution(run, p):
    """Gaussian contract: the multiplicative noise ``y/x`` is N(1, (1 − p)/p) (Kolmogorov–Smirnov)."""
    name = "check_noise_distribution"
    if run.contract.noise != "gaussian":
        return skipped(name, p, f"not applicable to the {run.contract.name!r} contract")
    if (reason := unusable(run, name, p)):
        return skipped(name, p, reason)
    if p == 1:
        return skipped(name, p, "keep_prob = 1: no noise")
    ev = run.evidence(p)
    r = ev.noise.values
    sd = math.sqrt((1 - p) / p)
    res = sps.ks_1samp(r, sps.norm(1.0, sd).cdf)
    n = r.size
    # Smallest KS distance detected: critical value plus the power margin (asymptotic bounds).
    mde = float(math.sqrt(-math.log(run.alpha / 2) / (2 * n)) + math.sqrt(-math.log(run.beta) / (2 * n)))
    # DKW band: the true sup-distance lies within D ± sqrt(ln(2/α) / (2n)) with probability 1 − α.
    band = math.sqrt(math.log(2 / run.alpha) / (2 * n))
    stat = float(res.statistic)
    d = Decision(property="sup-distance of the noise y/x from N(1, (1 − keep_prob)/keep_prob)",
                 method="Kolmogorov–Smirnov", estimate=stat, expected=0.0, ci_low=max(0.0, stat - band),
                 ci_high=stat + band, pvalue=float(res.pvalue), false_fail_rate=run.alpha, false_pass_rate=run.beta,
                 min_detectable_effect=mde, n=int(n), rejected=bool(res.pvalue < run.alpha))
    return from_decision(name, p, d, f"The noise should be normal with mean 1 and sd {sd:.4f}.")


def check_output_moments(run, p):
    """Moments contract: the output's mean and mean square match alpha dropout's (0 and 1 for N(0,1))."""
    name = "check_output_moments"
    if run.contract.name != "moments":
        return skipped(name, p, f"not applicable to the {run.contract.name!r} contract")
    if (reason := unusable(run, name, p)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    x = run.x_unit
    mu, var = run.contract.mean(x, p), run.contract.var(x, p)
    targets = (float(np.mean(mu)), float(np.mean(var + mu**2)))
    decisions = []
    # The output mean is near 0: its rounding band is absolute, half an ulp of a typical output
    # (≤ eps/2 · sqrt(E y²)) and the accepted scale bias of it, as rounding_rtol for degree 1.
    rms = math.sqrt(max(targets[1], 0.0))
    for column, target, label, power in ((2, targets[0], "output mean", 1), (3, targets[1], "output mean square", 2)):
        mom = _pooled_moments(ev, column)
        band = rounding_rtol(run, p, power)
        decisions.append(decide_mean_equal(mom, target, false_fail_rate=run.alpha / 2, false_pass_rate=run.beta,
                                           rtol=band, atol=band * rms if power == 1 else 1e-12, property=label))
    d = worst_of(decisions, run.alpha)
    return from_decision(name, p, d, "Alpha dropout must keep the mean 0 and variance 1 of N(0, 1) "
                                      "inputs: dropped units take a·α' + b, kept units a·x + b.")


