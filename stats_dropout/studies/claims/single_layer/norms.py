"""Claims about magnitudes and norms under the rescale: C04 (kept units grow by 1/keep_prob),
C05 (the 2-norm of a dropped matrix) and C06 (the thread's ‖mA‖ = |m|·‖A‖, recomputed)."""

from __future__ import annotations

import math

import numpy as np

from stats_dropout._internal.rng import stream_rng
from stats_dropout.inference.stats import decide_equivalence
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.studies.claims.common import (
    APPROXIMATELY,
    EXACT_RTOL,
    FALSE,
    HOLDS,
    PILOT_DRAWS,
    THREAD_NORM_A,
    THREAD_NORM_B,
    TOST_ALPHA,
    Verdict,
    draws_for_half_width,
    interval_excludes,
    scalar_moments,
    t_interval_floats,
)
from stats_dropout.studies.norms import thread_matrix

__all__ = ["C04_VALUES", "measure_c04", "decide_c04", "measure_c05", "decide_c05", "measure_c06",
           "decide_c06"]


# --- C04 --------------------------------------------------------------------------------------
C04_VALUES = (42.0, -0.573)


def measure_c04(settings):
    p = settings.keep_prob
    x = np.array(C04_VALUES)
    samples = get_scheme("inverted").sample_train(x, p, 1000, rng=stream_rng(settings.seed, "c04_samples"))
    kept = samples != 0
    ratios = (np.abs(samples) / np.abs(x))[kept]
    return {"ratio": float(np.mean(ratios)), "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()), "n_kept": int(kept.sum()), "keep_prob": p,
            "values": [float(v) for v in x], "scaled": [float(v / p) for v in x], "draws": 1000}


def decide_c04(m):
    figure_name = "|kept unit after /keep_prob| ÷ |unit| (min..max over kept units)"
    shown = ", ".join(f"{v:g}/{m['keep_prob']:g} = {s:.5g}" for v, s in zip(m["values"], m["scaled"]))
    if m["ratio_min"] > 1:
        return Verdict(FALSE, figure_name, m["ratio"], m["ratio_min"], m["ratio_max"],
                       f"Dividing by a number below 1 makes magnitudes larger: {shown} — every kept "
                       f"unit grows by 1/keep_prob = {m['ratio']:.4g}.")
    if m["ratio_max"] < 1:
        return Verdict(HOLDS, figure_name, m["ratio"], m["ratio_min"], m["ratio_max"],
                       f"Kept units shrink ({shown}).")
    return Verdict(APPROXIMATELY, figure_name, m["ratio"], m["ratio_min"], m["ratio_max"],
                   f"Kept units neither all grow nor all shrink ({shown}).")


# --- C05 --------------------------------------------------------------------------------------
def _norm_ratio_moments(a, p, seed, draws, rescale):
    scheme = get_scheme("inverted" if rescale else "standard")
    norm = float(np.linalg.norm(a))
    axes = tuple(range(1, 1 + a.ndim))

    def statistic(samples):
        sq = np.sum(samples**2, axis=axes) / norm**2
        return np.column_stack([np.sqrt(sq), sq])

    return scalar_moments(scheme.bind(p), a, statistic, draws, seed)


def measure_c05(settings):
    p, seed = settings.keep_prob, settings.seed
    a = thread_matrix()
    # Norm ratios to ±0.002 (the TOST margin is 0.05; the rescaled ratio is about 1.1).
    pilot = max(_norm_ratio_moments(a, p, seed + 7_919, PILOT_DRAWS, rescale=r)[1].max() for r in (True, False))
    draws = draws_for_half_width(pilot * math.sqrt(PILOT_DRAWS), 0.002, settings)
    mean, se, n = _norm_ratio_moments(a, p, seed, draws, rescale=True)
    mean0, se0, _ = _norm_ratio_moments(a, p, seed + 1, draws, rescale=False)
    big = stream_rng(seed, "c05_matrix").standard_normal((64, 64))
    pilot_big = _norm_ratio_moments(big, p, seed + 7_920, PILOT_DRAWS, rescale=True)[1].max()
    draws_big = draws_for_half_width(pilot_big * math.sqrt(PILOT_DRAWS), 0.002, settings)
    meanb, seb, nb = _norm_ratio_moments(big, p, seed + 2, draws_big, rescale=True)
    low, high = t_interval_floats(mean[0], se[0], n)
    tost = decide_equivalence(float(mean[0] - 1), float(se[0]), 0.05, df=n - 1, alpha=TOST_ALPHA)
    return {"norm_ratio": float(mean[0]), "ci_low": low, "ci_high": high,
            "sq_ratio": float(mean[1]), "sq_ratio_ci": t_interval_floats(mean[1], se[1], n),
            "sq_theory": 1 / p, "no_rescale_ratio": float(mean0[0]),
            "no_rescale_ci": t_interval_floats(mean0[0], se0[0], n),
            "random_64x64_ratio": float(meanb[0]), "random_64x64_ci": t_interval_floats(meanb[0], seb[0], nb),
            "margin": 0.05, "equivalent": bool(tost.equivalent), "keep_prob": p, "draws": 2 * n + nb}


def decide_c05(m):
    fig = "E‖D∘A/p‖ ÷ ‖A‖ on the thread's 3×4 matrix"
    if m["equivalent"]:
        return Verdict(APPROXIMATELY, fig, m["norm_ratio"], m["ci_low"], m["ci_high"],
                       f"The rescaled 2-norm stays within ±{100 * m['margin']:g} % of ‖A‖ on average.")
    if interval_excludes(m["ci_low"], m["ci_high"], 1.0):
        return Verdict(FALSE, fig, m["norm_ratio"], m["ci_low"], m["ci_high"],
                       f"The rescale preserves each unit's average, not the 2-norm: with "
                       f"keep_prob={m['keep_prob']:g} the norm grows to {m['norm_ratio']:.3f}·‖A‖ on "
                       f"average (squared norm {m['sq_ratio']:.4f}·‖A‖², exactly 1/p = "
                       f"{m['sq_theory']:.4f} in theory; {m['random_64x64_ratio']:.3f} on a random "
                       f"64×64 matrix), while without the rescale it shrinks to "
                       f"{m['no_rescale_ratio']:.3f}·‖A‖.")
    return Verdict(APPROXIMATELY, fig, m["norm_ratio"], m["ci_low"], m["ci_high"],
                   "The rescaled norm is close to ‖A‖, not resolved either way.")


# --- C06 --------------------------------------------------------------------------------------
def measure_c06(settings):
    a = thread_matrix()
    m = 1 / 0.8  # the thread's scalar, whatever keep_prob the ledger runs at
    norm_a = float(np.linalg.norm(a))
    norm_b = float(np.linalg.norm(a * m))
    return {"m": m, "norm_a": norm_a, "norm_b": norm_b, "ratio": norm_b / norm_a,
            "identity_error": abs(norm_b - abs(m) * norm_a) / (abs(m) * norm_a),
            "thread_a_error": abs(norm_a - THREAD_NORM_A) / THREAD_NORM_A,
            "thread_b_error": abs(norm_b - THREAD_NORM_B) / THREAD_NORM_B,
            "keep_prob": 0.8, "draws": 0}


def decide_c06(m):
    fig = "‖mA‖ ÷ ‖A‖ at m = 1/0.8 (recomputed)"
    exact = m["identity_error"] <= EXACT_RTOL
    matches = max(m["thread_a_error"], m["thread_b_error"]) <= EXACT_RTOL
    if exact and matches:
        return Verdict(HOLDS, fig, m["ratio"], m["ratio"], m["ratio"],
                       f"Recomputed: ‖A‖ = {m['norm_a']!r}, ‖1.25·A‖ = {m['norm_b']!r}, ratio "
                       f"{m['ratio']:.15g} = |m| up to rounding — the thread's numbers are exact.")
    if exact:
        return Verdict(HOLDS, fig, m["ratio"], m["ratio"], m["ratio"],
                       f"‖mA‖ = |m|·‖A‖ holds, but the recomputed norms ({m['norm_a']:.15g}, "
                       f"{m['norm_b']:.15g}) differ from the thread's printed values.")
    return Verdict(FALSE, fig, m["ratio"], m["ratio"], m["ratio"],
                   f"‖mA‖ differs from |m|·‖A‖ by a relative {m['identity_error']:.3g}.")
