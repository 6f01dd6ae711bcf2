"""The ledger's measurements agree with theory, and its verdicts are the expected ones.

Seeded (seed 0) and deterministic. Error rates, were the seed varied:

* verdicts: the TOST decisions are sized for power 0.999 each (``claims.POWER``) and there are
  12 of them (C01a 1, C01b 1, C03 3, C09 2, C10 2, C11 1, C13 2), so a correct ledger gets a
  different verdict with probability ≤ 1.2 %; the other decisions are settled by effects
  hundreds of standard errors wide (C02, C05, C07, C13, C17) or are exact (C04, C06, C12);
* agreement with theory: each of the M = 7 checks below allows ``z_{1−α/(2M)}`` standard
  errors at a total false-fail rate α = 1e-4.
"""

import math

import pytest
from scipy import stats

from stats_dropout import claims

ALPHA_TOTAL = 1e-4
N_THEORY_CHECKS = 7
Z = stats.norm.isf(ALPHA_TOTAL / (2 * N_THEORY_CHECKS))
Z_LEVEL = stats.norm.isf((1 - claims.LEVEL) / 2)  # ledger intervals are ±Z_LEVEL·se

EXPECTED = {
    "C01a": claims.HOLDS, "C01b": claims.FALSE, "C02": claims.FALSE, "C03": claims.EXPECTATION_ONLY,
    "C04": claims.FALSE, "C05": claims.FALSE, "C06": claims.HOLDS, "C07": claims.FALSE,
    "C08": claims.APPROXIMATELY, "C09": claims.EXPECTATION_ONLY, "C10": claims.HOLDS,
    "C11": claims.HOLDS, "C12": claims.HOLDS, "C13": claims.FALSE, "C17": claims.FALSE,
}


@pytest.fixture(scope="module")
def results():
    ids = list(EXPECTED)
    tables = {}
    return {cid: claims.evaluate_claim(cid, seed=0, tables=tables) for cid in ids}


def _se(lo, hi):
    return (hi - lo) / (2 * Z_LEVEL)


@pytest.mark.parametrize("claim_id", list(EXPECTED))
def test_verdict(results, claim_id):
    r = results[claim_id]
    assert r.verdict == EXPECTED[claim_id], r.explanation
    assert r.seed == 0 and r.confidence_level == claims.LEVEL


def test_c02_variance_is_one_minus_p_over_p(results):
    m = results["C02"].measurement_data
    assert abs(m["spread"] - m["theory"]) <= Z * _se(m["ci_low"], m["ci_high"])
    assert abs(m["zeroed"] - (1 - m["keep_prob"])) <= Z * _se(*m["zeroed_ci"])


def test_c05_squared_norm_is_inflated_by_one_over_p(results):
    m = results["C05"].measurement_data
    assert abs(m["sq_ratio"] - m["sq_theory"]) <= Z * _se(*m["sq_ratio_ci"])


def test_c08_distinct_networks_match_the_occupancy_formula(results):
    m = results["C08"].measurement_data
    assert abs(m["per_sample"]["fraction"] - m["expected_fraction"]) <= Z * m["per_sample"]["se"]
    assert m["shared"]["fraction"] == pytest.approx(1 / m["batch"], rel=1e-12)


def test_c09_variance_ratio_matches_theory(results):
    m = results["C09"].measurement_data
    log_se = math.log(m["ci_high"] / m["ci_low"]) / (2 * Z_LEVEL)
    assert abs(math.log(m["var_ratio"] / m["var_ratio_theory"])) <= Z * log_se


def test_c11_and_c13_ratios_are_p_and_p_squared(results):
    m11 = results["C11"].measurement_data
    assert abs(m11["ratio"] - m11["keep_prob"]) <= Z * _se(m11["ci_low"], m11["ci_high"])
    r13 = results["C13"]
    assert abs(r13.figure - r13.keep_prob**2) <= Z * _se(r13.ci_low, r13.ci_high)


def test_c07_penalty_matches_the_closed_form(results):
    m = results["C07"].measurement_data
    assert abs(m["penalty"] - m["penalty_theory"]) <= Z * _se(m["ci_low"], m["ci_high"])


def test_verdicts_respond_to_a_changed_measurement(results):
    # Same machinery, other input: the C17 template *without* its reseed drops different units.
    m = dict(results["C17"].measurement_data)
    m["reseeded"] = m["plain"]
    assert claims.decide_c17(m).verdict == claims.HOLDS
    # And C02 with a layer whose output never varies would hold.
    m2 = dict(results["C02"].measurement_data, spread=0.0, ci_low=0.0, ci_high=0.0)
    assert claims.decide_c02(m2).verdict == claims.HOLDS
