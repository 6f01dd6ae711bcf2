"""Claims about one dropout layer: C01–C06 and C11–C13 (means, variance, rescale, norms,
eval path, the paper's test-time rule)."""

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
    EXACT_RTOL,
    EXPECTATION_ONLY,
    FALSE,
    HOLDS,
    PILOT_DRAWS,
    THREAD_NORM_A,
    THREAD_NORM_B,
    TOST_ALPHA,
    Verdict,
    draws_for_half_width,
    interval_excludes,
    measure_relative_bias,
    pilot_sd,
    scalar_moments,
    t_interval_floats,
    tost_draws,
)
from stats_dropout.studies.norms import thread_matrix


# --- C01 --------------------------------------------------------------------------------------
def _downstream_setup(seed, n_units=20):
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
    a, w, b = _downstream_setup(seed)
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


# --- C11 --------------------------------------------------------------------------------------
def measure_c11(settings):
    p, seed = settings.keep_prob, settings.seed
    a, w, _ = _downstream_setup(seed)
    z_test = float(w @ a)
    scheme = get_scheme("standard")  # no rescale at train: the original paper
    sd = math.sqrt(scheme.linear_statistic_var(w / z_test, a, p))
    draws = tost_draws(sd, 0.01 * p, settings)

    def statistic(samples):
        return (samples @ w / z_test)[:, None]

    mean, se, n = scalar_moments(scheme.bind(p), a, statistic, draws, seed)
    ratio, ratio_se = float(mean[0]), float(se[0])
    low, high = t_interval_floats(ratio, ratio_se, n)
    tost = decide_equivalence(ratio - p, ratio_se, 0.01 * p, df=n - 1, alpha=TOST_ALPHA)
    return {"ratio": ratio, "ci_low": low, "ci_high": high, "equivalent_to_p": bool(tost.equivalent),
            "keep_prob": p, "draws": n}


def decide_c11(m):
    fig = "E[next-layer input at train, no rescale] ÷ next-layer input at test (theory p)"
    if m["ci_high"] < 1 and m["equivalent_to_p"]:
        return Verdict(HOLDS, fig, m["ratio"], m["ci_low"], m["ci_high"],
                       f"Without the rescale a next-layer neuron receives on average "
                       f"{m['ratio']:.4f}× its test-time input (= keep_prob {m['keep_prob']:g}), so the "
                       f"original paper scales weights by p at test; inverted dropout moves that "
                       f"correction into training instead.")
    if interval_excludes(m["ci_low"], m["ci_high"], 1.0):
        return Verdict(APPROXIMATELY, fig, m["ratio"], m["ci_low"], m["ci_high"],
                       f"The train input is smaller ({m['ratio']:.4f}×) but not equal to p.")
    return Verdict(FALSE, fig, m["ratio"], m["ci_low"], m["ci_high"],
                   "The next layer receives as much input at train as at test.")


# --- C12 --------------------------------------------------------------------------------------
C12_PASSES = (1, 10, 100, 1000)


def measure_c12(settings):
    p, seed = settings.keep_prob, settings.seed
    x = scheme_probe(seed=seed)
    scheme = get_scheme("inverted")
    first, second = scheme.eval(x, p), scheme.eval(x, p)
    eval_dev = float(max(np.max(np.abs(first - x)), np.max(np.abs(second - x))))
    keep_one = scheme.train(x, 1.0, stream_rng(seed, "c12_keep_one"))
    rng = stream_rng(seed, "c12_draws")
    rms_x = float(np.sqrt(np.mean(x**2)))
    mc_error = {}
    for t in C12_PASSES:
        avg = scheme.sample_train(x, p, t, rng=rng).mean(axis=0)
        mc_error[t] = float(np.sqrt(np.mean((avg - first) ** 2)) / rms_x)
    return {"eval_max_dev": eval_dev, "deterministic": bool(np.array_equal(first, second)),
            "keep_one_max_dev": float(np.max(np.abs(keep_one - x))), "mc_error": mc_error,
            "mc_theory": {t: math.sqrt((1 - p) / p / t) for t in C12_PASSES},
            "keep_prob": p, "draws": int(sum(C12_PASSES))}


def decide_c12(m):
    fig = "max |eval(x) − x| over two eval calls"
    mc = ", ".join(f"T={t}: {e:.3f}" for t, e in m["mc_error"].items())
    if m["eval_max_dev"] == 0 and m["deterministic"] and m["keep_one_max_dev"] == 0:
        return Verdict(HOLDS, fig, m["eval_max_dev"], 0.0, 0.0,
                       f"At test time inverted dropout is exactly the identity: no mask, no 1/keep_prob "
                       f"(max deviation {m['eval_max_dev']:g}; keep_prob=1 also gives the identity). "
                       f"MC dropout, which keeps the masks on at test and averages T passes, is a "
                       f"different rule whose relative RMS error to this output falls like 1/√T ({mc}).")
    return Verdict(FALSE, fig, m["eval_max_dev"], m["eval_max_dev"], m["eval_max_dev"],
                   f"The eval path is not the deterministic identity (max deviation {m['eval_max_dev']:.3g}).")


# --- C13 --------------------------------------------------------------------------------------
def measure_c13(settings):
    p, seed = settings.keep_prob, settings.seed
    x = scheme_probe(seed=seed)
    inverse = measure_relative_bias("standard", p, x, x / p, seed, settings, margin=0.01)
    paper = measure_relative_bias("standard", p, x, p * x, seed + 1, settings, margin=0.01)
    return {"inverse_test": inverse, "paper_test": paper, "keep_prob": p,
            "draws": inverse["n"] + paper["n"]}


def decide_c13(m):
    inv, pap, p = m["inverse_test"], m["paper_test"], m["keep_prob"]
    fig = "E[train] ÷ test output when test multiplies by 1/keep_prob (theory p²)"
    ratio, low, high = 1 + inv["bias"], 1 + inv["ci_low"], 1 + inv["ci_high"]
    if inv["equivalent"]:
        return Verdict(HOLDS, fig, ratio, low, high,
                       "Zeroing at train and scaling by 1/keep_prob at test keeps train and test equal.")
    if pap["equivalent"] and interval_excludes(low, high, 1.0):
        return Verdict(FALSE, fig, ratio, low, high,
                       f"The paper multiplies by p at test (W_test = pW), not by 1/p: its test output "
                       f"matches the average train output ({100 * pap['bias']:+.3f} %), whereas "
                       f"dividing by p at test would make the average train output only "
                       f"{ratio:.4f}× the test output (p² = {p * p:.4f}).")
    return Verdict(APPROXIMATELY, fig, ratio, low, high, "Neither test rule was resolved.")
