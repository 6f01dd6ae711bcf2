"""Sweeps over schemes × keep_prob, summarised as tidy pandas DataFrames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._validation import keep_prob_iv, positive_int_iv, probability_iv, seed_iv
from .checks import count_scheme_decisions, verify_scheme
from .schemes import SCHEMES, get_scheme

__all__ = ["sweep_schemes", "DEFAULT_KEEP_PROBS"]

#: The issue's grid: 0.1, 0.2, …, 0.9 and 1.0.
DEFAULT_KEEP_PROBS = tuple(round(0.1 * k, 1) for k in range(1, 11))


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
            None if max_draws is None else positive_int_iv(max_draws, "max_draws"))


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
        for key, d in res["decisions"].items():
            rows.append({
                "scheme": name, "keep_prob": p, "contract": get_scheme(name).contract,
                "decision": key, "property": d.property, "estimate": d.estimate,
                "expected": d.expected, "ci_low": d.ci_low, "ci_high": d.ci_high,
                "pvalue": d.pvalue, "min_detectable_effect": d.min_detectable_effect,
                "n_draws": res["draws"], "false_fail_rate": d.false_fail_rate,
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
