"""Statistical checks: one decision each, at the battery's split false-fail rate."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from stats_dropout._internal.numerics import MOMENT_ULPS, ulp_tol
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
from stats_dropout.verification.checks.exact import accepted_bias


def rounding_rtol(run, p, power=1):
    """Dead band of a ratio statistic of degree ``power`` in the outputs (mean: 1, variance: 2).

    Each output carries a relative rounding error of at most half an ulp of its dtype; a ratio
    of sums of such terms is then off by at most ``power · eps/2`` when the terms share a sign,
    allowed: ``power`` ulps (``power · eps``) for mixed signs (alpha dropout's projections). A
    kept scale rounded in a low dtype (accepted by check_kept_scale, bias ``b``) moves the
    statistic by ``power · |b|``. Sums are in float64: ``MOMENT_ULPS`` ulps of float64. Nothing
    else is excused, so a real bias beyond the rounding still fails.
    """
    return power * (ulp_tol(run.x.dtype, 1) + accepted_bias(run, p)) + ulp_tol(np.float64, MOMENT_ULPS)


def channel_axis_of(run):
    """The probe's channel axis, non-negative: declared (``Implementation.channel_axis``), else
    the one non-batch axis the declared shared axes leave unshared, else 1 (channels-first)."""
    ndim = run.x.ndim
    axis = getattr(run.impl, "channel_axis", None)
    if axis is None:
        shared = run.contract.shared_axes
        if isinstance(shared, tuple) and shared:
            free = [a for a in range(1, ndim) if a not in {s % ndim for s in shared}]
            axis = free[0] if len(free) == 1 else 1
        else:
            axis = 1
    return int(axis) % ndim

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
    d = decide_keep_rate(ev.kept, ev.trials, p, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                         property="fraction of kept units equals keep_prob")
    return from_decision(name, p, d, lazy_hint(run, p))


def check_keep_rate_per_position(run, p):
    """The keep rate equals keep_prob at every non-batch position (Holm over positions)."""
    name = "check_keep_rate_per_position"
    if (reason := unusable(run, name, p, need_masks=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    counts, trials = ev.entry_counts.sum(axis=0), ev.entry_trials.sum(axis=0)
    ok = trials > 0
    if ok.sum() < 2:
        return skipped(name, p, "fewer than 2 positions with observable masks")
    d = decide_keep_rate(counts[ok], trials[ok], p, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                         property="keep rate equals keep_prob at every position")
    return from_decision(name, p, d, lazy_hint(
        run, p, fallback="Some positions are kept more or less often than others: is the mask drawn for "
                         "one row and reused, or indexed wrongly?"))


def check_keep_rate_per_channel(run, p):
    """The keep rate equals keep_prob in every channel (Holm over channels).

    The channel axis is the implementation's (:func:`channel_axis_of`): ``channel_axis=-1`` for
    channels-last layers such as keras' SpatialDropout2D, 1 for channels-first.
    """
    name = "check_keep_rate_per_channel"
    if run.x.ndim < 3:
        return skipped(name, p, "input has fewer than 3 dimensions: channels are positions here")
    if (reason := unusable(run, name, p, need_masks=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    axis = channel_axis_of(run)
    other = tuple(a for a in range(ev.entry_counts.ndim) if a != axis)
    d = decide_keep_rate(ev.entry_counts.sum(axis=other), ev.entry_trials.sum(axis=other), p,
                         false_fail_rate=run.alpha, false_pass_rate=run.beta,
                         property=f"keep rate equals keep_prob in every channel (axis {axis})")
    return from_decision(name, p, d)


def check_keep_rate_vs_input(run, p):
    """The keep rate does not depend on the input's sign or magnitude (chi-square homogeneity)."""
    name = "check_keep_rate_vs_input"
    if (reason := unusable(run, name, p, need_masks=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    if run.contract.shared_axes:
        return skipped(name, p, "masks are shared across inputs of different values")
    used = ev.group_trials > 0
    if used.sum() < 2 or p == 1:
        return skipped(name, p, "fewer than two input groups (e.g. an all-positive probe) or keep_prob = 1")
    kept, trials = ev.group_kept[used], ev.group_trials[used]
    table = np.vstack([kept, trials - kept])
    if np.any(table.sum(axis=1) == 0):
        stat, pvalue = 0.0, 1.0
    else:
        stat, pvalue = sps.chi2_contingency(table, correction=False)[:2]
    rates = kept / trials
    g = len(rates)
    pooled = kept.sum() / trials.sum()
    # Smallest difference between two groups' rates seen with power 1 − β (normal approx).
    z = sps.norm.isf(run.alpha / 2) + sps.norm.isf(run.beta)
    se_diff = np.sqrt(pooled * (1 - pooled) * (2 / trials.min()))
    mde = float(z * se_diff)
    spread = float(rates.max() - rates.min())
    half = float(sps.norm.isf(run.alpha / 2) * se_diff)  # normal interval for the largest difference
    d = Decision(property="largest difference of keep rates between input groups",
                 method=f"chi-square homogeneity over {g} groups", estimate=spread, expected=0.0,
                 ci_low=spread - half, ci_high=spread + half, pvalue=float(pvalue), false_fail_rate=run.alpha,
                 false_pass_rate=run.beta, min_detectable_effect=mde, n=int(trials.sum()),
                 rejected=bool(pvalue < run.alpha),
                 details={"groups": dict(zip(np.array(ev.group_labels)[used], rates.round(5)))})
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


def check_mean_per_unit(run, p):
    """``E[train(x)]`` equals the contract's mean at every unit (Holm over units).

    With a keep/drop mask the kept values are exact (check_kept_scale), so a unit's mean is
    right iff its keep count is ``Binomial(draws, p)``: an exact binomial test per unit, valid
    for any number of draws (a t test is not, when a unit happens to be kept every time).
    With Gaussian noise the unit's mean is exactly normal with the contract's variance: a z test.
    """
    name = "check_mean_per_unit"
    if (reason := unusable(run, name, p)):
        return skipped(name, p, reason)
    if p == 1:
        return skipped(name, p, "keep_prob = 1: covered by check_keep_prob_one")
    ev = run.evidence(p)
    prop = "train-time mean equals the expected mean at every unit"
    if run.contract.has_masks:
        ok = ev.entry_trials > 0
        d = decide_keep_rate(ev.entry_counts[ok], ev.entry_trials[ok], p, false_fail_rate=run.alpha,
                             false_pass_rate=run.beta, property=prop + " (per-unit keep counts)")
    else:
        mom = ev.moments.to_result(None)
        x = run.x.astype(np.float64)
        mu, var = run.contract.mean(x, p), run.contract.var(x, p)
        d = decide_mean_equal(mom, mu, false_fail_rate=run.alpha, false_pass_rate=run.beta, scale=mu,
                              rtol=rounding_rtol(run, p), atol=1e-300, property=prop,
                              null_sd=np.sqrt(var))  # a unit's mean of Gaussian noise is exactly normal
    return from_decision(name, p, d, lazy_hint(run, p, prefix="Some units are biased. "))


def check_variance(run, p):
    """Pooled ``Σ (y − μ)² / Σ σ²`` equals 1: the spread matches theory (THEORY.md §1, §5)."""
    name = "check_variance"
    if (reason := unusable(run, name, p)):
        return skipped(name, p, reason)
    if p == 1:
        return skipped(name, p, "keep_prob = 1: zero variance, covered by check_keep_prob_one")
    ev = run.evidence(p)
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
    usable = ev.row_sizes >= 10
    if p == 1 or usable.sum() < 2 or not ev.row_counts:
        return skipped(name, p, "fewer than 2 rows with 10 or more observable mask entries, or keep_prob = 1")
    counts = np.concatenate([c[usable] for c in ev.row_counts])
    sizes = np.tile(ev.row_sizes[usable], len(ev.row_counts))
    d = decide_dispersion(counts, sizes, None, false_fail_rate=run.alpha, false_pass_rate=run.beta,
                          property="variance of kept counts per row / binomial variance")
    hint = ("Dispersion far below 1 means every row keeps (almost) the same number of units: "
            "units must be kept independently (e.g. rand(...) < keep_prob), not by sampling a fixed "
            "count. Far above 1 means rows are kept or dropped together.")
    return from_decision(name, p, d, hint)


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
    axes = [a for a in ev.axis_pairs if a != 0 and ev.axis_pairs[a].n]
    if not axes or p == 1:
        return skipped(name, p, "no pair of independent units along a non-batch axis, or keep_prob = 1")
    alpha = run.alpha / len(axes)
    decisions = [_correlation_decision(f"correlation of neighbouring masks along axis {a}",
                                       ev.axis_pairs[a], alpha, run.beta) for a in axes]
    d = min(decisions, key=lambda q: q.pvalue)
    return from_decision(name, p, d, lazy_hint(
        run, p, fallback="Units must be dropped independently; a mask shared along an axis must be declared "
                         "with shared_axes."))


def check_independence_rows(run, p):
    """Masks of neighbouring batch rows are uncorrelated (unless the batch axis is shared)."""
    name = "check_independence_rows"
    if (reason := unusable(run, name, p, need_masks=True, need_variation=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    if 0 not in ev.axis_pairs or p == 1:
        return skipped(name, p, "batch axis shared by design, a single row, or keep_prob = 1")
    d = _correlation_decision("correlation of masks of neighbouring batch rows", ev.axis_pairs[0],
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
    d = _correlation_decision("correlation of masks of successive calls", ev.call_pairs, run.alpha, run.beta)
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
    r = ev.noise_sample
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
    x = run.x.astype(np.float64)
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
    d = min(decisions, key=lambda q: q.pvalue)
    return from_decision(name, p, d, "Alpha dropout must keep the mean 0 and variance 1 of N(0, 1) "
                                      "inputs: dropped units take a·α' + b, kept units a·x + b.")


