"""Diagnoses: identical masks named by their mechanism, sharing read from the masks, computed lazily once."""

import numpy as np
import pytest

from stats_dropout.inference.results import Decision
from stats_dropout.reference.contracts import ContractModel
from stats_dropout.reference.probes import scheme_probe
from stats_dropout.verification.checks import common
from stats_dropout.verification.diagnosis import diagnose, identical_masks_cause, sharing_cause
from stats_dropout.verification.evidence import Collector
from stats_dropout.verification.implementation import Implementation


@pytest.mark.parametrize("source, expected", [
    (None, "np.random.seed(...) inside it"),
    ("numpy", "np.random.seed(...) inside it"),
    ("torch", "torch generator is reseeded"),
    ("jax-key", "reused instead of split"),
    ("keras-seed", "SeedGenerator's state does not advance"),
    ("flax-rngs", "rngs={'dropout': key}"),
    ("tf-stateless", "TF stateless random op"),
    ("tf-global", "tf.random.set_seed(...) inside the step"),
])
def test_identical_masks_name_the_source_of_randomness(source, expected):
    text = identical_masks_cause(source, calls=12)
    assert expected in text
    assert "all 12 successive calls" in text
    if source not in (None, "numpy"):
        assert "np.random.seed" not in text


def test_a_jitted_function_is_blamed_on_the_trace_and_an_unknown_source_gets_only_evidence():
    assert "captured when it was traced" in identical_masks_cause("jax-key", jitted=True)
    text = identical_masks_cause("my-rng", calls=5)
    assert text == ("every call drops the same units (all 5 successive calls produced identical masks): "
                    "the random state of the implementation (rng_source='my-rng') does not advance "
                    "between calls")


@pytest.mark.parametrize("ndim, declared, measured, expected", [
    (3, (2,), (2,), None),
    (3, (2,), (1, 2), "each sample is kept or dropped whole"),
    (3, (1, 2), (2,), "unbatched (C, H, W) input is read as a batch"),
    (2, (), (0,), "each example needs its own mask"),
    (2, (), (1,), "units must be dropped independently"),
    (3, (), (1,), "every index of axis 1"),
    (4, (2, 3), (1,), "shared along (1,) instead of (2, 3)"),
    (4, (2, 3), (1, 2), "the mask varies along axis 3"),
])
def test_sharing_is_diagnosed_from_the_measured_axes(ndim, declared, measured, expected):
    found = sharing_cause(ndim, declared, measured)
    assert found is None if expected is None else expected in found


def test_a_16_bit_keep_probability_is_named_only_when_nothing_is_dropped():
    kw = dict(keep_prob=0.9, contract="inverted", low_precision=True)
    assert any("jax#28039" in s for s in diagnose(rate=1.0, rate_ci=(0.99999, 1.0), **kw))
    assert not any("jax#28039" in s for s in diagnose(rate=0.5, rate_ci=(0.49, 0.51), **kw))


class _Run:
    """The attributes of a battery run that the diagnosis reads."""

    def __init__(self, impl, p=0.8, draws=12):
        self.impl, self.seed, self.alpha, self.beta = impl, 0, 1e-7, 1e-3
        self.x = scheme_probe((64, 64), seed=1)
        self.contract = ContractModel.of(impl.contract, impl.shared_axes)
        self._ev = Collector(impl.bound_train(p), self.x, p, self.contract).collect(draws, 0)

    def evidence(self, p):
        return self._ev


def test_a_diagnosis_is_computed_once_per_run_and_keep_prob():
    calls = []

    def eval_(x):
        calls.append(1)
        return 0.8 * x

    impl = Implementation(lambda x: x * (np.random.rand(*x.shape) < 0.8) / 0.8, eval_, keep_prob=0.8)
    run = _Run(impl)
    first = common.hint_for(run, 0.8)
    assert "test-time scaling left" in first
    assert common.hint_for(run, 0.8, prefix="Some units are biased. ") == "Some units are biased. " + first
    common.diagnosis_of(run, 0.8)
    assert len(calls) == 1


def test_a_lazy_hint_is_evaluated_only_for_a_rejected_decision():
    def boom():
        raise AssertionError("a passing check must not diagnose")

    FIELDS = dict(property="p", method="t", expected=0.8, false_fail_rate=1e-6, false_pass_rate=1e-3,
                  min_detectable_effect=0.01, n=100)
    ok = Decision(**FIELDS, estimate=0.8, ci_low=0.79, ci_high=0.81, pvalue=0.5, rejected=False)
    assert common.from_decision("check_x", 0.8, ok, boom).status == "passed"
    bad = Decision(**FIELDS, estimate=0.5, ci_low=0.49, ci_high=0.51, pvalue=0.0, rejected=True)
    result = common.from_decision("check_x", 0.8, bad, lambda: "Likely cause: x.")
    assert result.status == "failed" and result.message.endswith("Likely cause: x.")


def test_identical_masks_of_a_torch_layer_do_not_blame_numpy():
    def reseeding(x):
        rng = np.random.default_rng(3)  # a generator re-created per call
        return x * (rng.random(x.shape) < 0.8) / 0.8

    run = _Run(Implementation(reseeding, keep_prob=0.8, rng_source="torch"))
    assert common.identical_calls_of(run, 0.8)
    text = common.identical_masks_message(run, 0.8)
    assert "torch generator is reseeded" in text and "np.random.seed" not in text
    assert any("torch generator" in s for s in common.diagnosis_of(run, 0.8))


def test_masks_repeating_only_sometimes_get_the_raw_count():
    state = {"n": 0}

    def every_other_call_reseeded(x):
        state["n"] += 1
        rng = np.random.default_rng(7) if state["n"] % 2 else np.random.default_rng(state["n"])
        return x * (rng.random(x.shape) < 0.8) / 0.8

    run = _Run(Implementation(every_other_call_reseeded, keep_prob=0.8), draws=13)
    assert not common.identical_calls_of(run, 0.8)
    assert common.repeated_calls_of(run, 0.8) == 0  # successive calls differ: 7, 2, 7, 4, ...
    ev = run.evidence(0.8)
    ev.pairs.identical_consecutive = 5  # as if five successive pairs had repeated
    assert common.repeated_calls_of(run, 0.8) == 5
    ev.masks.sharing_violations = 1  # masks tied along an axis: repeats may be chance, not reported
    assert common.repeated_calls_of(run, 0.8) == 0
    text = identical_masks_cause("numpy", calls=13, repeated=5)
    assert text.startswith("5 of 12 pairs of successive calls drew identical masks")


def test_a_jitted_function_is_found_behind_an_adapter_closure():
    jax = pytest.importorskip("jax")
    jitted = jax.jit(lambda x: x)

    def call(x):
        return jitted(x)

    def train(x):
        return call(x)

    assert common.is_jitted(jitted) and common.is_jitted(train)
    assert not common.is_jitted(lambda x: x) and not common.is_jitted(None)
