"""The battery catches every bug in the zoo by the check named for it, and passes correct code.

Each wrong implementation must fail *the check named for it*, with a message that names the
cause, at keep_prob 0.8 and — where the bug is distinguishable there — at 0.5. The battery runs
at its defaults (total false-fail rate 1e-6, false-pass rate 1e-3), so a correct implementation
fails one of these tests by chance with probability below 1e-6 (seed 0, printed by the plugin).
"""

import functools

import numpy as np
import pytest

import stats_dropout as sd
from tests.quality import zoo

F32 = sd.reference.probes.scheme_probe((128, 512), seed=3).astype(np.float32)

# name -> (verify_dropout kwargs, check that must fail, message fragment, keep_probs where caught)
BUGS = {
    "randn_mask": (dict(train=zoo.randn_mask), "check_keep_rate", "np.random.randn", (0.5, 0.8)),
    "reversed_comparison": (dict(train=zoo.reversed_comparison), "check_keep_rate",
                            "comparison is reversed", (0.8,)),
    "divides_by_drop_prob": (dict(train=zoo.divides_by_drop_prob), "check_kept_scale",
                             "divided by the drop probability", (0.8,)),
    "missing_rescale": (dict(train=zoo.missing_rescale), "check_kept_scale",
                        "forget to divide by keep_prob", (0.5, 0.8)),
    "double_rescale": (dict(train=zoo.double_rescale), "check_kept_scale", "divided by keep_prob twice",
                       (0.5, 0.8)),
    "multiplies_by_keep_prob": (dict(train=zoo.multiplies_by_keep_prob), "check_kept_scale",
                                "multiplied by keep_prob instead of dividing", (0.5, 0.8)),
    "rate_used_as_keep": (dict(train=zoo.rate_used_as_keep), "check_keep_rate",
                          "used as the drop probability", (0.8,)),
    "returns_mask": (dict(train=zoo.returns_mask), "check_kept_scale", "returns the mask", (0.5, 0.8)),
    "reseeds_rng": (dict(train=zoo.reseeds_rng), "check_independence_calls",
                    "reseeds the random number generator", (0.5, 0.8)),
    "modifies_input": (dict(train=zoo.modifies_input), "check_input_unchanged", "modified its input",
                       (0.5, 0.8)),
    "fixed_count_per_row": (dict(train=zoo.fixed_count_per_row), "check_row_dispersion",
                            "fixed count", (0.5, 0.8)),
    "one_mask_per_batch": (dict(train=zoo.one_mask_per_batch), "check_independence_rows",
                           "its own mask", (0.5, 0.8)),
    "one_mask_per_row": (dict(train=zoo.one_mask_per_row), "check_independence_units",
                         "dropped independently", (0.5, 0.8)),
    "returns_float64": (dict(train=zoo.returns_float64, example_input=F32), "check_output_shape_dtype",
                        "dtype float64", (0.5, 0.8)),
    "flattens_output": (dict(train=zoo.flattens_output), "check_output_shape_dtype", "shape (262144,)",
                        (0.5, 0.8)),
    "divides_by_mask": (dict(train=zoo.divides_by_mask), "check_finite_output", "NaN or infinite",
                        (0.5, 0.8)),
    "raises_on_batch": (dict(train=zoo.raises_on_batch), "check_output_shape_dtype", "IndexError",
                        (0.5, 0.8)),
    "drops_only_positive": (dict(train=zoo.drops_only_positive), "check_keep_rate_vs_input",
                            "must not depend on the input", (0.5, 0.8)),
    "first_column_never_dropped": (dict(train=zoo.first_column_never_dropped),
                                   "check_keep_rate_per_position", "Some positions", (0.5, 0.8)),
    "no_validation": (dict(train=zoo.no_validation), "check_invalid_keep_prob", "raise ValueError",
                      (0.5,)),
    "eval_keeps_scaling": (dict(train=zoo.correct_global_rng, eval=zoo.eval_keeps_scaling),
                           "check_eval_contract", "test-time scaling left", (0.5, 0.8)),
    "eval_divides": (dict(train=zoo.correct_global_rng, eval=zoo.eval_divides), "check_eval_contract",
                     "eval path divides by keep_prob", (0.5, 0.8)),
    "eval_applies_dropout": (dict(train=zoo.correct_global_rng, eval=zoo.eval_applies_dropout),
                             "check_eval_deterministic", "dropout must be off at test time", (0.5, 0.8)),
    "standard_called_inverted": (dict(train=zoo.correct_global_rng, eval=zoo.standard_eval,
                                      contract="standard"), "check_kept_scale",
                                 "inverted rescale in a standard", (0.5, 0.8)),
    "gaussian_wrong_std": (dict(train=zoo.gaussian_wrong_std, contract="gaussian"), "check_variance",
                           "sqrt((1 − keep_prob)/keep_prob)", (0.8,)),
    "alpha_zeroes_dropped": (dict(train=zoo.alpha_zeroes_dropped, contract="moments"),
                             "check_output_moments", "dropped units take", (0.5, 0.8)),
    "channel_shared_wrong_axis": (dict(train=zoo.channel_shared_wrong_axis, shared_axes="spatial"),
                                  "check_sharing_pattern", "not shared along", (0.5, 0.8)),
    "backward_ignores_mask": (dict(train=zoo.correct_global_rng, backward=zoo.backward_ignores_mask),
                              "check_backward_mask", "not masked", (0.5, 0.8)),
    "backward_fresh_mask": (dict(train=zoo.correct_global_rng, backward=zoo.backward_fresh_mask),
                            "check_backward_mask", "same mask as the forward", (0.5, 0.8)),
}

CORRECT = {
    "global_rng": dict(train=zoo.correct_global_rng, eval=zoo.identity),
    "own_generator": dict(train=zoo.correct_own_generator, eval=zoo.identity),
    "binomial": dict(train=zoo.correct_binomial, backward=zoo.backward_forward),
    "standard": dict(train=zoo.correct_standard, eval=zoo.standard_eval, contract="standard"),
    "gaussian": dict(train=zoo.correct_gaussian, eval=zoo.identity, contract="gaussian"),
    "alpha": dict(train=zoo.correct_alpha, eval=zoo.identity, contract="moments"),
    "channel": dict(train=zoo.correct_channel, shared_axes="spatial"),
    "float32": dict(train=zoo.correct_global_rng, example_input=F32),
    "reference_scheme": dict(train=sd.get_scheme("inverted").bind(0.8), keep_prob_fixed=0.8),
}


@functools.lru_cache(maxsize=None)
def _verify(name, table):
    kwargs = dict((BUGS[name][0] if table == "bugs" else CORRECT[name]))
    keep_prob = kwargs.pop("keep_prob_fixed", 0.5)
    train = kwargs.pop("train")
    return sd.verify_dropout(train, kwargs.pop("eval", None), keep_prob=keep_prob, seed=0, **kwargs)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bug_is_caught_by_its_check(name):
    _, check, fragment, caught_at = BUGS[name]
    result = _verify(name, "bugs")
    assert not result.passed
    by_name = {c.check: c for c in result.checks}
    for p in caught_at:
        c = by_name[f"{check}[keep_prob={p:g}]"]
        assert c.status == "failed", f"{name}: {c.check} did not fail:\n{result}"
        assert fragment in c.message + " ".join(result.diagnosis), f"{name}: {c.message}"


def test_keep_drop_swap_is_invisible_at_one_half_and_caught_off_it():
    # At 0.5 a reversed comparison is identical in law to correct code: the battery must not
    # (and cannot) flag it there — which is why it adds asymmetric keep probabilities.
    result = _verify("reversed_comparison", "bugs")
    by_name = {c.check: c for c in result.checks}
    assert by_name["check_keep_rate[keep_prob=0.5]"].status == "passed"
    assert by_name["check_keep_rate[keep_prob=0.8]"].status == "failed"


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_implementation_passes(name):
    result = _verify(name, "correct")
    assert result.passed, str(result)
    assert not result.diagnosis


def test_warning_when_only_one_half_is_tested():
    layer = sd.get_scheme("inverted").bind(0.5)
    result = sd.verify_dropout(layer, keep_prob=0.5)
    assert result.passed
    assert any("keep/drop swap" in w for w in result.warnings)
