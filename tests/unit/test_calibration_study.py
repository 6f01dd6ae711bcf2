"""The calibration study's machinery, fast (the measurement itself is tests/statistical/test_battery_calibration.py).

Tiny seed counts: the cells, the records and the tables' columns; and that each bug is built at
the effect it claims (large effects, so a few thousand numpy draws settle it).
"""

import importlib.util

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stats_dropout.studies import calibration as cal
from stats_dropout.studies import calibration_bugs as bugs

FALSE_FAIL_COLUMNS = ["check", "decisions", "batteries", "impls", "shapes", "rejections", "raised", "measured",
                      "ci_low", "ci_high", "verdict_ci_low", "nominal", "verdict", "excluded", "excluded_ci_low",
                      "excluded_ci_high", "excluded_verdict_ci_low", "stated_exclusion", "coverage"]
POWER_COLUMNS = ["check", "bug", "design", "effect", "stated_mde", "mde_in_runs", "units", "seeds", "skipped",
                 "raised", "false_passes", "measured", "ci_low", "ci_high", "verdict_ci_low", "stated", "verdict"]


def test_null_cells_cover_the_plan_with_distinct_seeds():
    cells = cal.null_cells(2000)
    assert len(cells) == sum(sum(s.values()) for s in cal.NULL_PLAN.values())
    assert len({c[2] for c in cells}) == len(cells)  # no two battery runs share a seed
    assert set(cal.CORRECT) == {c[0] for c in cells} and set(cal.SHAPES) == {c[1] for c in cells}
    assert len(cal.CORRECT) >= 4 + 2 and len(cal.SHAPES) >= 5
    small = cal.null_cells(100, seed=5)
    assert all(c[2] % cal.SEED_STRIDE >= 5 for c in small)
    assert {c[:2] for c in small} == {c[:2] for c in cells}  # every cell keeps at least one seed


@pytest.mark.parametrize("shape", list(bugs.SHAPES))
def test_inputs(shape):
    x = bugs.make_input(shape, 3)
    assert x.shape == bugs.SHAPES[shape][0] and x.dtype == np.float64
    np.testing.assert_array_equal(x, bugs.make_input(shape, 3))
    if shape == "zeros":
        assert np.count_nonzero(x == 0) == x.size // 2
    if shape == "lognormal":
        assert np.abs(x).max() / np.abs(x).min() > 1e6 and (x < 0).any() and (x > 0).any()


def test_null_records_and_tables():
    records = cal.null_study(plan={"standard": {"2d": 1}, "gaussian": {"2d": 1}}, min_decisions=2000)
    assert len(records) == 10 + 4  # 10 statistical checks under masks, 4 under Gaussian noise
    assert {r["check"] for r in records} <= set(cal.STATISTICAL)
    assert all(r["status"] == "skipped" or {"pvalue", "ci_low", "ci_high", "ci_level"} <= set(r) for r in records)
    table = cal.false_fail_table(records)
    assert list(table.columns) == FALSE_FAIL_COLUMNS
    assert set(table.verdict) <= {"ok", "FAIL"} and set(table.coverage) <= {"ok", "FAIL"}
    row = table[table.check == "check_mean"].iloc[0]
    assert row.decisions == 2 and row.impls == 2 and 0 < row.nominal < cal.FALSE_FAIL_RATE
    cells_table = cal.false_fail_cells(records)
    assert list(cells_table.columns) == ["check", "impl", "shape", "decisions", "rejections", "measured", "ci_low",
                                         "ci_high", "nominal", "verdict"]
    assert cells_table.check.iloc[0] == "check_keep_rate"  # registry order


def test_power_records_and_table():
    records = cal.power_study(2, designs=["calls", "rows_under"])
    assert [r["row"] for r in records] == ["calls"] * 2 + ["rows_under"] * 2
    table = cal.power_table(records)
    assert list(table.columns) == POWER_COLUMNS
    assert (table.seeds == 2).all() and set(table.verdict) <= {"ok", "FAIL"}
    assert (table.stated == cal.FALSE_PASS_RATE).all()
    assert np.allclose(table.effect, table.stated_mde)  # the bug is built at the stated effect


# --- one calibration, whichever executor runs its seed loops ----------------------------------
#: A few battery seeds: numpy's global RNG (numpy), noise (gaussian) and torch's RNG when installed.
TINY_PLAN = {"numpy": {"2d": 2}, "gaussian": {"tiny": 1},
             **({"torch": {"tiny": 1}} if importlib.util.find_spec("torch") else {})}


def tiny_calibration(**options):
    """Null and power records of a tiny calibration, and their tables, as data frames."""
    null = cal.null_study(plan=TINY_PLAN, **options)
    power = cal.power_study(2, designs=["calls", "moments"], **options)
    return pd.DataFrame(null), cal.false_fail_table(null), pd.DataFrame(power), cal.power_table(power)


@pytest.fixture(scope="module")
def one_process():
    return tiny_calibration(executor="local")


@pytest.mark.parametrize("options", [dict(executor="processes", workers=2),
                                     dict(executor="dask", workers=2, processes=False)],
                         ids=["2 worker processes", "dask LocalCluster"])
def test_tiny_calibration_is_bit_identical_on_every_executor(one_process, options):
    if options["executor"] == "dask":
        pytest.importorskip("distributed")
    # Threads of a LocalCluster (processes=False) share numpy's global RNG: battery_lock keeps
    # each battery pass whole; worker processes each have their own.
    for got, want in zip(tiny_calibration(**options), one_process):
        pd.testing.assert_frame_equal(got, want, check_exact=True)  # every bit, NaN where NaN


def test_clopper_pearson():
    assert cal.clopper_pearson(0, 10)[0] == 0.0
    low, high = cal.clopper_pearson(5, 100)
    assert low < 0.05 < high
    assert np.isnan(cal.clopper_pearson(0, 0)[0])


def test_verdicts_take_their_bonferroni_share_of_a_95_percent_family():
    k = cal.verdict_count()
    assert k == 2 * len(cal.STATISTICAL) + len(bugs.POWER_DESIGNS)
    assert cal.verdict_level(k) == pytest.approx(1 - 0.1 / k)
    # 77 of 3540 at nominal 0.017: the per-row 95 % interval clears nominal, the family bound does not.
    assert cal.clopper_pearson(77, 3540)[0] > 0.017 > cal.clopper_pearson(77, 3540, cal.verdict_level())[0]
    # The family verdict can still fail: 1.5 × nominal at these counts is far outside.
    assert cal.clopper_pearson(90, 3540, cal.verdict_level())[0] > 0.017


# --- the bugs have the effects they claim ---------------------------------------------------
def masks(bug, shape, draws, seed=0):
    np.random.seed(seed)
    return np.stack([bug.mask(shape) for _ in range(draws)])


def corr(a, b):
    return np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1]


@pytest.mark.parametrize("kind, axis", [("markov_units", 2), ("markov_rows", 1), ("markov_calls", 0)])
def test_markov_copies_give_the_neighbour_correlation(kind, axis):
    x = np.ones((32, 64))
    m = masks(bugs.BuggyDropout(kind, 0.8, 0.5, x), x.shape, 300)
    assert abs(m.mean() - 0.8) < 0.005
    lo = [slice(None)] * 3
    hi = list(lo)
    lo[axis], hi[axis] = slice(0, -1), slice(1, None)
    assert abs(corr(m[tuple(lo)], m[tuple(hi)]) - 0.5) < 0.02
    other = 2 if axis != 2 else 1
    lo, hi = [slice(None)] * 3, [slice(None)] * 3
    lo[other], hi[other] = slice(0, -1), slice(1, None)
    assert abs(corr(m[tuple(lo)], m[tuple(hi)])) < 0.02


@pytest.mark.parametrize("kind, ratio", [("calls_over", 1.6), ("calls_under", 0.4)])
def test_dispersion_bugs_scale_the_variance_of_kept_counts(kind, ratio):
    x = np.ones((16, 32))
    m = masks(bugs.BuggyDropout(kind, 0.7, 0.6, x), x.shape, 3000)
    counts = m.reshape(len(m), -1).sum(axis=1)
    assert abs(m.mean() - 0.7) < 0.003
    assert abs(counts.var() / (x.size * 0.7 * 0.3) / ratio - 1) < 0.1


@pytest.mark.parametrize("kind, ratio", [("rows_over", 1.6), ("rows_under", 0.4)])
def test_row_dispersion_bugs(kind, ratio):
    x = np.ones((16, 64))
    m = masks(bugs.BuggyDropout(kind, 0.7, 0.6, x), x.shape, 400)
    counts = m.sum(axis=2).ravel()
    assert abs(counts.var() / (64 * 0.7 * 0.3) / ratio - 1) < 0.1


def test_group_bugs_move_one_group():
    x = bugs.make_input("4d", 1)
    for kind, index in (("position", (slice(None), 0, 0, 0)), ("channel", (slice(None), 0)), ("unit", (0, 0, 0, 0))):
        m = masks(bugs.BuggyDropout(kind, 0.8, -0.3, x), x.shape, 2000)
        assert abs(m[(slice(None),) + index].mean() - 0.5) < 0.03, kind
    m = masks(bugs.BuggyDropout("input", 0.8, 0.1, x), x.shape, 500)
    big = np.abs(x) > np.median(np.abs(x))
    assert abs(m[:, big & (x > 0)].mean() - m[:, big & (x < 0)].mean() - 0.1) < 0.01


def test_gaussian_noise_mixture_has_the_claimed_sup_distance_and_moments():
    np.random.seed(1)
    x = np.ones((200, 500))
    y = bugs.BuggyGaussian("noise_mixture", 0.8, 0.1, x)(x)
    sd = np.sqrt(0.25)
    assert abs(y.mean() - 1) < 0.005 and abs(y.var() / sd**2 - 1) < 0.02
    assert abs(stats.ks_1samp(y.ravel(), stats.norm(1, sd).cdf).statistic - 0.1) < 0.008


def test_alpha_rate_bug_moves_the_output_mean_by_its_effect():
    x = bugs.make_input("2d", 2)
    np.random.seed(3)
    good, bad = (bugs.BuggyAlpha("alpha_rate", 0.9, e, x) for e in (0.0, 0.05))
    diff = np.mean([bad(x).mean() - good(x).mean() for _ in range(200)])
    assert abs(diff + 0.05) < 0.005


def test_scale_bug_and_buggy_implementation():
    impl, check, p = bugs.buggy_implementation("mean", 0.25)
    assert check == "check_mean" and p == 0.8 and impl.contract == "inverted"
    np.random.seed(0)
    x = impl.example_input
    ratio = np.mean([np.sum(impl.train(x) * x) for _ in range(200)]) / np.sum(x * x)
    assert abs(ratio - 1.25) < 0.01
    assert set(bugs.POWER_DESIGNS[r][0] for r in bugs.POWER_DESIGNS) == set(cal.STATISTICAL)

