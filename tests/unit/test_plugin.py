"""The pytest plugin and ``parametrize_with_checks``, driven through pytester (in-process)."""

import numpy as np
import pytest

from stats_dropout.verification import Implementation
from stats_dropout.verification.parametrize import parametrize_with_checks

HEADER = '''
import numpy as np
import pytest

import stats_dropout.verification.battery
from stats_dropout.verification import Implementation
from stats_dropout.verification.parametrize import parametrize_with_checks


def good(x):
    return x * (np.random.rand(*x.shape) < 0.8) / 0.8


def no_rescale(x):
    return x * (np.random.rand(*x.shape) < 0.8)


def identity(x):
    return x
'''

SUITE = HEADER + '''

@parametrize_with_checks([Implementation(good, identity, keep_prob=0.8, name="good"),
                          Implementation(no_rescale, identity, keep_prob=0.8, name="no_rescale")],
                         expected_failed_checks={{{expected}}})
def test_dropout(implementation, check):
    check(implementation)
'''


def run(pytester, source, *args):
    pytester.makepyfile(test_battery=source)
    # Other installed plugins are switched off: pytester restores sys.modules after each run,
    # so their imports would be paid again by every run.
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:benchmark",
                                        "-p", "no:hypothesispytest", *args)


def test_header_shows_the_default_seed(pytester):
    result = run(pytester, "def test_nothing():\n    pass\n")
    result.stdout.fnmatch_lines(["stats_dropout seed: 0 (replay with --stats-dropout-seed=0)"])
    result.assert_outcomes(passed=1)


def test_ids_markers_and_k_selection(pytester):
    source = SUITE.format(expected="")
    result = run(pytester, source, "--collect-only", "-q", "-k", "check_keep_rate and not per_ and not vs_")
    assert [line for line in result.outlines if line.startswith("test_battery.py")] == [
        "test_battery.py::test_dropout[good-check_keep_rate[keep_prob=0.8]]",
        "test_battery.py::test_dropout[no_rescale-check_keep_rate[keep_prob=0.8]]",
    ]
    result.stdout.fnmatch_lines(["2/32 tests collected (30 deselected)*"])
    result = run(pytester, source, "--collect-only", "-q", "-m", "not stats_dropout")
    result.stdout.fnmatch_lines(["*no tests collected (32 deselected)*"])


def test_correct_passes_and_broken_fails_with_the_checks_message(pytester):
    source = SUITE.format(expected="")
    result = run(pytester, source, "-k", "check_kept_scale or check_keep_rate_per_channel")
    result.assert_outcomes(passed=1, failed=1)  # per-channel does not apply to a 2-d probe: not generated
    result.stdout.fnmatch_lines([
        "*AssertionError: check_kept_scale[[]keep_prob=0.8[]]: *1.25*",
        "FAILED test_battery.py::test_dropout[[]no_rescale-check_kept_scale[[]keep_prob=0.8[]][]]*",
    ])
    failed_lines = [line for line in result.outlines if line.startswith("FAILED")]
    assert not any("good-check_kept_scale" in line for line in failed_lines)


def test_expected_failures_are_strict_xfails(pytester):
    # The same known failure: expected on the broken implementation (xfail), an unexpected
    # pass on the correct one (strict: reported as a failure so a fixed bug is noticed).
    source = SUITE.format(expected='"check_kept_scale": "known bug: no 1/keep_prob"')
    result = run(pytester, source, "-k", "check_kept_scale", "-rxX")
    result.assert_outcomes(xfailed=1, failed=1)
    result.stdout.fnmatch_lines(["*good-check_kept_scale*",
                                 "[[]XPASS(strict)[]] known bug: no 1/keep_prob",
                                 "XFAIL *no_rescale-check_kept_scale*known bug: no 1/keep_prob"])


def test_seed_option_reaches_the_checks(pytester):
    source = HEADER + '''

@pytest.fixture
def seeds(monkeypatch):
    seen = []
    original = stats_dropout.verification.battery.iter_checks

    def spy(implementation, *, seed=0, **kwargs):
        seen.append(seed)
        return original(implementation, seed=seed, **kwargs)

    monkeypatch.setattr(stats_dropout.verification.battery, "iter_checks", spy)
    return seen


@parametrize_with_checks([Implementation(good, identity, keep_prob=0.8, name="good")])
def test_dropout(implementation, check, seeds, stats_dropout_seed):
    check(implementation)
    assert seeds == [stats_dropout_seed] == [123]
'''
    result = run(pytester, source, "-k", "check_output_shape_dtype", "--stats-dropout-seed=123")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["stats_dropout seed: 123 (replay with --stats-dropout-seed=123)"])
    result = run(pytester, source, "-k", "check_output_shape_dtype")  # default seed 0: the assert fails
    result.assert_outcomes(failed=1)


def test_bad_seed_option_is_a_usage_error(pytester):
    result = run(pytester, "def test_nothing():\n    pass\n", "--stats-dropout-seed=-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--stats-dropout-seed: must be a non-negative integer; got '-3'*"])


# --- parametrize_with_checks without pytester -------------------------------------------------

def _good(x):
    return x * (np.random.rand(*x.shape) < 0.8) / 0.8


def test_parametrize_structure_and_callable_expectations():
    impl = Implementation(_good, keep_prob=0.8, name="mine")
    decorator = parametrize_with_checks(
        [impl, _good],
        expected_failed_checks=lambda im: {"check_mean[keep_prob=0.8]": "r"} if im is impl else {})
    argnames, params = decorator.mark.args
    assert argnames == ("implementation", "check")
    ids = [p.id for p in params]
    assert ids[0] == "mine-check_output_shape_dtype[keep_prob=0.8]"
    assert any(i.startswith("_good-") for i in ids)  # a bare callable is wrapped and named
    xfails = [p.id for p in params if any(m.name == "xfail" for m in p.marks)]
    assert xfails == ["mine-check_mean[keep_prob=0.8]"]  # a full id matches one keep_prob only
    assert all(any(m.name == "stats_dropout" for m in p.marks) for p in params)


def test_parametrize_input_validation():
    impl = Implementation(_good, keep_prob=0.8)
    with pytest.raises(ValueError, match=r"names 'check_typo', which match no check of '_good'"):
        parametrize_with_checks([impl], expected_failed_checks={"check_typo": "?"})
    with pytest.raises(TypeError, match=r"`expected_failed_checks` must be a dict .*; got \['check_mean'\]"):
        parametrize_with_checks([impl], expected_failed_checks=["check_mean"])
    with pytest.raises(TypeError, match=r"`implementations\[1\]` must be a stats_dropout.Implementation"):
        parametrize_with_checks([impl, 3])
    with pytest.raises(ValueError, match=r"`implementations` must hold at least one"):
        parametrize_with_checks([])
