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


def _exact(x, p=P):
    return x * (np.random.rand(*x.shape) < p) / p


def _times_inverse(x, p=P):  # torch's form: x · fl(1/p), an ulp off fl(x/p) on some units
    return x * (np.random.rand(*x.shape) < p) * (1 / p)


def _late_bug():
    """Exact for three calls, then one unit 1 % off its kept value on every call."""
    calls = []

    def train(x, p=P):
        y = _exact(x, p)
        calls.append(1)
        if len(calls) > 3:
            y.flat[np.flatnonzero(y)[0]] *= 1.01
        return y

    return train


def _evidence(fn, x, p, shortcut):
    collector = Collector(lambda v: fn(v, p), x, p, ContractModel.of("inverted", ()))
    if not shortcut:
        collector._exact_outputs = lambda kept_scale: None  # the tolerance tests only
    return collector.collect(12, seed=3)


def _summary(ev):
    ks, pairs = ev.kept_scale, ev.pairs
    return (ev.draws, ks.checked, ks.violations, ks.worst, tuple(ks.form_matches), ks.ratios,
            ev.masks.entry_counts.tolist(), [c.tolist() for c in ev.masks.row_counts], ev.masks.kept,
            ev.masks.group_kept.tolist(), pairs.call_pairs, pairs.axis_pairs, pairs.identical_consecutive,
            ev.only_zero_one, ev.statistics().tobytes(),  # bytes: NaN columns compare equal
            ks.fitted(False), ks.fitted(True))


def _probe(zeros):
    x = scheme_probe((32, 48), seed=1)
    if zeros:  # unobservable units: their kept value is 0, as is their dropped one
        x[:, ::5] = 0.0
    return x


@pytest.mark.parametrize("make", [lambda: _exact, lambda: _times_inverse, _late_bug],
                         ids=["exact", "times_inverse", "late_bug"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("p", [0.8, 0.9])
@pytest.mark.parametrize("zeros", [False, True], ids=["", "zeros"])
def test_the_exact_shortcut_gives_the_evidence_of_the_tolerance_tests(make, dtype, p, zeros):
    x = _probe(zeros).astype(dtype)
    fast = _summary(_evidence(make(), x, p, shortcut=True))
    slow = _summary(_evidence(make(), x, p, shortcut=False))
    assert fast == slow


def test_a_kept_unit_off_after_exact_draws_still_fails_the_kept_scale_check():
    result = sd.verify_dropout(_late_bug(), keep_prob=P)
    assert "check_kept_scale[keep_prob=0.8]" in {c.check for c in result.failed_checks}


def test_a_candidate_that_overflows_in_the_probe_dtype_is_no_candidate_and_no_warning():
    # A float16 layer multiplying by 1/p rounded to bfloat16 (an accepted form, above 1/p):
    # rounding that form's value of 58960 to float16 overflows, the layer's own output does not.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = 0.9
    x = (scheme_probe((64, 64), seed=0) * 2000).astype(np.float16)
    x.flat[0] = 58960
    scale = np.float16(float(ml_dtypes.bfloat16(1 / p)))

    def bf16_scale(v):
        return (v * (np.random.rand(*v.shape) < p)).astype(np.float16) * scale

    assert sd.verify_dropout(bf16_scale, keep_prob=p, example_input=x).passed  # warnings are errors here


def test_the_kept_scale_is_described_from_every_kept_unit():
    def first_rows_only(x):  # the rescale applied to the first rows only (a chunked-loop bug)
        y = x * (np.random.rand(*x.shape) < P)
        y[:16] /= P
        return y

    result = sd.verify_dropout(first_rows_only, keep_prob=P)
    assert "did you forget to divide by keep_prob" in str(result.diagnosis)


def test_the_cost_line_counts_the_calls_and_the_time_inside_them():
    calls = []

    def train(x):
        calls.append(1)
        return _exact(x)

    result = sd.verify_dropout(train, keep_prob=P)
    assert result.passed
    assert f"{len(calls)} calls to the implementation (train {len(calls)}" in str(result.cost)
