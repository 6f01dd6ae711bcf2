"""Unit tests of the claims ledger: verdicts are functions of the measurement.

Each ``decide_cNN`` is fed hand-made measurements; changing the measurement must change the
verdict, which is what "computed at run time, never typed in" means in a test.
"""

import math

import numpy as np
import pandas as pd
import pytest

from stats_dropout import claims
from stats_dropout.studies.claims import (
    APPROXIMATELY,
    CLAIMS,
    EXPECTATION_ONLY,
    FALSE,
    HOLDS,
    VERDICTS,
)


def _bias(bias, half, *, margin=0.01, equivalent=None):
    low, high = bias - half, bias + half
    if equivalent is None:
        equivalent = -margin < low and high < margin
    return {"bias": bias, "se": half / 2.576, "ci_low": low, "ci_high": high, "n": 1000,
            "margin": margin, "equivalent": equivalent, "tost_pvalue": 0.0,
            "rejected": low > 0 or high < 0}


def _gaps(relu, sigmoid, half=0.01, *, margin=0.01):
    def one(v):
        return {"relative_gap": v, "se": half / 2.576, "ci_low": v - half, "ci_high": v + half,
                "equivalent": -margin < v - half and v + half < margin}

    return {"gaps": {"relu": one(relu), "sigmoid": one(sigmoid)}, "margin": margin,
            "z_eval": 0.5, "n_inputs": 20}


def _c05(ratio, half, equivalent):
    return {"norm_ratio": ratio, "ci_low": ratio - half, "ci_high": ratio + half, "sq_ratio": 1.25,
            "sq_theory": 1.25, "no_rescale_ratio": 0.88, "random_64x64_ratio": 1.118,
            "margin": 0.05, "equivalent": equivalent, "keep_prob": 0.8}


def _c06(norm_a, norm_b):
    return {"m": 1.25, "norm_a": norm_a, "norm_b": norm_b, "ratio": norm_b / norm_a,
            "identity_error": abs(norm_b - 1.25 * norm_a) / (1.25 * norm_a),
            "thread_a_error": abs(norm_a - claims.THREAD_NORM_A) / claims.THREAD_NORM_A,
            "thread_b_error": abs(norm_b - claims.THREAD_NORM_B) / claims.THREAD_NORM_B}


def _c08(fraction, half, equivalent):
    return {"per_sample": {"fraction": fraction, "ci": (fraction - half, fraction + half)},
            "shared": {"fraction": 0.01}, "batch": 100, "units": 23, "expected_fraction": 0.943,
            "equivalent_to_all": equivalent, "keep_prob": 0.86}


def _c09(ratio, half, bias_shared=0.0):
    part = {"bias": 0.0, "bias_ci": (-0.002, 0.002), "equivalent": True}
    shared = {"bias": bias_shared, "bias_ci": (bias_shared - 0.002, bias_shared + 0.002),
              "equivalent": abs(bias_shared) < 0.005}
    return {"per_sample": part, "shared": shared, "var_ratio": ratio, "ci_low": ratio - half,
            "ci_high": ratio + half, "var_ratio_theory": 26.1, "batch": 32}


def _c10(mapped_dev, training=True, standard_bias=0.0):
    tr = {"mapped_max_dev": mapped_dev, "drift_max_dev": 0.2} if training else None
    return {"standard": _bias(standard_bias, 0.002), "inverted": _bias(0.0, 0.002), "training": tr}


def _c12(dev):
    return {"eval_max_dev": dev, "deterministic": dev == 0, "keep_one_max_dev": 0.0,
            "mc_error": {1: 0.5, 10: 0.16}}


def _c13(inverse_bias):
    return {"inverse_test": _bias(inverse_bias, 0.002), "paper_test": _bias(0.0, 0.002), "keep_prob": 0.8}


def _c14(ratio, p, dev):
    return {"training": True, "mapped_max_dev": dev, "drift_max_dev": 0.2, "weight_ratio": ratio,
            "keep_prob": p, "ratio_minus_p": abs(ratio - p), "keep_probs": [p], "optimizers": ["sgd"]}


def _c16(diff, half):
    return {"meet_k": 50, "last_k": 1000, "confidence_level": 0.99, "last_mc": 0.04, "last_ws": 0.04, "diff": diff,
            "ci_low": diff - half, "ci_high": diff + half, "first_diff": 0.12, "first_k": 1,
            "n_seeds": 4, "keep_prob": 0.5}


def _c17(agreement, low, high, rejected):
    return {"reseeded": {"agreement": agreement, "ci": (low, high), "rejected": rejected,
                         "identical_iterations": 19},
            "plain": {"agreement": 0.76}, "independent_agreement": 0.7592, "iterations": 20}


# (claim, measurement, expected verdict): every claim appears with at least two verdicts.
CASES = [
    # C01a: the dropout layer's own expectation
    ("C01a", {"layer": _bias(0.0, 0.002)}, HOLDS),
    ("C01a", {"layer": _bias(0.2, 0.002)}, FALSE),
    # too few draws: not shown equal, not shown different -> not "false"
    ("C01a", {"layer": _bias(0.0, 0.04)}, APPROXIMATELY),
    # C01b: through a ReLU downstream (the measured gap is about +14 %)
    ("C01b", _gaps(0.14, -0.01, 0.002), FALSE),
    ("C01b", _gaps(0.0, 0.0, 0.002), HOLDS),
    ("C01b", _gaps(0.005, 0.0, 0.002), APPROXIMATELY),  # resolved, but within the margin
    ("C01b", _gaps(0.0, 0.0, 0.05), APPROXIMATELY),  # not resolved either way
    ("C02", {"spread": 0.25, "ci_low": 0.249, "ci_high": 0.251, "theory": 0.25, "zeroed": 0.2}, FALSE),
    ("C02", {"spread": 0.0, "ci_low": -0.001, "ci_high": 0.001, "theory": 0.25, "zeroed": 0.0}, HOLDS),
    ("C03", {"by_keep_prob": [dict(_bias(0.001, 0.003), keep_prob=p) for p in (0.2, 0.8)],
             "var_positive": True}, EXPECTATION_ONLY),
    ("C03", {"by_keep_prob": [dict(_bias(0.001, 0.003), keep_prob=p) for p in (0.2, 0.8)],
             "var_positive": False}, HOLDS),
    ("C03", {"by_keep_prob": [dict(_bias(-0.2, 0.003), keep_prob=0.8)], "var_positive": True}, FALSE),
    ("C03", {"by_keep_prob": [dict(_bias(0.0, 0.03), keep_prob=0.8)], "var_positive": True}, APPROXIMATELY),
    ("C04", {"ratio": 1.25, "ratio_min": 1.25, "ratio_max": 1.25, "keep_prob": 0.8,
             "values": [42.0], "scaled": [52.5]}, FALSE),
    ("C04", {"ratio": 0.8, "ratio_min": 0.8, "ratio_max": 0.8, "keep_prob": 0.8,
             "values": [42.0], "scaled": [33.6]}, HOLDS),
    ("C05", _c05(1.107, 0.002, False), FALSE),
    ("C05", _c05(1.01, 0.002, True), APPROXIMATELY),
    ("C06", _c06(claims.THREAD_NORM_A, claims.THREAD_NORM_B), HOLDS),
    ("C06", _c06(2.0, 3.0), FALSE),
    ("C07", {"penalty": 109.5, "ci_low": 109.0, "ci_high": 110.0, "penalty_theory": 109.4,
             "ridge_over_ols_norm": 0.84}, FALSE),
    ("C07", {"penalty": 0.0, "ci_low": -0.5, "ci_high": 0.5, "penalty_theory": 0.0,
             "ridge_over_ols_norm": 1.0}, HOLDS),
    ("C08", _c08(0.943, 0.002, False), APPROXIMATELY),
    ("C08", _c08(0.999, 0.001, True), HOLDS),
    ("C08", _c08(0.01, 0.0, False), FALSE),
    ("C09", _c09(25.7, 2.0), EXPECTATION_ONLY),
    ("C09", _c09(1.0, 0.05), HOLDS),
    ("C09", _c09(25.7, 2.0, bias_shared=0.3), FALSE),
    ("C10", _c10(1e-15), HOLDS),
    ("C10", _c10(0.3), EXPECTATION_ONLY),
    ("C10", _c10(1e-15, standard_bias=0.25), FALSE),
    ("C11", {"ratio": 0.8, "ci_low": 0.795, "ci_high": 0.805, "equivalent_to_p": True, "keep_prob": 0.8}, HOLDS),
    ("C11", {"ratio": 1.0, "ci_low": 0.995, "ci_high": 1.005, "equivalent_to_p": False, "keep_prob": 0.8}, FALSE),
    ("C11", {"ratio": 0.9, "ci_low": 0.895, "ci_high": 0.905, "equivalent_to_p": False, "keep_prob": 0.8},
     APPROXIMATELY),
    ("C12", _c12(0.0), HOLDS),
    ("C12", _c12(0.2), FALSE),
    ("C13", _c13(-0.36), FALSE),
    ("C13", _c13(0.0), HOLDS),
    ("C14", _c14(0.8, 0.8, 1e-15), HOLDS),
    ("C14", _c14(0.82, 0.8, 1e-3), APPROXIMATELY),
    ("C14", _c14(1.0, 0.8, 1e-3), FALSE),
    ("C15", _c14(0.8, 0.8, 1e-15), HOLDS),
    ("C15", _c14(1.0, 0.8, 1e-3), FALSE),
    ("C16", _c16(0.0, 0.004), APPROXIMATELY),
    ("C16", _c16(0.03, 0.004), FALSE),
    ("C16", _c16(-0.03, 0.004), HOLDS),
    ("C17", _c17(1.0, 0.9996, 1.0, True), FALSE),
    ("C17", _c17(0.759, 0.75, 0.77, False), HOLDS),
]


@pytest.mark.parametrize("claim_id, measurement, expected", CASES,
                         ids=[f"{c}-{v.replace(' ', '_')}-{i}" for i, (c, _, v) in enumerate(CASES)])
def test_verdict_is_a_function_of_the_measurement(claim_id, measurement, expected):
    verdict = CLAIMS[claim_id]["decide"](measurement)
    assert verdict.verdict == expected
    assert verdict.explanation and verdict.figure_name


def test_every_claim_has_at_least_two_verdicts_in_the_table():
    seen = {}
    for cid, _, verdict in CASES:
        seen.setdefault(cid, set()).add(verdict)
    assert set(seen) == set(CLAIMS) == {"C01a", "C01b"} | {f"C{i:02d}" for i in range(2, 18)}
    assert all(len(v) >= 2 for v in seen.values()), seen


def test_course_style_forward_reseeds_and_measure_restores_the_global_rng():
    params = claims.masks._course_parameters(0)
    X = np.ones((2, 5))
    state = np.random.get_state()
    _, masks_a = claims.course_style_forward(X, params, 0.86)
    np.random.rand(3)  # whatever happens between iterations, the reseed wipes it
    _, masks_b = claims.course_style_forward(X, params, 0.86)
    assert all(np.array_equal(a, b) for a, b in zip(masks_a, masks_b))
    np.random.set_state(state)
    before = np.random.get_state()[1].copy()
    m = claims.measure_c17(claims.ClaimSettings(seed=3))
    assert np.array_equal(np.random.get_state()[1], before)
    assert m["reseeded"]["agreement"] == 1.0
    assert m["reseeded"]["identical_iterations"] == m["iterations"] - 1
    # Without the reseed successive masks are independent: at least one of 19 pairs differs
    # unless all 1280 units agree 19 times (probability 0.76^(1280·19), nil).
    assert m["plain"]["identical_iterations"] == 0


def test_thread_matrix_is_the_threads():
    a = claims.thread_matrix()
    assert a[0, 0] == pytest.approx(0.49671415)
    assert float(np.linalg.norm(a)) == claims.THREAD_NORM_A


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"claim_id": "C99"}, ValueError, "`claim_id` must be one of C01a, C01b, C02"),
    ({"claim_id": "C01"}, ValueError, "`claim_id` must be one of"),  # split into C01a and C01b
    ({"claim_id": "C06", "seed": -1}, ValueError, "`seed` must be a non-negative integer; got -1"),
    ({"claim_id": "C06", "keep_prob": 1.5}, ValueError, "`keep_prob` must be in \\(0, 1\\]; got 1.5"),
    ({"claim_id": "C06", "max_draws": 0}, ValueError, "`max_draws` must be a positive integer; got 0"),
    ({"claim_id": "C06", "tables": [1]}, TypeError, "`tables` must be a dict"),
])
def test_input_validation(kwargs, exc, match):
    claim_id = kwargs.pop("claim_id")
    with pytest.raises(exc, match=match):
        claims.evaluate_claim(claim_id, **kwargs)


def test_ledger_rows_and_format(monkeypatch):
    ledger = claims.claims_ledger(claim_ids=["C04", "C06", "C12"], seed=1)
    assert list(ledger.columns) == claims.LEDGER_COLUMNS
    assert {"id", "claim", "verdict", "figure", "ci_low", "ci_high", "explanation"} <= set(ledger.columns)
    assert ledger["verdict"].isin(VERDICTS).all()
    assert list(ledger["id"]) == ["C04", "C06", "C12"]
    assert (ledger["seed"] == 1).all()
    text = claims.format_ledger(ledger)
    assert "C06  HOLDS" in text and "settings: seed 1" in text


def test_evaluate_claim_rejects_an_invalid_verdict(monkeypatch):
    bad = claims.Verdict("maybe", "x", 0.0, 0.0, 0.0, "y")
    monkeypatch.setitem(claims.CLAIMS["C06"], "decide", lambda m: bad)
    with pytest.raises(AssertionError, match="not one of"):
        claims.evaluate_claim("C06")


def test_tables_are_reused_not_recomputed(monkeypatch):
    calls = []
    frame = pd.DataFrame({"optimizer": ["sgd", "sgd"], "lr_mapping": ["mapped", "same"],
                          "keep_prob": [0.8, 0.8], "max_abs_deviation": [0.0, 0.1],
                          "weight_ratio": [0.8, 0.81], "n_steps": [5, 5]})

    def fake(**kwargs):
        calls.append(kwargs)
        return frame

    import stats_dropout.studies.experiments as ex

    monkeypatch.setattr(ex, "training_equivalence", fake)
    tables = {}
    r14 = claims.evaluate_claim("C14", tables=tables)
    r15 = claims.evaluate_claim("C15", tables=tables)
    assert len(calls) == 1 and calls[0] == {"seed": 0}
    assert r14.verdict == r15.verdict == HOLDS
    assert math.isclose(r14.figure, 0.8)


# --- the ledger says exactly what was measured ------------------------------------------------
def test_c01_is_two_claims_with_their_own_verdicts():
    assert list(CLAIMS)[:3] == ["C01a", "C01b", "C02"]
    assert "dropout layer itself" in CLAIMS["C01a"]["claim"]
    assert "nonlinearity" in CLAIMS["C01b"]["claim"]
    a = claims.evaluate_claim("C01a", max_draws=2000)
    assert a.verdict == HOLDS and a.confidence_level == claims.LEVEL
    assert a.ci_low < 0 < a.ci_high
    # C01b's measurement, other numbers: the verdict follows them.
    b = claims.decide_c01b(_gaps(0.143, -0.0098, 0.002))
    assert b.verdict == FALSE and "+14.3 %" in b.explanation
    assert claims.decide_c01b(_gaps(0.0, 0.0, 0.002)).verdict == HOLDS


def _mc_table(diff, half95, n_seeds=4, ks=(1, 10, 100)):
    """An mc_averaging table whose paired-difference intervals are 95 % t intervals."""
    from scipy import stats

    se = half95 / stats.t.ppf(0.975, n_seeds - 1)
    diff = np.asarray(diff, float)
    return pd.DataFrame({"k": list(ks), "error_mc": 0.04 + diff, "error_weight_scaling": 0.04,
                         "diff": diff, "diff_ci_low": diff - half95, "diff_ci_high": diff + half95,
                         "not_worse": diff - half95 <= 0, "n_seeds": n_seeds, "keep_prob": 0.5,
                         "confidence_level": 0.95, "se": se})


def test_c16_interval_is_at_the_ledgers_level_not_the_tables():
    from scipy import stats

    # At k = 100 the 95 % interval [0.002, 0.018] excludes 0 (the table calls MC worse); at the
    # ledger's 99 % it is wider and reaches 0, so the verdict changes with the level too.
    table = _mc_table([0.1, 0.03, 0.01], 0.008)
    m = claims.measure_c16(claims.ClaimSettings(tables={"mc_averaging": table}))
    ratio = stats.t.ppf(0.995, 3) / stats.t.ppf(0.975, 3)
    assert m["confidence_level"] == claims.LEVEL
    assert (m["ci_high"] - m["ci_low"]) / 2 == pytest.approx(0.008 * ratio, rel=1e-12)
    assert m["ci_low"] < 0 < m["ci_high"]
    assert claims.decide_c16(m).verdict == APPROXIMATELY
    r = claims.evaluate_claim("C16", tables={"mc_averaging": table})
    assert r.confidence_level == claims.LEVEL == 0.99
    # A clearly positive gap stays "false" at 99 %.
    far = claims.measure_c16(claims.ClaimSettings(tables={"mc_averaging": _mc_table([0.1, 0.05, 0.03], 0.004)}))
    assert far["ci_low"] > 0 and claims.decide_c16(far).verdict == FALSE and far["meet_k"] is None


def test_an_interval_at_another_level_is_refused(monkeypatch):
    measured = claims.measure_c06(claims.ClaimSettings())
    monkeypatch.setitem(claims.CLAIMS["C06"], "measure", lambda s: dict(measured, confidence_level=0.95))
    with pytest.raises(AssertionError, match="level 0.95, not the ledger's 0.99"):
        claims.evaluate_claim("C06")


def test_course_keep_prob_is_explained_where_it_is_used():
    assert claims.COURSE_KEEP_PROB == 0.86
    for cid in ("C08", "C17"):
        assert "0.86" in CLAIMS[cid]["measurement"] and "course" in CLAIMS[cid]["measurement"]
    v08 = claims.decide_c08(_c08(0.943, 0.002, False))
    v17 = claims.decide_c17(dict(_c17(1.0, 0.9996, 1.0, True), keep_prob=0.86))
    for v in (v08, v17):
        assert claims.COURSE_KEEP_PROB_NOTE in v.explanation


def test_the_thread_is_cited():
    assert claims.THREAD["title"] == "Inverted Dropout"
    assert "Inverted Dropout" in claims.THREAD_CITATION and "@paulinpaloalto" in claims.THREAD_CITATION
    import pathlib

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "CLAIMS.md").read_text(encoding="utf-8")
    assert "Inverted Dropout" in doc and "C01a" in doc and "C01b" in doc
