"""How the battery reads a train function's signature: keep_prob, a rate, a switch, or bound."""

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.verification.implementation import keep_prob_convention

PROBE = sd.reference.probes.scheme_probe((64, 256), seed=11)


def test_second_parameter_without_default_is_keep_prob():
    conv = keep_prob_convention(lambda x, keep_prob: x)
    assert conv.takes_keep_prob and conv.means == "keep"
    assert keep_prob_convention(lambda x, q: x).takes_keep_prob  # no default: keep_prob, as before


@pytest.mark.parametrize("name", ["rate", "drop_prob", "dropout", "drop_rate"])
def test_rate_names_are_converted(name):
    conv = keep_prob_convention(eval(f"lambda x, {name}: x"))
    assert conv.takes_keep_prob and conv.means == "drop" and "drop rate" in conv.description


@pytest.mark.parametrize("source", ["lambda x, training=True: x", "lambda x, train=True: x",
                                    "lambda x, p=0.2: x", "lambda x, deterministic=False: x"])
def test_a_default_that_is_not_named_keep_prob_is_not_keep_prob(source):
    assert not keep_prob_convention(eval(source)).takes_keep_prob


def test_named_keep_prob_with_a_default_is_keep_prob():
    assert keep_prob_convention(lambda x, keep_prob=0.5: x).takes_keep_prob


def test_an_ambiguous_switch_names_the_remedy():
    with pytest.raises(TypeError, match=r"takes_keep_prob=True .*takes_keep_prob=False"):
        sd.verify_dropout(lambda x, training: x, keep_prob=0.8)
    assert not keep_prob_convention(lambda x, training: x, takes_keep_prob=False).takes_keep_prob


def test_a_correct_layer_with_a_training_flag_passes():
    def layer(x, training=True):
        if not training:
            return x.copy()
        return x * (np.random.rand(*x.shape) < 0.8) / 0.8

    res = sd.verify_dropout(layer, lambda x: layer(x, training=False), keep_prob=0.8, example_input=PROBE)
    assert res.passed, str(res)
    assert res.convention == "f(x)" and "called as f(x)" in str(res)


def test_a_rate_signature_is_called_with_the_drop_rate():
    def dropout(x, rate):
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1); got {rate}")
        keep = 1 - rate
        return x * (np.random.rand(*x.shape) < keep) / keep

    res = sd.verify_dropout(dropout, keep_prob=0.8, example_input=PROBE)
    assert res.passed, str(res)
    assert "rate the drop rate" in res.convention


def test_keep_prob_means_overrides_the_name():
    seen = []

    def f(x, p):
        seen.append(p)
        return x

    impl = sd.Implementation(f, keep_prob=0.8, keep_prob_means="drop")
    impl.bound_train(0.8)(PROBE)
    assert seen == [pytest.approx(0.2)]
    with pytest.raises(ValueError, match="`keep_prob_means` must be 'keep' or 'drop'; got 'both'"):
        _ = sd.Implementation(f, keep_prob_means="both").convention
