"""Claims about the test-time (eval) rule: C11 (no rescale at train means scaling at test), C12
(the eval path is the deterministic identity) and C13 (the paper's test-time rule is pW)."""

from __future__ import annotations

import math

import numpy as np

from stats_dropout._internal.rng import stream_rng
from stats_dropout.inference.stats import decide_equivalence
from stats_dropout.reference.probes import scheme_probe
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.studies.claims.common import (
    APPROXIMATELY,
    FALSE,
    HOLDS,
    TOST_ALPHA,
    Verdict,
    interval_excludes,
    measure_relative_bias,
    scalar_moments,
    t_interval_floats,
    tost_draws,
)
from stats_dropout.studies.claims.single_layer.moments import downstream_setup

__all__ = ["C12_PASSES", "measure_c11", "decide_c11", "measure_c12", "decide_c12", "measure_c13",
           "decide_c13"]


# --- C11 --------------------------------------------------------------------------------------
def measure_c11(settings):
    p, seed = settings.keep_prob, settings.seed
    a, w, _ = downstream_setup(seed)
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
