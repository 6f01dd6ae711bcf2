"""Claims about the moments of one layer's output: C01a, C01b (the mean, before and after a
nonlinearity), C02 (the noise the rescale leaves) and C03 (the mean at several keep_probs)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from stats_dropout._internal.rng import stream_rng
from stats_dropout.inference.stats import decide_equivalence
from stats_dropout.reference.probes import scheme_probe
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.studies.claims.common import (
    APPROXIMATELY,
    EXPECTATION_ONLY,
    FALSE,
    HOLDS,
    TOST_ALPHA,
    Verdict,
    draws_for_half_width,
    interval_excludes,
    measure_relative_bias,
    pilot_sd,
    scalar_moments,
    t_interval_floats,
)

__all__ = ["C01B_MARGIN", "C03_KEEP_PROBS", "downstream_setup", "measure_c01a", "decide_c01a",
           "measure_c01b", "decide_c01b", "measure_c02", "decide_c02", "measure_c03", "decide_c03"]


# --- C01 --------------------------------------------------------------------------------------
def downstream_setup(seed, n_units=20):
    """Activations ``a ≥ 0`` (a previous ReLU layer), next-layer weights ``w`` and a bias
    putting the eval pre-activation at 0.5, so the unit sits where ReLU bends."""
    rng = stream_rng(seed, "downstream_network")
    a = np.abs(rng.standard_normal(n_units))
    w = rng.standard_normal(n_units) / math.sqrt(n_units)
    b = 0.5 - float(w @ a)
    return a, w, b


def measure_c01a(settings):
    """The dropout layer's own expectation: relative bias of an inverted layer's mean train
    output against its eval output (TOST ±1 %)."""
    p, seed = settings.keep_prob, settings.seed
    x = scheme_probe(seed=seed)
    layer = measure_relative_bias("inverted", p, x, x, seed, settings, margin=0.01)
    return {"layer": layer, "keep_prob": p, "draws": layer["n"]}


def decide_c01a(m):
    layer = m["layer"]
    fig = "relative bias of E[train] vs eval (the inverted dropout layer itself)"
    if layer["rejected"] and not layer["equivalent"]:
        return Verdict(FALSE, fig, layer["bias"], layer["ci_low"], layer["ci_high"],
                       f"The layer's mean train output differs from its eval output by "
                       f"{100 * layer['bias']:+.2f} %: the equality does not hold here.")
    if not layer["equivalent"]:  # neither shown equal nor shown different: too few draws
        return Verdict(APPROXIMATELY, fig, layer["bias"], layer["ci_low"], layer["ci_high"],
                       f"No difference was detected ({100 * layer['bias']:+.2f} %), but these draws "
                       f"cannot resolve it to ±{100 * layer['margin']:g} %; run with more draws.")
    return Verdict(HOLDS, fig, layer["bias"], layer["ci_low"], layer["ci_high"],
                   f"For the dropout layer itself the average train output equals the test output: "
                   f"measured {100 * layer['bias']:+.3f} %, shown equal within "
                   f"±{100 * layer['margin']:g} %. This is what the 1/keep_prob is for; any single "
                   f"pass still differs (C03).")


#: Equivalence margin of C01b on the relative gap after the nonlinearity (as C01a's on the layer).
C01B_MARGIN = 0.01


def measure_c01b(settings):
    """Through a nonlinearity: the relative gap ``(E[f(z_train)] − f(z_eval)) / f(z_eval)`` of
    one ReLU unit and one sigmoid unit fed by the inverted dropout layer's output."""
    p, seed = settings.keep_prob, settings.seed
    a, w, b = downstream_setup(seed)
    scheme = get_scheme("inverted")
    z_eval = float(w @ a + b)
    eval_out = {"relu": max(z_eval, 0.0), "sigmoid": float(special.expit(z_eval))}

    def statistic(samples):
        z = samples @ w + b
        return np.column_stack([np.maximum(z, 0.0) - eval_out["relu"],
                                special.expit(z) - eval_out["sigmoid"]])

    # Resolve each gap to ±0.2 % of its eval output (the sigmoid's gap is about 1 %).
    sd = pilot_sd(scheme.bind(p), a, statistic, seed + 1)
    draws = draws_for_half_width(sd, [0.002 * abs(eval_out["relu"]), 0.002 * abs(eval_out["sigmoid"])],
                                  settings)
    mean, se, n = scalar_moments(scheme.bind(p), a, statistic, draws, seed + 1)
    gaps = {}
    for j, act in enumerate(("relu", "sigmoid")):
        rel, rel_se = float(mean[j] / eval_out[act]), float(se[j] / eval_out[act])
        low, high = t_interval_floats(rel, rel_se, n)
        tost = decide_equivalence(rel, rel_se, C01B_MARGIN, df=max(n - 1, 1), alpha=TOST_ALPHA)
        gaps[act] = {"relative_gap": rel, "se": rel_se, "ci_low": low, "ci_high": high,
                     "equivalent": bool(tost.equivalent)}
    return {"gaps": gaps, "margin": C01B_MARGIN, "z_eval": z_eval, "n_inputs": len(a),
            "keep_prob": p, "draws": n}


def decide_c01b(m):
    relu, sig = m["gaps"]["relu"], m["gaps"]["sigmoid"]
    margin = m["margin"]
    fig = "relative gap (E[relu(next layer)] − its test output) ÷ test output, after the dropout layer"
    seen = interval_excludes(relu["ci_low"], relu["ci_high"], 0.0)
    where = (f"a ReLU unit fed by the dropout layer (pre-activation {m.get('z_eval', 0.5):g} at test, "
             f"{m.get('n_inputs', 20)} inputs)")
    sig_text = f"a sigmoid unit in the same place is {100 * sig['relative_gap']:+.2f} % off"
    if seen and not relu["equivalent"]:
        return Verdict(FALSE, fig, relu["relative_gap"], relu["ci_low"], relu["ci_high"],
                       f"Not once a nonlinearity follows: the average train output of {where} is "
                       f"{100 * relu['relative_gap']:+.1f} % off its test output ({sig_text}). The "
                       f"equality is exact only while everything after the mask is linear.")
    if relu["equivalent"] and seen:
        return Verdict(APPROXIMATELY, fig, relu["relative_gap"], relu["ci_low"], relu["ci_high"],
                       f"Almost: after {where} the average train output is "
                       f"{100 * relu['relative_gap']:+.2f} % off its test output, within "
                       f"±{100 * margin:g} % but not zero ({sig_text}).")
    if relu["equivalent"]:
        return Verdict(HOLDS, fig, relu["relative_gap"], relu["ci_low"], relu["ci_high"],
                       f"After {where} the average train output still equals the test output "
                       f"(within ±{100 * margin:g} %; {sig_text}).")
    return Verdict(APPROXIMATELY, fig, relu["relative_gap"], relu["ci_low"], relu["ci_high"],
                   f"No gap was resolved after {where} ({100 * relu['relative_gap']:+.2f} %), but these "
                   f"draws cannot show it is within ±{100 * margin:g} %; run with more draws.")


# --- C02 --------------------------------------------------------------------------------------
def measure_c02(settings):
    p, seed = settings.keep_prob, settings.seed
    x = scheme_probe(seed=seed)
    scheme = get_scheme("inverted")
    norm = float(np.sum(x**2))
    axes = tuple(range(1, 1 + x.ndim))

    def statistic(samples):
        spread = np.sum((samples - x) ** 2, axis=axes) / norm
        zeroed = np.mean(samples == 0, axis=axes)
        return np.column_stack([spread, zeroed])

    # Spread to ±1 % of its theoretical value, the zeroed fraction to ±0.002.
    sd = pilot_sd(scheme.bind(p), x, statistic, seed)
    draws = draws_for_half_width(sd, [0.01 * (1 - p) / p, 0.002], settings)
    mean, se, n = scalar_moments(scheme.bind(p), x, statistic, draws, seed)
    low, high = t_interval_floats(mean[0], se[0], n)
    zlow, zhigh = t_interval_floats(mean[1], se[1], n)
    return {"spread": float(mean[0]), "ci_low": low, "ci_high": high,
            "theory": (1 - p) / p, "zeroed": float(mean[1]), "zeroed_ci": (zlow, zhigh),
            "keep_prob": p, "draws": n}


def decide_c02(m):
    if m["ci_low"] > 0:
        return Verdict(FALSE, "per-unit train variance / x² (theory (1−p)/p)", m["spread"],
                       m["ci_low"], m["ci_high"],
                       f"Dividing by keep_prob restores the average, not the noise: "
                       f"{100 * m['zeroed']:.1f} % of units are still zeroed on each pass and every "
                       f"unit's variance is {m['spread']:.4f}·x² (theory (1−p)/p = {m['theory']:.4f}), "
                       f"which is the regularising randomness.")
    return Verdict(HOLDS, "per-unit train variance / x²", m["spread"], m["ci_low"], m["ci_high"],
                   "The train output does not vary: the layer has no effect.")


# --- C03 --------------------------------------------------------------------------------------
C03_KEEP_PROBS = (0.2, 0.5, 0.8)


def measure_c03(settings):
    seed = settings.seed
    x = scheme_probe(seed=seed)
    rows = [dict(measure_relative_bias("inverted", p, x, x, seed + k, settings, margin=0.01), keep_prob=p)
            for k, p in enumerate(C03_KEEP_PROBS)]
    # "Only in expectation": is a single pass different from x? Measured, not assumed: the
    # fraction of units of one pass that differ from their input, over a few passes.
    changed = [float(np.mean(get_scheme("inverted").train(x, p, seed + 100 + k) != x))
               for k, p in enumerate(C03_KEEP_PROBS)]
    return {"by_keep_prob": rows, "var_positive": min(changed) > 0, "changed_fraction": changed,
            "draws": sum(r["n"] for r in rows), "keep_prob": np.nan}


def decide_c03(m):
    rows = m["by_keep_prob"]
    worst = max(rows, key=lambda r: abs(r["bias"]))
    fig = ("largest |relative bias| of E[train] vs x over keep_prob "
           + ", ".join(f"{r['keep_prob']:g}" for r in rows))
    listed = "; ".join(f"p={r['keep_prob']:g}: {100 * r['bias']:+.3f} %" for r in rows)
    if any(r["rejected"] and not r["equivalent"] for r in rows):
        return Verdict(FALSE, fig, worst["bias"], worst["ci_low"], worst["ci_high"],
                       f"The mean activation changes with the rescale ({listed}).")
    if all(r["equivalent"] for r in rows):
        verdict = EXPECTATION_ONLY if m["var_positive"] else HOLDS
        return Verdict(verdict, fig, worst["bias"], worst["ci_low"], worst["ci_high"],
                       f"On average over the random masks each activation keeps its value "
                       f"(bias within ±{100 * rows[0]['margin']:g} % at every keep_prob: {listed}); "
                       f"on any single pass the values do change — zeros and x/keep_prob.")
    return Verdict(APPROXIMATELY, fig, worst["bias"], worst["ci_low"], worst["ci_high"],
                   f"The mean activation is close to unchanged but not resolved to ±"
                   f"{100 * rows[0]['margin']:g} % ({listed}).")
