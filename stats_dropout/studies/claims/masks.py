"""Claims about masks: C08 (distinct thinned networks per batch), C09 (per-sample vs
batch-shared masks), C17 (masks across iterations of a course-style forward)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy import stats as sps

from stats_dropout._internal.rng import seeded_global_rngs, stream_rng
from stats_dropout.inference.stats import decide_equivalence, decide_keep_rate
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.studies.claims.common import (
    APPROXIMATELY,
    EXPECTATION_ONLY,
    FALSE,
    HOLDS,
    LEVEL,
    TOST_ALPHA,
    Verdict,
    draws_for_half_width,
    interval_excludes,
    pilot_sd,
    scalar_moments,
    t_interval_floats,
    tost_draws,
)

# --- C08 --------------------------------------------------------------------------------------
#: The course network's hidden layers (20 and 3 units) and its keep_prob: the course's dropout
#: assignment trains with keep_prob = 0.86, so C08 and C17 run at 0.86, not at the thread's 0.8.
COURSE_HIDDEN = (20, 3)
COURSE_KEEP_PROB = 0.86
#: Said wherever a C08 / C17 number is printed, so a 0.86 next to the thread's 0.8 is not a typo.
COURSE_KEEP_PROB_NOTE = (f"keep_prob {COURSE_KEEP_PROB:g} is the course's value — its dropout assignment "
                         f"trains with {COURSE_KEEP_PROB:g} — not the thread's 0.8")


def _distinct_fraction(codes):
    """Per row, the number of distinct values divided by the row length."""
    s = np.sort(codes, axis=1)
    return (1 + np.count_nonzero(np.diff(s, axis=1), axis=1)) / codes.shape[1]


def measure_c08(settings, *, batch=100):
    p, seed = COURSE_KEEP_PROB, settings.seed
    units = sum(COURSE_HIDDEN)
    weights = (1 << np.arange(units, dtype=np.int64))
    out = {}
    for name in ("inverted", "batch_shared"):
        scheme = get_scheme(name)

        def statistic(samples):
            codes = (samples != 0).astype(np.int64) @ weights  # one integer per thinned network
            return _distinct_fraction(codes)[:, None]

        # The fraction of distinct networks to ±0.002 (sd from a pilot run).
        sd = pilot_sd(scheme.bind(p), np.ones((batch, units)), statistic, seed)
        draws = draws_for_half_width(np.maximum(sd, 1e-12), 0.002, settings)
        mean, se, n = scalar_moments(scheme.bind(p), np.ones((batch, units)), statistic, draws, seed)
        out[name] = {"fraction": float(mean[0]), "ci": t_interval_floats(mean[0], se[0], n), "se": float(se[0])}
    # Expected number of distinct masks among B independent draws from 2^units masks with
    # probabilities p^k (1-p)^(units-k): E distinct = Σ_m (1 − (1 − π_m)^B), grouped by k.
    k = np.arange(units + 1)
    pi = p**k * (1 - p) ** (units - k)
    expected = float(np.sum(special.comb(units, k) * (1 - (1 - pi) ** batch)) / batch)
    fr = out["inverted"]
    tost = decide_equivalence(fr["fraction"] - 1, fr["se"], 0.01, df=n - 1, alpha=TOST_ALPHA)
    return {"per_sample": out["inverted"], "shared": out["batch_shared"], "batch": batch,
            "units": units, "expected_fraction": expected, "equivalent_to_all": bool(tost.equivalent),
            "keep_prob": p, "draws": 2 * n}


def _keep_note(m):
    p = m.get("keep_prob", COURSE_KEEP_PROB)
    if p == COURSE_KEEP_PROB:
        return COURSE_KEEP_PROB_NOTE
    return f"keep_prob {p:g}"


def decide_c08(m):
    fr, sh, b = m["per_sample"], m["shared"], m["batch"]
    fig = f"distinct thinned networks ÷ examples, per-sample masks, batch of {b}"
    if fr["ci"][1] <= 1 / b + 1e-12:
        return Verdict(FALSE, fig, fr["fraction"], *fr["ci"],
                       f"All {b} examples share one thinned network.")
    if m["equivalent_to_all"]:
        return Verdict(HOLDS, fig, fr["fraction"], *fr["ci"],
                       f"With per-sample masks each of the {b} examples gets its own thinned network "
                       f"({100 * fr['fraction']:.2f} % distinct); a batch-shared mask gives one. "
                       f"({_keep_note(m)}.)")
    return Verdict(APPROXIMATELY, fig, fr["fraction"], *fr["ci"],
                   f"With per-sample masks (the course's way) the {b} examples of an iteration use "
                   f"about {b * fr['fraction']:.1f} different thinned networks, not exactly {b}: with "
                   f"only {m['units']} hidden units at keep_prob {m['keep_prob']:g} some examples draw "
                   f"the same mask (theory {b * m['expected_fraction']:.1f}); a batch-shared mask "
                   f"gives {b * sh['fraction']:.0f}. ({_keep_note(m)}.)")


# --- C09 --------------------------------------------------------------------------------------
def measure_c09(settings, *, batch=32):
    from stats_dropout.reference import theory

    p, seed = settings.keep_prob, settings.seed
    a = np.abs(stream_rng(seed, "c09_scales").standard_normal((batch, 1))) + 0.5
    target = float(a.mean())
    out = {}
    for k, (name, shared) in enumerate((("inverted", False), ("batch_shared", True))):
        scheme = get_scheme(name)
        var_theory = float(theory.batch_mean_var(a.ravel(), p, shared=shared))

        def statistic(samples):
            mean = samples.reshape(len(samples), -1).mean(axis=1)
            return np.column_stack([mean / target, (mean - target) ** 2 / var_theory])

        sd = math.sqrt(var_theory) / target
        draws = tost_draws(sd, 0.01, settings)
        mean, se, n = scalar_moments(scheme.bind(p), a, statistic, draws, seed + k)
        bias, bias_se = float(mean[0] - 1), float(se[0])
        tost = decide_equivalence(bias, bias_se, 0.01, df=n - 1, alpha=TOST_ALPHA)
        out[name] = {"bias": bias, "bias_ci": t_interval_floats(bias, bias_se, n),
                     "equivalent": bool(tost.equivalent), "var": float(mean[1]) * var_theory,
                     "var_rel_se": float(se[1] / mean[1]), "var_theory": var_theory, "n": n}
    ratio = out["batch_shared"]["var"] / out["inverted"]["var"]
    log_se = math.hypot(out["batch_shared"]["var_rel_se"], out["inverted"]["var_rel_se"])
    z = sps.norm.isf((1 - LEVEL) / 2)
    return {"per_sample": out["inverted"], "shared": out["batch_shared"], "var_ratio": ratio,
            "ci_low": ratio * math.exp(-z * log_se), "ci_high": ratio * math.exp(z * log_se),
            "var_ratio_theory": out["batch_shared"]["var_theory"] / out["inverted"]["var_theory"],
            "batch": batch, "keep_prob": p, "draws": out["inverted"]["n"] + out["batch_shared"]["n"]}


def decide_c09(m):
    fig = f"Var(batch mean) shared mask ÷ per-sample masks, batch of {m['batch']}"
    ps, sh = m["per_sample"], m["shared"]
    if not (ps["equivalent"] and sh["equivalent"]):
        biased = [n for n, d in (("per-sample", ps), ("batch-shared", sh)) if not d["equivalent"]]
        return Verdict(FALSE if any(interval_excludes(*d["bias_ci"], 0.0) for d in (ps, sh)) else APPROXIMATELY,
                       fig, m["var_ratio"], m["ci_low"], m["ci_high"],
                       f"Not shown unbiased within ±1 %: {', '.join(biased)}.")
    if interval_excludes(m["ci_low"], m["ci_high"], 1.0):
        return Verdict(EXPECTATION_ONLY, fig, m["var_ratio"], m["ci_low"], m["ci_high"],
                       f"Both keep the average (bias {100 * ps['bias']:+.2f} % and "
                       f"{100 * sh['bias']:+.2f} %), but they are different regularisers: one mask for "
                       f"the whole batch makes the batch mean {m['var_ratio']:.1f}× as variable "
                       f"(theory {m['var_ratio_theory']:.1f}×). The paper and the course use per-sample masks.")
    return Verdict(HOLDS, fig, m["var_ratio"], m["ci_low"], m["ci_high"],
                   "Both are unbiased and equally variable.")


# --- C17 --------------------------------------------------------------------------------------
def _relu(z):
    return np.maximum(z, 0.0)


def course_style_forward(X, parameters, keep_prob, *, reseed=True):
    """A three-layer forward pass with inverted dropout, written the way the course's graded
    template is laid out: it reseeds numpy's *global* RNG on entry (``np.random.seed(1)``, there
    so that graders see reproducible numbers) and draws masks with ``np.random.rand(...) <
    keep_prob``.

    Written from scratch for the C17 measurement; ``reseed=False`` is the same function
    without the reseed. Returns ``(output, (D1, D2))``.
    """
    if reseed:
        np.random.seed(1)
    h1 = _relu(parameters["W1"] @ X + parameters["b1"])
    D1 = np.random.rand(*h1.shape) < keep_prob
    h1 = h1 * D1 / keep_prob
    h2 = _relu(parameters["W2"] @ h1 + parameters["b2"])
    D2 = np.random.rand(*h2.shape) < keep_prob
    h2 = h2 * D2 / keep_prob
    out = special.expit(parameters["W3"] @ h2 + parameters["b3"])
    return out, (D1, D2)


def _course_parameters(seed, sizes=(2,) + COURSE_HIDDEN + (1,)):
    rng = stream_rng(seed, "c17_course_parameters")
    params = {}
    for i in range(1, len(sizes)):
        params[f"W{i}"] = rng.standard_normal((sizes[i], sizes[i - 1])) / math.sqrt(sizes[i - 1])
        params[f"b{i}"] = np.zeros((sizes[i], 1))
    return params


def measure_c17(settings, *, iterations=20, examples=64):
    p, seed = COURSE_KEEP_PROB, settings.seed
    params = _course_parameters(seed)
    X = stream_rng(seed, "c17_inputs").standard_normal((2, examples))
    out = {}
    for label, reseed in (("reseeded", True), ("plain", False)):
        with seeded_global_rngs(seed):  # the caller's global RNG state is put back afterwards
            masks = [np.concatenate([d.ravel() for d in course_style_forward(X, params, p, reseed=reseed)[1]])
                     for _ in range(iterations)]
        # Disjoint pairs of successive iterations (0,1), (2,3), …: their agreements are
        # independent, so the count of agreeing entries is exactly binomial.
        same = sum(int(np.sum(masks[i] == masks[i + 1])) for i in range(0, iterations - 1, 2))
        trials = (iterations // 2) * masks[0].size
        q = p * p + (1 - p) * (1 - p)
        d = decide_keep_rate(np.int64(same), np.int64(trials), q, false_fail_rate=1 - LEVEL,
                             property="mask agreement equals p² + (1 − p)²")
        out[label] = {"agreement": same / trials, "ci": (d.ci_low, d.ci_high), "rejected": d.rejected,
                      "identical_iterations": int(sum(np.array_equal(masks[i], masks[i + 1])
                                                      for i in range(iterations - 1)))}
    out.update(independent_agreement=p * p + (1 - p) ** 2, iterations=iterations, keep_prob=p,
               draws=2 * iterations)
    return out


def decide_c17(m):
    r, plain, q = m["reseeded"], m["plain"], m["independent_agreement"]
    fig = "mask agreement between successive iterations, course-template forward (reseeds)"
    if r["rejected"] and r["ci"][0] > q:
        return Verdict(FALSE, fig, r["agreement"], *r["ci"],
                       f"Not in the course's template as graded: np.random.seed(1) at the top of the "
                       f"forward function makes every iteration draw the same masks (agreement "
                       f"{r['agreement']:.3f}, {r['identical_iterations']} of {m['iterations'] - 1} "
                       f"successive iterations identical). Without the reseed the agreement is "
                       f"{plain['agreement']:.3f}, as independent masks give (p² + (1−p)² = {q:.4f}; "
                       f"{_keep_note(m)}).")
    if not r["rejected"]:
        return Verdict(HOLDS, fig, r["agreement"], *r["ci"],
                       f"Successive iterations drop different units (agreement {r['agreement']:.3f}, "
                       f"independent masks {q:.4f}; {_keep_note(m)}).")
    return Verdict(APPROXIMATELY, fig, r["agreement"], *r["ci"],
                   f"Masks change between iterations but not independently (agreement {r['agreement']:.3f}).")
