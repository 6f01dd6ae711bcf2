"""Structured dropout measured: the per-unit bias of DropBlock and stochastic depth, decided.

One *cell* is a scheme, a geometry (feature-map size and block size, or a batch size) and a keep
probability. Its train output on ``x = 1`` is drawn by the Monte-Carlo engine
(:func:`~stats_dropout.inference.montecarlo.estimate_statistic_moments`); the per-draw statistic
is ``y_u / eval_u`` averaged over each *orbit* of units (units the map's symmetries exchange have
the same law, :func:`~stats_dropout.reference.structured_theory.orbits`), so ``E − 1`` is the
orbit's relative bias. Two decisions per cell, both at the cell's false-fail rate α:

* ``decision`` (:func:`~stats_dropout.inference.stats.decide_mean_equal` with a dead band of
  ``margin``, Holm over the orbits): *rejected* when some unit's bias is shown to exceed
  ``±margin`` — the verdict "biased". A scheme whose every bias is within the margin is rejected
  with probability ≤ α.
* ``equivalence`` (:func:`~stats_dropout.inference.stats.decide_equivalence`, TOST per orbit, an
  intersection–union test needing no split): every orbit's bias shown inside ``±margin`` — the
  verdict "within margin". Otherwise "undecided".

Draws are computed, not guessed: enough for the dead-band test to detect a bias of twice the
margin with probability ``1 − false_pass_rate`` (:func:`~stats_dropout.inference.design.min_draws_for_mean_error`
over the orbits) and for the TOST to accept a zero bias with that probability
(:func:`~stats_dropout.inference.design.tost_sample_size`), from the statistic's sd
(:func:`~stats_dropout.reference.structured_theory.orbit_statistic_sd`; exact for stochastic
depth).

The number each sentence and row quotes is the bias at the unit theory says is worst (chosen before
any draw): the exact value where it is computable (closed form, transfer matrix), else the
delta-method approximation, next to its Monte-Carlo estimate and interval.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pandas as pd
from scipy import stats

from stats_dropout._internal.validation import keep_probs_iv, positive_int_iv, probability_iv, seed_iv
from stats_dropout.inference.design import min_draws_for_mean_error, tost_sample_size
from stats_dropout.inference.montecarlo import estimate_statistic_moments
from stats_dropout.inference.results import Decision, EquivalenceResult
from stats_dropout.inference.stats import decide_equivalence, decide_mean_equal, split_false_fail_rate, t_interval
from stats_dropout.reference import structured_theory as st
from stats_dropout.reference.structured import (
    STRUCTURED_SCHEMES,
    DropBlockScheme,
    StochasticDepthScheme,
    get_structured_scheme,
)

__all__ = ["StructuredBiasResult", "measure_dropblock_bias", "measure_stochastic_depth_bias",
           "measure_structured_bias", "dropblock_bias_table", "stochastic_depth_bias_table",
           "TABLE_COLUMNS"]

#: The report's DropBlock grid (issue #11 §3).
FEAT_SIZES = (7, 14, 28)
BLOCK_SIZES = (1, 3, 5, 7)
KEEP_PROBS = (0.8, 0.9, 0.95)
BATCH_SIZES = (1, 2, 8, 32)

TABLE_COLUMNS = [
    "scheme", "normalize", "feat_size", "block_size", "batch_size", "n_maps", "keep_prob", "seed_rate",
    "kept_fraction", "all_dropped_probability", "mean_bias", "unit", "unit_kind", "exact_bias",
    "approx_bias", "theory_bias", "theory_method", "centre_bias", "mc_bias", "mc_ci_low", "mc_ci_high",
    "confidence_level", "pvalue", "min_detectable_effect", "tost_pvalue", "margin", "verdict",
    "n_draws", "n_orbits", "false_fail_rate", "false_pass_rate", "seed", "cell_seed", "sentence",
]


@dataclasses.dataclass(frozen=True)
class StructuredBiasResult:
    """One cell measured: theory, Monte-Carlo estimate, the two decisions and a sentence.

    Attributes
    ----------
    row : dict
        The cell's row of :data:`TABLE_COLUMNS` (biases relative: ``E[y_u]/eval_u − 1``).
    decision : Decision
        Dead-band test, Holm over orbits: ``rejected`` means biased beyond ``±margin``.
    equivalence : EquivalenceResult
        The least favourable orbit's TOST: ``equivalent`` for every orbit means within margin.
    sentence : str
    """

    row: dict
    decision: Decision
    equivalence: EquivalenceResult
    sentence: str

    @property
    def verdict(self):
        return self.row["verdict"]

    def __str__(self):
        return self.sentence


def cell_seed(seed, *key):
    """Seed of one cell: a hash of the run seed and the cell (independent of the grid's order)."""
    digest = hashlib.sha256("|".join(map(repr, (seed, *key))).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _orbit_statistic(labels, n_orbits, n_maps):
    """Per-draw orbit means of ``y`` for outputs ``(n, n_maps, H, W)`` on ``x = 1``.

    On ``x = 1`` every non-zero output of a draw equals that draw's scale (``N/ΣM`` or
    ``1/keep``), so the orbit mean is ``scale · (kept units of the orbit) / |orbit|``: the counts
    are one float32 product with the 0/1 orbit-membership matrix (exact integers), the rest float64.
    """
    flat = np.tile(labels.ravel(), n_maps)
    member = np.zeros((flat.size, n_orbits), dtype=np.float32)
    member[np.arange(flat.size), flat] = 1.0
    sizes = member.sum(axis=0).astype(np.float64)

    def statistic(samples):
        y = np.asarray(samples).reshape(len(samples), -1)
        counts = (y != 0).astype(np.float32) @ member
        return counts.astype(np.float64) * (y.max(axis=1, keepdims=True).astype(np.float64) / sizes)

    return statistic


def _plan(sd, margin, alpha, beta, n_tests, min_draws, max_draws, theory_bias=0.0):
    """Draws for the dead-band test to detect a bias of twice the margin, and for the TOST to
    accept the bias theory expects (``|theory_bias| < margin``; its distance to the margin is
    taken as at least ``margin/2``, so a bias theory puts near the margin may come out undecided)."""
    # design's t-test iteration only climbs from its start, so a normal-theory size below the floor
    # is taken as the floor (the t and normal quantiles agree at ≥ 1000 draws)
    z_only = min_draws_for_mean_error(margin, sd, false_fail_rate=alpha, false_pass_rate=beta,
                                      n_tests=n_tests, null_sd_known=True)
    n = min_draws if z_only < min_draws else min_draws_for_mean_error(
        margin, sd, false_fail_rate=alpha, false_pass_rate=beta, n_tests=n_tests)
    n = max(n, tost_sample_size(sd, margin, alpha=alpha, power=1 - beta, min_draws=min_draws))
    if abs(theory_bias) < margin and sd > 0:
        gap = max(margin - abs(theory_bias), margin / 2)
        n = max(n, math.ceil(((stats.norm.isf(alpha) + stats.norm.isf(beta)) * sd / gap) ** 2))
    return n if max_draws is None else min(n, max_draws)


def _decide(moments, expected, worst, margin, alpha, beta, prop):
    """Dead-band decision over orbits, TOST per orbit (IUT), CI at the unit theory calls worst."""
    decision = decide_mean_equal(moments, expected, false_fail_rate=alpha, false_pass_rate=beta,
                                 property=prop, atol=margin, scale=np.ones(np.shape(moments.mean)))
    df = moments.n_draws - 1
    rel = np.asarray(moments.mean) - 1.0
    se = np.asarray(moments.std_error)
    tosts = [decide_equivalence(float(b), float(s), margin, df=df, alpha=alpha) for b, s in zip(rel, se)]
    least = max(tosts, key=lambda r: r.pvalue)
    m = rel.size
    level = 1 - alpha / m
    low, high = t_interval(rel[worst], se[worst], df, level)
    verdict = ("biased" if decision.rejected else
               "within margin" if all(r.equivalent for r in tosts) else "undecided")
    return decision, least, verdict, float(rel[worst]), float(low), float(high), level


def _rates_iv(margin, false_fail_rate, false_pass_rate, seed, max_draws, min_draws):
    if not 0 < margin < 1:
        raise ValueError(f"`margin` must be in (0, 1) (a relative bias); got {margin!r}")
    return (float(margin), probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"), seed_iv(seed),
            None if max_draws is None else positive_int_iv(max_draws, "max_draws"),
            positive_int_iv(min_draws, "min_draws"))


def _unit_kind(unit, h, w):
    r, c = unit
    edge_r, edge_c = r in (0, h - 1), c in (0, w - 1)
    if edge_r and edge_c:
        return "corner"
    if (h % 2, w % 2) == (1, 1) and (r, c) == (h // 2, w // 2):
        return "centre"
    return "edge" if edge_r or edge_c else "interior"


def _pct(v):
    return f"{v * 100:+.3g} %" if np.isfinite(v) else "n/a"


def measure_dropblock_bias(feat_size, block_size, keep_prob, *, normalize="ratio", n_maps=1, margin=0.005,
                           false_fail_rate=1e-6, false_pass_rate=1e-3, seed=0, max_draws=None,
                           min_draws=1000, workers=1):
    """Measure and decide DropBlock's per-unit bias on an ``fs × fs`` map (one cell).

    Parameters
    ----------
    feat_size, block_size : int
        Map size ``fs`` (or ``(H, W)``) and block size (``≤ min(H, W)``).
    keep_prob : float
    normalize : {"ratio", "keep_prob"}
        ``x M numel/ΣM`` (the paper's reference code) or ``x M / keep_prob``.
    n_maps : int
        Independent maps (samples × channels) in one call: the ratio sums over all of them, as in
        the reference code. 1 is the worst case for the ratio (it only shrinks its own part of
        the bias: ``Var ΣM / (E ΣM)²`` falls as ``1/n_maps``; the position bias stays).
    margin : float
        Bias that counts as negligible (relative, 0.005 = 0.5 %).
    false_fail_rate, false_pass_rate : float
        α of both decisions; β at a bias of twice the margin (and for the TOST at zero bias).
    seed : int
        Run seed; the cell's own seed is a hash of it and the cell.
    max_draws, min_draws : int
        Cap and floor on the computed number of draws (a cap is reported by a larger
        ``min_detectable_effect``).

    Returns
    -------
    StructuredBiasResult
    """
    margin, alpha, beta, seed, max_draws, min_draws = _rates_iv(margin, false_fail_rate, false_pass_rate,
                                                               seed, max_draws, min_draws)
    h, w = st.map_shape(feat_size)
    scheme = DropBlockScheme(name="dropblock" if normalize == "ratio" else "dropblock_keep_prob",
                             block_size=block_size, normalize=normalize)
    bs = scheme.effective_block_size((h, w))
    n_maps = positive_int_iv(n_maps, "n_maps")
    gamma = st.seed_rate(keep_prob, bs, (h, w))
    labels, reps = st.orbits((h, w))
    exact = approx = None
    if normalize == "keep_prob":
        exact, method = st.fixed_rescale_bias(keep_prob, bs, (h, w)), "closed form"
    else:
        approx = st.ratio_bias_approx(keep_prob, bs, (h, w), n_maps)
        if st.exact_is_feasible(bs, (h, w)):
            exact = st.ratio_bias_exact(keep_prob, bs, (h, w), n_maps)
            method = "closed form" if bs == 1 else "transfer matrix"
        else:
            method = "delta method"
    theory = exact if exact is not None else approx
    per_orbit = np.array([theory[u] for u in reps])
    worst = int(np.argmax(np.abs(per_orbit)))
    unit = reps[worst]
    sd = float(np.max(st.orbit_statistic_sd(keep_prob, bs, (h, w), normalize, n_maps)))
    n = _plan(sd, margin, alpha, beta, len(reps), min_draws, max_draws,
              float(np.max(np.abs(per_orbit))))
    cseed = cell_seed(seed, scheme.name, h, w, bs, float(keep_prob), n_maps)
    x = np.ones((n_maps, h, w))
    moments = estimate_statistic_moments(scheme.bind(keep_prob), x, _orbit_statistic(labels, len(reps), n_maps),
                                         draws=n, seed=cseed, workers=workers)
    prop = f"E[train(x)] = x within ±{margin:.2%} at every unit"
    decision, tost, verdict, est, low, high, level = _decide(moments, 1.0, worst, margin, alpha, beta, prop)
    p0 = st.all_dropped_probability(keep_prob, bs, (h, w), n_maps) if normalize == "ratio" else 0.0
    kept = st.kept_fraction(keep_prob, bs, (h, w))
    centre = (h // 2, w // 2)
    row = {
        "scheme": scheme.name, "normalize": normalize, "feat_size": h if h == w else f"{h}x{w}",
        "block_size": bs, "batch_size": np.nan, "n_maps": n_maps, "keep_prob": keep_prob,
        "seed_rate": gamma, "kept_fraction": kept, "all_dropped_probability": p0,
        "mean_bias": 0.0 - p0 if normalize == "ratio" else kept / keep_prob - 1.0,
        "unit": f"({unit[0]}, {unit[1]})", "unit_kind": _unit_kind(unit, h, w),
        "exact_bias": float(exact[unit]) if exact is not None else np.nan,
        "approx_bias": float(approx[unit]) if approx is not None else np.nan,
        "theory_bias": float(theory[unit]), "theory_method": method, "centre_bias": float(theory[centre]),
        "mc_bias": est, "mc_ci_low": low, "mc_ci_high": high, "confidence_level": level,
        "pvalue": decision.pvalue, "min_detectable_effect": decision.min_detectable_effect,
        "tost_pvalue": tost.pvalue, "margin": margin, "verdict": verdict, "n_draws": n,
        "n_orbits": len(reps), "false_fail_rate": alpha, "false_pass_rate": beta, "seed": seed,
        "cell_seed": cseed,
    }
    norm = "ratio normalisation" if normalize == "ratio" else "1/keep_prob rescale"
    ref = (f"exact {_pct(row['exact_bias'])}" if exact is not None else
           f"delta-method approximation {_pct(row['approx_bias'])}; exact not feasible on this map")
    sentence = (f"DropBlock (block {bs}, {norm}) on a {h}×{w} map at keep {keep_prob:g} is biased by "
                f"{_pct(est)} at its {row['unit_kind']} unit {row['unit']} ({ref}; CI {_pct(low)} to "
                f"{_pct(high)}, {n} draws): {verdict} (margin ±{margin:.2%})")
    row["sentence"] = sentence
    return StructuredBiasResult(row, decision, tost, sentence)


def measure_stochastic_depth_bias(batch_size, keep_prob, *, mode="sample", normalize="keep_prob", features=4,
                                  margin=0.005, false_fail_rate=1e-6, false_pass_rate=1e-3, seed=0,
                                  max_draws=None, min_draws=1000, workers=1):
    """Measure and decide stochastic depth's bias for a batch of ``batch_size`` (one cell).

    ``mode`` ``"sample"`` (one draw per sample) or ``"batch"`` (one per call); ``normalize``
    ``"keep_prob"``, ``"ratio"`` (``numel/ΣM``) or ``"eval"`` (no train rescale; compared with the
    eval output ``keep · x``). Samples are exchangeable: one orbit, the batch mean of
    ``y / eval``; its sd is exact (:func:`~stats_dropout.reference.structured_theory.stochastic_depth_statistic_sd`).
    Other parameters as :func:`measure_dropblock_bias`.
    """
    margin, alpha, beta, seed, max_draws, min_draws = _rates_iv(margin, false_fail_rate, false_pass_rate,
                                                               seed, max_draws, min_draws)
    b = positive_int_iv(batch_size, "batch_size")
    name = next((k for k, v in STRUCTURED_SCHEMES.items() if isinstance(v, StochasticDepthScheme)
                 and (v.mode, v.normalize) == (mode, normalize)), f"stochastic_depth_{mode}_{normalize}")
    scheme = StochasticDepthScheme(name=name, mode=mode, normalize=normalize)
    exact = st.stochastic_depth_bias(keep_prob, b, mode, normalize)
    sd = st.stochastic_depth_statistic_sd(keep_prob, b, mode, normalize)
    if normalize == "eval":
        sd = sd / keep_prob
    n = _plan(sd, margin, alpha, beta, 1, min_draws, max_draws, exact)
    cseed = cell_seed(seed, name, b, float(keep_prob))
    x = np.ones((b, positive_int_iv(features, "features")))
    divisor = keep_prob if normalize == "eval" else 1.0

    def statistic(samples):
        return np.asarray(samples, dtype=np.float64).mean(axis=(1, 2))[:, None] / divisor

    moments = estimate_statistic_moments(scheme.bind(keep_prob), x, statistic, draws=n, seed=cseed, workers=workers)
    prop = f"E[train(x)] = eval(x) within ±{margin:.2%}"
    decision, tost, verdict, est, low, high, level = _decide(moments, 1.0, 0, margin, alpha, beta, prop)
    row = {
        "scheme": name, "normalize": normalize, "feat_size": np.nan, "block_size": np.nan, "batch_size": b,
        "n_maps": np.nan, "keep_prob": keep_prob, "seed_rate": np.nan, "kept_fraction": keep_prob,
        "all_dropped_probability": (1 - keep_prob) ** (b if mode == "sample" else 1),
        "mean_bias": exact, "unit": "every sample", "unit_kind": mode, "exact_bias": exact,
        "approx_bias": np.nan, "theory_bias": exact, "theory_method": "closed form", "centre_bias": exact,
        "mc_bias": est, "mc_ci_low": low, "mc_ci_high": high, "confidence_level": level,
        "pvalue": decision.pvalue, "min_detectable_effect": decision.min_detectable_effect,
        "tost_pvalue": tost.pvalue, "margin": margin, "verdict": verdict, "n_draws": n, "n_orbits": 1,
        "false_fail_rate": alpha, "false_pass_rate": beta, "seed": seed, "cell_seed": cseed,
    }
    what = {"keep_prob": "divided by keep", "ratio": "ratio-normalised", "eval": "scaled by keep at eval"}[normalize]
    sentence = (f"Stochastic depth (one draw per {mode}, {what}) on a batch of {b} at keep {keep_prob:g} is "
                f"biased by {_pct(est)} (exact {_pct(exact)}; CI {_pct(low)} to {_pct(high)}, {n} draws): "
                f"{verdict} (margin ±{margin:.2%})")
    row["sentence"] = sentence
    return StructuredBiasResult(row, decision, tost, sentence)


def measure_structured_bias(scheme, keep_prob, *, feat_size=None, block_size=None, batch_size=None, **kwargs):
    """:func:`measure_dropblock_bias` or :func:`measure_stochastic_depth_bias` for a registered name.

    ``scheme`` is a name of :data:`~stats_dropout.reference.structured.STRUCTURED_SCHEMES`;
    DropBlock needs ``feat_size`` (``block_size`` defaults to the scheme's, clamped to the map),
    stochastic depth ``batch_size``.
    """
    s = get_structured_scheme(scheme)
    if isinstance(s, DropBlockScheme):
        if feat_size is None:
            raise ValueError(f"`feat_size` is required for {scheme!r}")
        return measure_dropblock_bias(feat_size, s.block_size if block_size is None else block_size, keep_prob,
                                      normalize=s.normalize, **kwargs)
    if batch_size is None:
        raise ValueError(f"`batch_size` is required for {scheme!r}")
    return measure_stochastic_depth_bias(batch_size, keep_prob, mode=s.mode, normalize=s.normalize, **kwargs)


def _grid(cells, measure, false_fail_rate, progress, desc):
    alpha = split_false_fail_rate(false_fail_rate, len(cells))
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc=desc, unit="cell")
    return pd.DataFrame([measure(cell, alpha).row for cell in cells], columns=TABLE_COLUMNS)


def dropblock_bias_table(feat_sizes=FEAT_SIZES, keep_probs=KEEP_PROBS, block_sizes=BLOCK_SIZES,
                         normalizations=("ratio", "keep_prob"), *, n_maps=1, margin=0.005, false_fail_rate=1e-3,
                         false_pass_rate=1e-2, seed=0, max_draws=None, workers=1, progress=False):
    """One row per (normalisation, feature size, block size, keep_prob): :data:`TABLE_COLUMNS`.

    ``false_fail_rate`` is the table's total (Bonferroni over its cells); block sizes larger than
    a map are skipped. Cells are seeded independently (:func:`cell_seed`), so a row does not
    depend on the rest of the grid.
    """
    keep_probs = keep_probs_iv(keep_probs)
    cells = [(norm, fs, bs, p) for norm in normalizations for fs in feat_sizes for bs in block_sizes
             for p in keep_probs if bs <= fs]

    def measure(cell, alpha):
        norm, fs, bs, p = cell
        return measure_dropblock_bias(fs, bs, p, normalize=norm, n_maps=n_maps, margin=margin,
                                      false_fail_rate=alpha, false_pass_rate=false_pass_rate, seed=seed,
                                      max_draws=max_draws, workers=workers)

    return _grid(cells, measure, false_fail_rate, progress, "DropBlock cells")


def stochastic_depth_bias_table(batch_sizes=BATCH_SIZES, keep_probs=KEEP_PROBS,
                                variants=(("sample", "keep_prob"), ("batch", "keep_prob"), ("sample", "ratio"),
                                          ("batch", "ratio"), ("batch", "eval")),
                                *, margin=0.005, false_fail_rate=1e-3, false_pass_rate=1e-2, seed=0,
                                max_draws=None, workers=1, progress=False):
    """One row per (variant, batch size, keep_prob) of stochastic depth: :data:`TABLE_COLUMNS`."""
    keep_probs = keep_probs_iv(keep_probs)
    cells = [(mode, norm, b, p) for mode, norm in variants for b in batch_sizes for p in keep_probs]

    def measure(cell, alpha):
        mode, norm, b, p = cell
        return measure_stochastic_depth_bias(b, p, mode=mode, normalize=norm, margin=margin, false_fail_rate=alpha,
                                             false_pass_rate=false_pass_rate, seed=seed, max_draws=max_draws,
                                             workers=workers)

    return _grid(cells, measure, false_fail_rate, progress, "stochastic depth cells")
