"""The two sweeps over schemes × keep_prob: :func:`sweep_schemes` (the battery, the
``schemes`` command) and :func:`sweep_summary` (the report's table), with its per-cell
seeds and on-disk cell cache."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pandas as pd
from scipy import stats as _sps

from stats_dropout._internal.files import atomic_write_text
from stats_dropout._internal.provenance import source_fingerprint
from stats_dropout._internal.validation import draws_iv, keep_prob_iv, positive_int_iv, probability_iv, seed_iv
from stats_dropout.inference.montecarlo import estimate_statistic_moments
from stats_dropout.inference.stats import (
    decide_equivalence,
    decide_keep_rate,
    projection_ratio,
    squared_deviation_ratio,
    t_interval,
    tost_sample_size,
)
from stats_dropout.reference.probes import scheme_probe
from stats_dropout.reference.schemes import SCHEMES, get_scheme, resolve_shared_axes
from stats_dropout.reference.theory import alpha_dropped_value
from stats_dropout.verification.scheme_checks import count_scheme_decisions, verify_scheme

#: The ``schemes`` command's grid: 0.1, 0.2, …, 0.9 and 1.0.
DEFAULT_KEEP_PROBS = tuple(round(0.1 * k, 1) for k in range(1, 11))

#: The report's grid (issue #5): 0.05, 0.10, …, 0.95 and 1.0.
REPORT_KEEP_PROBS = tuple(round(0.05 * k, 2) for k in range(1, 20)) + (1.0,)

#: Deliberately wrong implementations swept next to the reference schemes so that a learner
#: sees what a bias looks like. ``no_rescale``: units masked at train without the 1/keep_prob,
#: identity at eval — the bug the seed thread's question 2 is about.
CONTRASTS = {"no_rescale": "masked without 1/keep_prob at train, identity at eval (a bug)"}

#: Version of the per-cell computation; part of the cache key, bump when a cell changes.
_CELL_VERSION = 1


# --- the battery sweep (the `schemes` command) ---------------------------------------------
def _sweep_schemes_iv(schemes, keep_probs, relative_error, false_fail_rate, false_pass_rate, seed,
                      max_draws):
    schemes = tuple(SCHEMES) if schemes is None else tuple(schemes)
    if not schemes:
        raise ValueError("`schemes` must name at least one scheme; got an empty sequence")
    for name in schemes:
        get_scheme(name)
    keep_probs = tuple(keep_prob_iv(p, "keep_probs") for p in keep_probs)
    if not keep_probs:
        raise ValueError("`keep_probs` must hold at least one value; got an empty sequence")
    return (schemes, keep_probs, probability_iv(relative_error, "relative_error"),
            probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"), seed_iv(seed),
            None if max_draws is None else draws_iv(max_draws, "max_draws"))


def sweep_schemes(schemes=None, keep_probs=DEFAULT_KEEP_PROBS, *, relative_error=0.01,
                  false_fail_rate=1e-6, false_pass_rate=1e-3, seed=0, max_draws=None,
                  progress=False):
    """Verify every scheme at every keep probability; one row per decision.

    The total ``false_fail_rate`` covers the whole sweep (Bonferroni over every decision of
    every scheme and keep probability), so a correct sweep fails by chance with probability
    at most ``false_fail_rate``.

    Returns
    -------
    pandas.DataFrame
        Columns ``scheme, keep_prob, contract, decision, property, estimate, expected, ci_low,
        ci_high, pvalue, min_detectable_effect, n_draws, false_fail_rate, passed, seed``.
    """
    (schemes, keep_probs, relative_error, false_fail_rate, false_pass_rate, seed,
     max_draws) = _sweep_schemes_iv(schemes, keep_probs, relative_error, false_fail_rate,
                                    false_pass_rate, seed, max_draws)
    # Count decisions first so the total error rate is split over all of them.
    n_decisions = sum(count_scheme_decisions(name, p) for name in schemes for p in keep_probs)
    grid = [(name, p) for name in schemes for p in keep_probs]
    if progress:
        from tqdm.auto import tqdm

        grid = tqdm(grid, desc="schemes × keep_prob", unit="cell")
    rows = []
    for name, p in grid:
        res = verify_scheme(name, p, relative_error=relative_error, false_fail_rate=false_fail_rate,
                            false_pass_rate=false_pass_rate, seed=seed, n_decisions=n_decisions,
                            max_draws=max_draws)
        for key, d in res.decisions.items():
            rows.append({
                "scheme": name, "keep_prob": p, "contract": get_scheme(name).contract,
                "decision": key, "property": d.property, "estimate": d.estimate,
                "expected": d.expected, "ci_low": d.ci_low, "ci_high": d.ci_high,
                "pvalue": d.pvalue, "min_detectable_effect": d.min_detectable_effect,
                "n_draws": res.draws, "false_fail_rate": d.false_fail_rate,
                "passed": not d.rejected, "seed": seed,
            })
    return pd.DataFrame(rows)


def format_schemes_table(frame):
    """A compact text table of :func:`sweep_schemes`: one line per scheme and keep_prob."""
    wide = frame.pivot_table(index=["scheme", "keep_prob"], columns="decision", values="estimate",
                             aggfunc="first", sort=False)
    wide["n_draws"] = frame.groupby(["scheme", "keep_prob"], sort=False)["n_draws"].first()
    wide["verdict"] = np.where(frame.groupby(["scheme", "keep_prob"], sort=False)["passed"].all(),
                               "pass", "FAIL")
    return wide.reset_index().to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")


# --- the summary sweep (the report) --------------------------------------------------------
SUMMARY_COLUMNS = [
    "scheme", "keep_prob", "contract", "n_draws", "expected_output_rms",
    "bias", "bias_ci_low", "bias_ci_high",
    "relative_bias", "relative_bias_ci_low", "relative_bias_ci_high", "relative_bias_pvalue",
    "tost_margin", "tost_pvalue", "equivalent",
    "var_theory", "var_empirical", "var_ratio", "var_ratio_ci_low", "var_ratio_ci_high",
    "keep_rate", "keep_rate_ci_low", "keep_rate_ci_high", "keep_rate_pvalue", "keep_trials",
    "confidence_level", "seed", "cell_seed",
]


def cell_seed(seed, scheme, keep_prob):
    """Seed of one cell: a hash of the run seed and the cell, independent of the grid's order.

    Cells get independent streams (their intervals are independent), and adding a keep
    probability to the grid leaves every other cell's numbers unchanged.
    """
    digest = hashlib.sha256(f"{seed}|{scheme}|{float(keep_prob)!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _summary_target(name):
    """``(scheme, eval_fn, contract)``: the scheme whose train pass is sampled, and the eval."""
    if name == "no_rescale":
        scheme = get_scheme("standard")
        return scheme, lambda x, p: np.array(x, dtype=np.float64), "mean"
    scheme = get_scheme(name)
    return scheme, scheme.eval, scheme.contract


def _draws_for_margin(sd, margin, alpha, power, min_draws, max_draws):
    """Draws for TOST to declare equivalence at ``margin`` with probability ``power`` when the
    true bias is 0: ``n = ((z_{1−α} + z_{(1+power)/2}) σ / ε)²`` (normal approximation,
    :func:`stats_dropout.inference.stats.tost_sample_size`), at least ``min_draws``, at most ``max_draws``
    (``min_draws`` uncapped when σ is not positive)."""
    n = tost_sample_size(sd, margin, alpha=alpha, power=power, min_draws=min_draws)
    if not sd > 0 or max_draws is None:
        return n
    return min(n, max_draws)


def summary_cell(cell):
    """One cell of :func:`sweep_summary`; a pure function of ``cell`` (a dict), picklable.

    ``cell`` holds ``scheme, keep_prob, seed, margin, alpha, power, level, min_draws,
    max_draws`` and optionally ``cache_dir``: if given, a finished cell is written there
    atomically and read back instead of recomputed.
    """
    cache_path = None
    if cell.get("cache_dir"):
        cache_path = os.path.join(cell["cache_dir"], _cell_key(cell) + ".json")
        if os.path.exists(cache_path):
            with open(cache_path, encoding="utf-8") as fh:
                return json.load(fh)
    row = _compute_summary_cell(cell)
    if cache_path is not None:
        atomic_write_text(cache_path, json.dumps(row, sort_keys=True))
    return row


def _cell_key(cell):
    keyed = {k: v for k, v in cell.items() if k != "cache_dir"}
    keyed["_version"] = _CELL_VERSION
    keyed["_source"] = source_fingerprint()  # a cached cell is reused only by the code that made it
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:32]


def _cell_statistic(scheme, x, e, p):
    """Per-draw statistic of a summary cell: projection ratio, squared-deviation ratio, kept count.

    Returns ``(statistic, has_variance, axes)``. The kept count takes one element per mask entry
    (index 0 along the shared axes): entries are independent Bernoulli(p) trials, so their kept
    count is exactly binomial.
    """
    mu, var = scheme.train_mean(x, p), scheme.train_var(x, p)
    axes = resolve_shared_axes(scheme.shared_axes, x.ndim, scheme.name)
    rep = (slice(None),) + tuple(0 if ax in axes else slice(None) for ax in range(x.ndim))
    dropped = alpha_dropped_value(p) if scheme.noise == "alpha" else 0.0
    ratio = projection_ratio(x, e)
    devs = squared_deviation_ratio(mu, var) if np.sum(var) > 0 else None

    def statistic(samples):
        cols = [ratio(samples)]
        cols.append(devs(samples) if devs is not None
                    else np.sum((samples - mu) ** 2, axis=tuple(range(1, samples.ndim))))
        kept = samples[rep] != dropped
        cols.append(kept.reshape(len(samples), -1).sum(axis=1).astype(np.float64))
        return np.column_stack(cols)

    return statistic, devs is not None, axes


def _bias_fields(rel, rel_se, n, level, margin, alpha, rms):
    """The relative bias with its t interval and p-value, and its TOST verdict at ``margin``."""
    rel_low, rel_high = t_interval(rel, rel_se, n - 1, level)
    t_stat = rel / rel_se if rel_se > 0 else (0.0 if rel == 0 else np.inf)
    rel_p = float(2 * _sps.t.sf(abs(t_stat), n - 1))
    tost = decide_equivalence(rel, rel_se, margin, df=n - 1, alpha=alpha)
    return {
        "bias": rel * rms, "bias_ci_low": rel_low * rms, "bias_ci_high": rel_high * rms,
        "relative_bias": rel, "relative_bias_ci_low": rel_low,
        "relative_bias_ci_high": rel_high, "relative_bias_pvalue": rel_p,
        "tost_margin": margin, "tost_pvalue": tost.pvalue, "equivalent": bool(tost.equivalent),
    }


def _variance_fields(mean, se, n, level, var_theory, has_variance, size):
    """Empirical against theoretical variance: their ratio with a t interval."""
    if has_variance:
        ratio_mean = float(mean[1])
        ratio_low, ratio_high = t_interval(ratio_mean, float(se[1]), n - 1, level)
        var_emp = ratio_mean * var_theory
        var_ratio = (ratio_mean, float(ratio_low), float(ratio_high))
    else:
        var_emp = float(mean[1]) / size
        var_ratio = (np.nan, np.nan, np.nan)
    return {"var_theory": var_theory, "var_empirical": var_emp, "var_ratio": var_ratio[0],
            "var_ratio_ci_low": var_ratio[1], "var_ratio_ci_high": var_ratio[2]}


def _keep_rate_fields(mean_kept, n, n_entries, p, level, has_mask):
    """The keep rate with its exact (Clopper–Pearson) interval and binomial p-value."""
    if has_mask:
        trials = n_entries * n
        kept_total = int(round(float(mean_kept) * n))
        keep = decide_keep_rate(np.int64(kept_total), np.int64(trials), p, false_fail_rate=1 - level)
        values = (keep.estimate, keep.ci_low, keep.ci_high, keep.pvalue, trials)
    else:
        values = (np.nan, np.nan, np.nan, np.nan, 0)
    return dict(zip(("keep_rate", "keep_rate_ci_low", "keep_rate_ci_high", "keep_rate_pvalue", "keep_trials"),
                    values))


def _compute_summary_cell(cell):
    name, p, seed = cell["scheme"], float(cell["keep_prob"]), int(cell["seed"])
    level, margin, alpha = cell["level"], cell["margin"], cell["alpha"]
    scheme, eval_fn, contract = _summary_target(name)
    x = scheme_probe(seed=seed)
    e = np.asarray(eval_fn(x, p), dtype=np.float64)
    # Exact variance of one draw of the projection ratio sizes the run.
    sd_ratio = scheme.projection_ratio_sd(e, x, p)
    draws = _draws_for_margin(sd_ratio, margin, alpha, cell["power"], cell["min_draws"],
                              cell["max_draws"])
    statistic, has_variance, axes = _cell_statistic(scheme, x, e, p)
    # Seeded BoundScheme: vectorised blocks; the result does not depend on the workers.
    moments = estimate_statistic_moments(scheme.bind(p), x, statistic, draws=draws, seed=int(cell["cell_seed"]),
                                         workers=int(cell.get("workers", 1)))
    n = moments.n_draws
    mean, se = moments.mean, moments.std_error
    rms = float(np.sqrt(np.mean(e**2)))
    n_entries = int(np.prod([1 if ax in axes else s for ax, s in enumerate(x.shape)]))
    row = {
        "scheme": name, "keep_prob": p, "contract": contract, "n_draws": n, "expected_output_rms": rms,
        **_bias_fields(float(mean[0] - 1.0), float(se[0]), n, level, margin, alpha, rms),
        **_variance_fields(mean, se, n, level, float(np.mean(scheme.train_var(x, p))), has_variance, x.size),
        **_keep_rate_fields(mean[2], n, n_entries, p, level, scheme.noise in ("bernoulli", "alpha")),
        "confidence_level": level, "seed": seed, "cell_seed": int(cell["cell_seed"]),
    }
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()}


def _sweep_summary_iv(schemes, keep_probs, seed, margin, alpha, power, level, min_draws, max_draws):
    known = tuple(SCHEMES) + tuple(CONTRASTS)
    schemes = known if schemes is None else tuple(schemes)
    if not schemes:
        raise ValueError("`schemes` must name at least one scheme; got an empty sequence")
    for name in schemes:
        if name not in known:
            raise ValueError(f"`schemes` must hold names from {', '.join(known)}; got {name!r}")
    keep_probs = tuple(keep_prob_iv(p, "keep_probs") for p in keep_probs)
    if not keep_probs:
        raise ValueError("`keep_probs` must hold at least one value; got an empty sequence")
    if not (isinstance(margin, (int, float)) and margin > 0):
        raise ValueError(f"`margin` must be a positive number; got {margin!r}")
    return (schemes, keep_probs, seed_iv(seed), float(margin), probability_iv(alpha, "alpha"),
            probability_iv(power, "power"), probability_iv(level, "level"),
            positive_int_iv(min_draws, "min_draws"),
            None if max_draws is None else draws_iv(max_draws, "max_draws"))


def sweep_summary(schemes=None, keep_probs=REPORT_KEEP_PROBS, *, seed=0, margin=0.01, alpha=0.05,
                  power=0.999, level=0.95, min_draws=2000, max_draws=200_000, cache_dir=None,
                  executor="local", scheduler=None, progress=False, workers=1):
    """Bias, variance and keep rate of every scheme at every keep probability.

    Parameters
    ----------
    schemes : sequence of str, optional
        Registered scheme names and/or :data:`CONTRASTS`; default all of both.
    keep_probs : sequence of float in (0, 1], default :data:`REPORT_KEEP_PROBS`
    seed : int, default 0
        Run seed; each cell derives its own (:func:`cell_seed`).
    margin : float, default 0.01
        TOST equivalence margin on the *relative* bias: "E[train] equals eval within 1 %".
    alpha : float, default 0.05
        TOST level: probability of declaring equivalence when the bias is at the margin.
    power : float, default 0.999
        Draws are computed so that an unbiased scheme is declared equivalent with this
        probability (capped by ``max_draws``).
    level : float, default 0.95
        Confidence level of every reported interval.
    min_draws, max_draws : int
        Bounds on the computed number of draws per cell (``max_draws=None``: no cap).
    cache_dir : str, optional
        Per-cell cache: finished cells are stored here (keyed by every option) and reused.
    executor, scheduler : see :func:`stats_dropout._internal.executors.map_cells`
    progress : bool
        A progress bar over cells.
    workers : int
        Threads per cell for the Monte-Carlo blocks (results do not depend on it).

    Returns
    -------
    pandas.DataFrame
        One row per (scheme, keep_prob), columns :data:`SUMMARY_COLUMNS`:
        ``bias`` is the relative bias times the RMS of the expected output (the probe is a
        standardised normal array of shape ``checks.PROBE_SHAPE``); ``relative_bias`` is β in
        ``E[train] = (1 + β) eval`` estimated by the projection ratio; ``var_ratio`` is the
        summed empirical over theoretical per-unit variance; ``keep_rate`` counts kept mask
        entries (independent trials; NaN for Gaussian noise, which has no mask).
    """
    (schemes, keep_probs, seed, margin, alpha, power, level, min_draws,
     max_draws) = _sweep_summary_iv(schemes, keep_probs, seed, margin, alpha, power, level,
                                    min_draws, max_draws)
    from stats_dropout._internal.executors import map_cells

    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    cells = [
        {"scheme": name, "keep_prob": p, "seed": seed, "cell_seed": cell_seed(seed, name, p),
         "margin": margin, "alpha": alpha, "power": power, "level": level,
         "min_draws": min_draws, "max_draws": max_draws, "cache_dir": cache_dir,
         "workers": workers}
        for name in schemes for p in keep_probs
    ]
    if progress and cache_dir is not None:
        cached = sum(os.path.exists(os.path.join(cache_dir, _cell_key(c) + ".json")) for c in cells)
        if cached:  # a cached rerun must not look like a fresh run
            from tqdm.auto import tqdm

            # tqdm.write: the report's experiments bar may already be on the terminal
            tqdm.write(f"stats-dropout: {cached} of {len(cells)} sweep cells from cache ({cache_dir}; "
                       "keyed by options, package version and source hash)", file=sys.stderr)
    if progress and executor == "local":
        # Our own bar, named for the phase (map_cells' says "cells"); Dask keeps map_cells'.
        from tqdm.auto import tqdm

        with tqdm(total=len(cells), desc="sweep (scheme × keep_prob)", unit="cell") as bar:
            rows = map_cells(_Ticking(summary_cell, bar), cells)
    else:
        rows = map_cells(summary_cell, cells, executor=executor, scheduler=scheduler, progress=progress)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return frame


class _Ticking:
    """``fn`` that advances a progress bar after each cell (local executor only)."""

    def __init__(self, fn, bar):
        self._fn, self._bar = fn, bar

    def __call__(self, cell):
        result = self._fn(cell)
        self._bar.update(1)
        return result
