"""Battery mechanics: ids, result tables, robustness to broken implementations, RNG hygiene."""

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.reference.probes import probe_shape
from stats_dropout.verification import ASYMMETRIC_KEEP_PROBS
from stats_dropout.verification.registry import REGISTRY

PROBE = sd.reference.probes.scheme_probe((64, 256), seed=5)


def good(x, keep_prob):
    if not 0 < keep_prob <= 1:
        raise ValueError("keep_prob")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def test_iter_checks_ids_and_keep_probs():
    impl = sd.Implementation(good, keep_prob=0.5)
    assert impl.keep_probs() == (0.5, ASYMMETRIC_KEEP_PROBS[0])
    assert sd.Implementation(good, keep_prob=0.8).keep_probs() == (0.8, 0.3)
    assert sd.Implementation(lambda x: x, keep_prob=0.5).keep_probs() == (0.5,)
    ids = [name for name, _ in sd.iter_checks(impl)]
    assert "check_keep_rate[keep_prob=0.8]" in ids
    assert ids.count("check_invalid_keep_prob[keep_prob=0.5]") == 1
    assert not any(i.startswith("check_invalid_keep_prob[keep_prob=0.8]") for i in ids)


def test_checks_from_iter_checks_match_verify_dropout():
    impl = sd.Implementation(good, keep_prob=0.8, example_input=PROBE)
    checks = dict(sd.iter_checks(impl))
    res = checks["check_keep_rate[keep_prob=0.8]"](impl)
    assert res.status == "passed" and res.decision.n > 0


def test_result_frame_and_text():
    res = sd.verify_dropout(good, lambda x: x.copy(), keep_prob=0.8, example_input=PROBE)
    frame = res.to_frame()
    assert list(frame.columns) == ["check", "keep_prob", "status", "estimate", "expected", "ci_low", "ci_high",
                                   "pvalue", "min_detectable_effect", "n", "message"]
    assert set(frame["status"]) <= {"passed", "skipped"}
    text = str(res)
    assert "PASSED" in text and "seed 0" in text and "check_keep_rate[keep_prob=0.3]" in text


@pytest.mark.parametrize("train, check, fragment", [
    (lambda x: 1 / 0, "check_output_shape_dtype", "ZeroDivisionError"),
    (lambda x: x[:1], "check_output_shape_dtype", "shape (1, 256)"),
    (lambda x: x * np.nan, "check_finite_output", "NaN"),
    (lambda x: "not an array", "check_output_shape_dtype", "shape ()"),
])
def test_broken_implementations_fail_without_crashing(train, check, fragment):
    res = sd.verify_dropout(train, keep_prob=0.8, example_input=PROBE)
    assert not res.passed
    failed = {c.check.split("[")[0]: c for c in res.failed_checks}
    assert fragment in failed[check].message
    statistical = [c for c in res.checks if c.check.startswith("check_keep_rate[")]
    assert all(c.status == "skipped" for c in statistical)


def test_user_input_and_global_rng_untouched():
    x = PROBE.copy()
    np.random.seed(77)
    state = np.random.get_state()[1].copy()
    sd.verify_dropout(good, keep_prob=0.8, example_input=x)
    np.testing.assert_array_equal(x, PROBE)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_same_seed_same_result_different_seed_different_draws():
    a = sd.verify_dropout(good, keep_prob=0.8, example_input=PROBE, seed=1).to_frame()
    b = sd.verify_dropout(good, keep_prob=0.8, example_input=PROBE, seed=1).to_frame()
    c = sd.verify_dropout(good, keep_prob=0.8, example_input=PROBE, seed=2).to_frame()
    assert a.equals(b)
    assert not a["estimate"].equals(c["estimate"])


def test_probe_shapes_have_2_to_the_18_elements():
    for axes in [(), "spatial", "non_batch", (0,), (1,), (2,), (-1,)]:
        assert int(np.prod(probe_shape(axes))) == 2**18


def test_skipped_checks_say_why():
    res = sd.verify_dropout(sd.get_scheme("gaussian").bind(0.8), keep_prob=0.8, contract="gaussian")
    assert res.passed
    # Checks that cannot apply are not run (and spend no false-fail budget); the result says
    # which, and what each lacks.
    ran = {c.check.split("[")[0] for c in res.checks}
    assert "check_kept_scale" not in ran and "check_eval_contract" not in ran
    lines = dict(line.split(": needs ", 1) for line in res.not_applicable)
    assert "keep/drop mask" in lines["check_kept_scale"]
    assert "eval path" in lines["check_eval_contract"]
    assert "Not applicable: " in str(res)
    # The budget is split over the statistical checks that ran, at each keep probability.
    n_statistical = sum(c.check.split("[")[0] in {s.name for s in REGISTRY if s.statistical} for c in res.checks)
    assert res.per_check_false_fail_rate == pytest.approx(1e-6 / n_statistical)


def test_verify_dropout_accepts_an_implementation():
    impl = sd.Implementation(good, lambda x: x.copy(), keep_prob=0.8, example_input=PROBE)
    res = sd.verify_dropout(impl)
    assert res.passed
    assert {c.keep_prob for c in res.checks} == {0.8, 0.3}


def test_probe_shapes_for_any_shared_axes():
    for axes in [(3,), (2, 3), (1, -1), (0, 1)]:
        shape = probe_shape(axes)
        assert int(np.prod(shape)) == 2**18 and min(shape) >= 2, (axes, shape)


def test_zero_inputs_do_not_fail_a_correct_channel_dropout():
    # Zero padding at index 0 of a shared (spatial) axis, and rows with many zeros: masks are
    # unobservable there, which must not look like dropped units or over-dispersed rows.
    # The default channel probe's shape: 65536 independent mask entries keep the draws few.
    x = sd.reference.probes.scheme_probe((256, 256, 2, 2), seed=4)
    x[:, :, 0, :] = 0.0
    x[:128, :, 1, 1:] = 0.0

    def channel(z, keep_prob):
        if not 0 < keep_prob <= 1:
            raise ValueError("keep_prob")
        mask = np.random.rand(z.shape[0], z.shape[1], 1, 1) < keep_prob
        return z * mask / keep_prob

    res = sd.verify_dropout(channel, keep_prob=0.8, shared_axes="spatial", example_input=x)
    assert res.passed, str(res)


def test_zero_rows_do_not_fail_row_dispersion():
    x = PROBE.copy()
    x[:32, 16:] = 0.0
    res = sd.verify_dropout(good, keep_prob=0.8, example_input=x)
    assert res.passed, str(res)


def test_ragged_output_and_random_eval_neither_escape_nor_touch_the_callers_rng():
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    ragged = sd.verify_dropout(lambda x: [[1.0], [1.0, 2.0]], keep_prob=0.8, example_input=PROBE)
    assert not ragged.passed
    noisy_eval = sd.verify_dropout(good, lambda x: good(x, 0.5), keep_prob=0.8, example_input=PROBE)
    assert not noisy_eval.passed
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_iter_checks_does_not_share_evidence_between_probes():
    a = sd.Implementation(good, keep_prob=0.8, example_input=np.ones((16, 64)))
    b = sd.Implementation(good, keep_prob=0.8, example_input=-np.ones((32, 64)))
    na = dict(sd.iter_checks(a))["check_keep_rate[keep_prob=0.8]"](a).decision.n
    nb = dict(sd.iter_checks(b))["check_keep_rate[keep_prob=0.8]"](b).decision.n
    assert na != nb


def test_capped_draws_are_announced():
    res = sd.verify_dropout(good, keep_prob=0.8, example_input=np.ones((8, 16)))
    assert any("capped" in w for w in res.warnings)


def test_bad_shared_axes_and_torch_modules_are_named():
    with pytest.raises(TypeError, match=r"`shared_axes` must be a tuple of ints"):
        sd.verify_dropout(good, keep_prob=0.8, shared_axes=1)
    with pytest.raises(ValueError, match=r"`shared_axes` must be one of 'spatial', 'non_batch'; got 'foo'"):
        sd.verify_dropout(good, keep_prob=0.8, shared_axes="foo")
    with pytest.raises(ValueError, match=r"`shared_axes` \(5,\) names axes the 2-d probe does not have"):
        sd.verify_dropout(good, keep_prob=0.8, shared_axes=(5,), example_input=PROBE)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"`eval` is a torch module \(Dropout\); wrap it first"):
        sd.verify_dropout(good, torch.nn.Dropout(0.2), keep_prob=0.8)
    # As `train`, a torch module is adapted directly: keep_prob, contract and sharing from the object.
    assert sd.verify_dropout(torch.nn.Dropout(0.2)).passed
