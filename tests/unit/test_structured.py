"""Structured dropout (DropBlock, stochastic depth): geometry, exact theory by enumeration, masks.

Every closed form and the transfer matrix are held to a brute-force enumeration of all seed
patterns on maps small enough to enumerate (≤ 2^12 patterns), exactly up to rounding.
"""

import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

import stats_dropout as sd
from stats_dropout.reference import structured_theory as st
from stats_dropout.reference import theory
from stats_dropout.reference.structured import (
    STRUCTURED_SCHEMES,
    DropBlockScheme,
    StochasticDepthScheme,
    dropblock_mask,
    get_structured_scheme,
)
from stats_dropout.studies import structured as study


@functools.lru_cache(maxsize=None)
def exact_bias(keep_prob, bs, size):
    """``st.ratio_bias_exact`` (read-only), computed once per argument: block 3 on 7×7 takes most of a
    second and several tests compare other results with it."""
    bias = st.ratio_bias_exact(keep_prob, bs, size)
    bias.setflags(write=False)
    return bias


def enumerate_dropblock(keep_prob, bs, h, w):
    """Every seed pattern on the valid positions: (probability, keep mask) pairs."""
    gamma = st.seed_rate(keep_prob, bs, (h, w))
    mr, mc = h - bs + 1, w - bs + 1
    out = []
    for bits in itertools.product((0, 1), repeat=mr * mc):
        seeds = np.array(bits, dtype=bool).reshape(mr, mc)
        dropped = np.zeros((h, w), dtype=bool)
        for i, j in zip(*np.nonzero(seeds)):
            dropped[i:i + bs, j:j + bs] = True
        k = seeds.sum()
        out.append((gamma**k * (1 - gamma) ** (seeds.size - k), ~dropped))
    return out


def brute_force(keep_prob, bs, h, w, n_maps=1):
    """Exact P(M_u), P(S = s), P(M_u = 1, S = s) and the per-unit ratio bias by enumeration."""
    cases = enumerate_dropblock(keep_prob, bs, h, w)
    n = h * w
    p_unit = sum(p * m for p, m in cases)
    law = np.zeros(n + 1)
    joint = np.zeros((h, w, n + 1))
    for p, m in cases:
        s = int(m.sum())
        law[s] += p
        joint[:, :, s] += p * m
    rest = np.array([1.0])
    for _ in range(n_maps - 1):
        rest = np.convolve(rest, law)
    total = np.arange(n + 1)[:, None] + np.arange(rest.size)[None, :]
    inverse = np.where(total > 0, 1.0 / np.maximum(total, 1), 0.0)
    bias = n_maps * n * np.einsum("hws,st,t->hw", joint, inverse, rest) - 1
    return p_unit, law, joint, bias


# --- geometry and keep rates ---------------------------------------------------------------
@pytest.mark.parametrize("keep, bs, fs", [(0.9, 7, 14), (0.8, 3, 7), (0.95, 5, 28), (0.9, 1, 7), (0.9, 7, 7)])
def test_seed_rate_is_eq1_and_matches_the_expected_block_area(keep, bs, fs):
    gamma = st.seed_rate(keep, bs, fs)
    assert gamma == pytest.approx(theory.dropblock_gamma(keep, bs, fs), rel=1e-15)
    # γ is chosen so that the expected total area of the blocks is (1 − keep) of the map
    assert gamma * (fs - bs + 1) ** 2 * bs**2 == pytest.approx((1 - keep) * fs**2, rel=1e-13)
    # overlaps make the kept fraction at least keep (equal for block 1 and one block position)
    kept = st.kept_fraction(keep, bs, fs)
    assert kept >= keep - 1e-15
    if bs in (1, fs):
        assert kept == pytest.approx(keep, rel=1e-14)


def test_expected_dropped_fraction_of_theory_md():
    # docs/THEORY.md §5: keep 0.9, block 7, map 14 drops 0.09294 of the units, not 0.1
    assert 1 - st.kept_fraction(0.9, 7, 14) == pytest.approx(0.09294, abs=5e-6)


def test_cover_counts_match_the_blocks():
    for bs, (h, w) in [(3, (7, 7)), (2, (4, 6)), (5, (5, 9)), (1, (3, 3))]:
        counts = np.zeros((h, w), dtype=int)
        for i in range(h - bs + 1):
            for j in range(w - bs + 1):
                counts[i:i + bs, j:j + bs] += 1
        np.testing.assert_array_equal(st.cover_counts(bs, (h, w)), counts)


def test_seed_rate_rejects_impossible_cells():
    with pytest.raises(ValueError, match="`block_size` must be in"):
        st.seed_rate(0.9, 8, 7)
    # γ ≤ 1 − keep always (bs (fs − bs + 1) ≥ fs), so every keep_prob has a seed rate
    assert all(st.seed_rate(0.01, bs, 7) <= 0.99 for bs in range(1, 8))


# --- exact theory against enumeration ------------------------------------------------------
@pytest.mark.parametrize("keep, bs, h, w, n_maps", [(0.8, 2, 4, 4, 1), (0.7, 3, 5, 5, 1), (0.9, 2, 3, 5, 1),
                                                    (0.6, 2, 4, 4, 3), (0.5, 4, 4, 4, 2), (0.8, 3, 6, 4, 1)])
def test_transfer_matrix_and_closed_forms_equal_enumeration(keep, bs, h, w, n_maps):
    p_unit, law, joint, bias = brute_force(keep, bs, h, w, n_maps)
    np.testing.assert_allclose(st.keep_probabilities(keep, bs, (h, w)), p_unit, rtol=1e-12)
    np.testing.assert_allclose(st.kept_sum_distribution(keep, bs, (h, w)), law, atol=1e-14)
    for unit in [(0, 0), (h // 2, w // 2), (h - 1, 1)]:
        np.testing.assert_allclose(st.kept_sum_distribution(keep, bs, (h, w), unit=unit), joint[unit], atol=1e-14)
    np.testing.assert_allclose(st.ratio_bias_exact(keep, bs, (h, w), n_maps), bias, atol=1e-12)
    assert st.all_dropped_probability(keep, bs, (h, w), n_maps) == pytest.approx(law[0] ** n_maps, rel=1e-12)
    mean, var = st.kept_sum_moments(keep, bs, (h, w))
    s = np.arange(law.size)
    assert mean == pytest.approx(law @ s, rel=1e-12)
    assert var == pytest.approx(law @ s**2 - (law @ s) ** 2, rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(h=st_.integers(2, 6), w=st_.integers(2, 6), bs=st_.integers(1, 4), keep=st_.floats(0.5, 0.99))
def test_property_ratio_bias_averages_to_minus_all_dropped(h, w, bs, keep):
    """Σ_u E[M_u N/S] / N = P(S > 0) for any geometry, and the transfer matrix equals enumeration."""
    if bs > min(h, w) or (h - bs + 1) * (w - bs + 1) > 12:
        return
    bias = st.ratio_bias_exact(keep, bs, (h, w))
    p0 = st.all_dropped_probability(keep, bs, (h, w))
    assert bias.mean() == pytest.approx(-p0, abs=1e-12)
    np.testing.assert_allclose(bias, brute_force(keep, bs, h, w)[3], atol=1e-12)
    # the law of the mask is invariant under the map's symmetries
    np.testing.assert_allclose(bias, bias[::-1, ::-1], atol=1e-12)


def test_block_one_is_binomial_and_block_equal_to_map_is_all_or_nothing():
    np.testing.assert_allclose(st.ratio_bias_exact(0.9, 1, 7), -(0.1**49), rtol=1e-12)
    np.testing.assert_allclose(st.ratio_bias_exact(0.9, 7, 7), -0.1, rtol=1e-12)
    # two maps of one block each: E[M N/S] = p (p·1 + q·2) ⇒ bias p(2 − p) − 1
    np.testing.assert_allclose(st.ratio_bias_exact(0.9, 7, 7, n_maps=2), 0.9 * (0.9 + 0.1 * 2) - 1, rtol=1e-12)
    np.testing.assert_allclose(st.fixed_rescale_bias(0.9, 7, 7), 0.0, atol=1e-15)


def test_known_values_on_a_7x7_map():
    # the report's headline numbers (transfer matrix; enumeration above proves the method)
    b = exact_bias(0.9, 3, 7)
    assert b[3, 3] == pytest.approx(-0.11213, abs=5e-5)
    assert b[0, 0] == pytest.approx(0.09876, abs=5e-5)
    # block 5 on 7×7: the centre is kept only when no block is drawn at all
    gamma = st.seed_rate(0.9, 5, 7)
    assert st.ratio_bias_exact(0.9, 5, 7)[3, 3] == pytest.approx((1 - gamma) ** 9 - 1, rel=1e-12)


def test_delta_method_error_is_small_for_small_blocks_and_measured_for_large():
    exact = exact_bias(0.9, 3, 7)
    approx = st.ratio_bias_approx(0.9, 3, 7)
    assert np.max(np.abs(exact - approx)) < 0.004
    # block 5 on 7×7 (few large blocks): the approximation is off by several percentage points
    assert np.max(np.abs(st.ratio_bias_exact(0.9, 5, 7) - st.ratio_bias_approx(0.9, 5, 7))) > 0.02


def test_exact_feasibility_limits():
    assert st.exact_is_feasible(3, 7) and st.exact_is_feasible(1, 28) and st.exact_is_feasible(12, 14)
    assert not st.exact_is_feasible(3, 14)
    with pytest.raises(ValueError, match="ratio_bias_approx or a Monte-Carlo"):
        st.ratio_bias_exact(0.9, 3, 14)


def test_orbits_partition_the_map_by_symmetry():
    labels, reps = st.orbits(7)
    assert len(reps) == 10 and labels.max() == 9
    np.testing.assert_array_equal(labels, labels.T)
    np.testing.assert_array_equal(labels, labels[::-1])
    labels, reps = st.orbits((4, 6))
    assert len(reps) == 6
    for r, c in reps:
        assert labels[r, c] == labels[3 - r, 5 - c]


def test_orbit_statistic_is_the_orbit_mean():
    labels, reps = st.orbits(5)
    stat = study._orbit_statistic(labels, len(reps), 2)
    rng = np.random.default_rng(0)
    scale = rng.uniform(1, 2, size=(3, 1, 1, 1))
    y = (rng.random((3, 2, 5, 5)) < 0.7) * scale  # every non-zero value of a draw is its scale
    expected = np.stack([[y[d][:, labels == o].mean() for o in range(len(reps))] for d in range(3)])
    np.testing.assert_allclose(stat(y), expected, rtol=1e-12)


# --- masks ---------------------------------------------------------------------------------
def dropped_is_union_of_blocks(mask, bs):
    """Opening test: every dropped unit lies in a bs×bs square of dropped units inside the map."""
    dropped = ~mask
    h, w = mask.shape
    covered = np.zeros_like(dropped)
    for i in range(h - bs + 1):
        for j in range(w - bs + 1):
            if dropped[i:i + bs, j:j + bs].all():
                covered[i:i + bs, j:j + bs] = True
    return np.array_equal(covered, dropped)


@settings(max_examples=30, deadline=None)
@given(seed=st_.integers(0, 2**32 - 1), bs=st_.integers(1, 7), fs=st_.integers(7, 12),
       keep=st_.floats(0.5, 0.95))
def test_property_dropped_units_form_whole_blocks_inside_the_map(seed, bs, fs, keep):
    masks = dropblock_mask(np.random.default_rng(seed), (3, 2, fs, fs), keep, bs)
    for m in masks.reshape(-1, fs, fs):
        assert dropped_is_union_of_blocks(m, bs)


def test_masks_differ_across_samples_and_channels_and_are_uncorrelated():
    rng = np.random.default_rng(5)
    masks = dropblock_mask(rng, (4000, 2, 2, 7, 7), 0.7, 3).astype(float)
    a, b, c = masks[:, 0, 0, 3, 3], masks[:, 0, 1, 3, 3], masks[:, 1, 0, 3, 3]
    # same unit in another channel / sample: correlation within 5 sd of 0 (sd ≈ 1/sqrt(n))
    for other in (b, c):
        assert abs(np.corrcoef(a, other)[0, 1]) < 5 / np.sqrt(len(a))
    # inside one map, neighbours are strongly correlated (blocks)
    assert np.corrcoef(a, masks[:, 0, 0, 3, 4])[0, 1] > 0.3


def test_dropblock_outputs_ratio_and_fixed_scales_and_zero_when_all_dropped():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    ratio = DropBlockScheme(block_size=3)
    y = ratio.train(x, 0.8, 1)
    assert y.dtype == np.float32 and y.shape == x.shape
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] * x.size / kept.sum(), rtol=1e-6)
    fixed = DropBlockScheme(block_size=3, normalize="keep_prob")
    y = fixed.train(x, 0.8, 1)
    np.testing.assert_allclose(y[y != 0], x[y != 0] / 0.8, rtol=1e-6)
    # one block covers the whole map: at keep 0.5 half of the single-map calls drop everything
    draws = DropBlockScheme(block_size=7).sample_train(np.ones((1, 7, 7)), 0.5, 200, 3)
    flat = draws.reshape(200, -1)
    assert np.all(np.isfinite(draws))
    assert 0 < np.sum(np.all(flat == 0, axis=1)) < 200
    assert np.all((flat == 0) | (flat == 1))
    # block sizes larger than the map are clamped (reference code, timm)
    assert DropBlockScheme(block_size=9).effective_block_size((2, 3, 7, 7)) == 7
    np.testing.assert_array_equal(ratio.train(x, 1.0, 0), x)
    np.testing.assert_array_equal(ratio.eval(x, 0.8), x)


def test_dropblock_train_mean_uses_the_exact_theory():
    s = DropBlockScheme(block_size=3)
    x = np.full((1, 1, 7, 7), 2.0)
    np.testing.assert_allclose(s.train_mean(x, 0.9)[0, 0], 2 * (1 + exact_bias(0.9, 3, 7)))
    f = DropBlockScheme(block_size=3, normalize="keep_prob")
    np.testing.assert_allclose(f.train_mean(x, 0.9)[0, 0], 2 * st.keep_probabilities(0.9, 3, 7) / 0.9)


# --- stochastic depth -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sample", "batch"])
def test_stochastic_depth_mask_is_constant_over_non_batch_axes(mode):
    s = StochasticDepthScheme(mode=mode)
    x = np.random.default_rng(1).standard_normal((16, 3, 4))
    y = s.sample_train(x, 0.6, 50, 2)
    np.testing.assert_allclose(y[y != 0], (np.broadcast_to(x, y.shape) / 0.6)[y != 0], rtol=1e-15)
    per_sample = (y != 0).reshape(50, 16, -1)
    assert np.all(per_sample == per_sample[:, :, :1])  # one draw per sample ...
    if mode == "batch":  # ... and one per call
        assert np.all(per_sample == per_sample[:, :1, :1])
    else:
        assert np.any(per_sample[:, :, 0].min(axis=1) != per_sample[:, :, 0].max(axis=1))
    assert s.mask_shape(x.shape) == ((16 if mode == "sample" else 1), 1, 1)


def test_drop_path_is_the_registered_drop_path_law():
    assert get_structured_scheme("stochastic_depth").mask_shape((8, 3, 2)) == \
        sd.get_scheme("drop_path").mask_shape((8, 3, 2))


@pytest.mark.parametrize("b", [1, 2, 3, 5])
@pytest.mark.parametrize("p", [0.3, 0.8])
def test_ratio_stochastic_depth_closed_form_by_enumeration(b, p):
    mean = second = 0.0
    for bits in itertools.product((0, 1), repeat=b):
        m = np.array(bits)
        k = m.sum()
        prob = p**k * (1 - p) ** (b - k)
        y0 = m[0] * b / k if k else 0.0
        mean += prob * y0
        second += prob * y0**2
    s = get_structured_scheme("stochastic_depth_ratio")
    assert st.stochastic_depth_bias(p, b, "sample", "ratio") == pytest.approx(mean - 1, abs=1e-14)
    assert s.train_var(np.ones((b, 2)), p)[0, 0] == pytest.approx(second - mean**2, abs=1e-13)
    assert st.stochastic_depth_statistic_sd(p, b, "sample", "ratio") == pytest.approx(
        np.sqrt((1 - p) ** b * (1 - (1 - p) ** b)), rel=1e-14)
    # one draw per batch: the ratio undoes the draw's rescale
    assert st.stochastic_depth_bias(p, b, "batch", "ratio") == pytest.approx(p - 1)
    assert st.stochastic_depth_bias(p, b, "sample", "keep_prob") == 0.0


def test_ratio_stochastic_depth_scales_by_batch_over_kept():
    y = get_structured_scheme("stochastic_depth_ratio").sample_train(np.ones((4, 3)), 0.5, 200, 0)
    for draw in y:
        k = np.count_nonzero(draw[:, 0])
        np.testing.assert_allclose(draw[draw != 0], 4 / max(k, 1))
    assert np.any(np.all(y == 0, axis=(1, 2)))  # all dropped: 0, no NaN (q^B = 1/16 of the draws)
    paper = get_structured_scheme("stochastic_depth_eval")
    np.testing.assert_allclose(paper.eval(np.ones(3), 0.8), 0.8)
    assert set(np.unique(paper.train(np.ones((5, 2)), 0.8, 1))) <= {0.0, 1.0}


# --- registry ---------------------------------------------------------------------------------
def test_structured_registry_is_separate_from_schemes():
    assert {"dropblock", "dropblock_keep_prob", "stochastic_depth", "stochastic_depth_batch",
            "stochastic_depth_ratio", "stochastic_depth_eval"} == set(STRUCTURED_SCHEMES)
    assert not set(STRUCTURED_SCHEMES) & set(sd.SCHEMES)  # the report sweep iterates SCHEMES
    with pytest.raises(ValueError, match=r"`name` must be one of .*'dropblock'.*got 'dropblok'"):
        get_structured_scheme("dropblok")
    with pytest.raises(ValueError, match="`normalize` must be one of"):
        DropBlockScheme(normalize="mean")
    with pytest.raises(ValueError, match="at least 2 dimension"):
        get_structured_scheme("dropblock").train(np.ones(5), 0.9)


def test_bound_structured_scheme_feeds_the_monte_carlo_engine():
    bound = get_structured_scheme("dropblock_keep_prob").with_block_size(3).bind(0.9, 0)
    est = sd.estimate_train_moments(bound, np.ones((1, 7, 7)), draws=4000, seed=1)
    exact = st.keep_probabilities(0.9, 3, 7) / 0.9
    assert np.all(np.abs(est.mean[0] - exact) < 6 * est.std_error[0])


# --- the study ---------------------------------------------------------------------------------
def test_measure_cell_sentence_and_verdicts():
    r = study.measure_dropblock_bias(7, 3, 0.9, max_draws=20_000, false_pass_rate=0.05)
    assert r.verdict == "biased" and r.decision.rejected
    assert r.row["exact_bias"] == pytest.approx(exact_bias(0.9, 3, 7)[2, 2])
    assert r.row["mc_ci_low"] < r.row["exact_bias"] < r.row["mc_ci_high"]
    assert r.sentence.startswith("DropBlock (block 3, ratio normalisation) on a 7×7 map at keep 0.9 is biased by")
    assert "(exact -11.4 %" in r.sentence
    ok = study.measure_stochastic_depth_bias(8, 0.9, false_fail_rate=1e-3, false_pass_rate=0.05)
    assert ok.verdict == "within margin" and ok.equivalence.equivalent and not ok.decision.rejected
    r = study.measure_structured_bias("stochastic_depth_ratio", 0.9, batch_size=1, max_draws=5000)
    assert r.verdict == "biased"
    with pytest.raises(ValueError, match="`feat_size` is required"):
        study.measure_structured_bias("dropblock", 0.9)
    with pytest.raises(ValueError, match="`margin` must be in"):
        study.measure_dropblock_bias(7, 3, 0.9, margin=0)


def test_sample_size_is_computed_and_capped():
    r = study.measure_stochastic_depth_bias(32, 0.9, normalize="ratio", false_fail_rate=1e-3)
    assert r.row["n_draws"] == 1000  # sd ≈ 0: the floor, not design's climb from n = 2
    r = study.measure_dropblock_bias(7, 1, 0.9, max_draws=3000)
    assert r.row["n_draws"] == 3000 and r.row["min_detectable_effect"] > 0.005


def test_table_columns_and_grid():
    t = study.dropblock_bias_table(feat_sizes=(7,), keep_probs=(0.9,), block_sizes=(1, 7, 9),
                                   normalizations=("ratio",), max_draws=3000)
    assert list(t.columns) == study.TABLE_COLUMNS and len(t) == 2  # block 9 > map 7 is skipped
    assert t["false_fail_rate"].iloc[0] == pytest.approx(1e-3 / 2)
    t = study.stochastic_depth_bias_table(batch_sizes=(2,), keep_probs=(0.8,), max_draws=3000)
    assert len(t) == 5 and set(t["verdict"]) <= {"biased", "within margin", "undecided"}
