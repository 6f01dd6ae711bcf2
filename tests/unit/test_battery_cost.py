"""The battery's cheap paths give the evidence its general paths give, and still catch bugs.

Collector judges an output in two comparisons when every kept unit equals its kept value exactly
(``Collector._kept_exactly``), and turns that shortcut off at the first draw where it does not;
the evidence must be the same as the tolerance tests would give, draw for draw.
"""

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.reference.contracts import ContractModel
from stats_dropout.reference.probes import scheme_probe
from stats_dropout.verification.evidence import Collector

P = 0.8


def _exact(x):
    return x * (np.random.rand(*x.shape) < P) / P


def _times_inverse(x):  # torch's form: x · fl(1/p), an ulp off fl(x/p) on some units
    return x * (np.random.rand(*x.shape) < P) * (1 / P)


def _late_bug(x, _calls=[0]):  # noqa: B006 — the call counter is the point
    """Exact for three calls, then one unit 1 % off its kept value on every call."""
    y = _exact(x)
    _calls[0] += 1
    if _calls[0] > 3:
        i = np.flatnonzero(y)[0]
        y.flat[i] *= 1.01
    return y


def _evidence(fn, x, shortcut, dtype=None):
    contract = ContractModel.of("inverted", ())
    collector = Collector(fn, x if dtype is None else x.astype(dtype), P, contract)
    if not shortcut:
        collector._exact_outputs = lambda kept_scale: None  # the tolerance tests only
    return collector.collect(12, seed=3)


def _summary(ev):
    ks = ev.kept_scale
    return (ev.draws, ks.checked, ks.violations, ks.worst, tuple(ks.form_matches), ks.ratios,
            ev.masks.entry_counts.tolist(), [c.tolist() for c in ev.masks.row_counts],
            ev.statistics().tobytes(), ks.fitted(False))  # bytes: NaN columns compare equal


@pytest.mark.parametrize("fn", [_exact, _times_inverse, _late_bug], ids=["exact", "times_inverse", "late_bug"])
@pytest.mark.parametrize("dtype", [None, np.float32], ids=["float64", "float32"])
def test_the_exact_shortcut_gives_the_evidence_of_the_tolerance_tests(fn, dtype):
    x = scheme_probe((32, 48), seed=1)
    _late_bug.__defaults__[0][0] = 0
    fast = _summary(_evidence(fn, x, shortcut=True, dtype=dtype))
    _late_bug.__defaults__[0][0] = 0
    slow = _summary(_evidence(fn, x, shortcut=False, dtype=dtype))
    assert fast == slow


def test_a_kept_unit_off_after_exact_draws_still_fails_the_kept_scale_check():
    _late_bug.__defaults__[0][0] = 0
    result = sd.verify_dropout(_late_bug, keep_prob=P)
    assert "check_kept_scale[keep_prob=0.8]" in {c.check for c in result.failed_checks}


def test_the_cost_line_counts_the_calls_and_the_time_inside_them():
    calls = []

    def train(x):
        calls.append(1)
        return _exact(x)

    result = sd.verify_dropout(train, keep_prob=P)
    assert result.passed
    assert f"{len(calls)} calls to the implementation (train {len(calls)}" in str(result.cost)
