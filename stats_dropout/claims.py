"""The claims ledger: every claim of the seed forum thread, answered by a measurement.

``shared/CLAIMS.md`` lists seventeen claims (C01–C17) that learners and a mentor made about
inverted dropout. Each claim here has two functions:

``measure_cNN(settings) -> dict``
    Runs the experiment (seeded Monte Carlo, exact enumeration or a recomputation) and returns
    the measured statistics: estimates, standard errors, confidence intervals, counts.
``decide_cNN(measurement) -> Verdict``
    Turns the measurement into a verdict — ``holds``, ``holds in expectation only``,
    ``holds approximately`` or ``false`` — with the deciding figure, its confidence interval
    and one plain sentence. It reads *only* the measurement, so feeding it a different
    measurement changes the verdict (the tests do exactly that); no verdict is typed in.

Statistical conventions of the ledger (printed in the report's methods section):

* intervals are two-sided at :data:`LEVEL` (99 %); "differs" means the interval excludes the
  value (a two-sided test at false-fail rate ``1 − LEVEL``);
* "equal within ε" is a TOST equivalence decision (:func:`stats_dropout.stats.decide_equivalence`)
  at level :data:`TOST_ALPHA`, never a failed rejection;
* Monte-Carlo sizes are computed so that TOST declares equivalence of a correct quantity with
  probability :data:`POWER` (capped by ``max_draws``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from ._rng import block_rng, seeded_global_rngs
from ._validation import keep_prob_iv, positive_int_iv, seed_iv
from .montecarlo import estimate_statistic_moments
from .scheme_checks import scheme_probe
from .schemes import get_scheme
from .stats import decide_equivalence, decide_keep_rate, projection_ratio

__all__ = [
    "CLAIMS",
    "VERDICTS",
    "Verdict",
    "ClaimResult",
    "ClaimSettings",
    "LEDGER_COLUMNS",
    "claims_ledger",
    "evaluate_claim",
    "format_ledger",
    "course_style_forward",
]

HOLDS = "holds"
EXPECTATION_ONLY = "holds in expectation only"
APPROXIMATELY = "holds approximately"
FALSE = "false"
VERDICTS = (HOLDS, EXPECTATION_ONLY, APPROXIMATELY, FALSE)

#: Confidence level of every interval in the ledger.
LEVEL = 0.99
#: TOST level: probability of declaring "equal within ε" when the difference is ε.
TOST_ALPHA = 0.01
#: Probability that TOST declares a truly equal quantity equivalent (sizes the runs).
POWER = 0.999
#: Floating-point dead band for exact identities (relative).
_EXACT_RTOL = 64 * np.finfo(np.float64).eps

#: The thread's 3×4 matrix: ``np.random.seed(42); np.random.randn(3, 4)``, and its two norms.
THREAD_NORM_A = 2.672810732482017
THREAD_NORM_B = 3.3410134156025215


# --- result types ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    """What :func:`decide_cNN <decide_c01>` returns.

    Attributes
    ----------
    verdict : str
        One of :data:`VERDICTS`.
    figure_name : str
        What the deciding figure is, in words.
    figure, ci_low, ci_high : float
        The deciding figure and its confidence interval (equal bounds for exact figures).
    explanation : str
        One plain sentence (or two) a learner can read, with the numbers.
    """

    verdict: str
    figure_name: str
    figure: float
    ci_low: float
    ci_high: float
    explanation: str


@dataclasses.dataclass(frozen=True)
class ClaimSettings:
    """Settings of one ledger run: ``seed``, ``max_draws`` (cap per Monte-Carlo run, None =
    computed sizes only), ``keep_prob`` (the thread's 0.8 unless a claim needs another) and
    ``tables``: :mod:`stats_dropout.experiments` results to reuse instead of recomputing."""

    seed: int = 0
    max_draws: int | None = None
    keep_prob: float = 0.8
    #: Experiment tables already computed by the caller (the report), by function name.
    tables: dict | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """One row of the ledger: the claim, its verdict, the evidence and the settings."""

    id: str
    claim: str
    verdict: str
    figure_name: str
    figure: float
    ci_low: float
    ci_high: float
    explanation: str
    measurement: str
    seed: int
    draws: int
    keep_prob: float
    confidence_level: float
    measurement_data: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def to_record(self):
        record = dataclasses.asdict(self)
        record.pop("measurement_data")
        return record


LEDGER_COLUMNS = ["id", "claim", "verdict", "figure_name", "figure", "ci_low", "ci_high",
                  "explanation", "measurement", "seed", "draws", "keep_prob", "confidence_level"]


# --- shared measurement helpers ---------------------------------------------------------------
def _t_interval(mean, se, n, level=LEVEL):
    half = float(sps.t.isf((1 - level) / 2, max(n - 1, 1)) * se) if se > 0 else 0.0
    return float(mean) - half, float(mean) + half


def _draws(sd, margin, settings, *, floor=2000):
    """Draws for TOST at ``margin`` to pass a correct quantity with probability :data:`POWER`:
    ``n = ((z_{1−α} + z_{(1+POWER)/2}) σ / ε)²``, at least ``floor``, capped by ``max_draws``."""
    z = sps.norm.isf(TOST_ALPHA) + sps.norm.isf((1 - POWER) / 2)
    n = max(floor, math.ceil((z * sd / margin) ** 2)) if sd > 0 else floor
    return n if settings.max_draws is None else max(2, min(n, settings.max_draws))


def _capped(n, settings):
    return n if settings.max_draws is None else max(2, min(n, settings.max_draws))


def _scalar_moments(train, x, statistic, draws, seed):
    """Moments of a vector of per-draw statistics: ``(mean, se, n)`` arrays."""
    m = estimate_statistic_moments(train, x, statistic, draws=draws, seed=seed)
    return np.atleast_1d(m.mean), np.atleast_1d(m.std_error), m.n_draws


def _relative_bias(scheme_name, keep_prob, x, target, seed, settings, margin):
    """Relative bias β in ``E[train(x)] = (1 + β) target`` by the projection ratio, with TOST."""
    scheme = get_scheme(scheme_name)
    target = np.asarray(target, dtype=np.float64)
    sd = math.sqrt(scheme.linear_statistic_var(target / np.sum(target**2), x, keep_prob))
    draws = _draws(sd, margin, settings)
    mean, se, n = _scalar_moments(scheme.bind(keep_prob), x, projection_ratio(x, target), draws, seed)
    bias, bias_se = float(mean[0] - 1), float(se[0])
    low, high = _t_interval(bias, bias_se, n)
    tost = decide_equivalence(bias, bias_se, margin, df=n - 1, alpha=TOST_ALPHA)
    return {"bias": bias, "se": bias_se, "ci_low": low, "ci_high": high, "n": n,
            "margin": margin, "equivalent": bool(tost.equivalent), "tost_pvalue": tost.pvalue,
            "rejected": bool(low > 0 or high < 0)}


def _differs(low, high, value):
    return bool(low > value or high < value)


def thread_matrix():
    """The thread's matrix ``A`` (``np.random.seed(42); np.random.randn(3, 4)``), without
    touching numpy's global RNG: ``RandomState(42)`` is the same Mersenne Twister stream."""
    return np.random.RandomState(42).randn(3, 4)


def _experiment(settings, name):
    """The :mod:`stats_dropout.experiments` table ``name`` at the ledger's seed: reused from
    ``settings.tables`` when the caller computed it, else computed (and stored there)."""
    if settings.tables is not None and name in settings.tables:
        return settings.tables[name]
    from . import experiments

    frame = getattr(experiments, name)(seed=settings.seed)
    if settings.tables is not None:
        settings.tables[name] = frame
    return frame


# --- C01 --------------------------------------------------------------------------------------
def _downstream_setup(seed, n_units=20):
    """Activations ``a ≥ 0`` (a previous ReLU layer), next-layer weights ``w`` and a bias
    putting the eval pre-activation at 0.5, so the unit sits where ReLU bends."""
    rng = block_rng(seed, 101)
    a = np.abs(rng.standard_normal(n_units))
    w = rng.standard_normal(n_units) / math.sqrt(n_units)
    b = 0.5 - float(w @ a)
    return a, w, b


def measure_c01(settings):
    p, seed = settings.keep_prob, settings.seed
    x = scheme_probe(seed=seed)
    layer = _relative_bias("inverted", p, x, x, seed, settings, margin=0.01)
    a, w, b = _downstream_setup(seed)
    scheme = get_scheme("inverted")
    z_eval = float(w @ a + b)
    eval_out = {"relu": max(z_eval, 0.0), "sigmoid": float(special.expit(z_eval))}

    def statistic(samples):
        z = samples @ w + b
        return np.column_stack([np.maximum(z, 0.0) - eval_out["relu"],
                                special.expit(z) - eval_out["sigmoid"]])

    draws = _capped(200_000, settings)
    mean, se, n = _scalar_moments(scheme.bind(p), a, statistic, draws, seed + 1)
    gaps = {}
    for j, act in enumerate(("relu", "sigmoid")):
        rel, rel_se = mean[j] / eval_out[act], se[j] / eval_out[act]
        low, high = _t_interval(rel, rel_se, n)
        gaps[act] = {"relative_gap": float(rel), "ci_low": low, "ci_high": high}
    return {"layer": layer, "gaps": gaps, "gap_draws": n, "keep_prob": p,
            "draws": layer["n"] + n}


def decide_c01(m):
    layer, relu = m["layer"], m["gaps"]["relu"]
    sig = m["gaps"]["sigmoid"]
    if layer["rejected"]:
        return Verdict(FALSE, "relative bias of E[train] vs eval (inverted layer)", layer["bias"],
                       layer["ci_low"], layer["ci_high"],
                       f"The layer's mean train output differs from its eval output by "
                       f"{100 * layer['bias']:.2f} % — the equality does not hold here.")
    if not layer["equivalent"]:  # neither shown equal nor shown different: too few draws
        return Verdict(APPROXIMATELY, "relative bias of E[train] vs eval (inverted layer)", layer["bias"],
                       layer["ci_low"], layer["ci_high"],
                       f"No difference was detected ({100 * layer['bias']:+.2f} %), but these draws "
                       f"cannot resolve it to ±{100 * layer['margin']:g} %; run with more draws.")
    gap_seen = _differs(relu["ci_low"], relu["ci_high"], 0.0) or _differs(sig["ci_low"], sig["ci_high"], 0.0)
    if gap_seen:
        return Verdict(APPROXIMATELY, "relative gap E[relu(next layer)] − eval, after the dropout layer",
                       relu["relative_gap"], relu["ci_low"], relu["ci_high"],
                       f"For the dropout layer itself the average train output equals the test output "
                       f"(within ±{100 * layer['margin']:g} %, measured {100 * layer['bias']:+.3f} %); "
                       f"once a nonlinearity follows it only holds approximately: a ReLU unit's average "
                       f"train output is {100 * relu['relative_gap']:+.1f} % off its test output "
                       f"(sigmoid {100 * sig['relative_gap']:+.2f} %).")
    return Verdict(HOLDS, "relative bias of E[train] vs eval (inverted layer)", layer["bias"],
                   layer["ci_low"], layer["ci_high"],
                   "The average train output equals the test output, for the layer and downstream.")


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

    draws = _capped(20_000, settings)
    mean, se, n = _scalar_moments(scheme.bind(p), x, statistic, draws, seed)
    low, high = _t_interval(mean[0], se[0], n)
    zlow, zhigh = _t_interval(mean[1], se[1], n)
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
    rows = [dict(_relative_bias("inverted", p, x, x, seed + k, settings, margin=0.01), keep_prob=p)
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
    samples = get_scheme("inverted").sample_train(x, p, 1000, rng=block_rng(settings.seed, 4))
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

    return _scalar_moments(scheme.bind(p), a, statistic, draws, seed)


def measure_c05(settings):
    p, seed = settings.keep_prob, settings.seed
    a = thread_matrix()
    draws = _capped(100_000, settings)
    mean, se, n = _norm_ratio_moments(a, p, seed, draws, rescale=True)
    mean0, se0, _ = _norm_ratio_moments(a, p, seed + 1, draws, rescale=False)
    big = block_rng(seed, 5).standard_normal((64, 64))
    meanb, seb, nb = _norm_ratio_moments(big, p, seed + 2, _capped(2000, settings), rescale=True)
    low, high = _t_interval(mean[0], se[0], n)
    tost = decide_equivalence(float(mean[0] - 1), float(se[0]), 0.05, df=n - 1, alpha=TOST_ALPHA)
    return {"norm_ratio": float(mean[0]), "ci_low": low, "ci_high": high,
            "sq_ratio": float(mean[1]), "sq_ratio_ci": _t_interval(mean[1], se[1], n),
            "sq_theory": 1 / p, "no_rescale_ratio": float(mean0[0]),
            "no_rescale_ci": _t_interval(mean0[0], se0[0], n),
            "random_64x64_ratio": float(meanb[0]), "random_64x64_ci": _t_interval(meanb[0], seb[0], nb),
            "margin": 0.05, "equivalent": bool(tost.equivalent), "keep_prob": p, "draws": 2 * n + nb}


def decide_c05(m):
    fig = "E‖D∘A/p‖ ÷ ‖A‖ on the thread's 3×4 matrix"
    if m["equivalent"]:
        return Verdict(APPROXIMATELY, fig, m["norm_ratio"], m["ci_low"], m["ci_high"],
                       f"The rescaled 2-norm stays within ±{100 * m['margin']:g} % of ‖A‖ on average.")
    if _differs(m["ci_low"], m["ci_high"], 1.0):
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
    exact = m["identity_error"] <= _EXACT_RTOL
    matches = max(m["thread_a_error"], m["thread_b_error"]) <= _EXACT_RTOL
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


# --- C07 --------------------------------------------------------------------------------------
def _regression_setup(seed, n=40, d=5):
    rng = block_rng(seed, 7)
    X = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d)  # unequal column scales: Γ matters
    w_true = rng.standard_normal(d)
    y = X @ w_true + 0.5 * rng.standard_normal(n)
    return X, y


def measure_c07(settings):
    from . import theory

    p, seed = settings.keep_prob, settings.seed
    X, y = _regression_setup(seed)
    w_ols = np.linalg.lstsq(X, y, rcond=None)[0]
    w = w_ols / p  # any weights; these make the dropout fit's mean equal the OLS fit
    scheme = get_scheme("standard")  # R∘X: dropout of the inputs, no rescale (Srivastava §9.1)

    def statistic(samples):
        resid = y - samples @ w
        return np.sum(resid**2, axis=1)[:, None]

    draws = _capped(100_000, settings)
    mean, se, n = _scalar_moments(scheme.bind(p), X, statistic, draws, seed)
    plain = float(np.sum((y - p * X @ w) ** 2))
    closed = theory.linear_regression_dropout_loss(X, y, w, p)
    penalty, penalty_se = float(mean[0] - plain), float(se[0])
    low, high = _t_interval(penalty, penalty_se, n)
    match = decide_equivalence(float(mean[0] - closed) / closed, penalty_se / closed, 0.01,
                               df=n - 1, alpha=TOST_ALPHA)
    w_ridge = theory.adaptive_ridge_solution(X, y, p)
    shrink = float(np.linalg.norm(w_ridge) / np.linalg.norm(w_ols))
    out = {"penalty": penalty, "ci_low": low, "ci_high": high,
           "penalty_theory": closed - plain, "closed_form_matches": bool(match.equivalent),
           "ridge_over_ols_norm": shrink, "keep_prob": p, "draws": n}
    out.update(_trained_regression(settings, p))
    return out


def _trained_regression(settings, p):
    """Distances of the dropout-*trained* weights to the adaptive-ridge minimiser and to least
    squares (``experiments.regression_dropout``), at the keep_prob closest to ``p``."""
    frame = _experiment(settings, "regression_dropout")
    kp = frame["keep_prob"].to_numpy(dtype=float)
    at = frame[kp == kp[np.argmin(np.abs(kp - p))]].set_index("quantity")
    return {"trained_keep_prob": float(at["keep_prob"].iloc[0]),
            "trained_to_ridge": float(at.loc["weights_vs_adaptive_ridge", "distance"]),
            "trained_to_ridge_rejected": bool(at.loc["weights_vs_adaptive_ridge", "rejected"]),
            "trained_to_ols": float(at.loc["weights_vs_least_squares", "distance"]),
            "trained_to_ols_rejected": bool(at.loc["weights_vs_least_squares", "rejected"])}


def decide_c07(m):
    fig = "dropout penalty E_R loss − ‖y − pXw‖² (theory p(1−p)‖Γw‖²)"
    if _differs(m["ci_low"], m["ci_high"], 0.0) and m["ci_low"] > 0:
        return Verdict(FALSE, fig, m["penalty"], m["ci_low"], m["ci_high"],
                       f"After the rescale dropout is not the plain network: averaged over masks, "
                       f"linear regression's loss gains a ridge-like penalty {m['penalty']:.4g} "
                       f"(theory {m['penalty_theory']:.4g}), and its minimiser is shrunk to "
                       f"{m['ridge_over_ols_norm']:.3f}× the norm of plain least squares"
                       + (f"; weights trained with dropout (keep_prob {m['trained_keep_prob']:g}) land on "
                          f"that ridge solution (distance {m['trained_to_ridge']:.2g}), not on least "
                          f"squares (distance {m['trained_to_ols']:.2g})." if "trained_to_ridge" in m
                          else "."))
    return Verdict(HOLDS, fig, m["penalty"], m["ci_low"], m["ci_high"],
                   "Averaged over masks the loss equals the unregularised one.")


# --- C08 --------------------------------------------------------------------------------------
#: The course network's hidden layers (20 and 3 units) and its keep_prob.
COURSE_HIDDEN = (20, 3)
COURSE_KEEP_PROB = 0.86


def _distinct_fraction(codes):
    """Per row, the number of distinct values divided by the row length."""
    s = np.sort(codes, axis=1)
    return (1 + np.count_nonzero(np.diff(s, axis=1), axis=1)) / codes.shape[1]


def measure_c08(settings, *, batch=100):
    p, seed = COURSE_KEEP_PROB, settings.seed
    units = sum(COURSE_HIDDEN)
    weights = (1 << np.arange(units, dtype=np.int64))
    out = {}
    draws = _capped(2000, settings)
    for name in ("inverted", "batch_shared"):
        scheme = get_scheme(name)

        def statistic(samples):
            codes = (samples != 0).astype(np.int64) @ weights  # one integer per thinned network
            return _distinct_fraction(codes)[:, None]

        mean, se, n = _scalar_moments(scheme.bind(p), np.ones((batch, units)), statistic, draws, seed)
        out[name] = {"fraction": float(mean[0]), "ci": _t_interval(mean[0], se[0], n), "se": float(se[0])}
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


def decide_c08(m):
    fr, sh, b = m["per_sample"], m["shared"], m["batch"]
    fig = f"distinct thinned networks ÷ examples, per-sample masks, batch of {b}"
    if fr["ci"][1] <= 1 / b + 1e-12:
        return Verdict(FALSE, fig, fr["fraction"], *fr["ci"],
                       f"All {b} examples share one thinned network.")
    if m["equivalent_to_all"]:
        return Verdict(HOLDS, fig, fr["fraction"], *fr["ci"],
                       f"With per-sample masks each of the {b} examples gets its own thinned network "
                       f"({100 * fr['fraction']:.2f} % distinct); a batch-shared mask gives one.")
    return Verdict(APPROXIMATELY, fig, fr["fraction"], *fr["ci"],
                   f"With per-sample masks (the course's way) the {b} examples of an iteration use "
                   f"about {b * fr['fraction']:.1f} different thinned networks, not exactly {b}: with "
                   f"only {m['units']} hidden units at keep_prob {m['keep_prob']:g} some examples draw "
                   f"the same mask (theory {b * m['expected_fraction']:.1f}); a batch-shared mask "
                   f"gives {b * sh['fraction']:.0f}.")


# --- C09 --------------------------------------------------------------------------------------
def measure_c09(settings, *, batch=32):
    from . import theory

    p, seed = settings.keep_prob, settings.seed
    a = np.abs(block_rng(seed, 9).standard_normal((batch, 1))) + 0.5
    target = float(a.mean())
    out = {}
    for k, (name, shared) in enumerate((("inverted", False), ("batch_shared", True))):
        scheme = get_scheme(name)
        var_theory = float(theory.batch_mean_var(a.ravel(), p, shared=shared))

        def statistic(samples):
            mean = samples.reshape(len(samples), -1).mean(axis=1)
            return np.column_stack([mean / target, (mean - target) ** 2 / var_theory])

        sd = math.sqrt(var_theory) / target
        draws = _draws(sd, 0.01, settings)
        mean, se, n = _scalar_moments(scheme.bind(p), a, statistic, draws, seed + k)
        bias, bias_se = float(mean[0] - 1), float(se[0])
        tost = decide_equivalence(bias, bias_se, 0.01, df=n - 1, alpha=TOST_ALPHA)
        out[name] = {"bias": bias, "bias_ci": _t_interval(bias, bias_se, n),
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
        return Verdict(FALSE if any(_differs(*d["bias_ci"], 0.0) for d in (ps, sh)) else APPROXIMATELY,
                       fig, m["var_ratio"], m["ci_low"], m["ci_high"],
                       f"Not shown unbiased within ±1 %: {', '.join(biased)}.")
    if _differs(m["ci_low"], m["ci_high"], 1.0):
        return Verdict(EXPECTATION_ONLY, fig, m["var_ratio"], m["ci_low"], m["ci_high"],
                       f"Both keep the average (bias {100 * ps['bias']:+.2f} % and "
                       f"{100 * sh['bias']:+.2f} %), but they are different regularisers: one mask for "
                       f"the whole batch makes the batch mean {m['var_ratio']:.1f}× as variable "
                       f"(theory {m['var_ratio_theory']:.1f}×). The paper and the course use per-sample masks.")
    return Verdict(HOLDS, fig, m["var_ratio"], m["ci_low"], m["ci_high"],
                   "Both are unbiased and equally variable.")


# --- C10 --------------------------------------------------------------------------------------
def measure_c10(settings):
    p, seed = settings.keep_prob, settings.seed
    x = scheme_probe(seed=seed)
    standard = _relative_bias("standard", p, x, p * x, seed, settings, margin=0.01)
    inverted = _relative_bias("inverted", p, x, x, seed + 1, settings, margin=0.01)
    out = {"standard": standard, "inverted": inverted, "keep_prob": p,
           "draws": standard["n"] + inverted["n"]}
    out.update(_training_summary(settings))
    return out


def _training_summary(settings):
    frame = _experiment(settings, "training_equivalence")
    mapped, drift = _split_training(frame)
    return {"training": {"mapped_max_dev": float(mapped["max_abs_deviation"].max()),
                         "drift_max_dev": float(drift["max_abs_deviation"].max()) if len(drift) else np.nan,
                         "weight_ratio": float(mapped["weight_ratio"].iloc[0]),
                         "weight_ratio_keep_prob": float(mapped["keep_prob"].iloc[0]),
                         "optimizers": sorted(set(mapped["optimizer"]))}}


def _split_training(frame):
    """Rows trained with the THEORY §3 learning-rate mapping, and rows with equal rates."""
    mapping = frame["lr_mapping"].astype(str).str.lower()
    equal = mapping.str.contains("equal|same|none|unmapped")
    return frame[~equal], frame[equal]


#: A trajectory difference below this (max |Δw| after training) is floating-point rounding.
TRAJECTORY_ATOL = 1e-9


def decide_c10(m):
    st, inv, tr = m["standard"], m["inverted"], m.get("training")
    fig = "relative bias of standard dropout: E[train] vs p·x (eval)"
    if st["rejected"] or inv["rejected"]:
        return Verdict(FALSE, fig, st["bias"], st["ci_low"], st["ci_high"],
                       "One of the two schemes does not keep its mean contract.")
    if not (st["equivalent"] and inv["equivalent"]):  # not resolved at these draws
        return Verdict(APPROXIMATELY, fig, st["bias"], st["ci_low"], st["ci_high"],
                       "No bias was detected in either scheme, but these draws cannot resolve it to the "
                       "equivalence margin; run with more draws.")
    layer = (f"Both keep the average: standard dropout's E[train] matches p·x "
             f"({100 * st['bias']:+.3f} %), inverted's matches x ({100 * inv['bias']:+.3f} %)")
    if tr is None:
        return Verdict(EXPECTATION_ONLY, fig, st["bias"], st["ci_low"], st["ci_high"],
                       layer + "; the training comparison was not available in this run.")
    if tr["mapped_max_dev"] <= TRAJECTORY_ATOL:
        return Verdict(HOLDS, "max |Δ weights| after training, standard vs inverted with W' = pW "
                       "and the THEORY §3 learning-rate mapping", tr["mapped_max_dev"],
                       tr["mapped_max_dev"], tr["mapped_max_dev"],
                       layer + f"; trained with identical masks, W' = pW and the matching learning "
                       f"rate the two networks stay equal to {tr['mapped_max_dev']:.1e} "
                       f"(with equal learning rates they drift apart by {tr['drift_max_dev']:.3g}).")
    return Verdict(EXPECTATION_ONLY, fig, st["bias"], st["ci_low"], st["ci_high"],
                   layer + f"; but trained networks differ by {tr['mapped_max_dev']:.3g} even with "
                   f"the learning-rate mapping.")


# --- C11 --------------------------------------------------------------------------------------
def measure_c11(settings):
    p, seed = settings.keep_prob, settings.seed
    a, w, _ = _downstream_setup(seed)
    z_test = float(w @ a)
    scheme = get_scheme("standard")  # no rescale at train: the original paper
    sd = math.sqrt(scheme.linear_statistic_var(w / z_test, a, p))
    draws = _draws(sd, 0.01 * p, settings)

    def statistic(samples):
        return (samples @ w / z_test)[:, None]

    mean, se, n = _scalar_moments(scheme.bind(p), a, statistic, draws, seed)
    ratio, ratio_se = float(mean[0]), float(se[0])
    low, high = _t_interval(ratio, ratio_se, n)
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
    if _differs(m["ci_low"], m["ci_high"], 1.0):
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
    keep_one = scheme.train(x, 1.0, block_rng(seed, 12))
    rng = block_rng(seed, 13)
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
    inverse = _relative_bias("standard", p, x, x / p, seed, settings, margin=0.01)
    paper = _relative_bias("standard", p, x, p * x, seed + 1, settings, margin=0.01)
    return {"inverse_test": inverse, "paper_test": paper, "keep_prob": p,
            "draws": inverse["n"] + paper["n"]}


def decide_c13(m):
    inv, pap, p = m["inverse_test"], m["paper_test"], m["keep_prob"]
    fig = "E[train] ÷ test output when test multiplies by 1/keep_prob (theory p²)"
    ratio, low, high = 1 + inv["bias"], 1 + inv["ci_low"], 1 + inv["ci_high"]
    if inv["equivalent"]:
        return Verdict(HOLDS, fig, ratio, low, high,
                       "Zeroing at train and scaling by 1/keep_prob at test keeps train and test equal.")
    if pap["equivalent"] and _differs(low, high, 1.0):
        return Verdict(FALSE, fig, ratio, low, high,
                       f"The paper multiplies by p at test (W_test = pW), not by 1/p: its test output "
                       f"matches the average train output ({100 * pap['bias']:+.3f} %), whereas "
                       f"dividing by p at test would make the average train output only "
                       f"{ratio:.4f}× the test output (p² = {p * p:.4f}).")
    return Verdict(APPROXIMATELY, fig, ratio, low, high, "Neither test rule was resolved.")


# --- C14 / C15 ------------------------------------------------------------------------------
def measure_c14(settings):
    frame = _experiment(settings, "training_equivalence")
    mapped, drift = _split_training(frame)
    kp = mapped["keep_prob"].to_numpy(dtype=float)
    ratios = mapped["weight_ratio"].to_numpy(dtype=float)
    # The figure is read at the ledger's keep_prob when the table has it.
    at = int(np.argmin(np.abs(kp - settings.keep_prob)))
    return {"training": True, "mapped_max_dev": float(mapped["max_abs_deviation"].max()),
            "drift_max_dev": float(drift["max_abs_deviation"].max()) if len(drift) else np.nan,
            "weight_ratio": float(ratios[at]), "keep_prob": float(kp[at]),
            "ratio_minus_p": float(np.max(np.abs(ratios - kp))),
            "keep_probs": sorted(set(kp.tolist())),
            "optimizers": sorted(set(mapped["optimizer"])), "draws": int(mapped["n_steps"].max())}


def decide_c14(m):
    fig = "learned weights, inverted ÷ standard dropout (theory keep_prob)"
    p, ratio = m["keep_prob"], m["weight_ratio"]
    if m["ratio_minus_p"] <= 1e-9 and m["mapped_max_dev"] <= TRAJECTORY_ATOL:
        return Verdict(HOLDS, fig, ratio, ratio, ratio,
                       f"Trained on the same masks, the inverted-dropout network's weights come out "
                       f"exactly keep_prob times the standard network's (ratio {ratio:.12g} at p = {p:g}; "
                       f"every keep_prob and optimizer tried: {', '.join(m['optimizers'])}) when the "
                       f"learning rate is mapped as in THEORY §3; with an equal learning rate the runs "
                       f"drift apart (max |Δw| {m['drift_max_dev']:.3g}), so 'downscaled' is exact only "
                       f"under that mapping.")
    if m["ratio_minus_p"] < 0.05:
        return Verdict(APPROXIMATELY, fig, ratio, ratio, ratio,
                       f"The weights come out about keep_prob times smaller (ratio {ratio:.4f} at p = {p:g}).")
    return Verdict(FALSE, fig, ratio, ratio, ratio,
                   f"The learned weights are not downscaled by keep_prob (ratio {ratio:.4f} at p = {p:g}).")


def measure_c15(settings):
    return measure_c14(settings)


def decide_c15(m):
    base = decide_c14(m)
    p = m["keep_prob"]
    fig = "w' ÷ w: inverted (w'/p at train, w' at test) vs paper (w at train, pw at test)"
    if base.verdict == HOLDS:
        return Verdict(HOLDS, fig, base.figure, base.ci_low, base.ci_high,
                       f"The two parametrisations are one model: the lecture's trained w' equals the "
                       f"paper's p·w (ratio {m['weight_ratio']:.12g} at p = {p:g}), so w'/p at train is "
                       f"the paper's w, and w' at test is the paper's pw.")
    return Verdict(base.verdict, fig, base.figure, base.ci_low, base.ci_high, base.explanation)


# --- C16 --------------------------------------------------------------------------------------
def measure_c16(settings):
    table = _experiment(settings, "mc_averaging").sort_values("k")
    not_worse = table[table["not_worse"].astype(bool)]
    last = table.iloc[-1]
    return {"ks": table["k"].tolist(), "error_mc": table["error_mc"].tolist(),
            "meet_k": int(not_worse["k"].iloc[0]) if len(not_worse) else None,
            "last_k": int(last["k"]), "last_mc": float(last["error_mc"]),
            "last_ws": float(last["error_weight_scaling"]), "diff": float(last["diff"]),
            "ci_low": float(last["diff_ci_low"]), "ci_high": float(last["diff_ci_high"]),
            "first_diff": float(table["diff"].iloc[0]), "first_k": int(table["k"].iloc[0]),
            "keep_prob": float(last["keep_prob"]), "n_seeds": int(last["n_seeds"]),
            "draws": int(last["k"]), "confidence_level": float(last["confidence_level"])}


def decide_c16(m):
    fig = (f"test error of the k = {m['last_k']} MC average − weight-scaled network's "
           f"(digits, paired over {m['n_seeds']} trained networks)")
    head = (f"Averaging k stochastic passes approaches the weight-scaled network: the error gap "
            f"falls from {m['first_diff']:+.4f} at k = {m['first_k']} to {m['diff']:+.4f} at "
            f"k = {m['last_k']}")
    if m["ci_low"] > 0:
        return Verdict(FALSE, fig, m["diff"], m["ci_low"], m["ci_high"],
                       head + ", but even there the average is still worse than weight scaling.")
    if m["ci_high"] < 0:
        return Verdict(HOLDS, fig, m["diff"], m["ci_low"], m["ci_high"],
                       head + ", where the average is better than weight scaling.")
    return Verdict(APPROXIMATELY, fig, m["diff"], m["ci_low"], m["ci_high"],
                   head + f"; from k = {m['meet_k']} on the two cannot be told apart (as in "
                   f"Srivastava et al.'s Fig. 11, about k = 50). Weight scaling is a one-pass "
                   f"approximation of the average, exact only for linear networks.")


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
    rng = block_rng(seed, 17)
    params = {}
    for i in range(1, len(sizes)):
        params[f"W{i}"] = rng.standard_normal((sizes[i], sizes[i - 1])) / math.sqrt(sizes[i - 1])
        params[f"b{i}"] = np.zeros((sizes[i], 1))
    return params


def measure_c17(settings, *, iterations=20, examples=64):
    p, seed = COURSE_KEEP_PROB, settings.seed
    params = _course_parameters(seed)
    X = block_rng(seed, 18).standard_normal((2, examples))
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
                       f"{plain['agreement']:.3f}, as independent masks give (p² + (1−p)² = {q:.4f}).")
    if not r["rejected"]:
        return Verdict(HOLDS, fig, r["agreement"], *r["ci"],
                       f"Successive iterations drop different units (agreement {r['agreement']:.3f}, "
                       f"independent masks {q:.4f}).")
    return Verdict(APPROXIMATELY, fig, r["agreement"], *r["ci"],
                   f"Masks change between iterations but not independently (agreement {r['agreement']:.3f}).")


# --- the ledger -----------------------------------------------------------------------------
_TEXTS = {
    "C01": ("Output at test time equals the expected output at training time.",
            "MC mean of an inverted layer's train output vs its eval output (TOST ±1 %); the gap "
            "after a ReLU / sigmoid unit downstream."),
    "C02": ("Dividing by keep_prob undoes dropout: the layer then has no effect.",
            "Per-unit train variance relative to x² vs 0 and vs (1−p)/p; fraction of zeroed units."),
    "C03": ("With the 1/keep_prob rescale the expected activation values do not change.",
            "Relative bias of E[train] vs x at keep_prob 0.2, 0.5, 0.8 (TOST ±1 %)."),
    "C04": ("Dividing by keep_prob further reduces the kept units.",
            "|x/p| ÷ |x| of kept units for the thread's 42 and −0.573."),
    "C05": ("The rescale keeps the layer's total energy, the 2-norm of A, the same.",
            "E‖D∘A/p‖ ÷ ‖A‖ and E‖D∘A/p‖² ÷ ‖A‖² on the thread's matrix (TOST ±5 %), without the "
            "rescale, and on a random 64×64 matrix."),
    "C06": ("‖mA‖ = |m|·‖A‖: 2.672810732482017 becomes 3.3410134156025215 at m = 1/0.8.",
            "Both norms recomputed from the thread's matrix."),
    "C07": ("After the rescale, dropout is equivalent to the unregularised network.",
            "Linear regression with input dropout: MC expected loss minus ‖y − pXw‖² vs "
            "p(1−p)‖Γw‖², and the adaptive-ridge minimiser vs least squares."),
    "C08": ("With 100 examples in one iteration there are 100 different thinned networks.",
            "Distinct masks among 100 examples (course network, 23 hidden units, keep_prob 0.86), "
            "per-sample vs batch-shared masks."),
    "C09": ("Per-sample and per-batch masks are both valid ways to implement dropout.",
            "Both unbiased (TOST ±1 %); variance of the batch mean, shared vs per-sample, vs THEORY §1."),
    "C10": ("Not rescaling at train and multiplying by keep_prob at test gives the same result.",
            "Standard and inverted layers vs their eval paths; networks trained each way with "
            "W' = pW and the THEORY §3 learning-rate mapping."),
    "C11": ("Dropping units means each next-layer neuron receives less input at train, so test "
            "inputs must be scaled down.",
            "E[next-layer pre-activation at train] (standard dropout) ÷ test without scaling (TOST "
            "±1 % of p)."),
    "C12": ("Regularisation, dropout included, never runs at test time; both the mask and the "
            "1/keep_prob are off.",
            "Eval path deterministic and the identity; MC-dropout averages of T passes vs eval."),
    "C13": ("The paper zeroes units at train and scales by 1/keep_prob at test.",
            "E[train] of standard dropout vs a test path multiplying by 1/p and vs the paper's pW."),
    "C14": ("Upscaling activations by 1/keep_prob during training makes the learned weights come "
            "out downscaled, so no test-time scaling is needed.",
            "Same network trained with standard and inverted dropout on identical masks: ratio of "
            "learned weights, with and without the learning-rate mapping."),
    "C15": ("The paper's w at train / pw at test is the lecture's w'/p at train / w' at test.",
            "The C14 experiment, read as the two parametrisations side by side."),
    "C16": ("Monte-Carlo averaging over many thinned networks approximates the weight-scaled "
            "network.",
            "Test error of the average of k stochastic passes vs the weight-scaled network, "
            "k = 1…1000, on scikit-learn's bundled digits."),
    "C17": ("Each training iteration drops a different random set of units.",
            "Mask agreement between successive calls of a course-template-style forward function "
            "(np.random.seed(1) on entry) vs the same function without the reseed."),
}

CLAIMS = {
    cid: {"claim": text, "measurement": how, "measure": globals()[f"measure_{cid.lower()}"],
          "decide": globals()[f"decide_{cid.lower()}"]}
    for cid, (text, how) in _TEXTS.items()
}


def _settings_iv(seed, max_draws, keep_prob, tables):
    if tables is not None and not isinstance(tables, dict):
        raise TypeError(f"`tables` must be a dict of experiment name -> DataFrame; got {tables!r}")
    return ClaimSettings(seed=seed_iv(seed),
                         max_draws=None if max_draws is None else positive_int_iv(max_draws, "max_draws"),
                         keep_prob=keep_prob_iv(keep_prob), tables=tables)


def evaluate_claim(claim_id, *, seed=0, max_draws=None, keep_prob=0.8, tables=None):
    """Measure one claim and decide it.

    Parameters
    ----------
    claim_id : str
        ``"C01"`` … ``"C17"``.
    seed : int, default 0
    max_draws : int, optional
        Cap on every Monte-Carlo run of the claim (default: the computed sizes).
    keep_prob : float, default 0.8
        The thread's keep probability; C08 and C17 use the course's 0.86 and C06 the thread's
        fixed m = 1/0.8 whatever this is.
    tables : dict, optional
        Experiment tables (``experiments.<name>(seed=seed)`` results, keyed by ``name``) to
        reuse; tables computed here are added to it.

    Returns
    -------
    ClaimResult
    """
    if claim_id not in CLAIMS:
        raise ValueError(f"`claim_id` must be one of {', '.join(CLAIMS)}; got {claim_id!r}")
    settings = _settings_iv(seed, max_draws, keep_prob, tables)
    spec = CLAIMS[claim_id]
    measurement = spec["measure"](settings)
    v = spec["decide"](measurement)
    if v.verdict not in VERDICTS:  # a decide function bug, not a user error
        raise AssertionError(f"{claim_id}: verdict {v.verdict!r} is not one of {VERDICTS}")
    return ClaimResult(
        id=claim_id, claim=spec["claim"], verdict=v.verdict, figure_name=v.figure_name,
        figure=float(v.figure), ci_low=float(v.ci_low), ci_high=float(v.ci_high),
        explanation=v.explanation, measurement=spec["measurement"], seed=settings.seed,
        draws=int(measurement.get("draws", 0)), keep_prob=float(measurement.get("keep_prob", np.nan)),
        # Intervals are at LEVEL unless the measurement comes from an experiment table that
        # states its own level (C16).
        confidence_level=float(measurement.get("confidence_level", LEVEL)),
        measurement_data=measurement)


def claims_ledger(*, seed=0, max_draws=None, keep_prob=0.8, claim_ids=None, tables=None,
                  progress=False):
    """Measure and decide every claim; one row per claim.

    Parameters
    ----------
    seed, max_draws, keep_prob
        As in :func:`evaluate_claim`.
    claim_ids : sequence of str, optional
        A subset of :data:`CLAIMS` (default: all, in order).
    tables : dict, optional
        Experiment tables computed by the caller (the report computes them once for its own
        tables and figures); C07, C10, C14–C16 read them from here.
    progress : bool
        A tqdm bar over claims.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LEDGER_COLUMNS`: ``id, claim, verdict, figure_name, figure, ci_low,
        ci_high, explanation, measurement, seed, draws, keep_prob, confidence_level``.
    """
    ids = list(CLAIMS) if claim_ids is None else list(claim_ids)
    if progress:
        from tqdm.auto import tqdm

        ids = tqdm(ids, desc="claims", unit="claim")
    tables = {} if tables is None else tables  # shared by C10, C14 and C15
    rows = [evaluate_claim(cid, seed=seed, max_draws=max_draws, keep_prob=keep_prob,
                           tables=tables).to_record()
            for cid in ids]
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


def format_ledger(frame, width=100):
    """The ledger as readable text: one block per claim."""
    import textwrap

    lines = []
    for row in frame.itertuples(index=False):
        lines.append(f"{row.id}  {row.verdict.upper()}  — {row.claim}")
        ci = ("" if row.ci_low == row.ci_high else
              f" ({100 * row.confidence_level:g}% CI [{row.ci_low:.6g}, {row.ci_high:.6g}])")
        lines.append(textwrap.fill(f"{row.figure_name}: {row.figure:.6g}{ci}", width,
                                   initial_indent="     ", subsequent_indent="     "))
        lines.append(textwrap.fill(row.explanation, width, initial_indent="     ",
                                   subsequent_indent="     "))
        kp = "" if np.isnan(row.keep_prob) else f", keep_prob {row.keep_prob:g}"
        lines.append(f"     settings: seed {row.seed}, draws {row.draws}{kp}")
        lines.append("")
    return "\n".join(lines)
