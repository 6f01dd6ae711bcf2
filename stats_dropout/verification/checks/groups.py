"""Per-group checks: the keep rate, or the mean, at every unit, position and channel.

Each runs one test per group and Holm-adjusts over the m groups, so it can reject only a
p-value below ``α/m``. Whether that is attainable at the draws of the run is computed, not
assumed (:mod:`stats_dropout.inference.units`): where no count could ever be rejected the
check says "not enough draws to judge" with the draws it needs, never a pass that cannot fail,
and its stated detectable effect is the exact binomial one on each side.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from stats_dropout.inference.results import Decision
from stats_dropout.inference.stats import decide_keep_rate, decide_mean_equal
from stats_dropout.inference.units import min_rate_errors_detectable_exactly, min_trials_for_silent_group
from stats_dropout.verification.checks.common import from_decision, lazy_hint, skipped, unusable
from stats_dropout.verification.checks.exact import rounding_rtol

__all__ = ["check_keep_rate_per_position", "check_keep_rate_per_channel", "check_mean_per_unit",
           "channel_axis_of", "decide_per_group"]


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


def decide_per_group(run, name, p, counts, trials, prop, what):
    """A Holm-adjusted exact binomial decision over groups, or a "not enough draws" skip.

    Parameters
    ----------
    counts, trials : int arrays
        Kept count and observable trials of each group (groups with no trial are left out).
    what : str
        The groups, in words ("unit", "position").

    Returns
    -------
    Decision or CheckResult
        The decision, its ``min_detectable_effect`` the exact one (worse side when both sides
        can reject, else the side that can, named in ``property``); a skipped result when no
        group could be rejected at these draws.
    """
    ok = trials > 0
    counts, trials = counts[ok], trials[ok]
    m = int(counts.size)
    if m == 0:
        return skipped(name, p, f"nothing observable: no {what} has a non-zero input")
    n_min = int(trials.min())
    down, up = min_rate_errors_detectable_exactly(n_min, p, false_fail_rate=run.alpha,
                                                  false_pass_rate=run.beta, n_tests=m)
    if math.isinf(down) and math.isinf(up):
        ev = run.evidence(p)
        per_draw = max(n_min / max(ev.draws, 1), 1e-300)
        need = math.ceil(min_trials_for_silent_group(p, m, false_fail_rate=run.alpha) / per_draw)
        return skipped(name, p, f"not enough draws to judge: with {n_min} trials per {what} no {what} "
                                f"among {m} can be rejected at the false-fail rate {run.alpha:.2g}; a "
                                f"never-kept {what} is caught from {need} draws (this run: {ev.draws})")
    d = decide_keep_rate(counts, trials, p, false_fail_rate=run.alpha, false_pass_rate=run.beta, property=prop)
    if math.isinf(up):
        mde, side = down, f" (a {what} kept at a rate {down:.3g} too low is caught; too high: not at these draws)"
    elif math.isinf(down):
        mde, side = up, f" (a {what} kept at a rate {up:.3g} too high is caught; too low: not at these draws)"
    else:
        mde, side = max(down, up), ""
    return dataclasses.replace(d, property=prop + side, min_detectable_effect=mde,
                               method=d.method.replace("Clopper-Pearson", "Clopper-Pearson; exact power"))


def _result(run, name, p, outcome, hint=""):
    """:func:`decide_per_group`'s outcome as a check result: a skip as it is, a decision judged."""
    return from_decision(name, p, outcome, hint) if isinstance(outcome, Decision) else outcome


def check_keep_rate_per_position(run, p):
    """The keep rate equals keep_prob at every non-batch position (exact binomial, Holm over positions)."""
    name = "check_keep_rate_per_position"
    if (reason := unusable(run, name, p, need_masks=True)):
        return skipped(name, p, reason)
    ev = run.evidence(p)
    counts, trials = ev.masks.entry_counts.sum(axis=0), ev.masks.entry_trials.sum(axis=0)
    if np.count_nonzero(trials) < 2:
        return skipped(name, p, "fewer than 2 positions with observable masks")
    out = decide_per_group(run, name, p, counts.ravel(), trials.ravel(),
                           "keep rate equals keep_prob at every position", "position")
    return _result(run, name, p, out, lazy_hint(
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
    other = tuple(a for a in range(ev.masks.entry_counts.ndim) if a != axis)
    out = decide_per_group(run, name, p, ev.masks.entry_counts.sum(axis=other), ev.masks.entry_trials.sum(axis=other),
                           f"keep rate equals keep_prob in every channel (axis {axis})", "channel")
    return _result(run, name, p, out)


def check_mean_per_unit(run, p):
    """``E[train(x)]`` equals the contract's mean at every unit (Holm over units).

    With a keep/drop mask the kept values are exact (check_kept_scale), so a unit's mean is
    right iff its keep count is ``Binomial(draws, p)``: an exact binomial test per unit, valid
    for any number of draws; the battery draws enough for a never-kept unit to be caught among
    all of them (``BatteryRun.unit_draws``). With Gaussian noise the unit's mean is exactly
    normal with the contract's variance: a z test, drawn to catch a zeroed unit.
    """
    name = "check_mean_per_unit"
    if (reason := unusable(run, name, p)):
        return skipped(name, p, reason)
    if p == 1:
        return skipped(name, p, "keep_prob = 1: covered by check_keep_prob_one")
    ev = run.evidence(p)
    prop = "train-time mean equals the expected mean at every unit"
    hint = lazy_hint(run, p, prefix="Some units are biased. ")
    if run.contract.has_masks:
        out = decide_per_group(run, name, p, ev.masks.entry_counts.ravel(), ev.masks.entry_trials.ravel(),
                               prop + " (per-unit keep counts)", "unit")
        return _result(run, name, p, out, hint)
    mom = ev.moments.to_result(None)
    x = run.x_unit
    mu, var = run.contract.mean(x, p), run.contract.var(x, p)  # an all-zero probe: unusable() said so
    d = decide_mean_equal(mom, mu, false_fail_rate=run.alpha, false_pass_rate=run.beta, scale=mu,
                          rtol=rounding_rtol(run, p), atol=1e-300, property=prop,
                          null_sd=np.sqrt(var))  # a unit's mean of Gaussian noise is exactly normal
    return from_decision(name, p, d, hint)
