"""The battery catches real historical framework bugs, each by its check, with the right diagnosis.

Every entry of :data:`BUGS` runs the real battery (``sd.verify_dropout`` on an
``sd.Implementation`` carrying the framework's ``rng_source``) at its defaults — total
false-fail rate 1e-6, false-pass rate 1e-3, seed 0 — on a probe small enough to keep the table
fast, and asserts that the named check fails at every listed keep probability and that the
check's message or the diagnosis matches the entry's regex. A bug the battery does not catch
stays here as ``xfail(strict=True)`` with the reason, never as a weakened check.
"""

import functools
import re

import numpy as np
import pytest

import stats_dropout as sd
from tests.quality import framework_zoo as fz

pytest.importorskip("torch")
pytest.importorskip("jax")

RATE = 0.1  # the frameworks' drop rate (their common default); keep_prob 0.9 is asymmetric and cheap
KEEP = 1 - RATE


def _probe(shape, seed, dtype=np.float64):
    return sd.reference.probes.scheme_probe(shape, seed=seed).astype(dtype)


WIDE = _probe((128, 1024), 0)  # half the default probe: the keep-rate target still sets the draws


# name -> (Implementation kwargs (train/eval from a builder or a function), check that must fail,
#          regex the message or diagnosis must match, keep probabilities where caught, xfail reason)
BUGS = {
    "pytorch#77081 Dropout2d on (N, C, L) read as (C, H, W)": (
        dict(build=fz.dropout2d_3d_read_as_unbatched, shared_axes="spatial",
             example_input=_probe((256, 64, 2), 1), rng_source="torch"),
        "check_independence_units", r"each sample is kept or dropped whole.*pytorch#77081", (KEEP,), None),
    "pytorch#69801 Dropout2d on (C, H, W) read as (N, C, L)": (
        dict(build=fz.dropout2d_unbatched_read_as_batched, shared_axes=(1, 2),
             example_input=_probe((16384, 2, 2), 2), rng_source="torch"),
        "check_sharing_pattern", r"unbatched \(C, H, W\) input is read as a batch.*pytorch#69801", (KEEP,),
        None),
    "jax#28039 bernoulli with a float16 p keeps everything": (
        dict(build=fz.bernoulli_float16_p, rng_source="jax-key", compute_dtype=np.float16, example_input=WIDE),
        "check_keep_rate", r"nothing is dropped.*16-bit float.*jax#28039", (KEEP,), None),
    "tensorflow#2789 seeded DropoutWrapper: one mask for all time steps": (
        dict(build=fz.seeded_dropout_wrapper_static_rnn, example_input=_probe((256, 8, 64), 3)),
        "check_independence_units", r"same mask is applied at every index of axis 1.*time step.*tensorflow#2789",
        (KEEP,), None),
    "keras#18426 jit freezes the seed: identical masks on every call": (
        dict(build=fz.jit_frozen_seed_generator, example_input=_probe((256, 256), 4, np.float32),
             rng_source="keras-seed"),
        "check_independence_calls", r"compiled with jax\.jit.*traced.*keras#18426", (KEEP,), None),
    "google-research/electra#61 keep probability passed as tf.nn.dropout's rate": (
        dict(train=fz.electra_dropout, keep_prob=KEEP, example_input=WIDE, validates_keep_prob=False),
        "check_keep_rate", r"used as the drop probability", (KEEP, 0.8), None),
    "kaldi-asr/kaldi#2814 kept units scaled by 1/dropout_proportion": (
        dict(train=fz.kaldi_general_dropout, keep_prob=KEEP, example_input=WIDE,
             keep_prob_means="drop", validates_keep_prob=False),
        "check_kept_scale", r"divided by the drop probability", (KEEP, 0.8), None),
    "pytorch#141557 F.dropout in forward: still active in eval()": (
        dict(build=fz.functional_dropout_ignores_eval, rng_source="torch", example_input=WIDE),
        "check_eval_deterministic", r"dropout is still active at test time", (KEEP,), None),
}

#: Identical masks across calls, by source of randomness: check_independence_calls fails and
#: the diagnosis names the mechanism (and never blames np.random.seed when numpy is not used).
MECHANISMS = {
    "reused JAX key": (fz.reused_jax_key, "jax-key", r"same JAX PRNG key .* reused instead of split"),
    "constant TF stateless seed": (fz.constant_tf_stateless_seed, "tf-stateless",
                                   r"constant seed is passed to a TF stateless random op"),
    "torch.manual_seed in forward": (fz.torch_manual_seed_in_forward, "torch",
                                     r"torch generator is reseeded on every call"),
}


def _implementation(spec):
    spec = dict(spec)
    build = spec.pop("build", None)
    if build is not None:
        spec["train"], spec["eval"] = build(RATE)
        spec.setdefault("keep_prob", KEEP)
    return sd.Implementation(**spec)


@functools.lru_cache(maxsize=None)
def _verify(name):
    return sd.verify_dropout(_implementation(BUGS[name][0]), seed=0)


def _params():
    for name, (*_, reason) in BUGS.items():
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(name, marks=marks, id=name.split(" ")[0])


@pytest.mark.parametrize("name", list(_params()))
def test_framework_bug_is_caught_by_its_check_with_its_diagnosis(name):
    _, check, pattern, caught_at, _ = BUGS[name]
    result = _verify(name)
    by_name = {c.check: c for c in result.checks}
    for p in caught_at:
        c = by_name[f"{check}[keep_prob={p:g}]"]
        assert c.status == "failed", f"{name}: {c.check} did not fail:\n{result}"
        text = c.message + " " + " ".join(result.diagnosis)
        assert re.search(pattern, text, re.S), f"{name}: no /{pattern}/ in:\n{text}"


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_identical_masks_are_attributed_to_the_mechanism(name):
    build, source, pattern = MECHANISMS[name]
    train, reseed = build(RATE)
    impl = sd.Implementation(train, keep_prob=KEEP, reseed=reseed, rng_source=source,
                             example_input=_probe((128, 128), 5))
    result = sd.verify_dropout(impl, seed=0)
    c = {c.check: c for c in result.checks}[f"check_independence_calls[keep_prob={KEEP:g}]"]
    assert c.status == "failed", str(result)
    diagnosis = " ".join(result.diagnosis)
    assert re.search(pattern, diagnosis), diagnosis
    assert "np.random.seed" not in diagnosis



@pytest.mark.parametrize("jit, pattern", [(False, r"created inside the function, e\.g\. jax\.random\.key\(0\)"),
                                          (True, r"compiled with jax\.jit .* captured when it was traced")])
def test_a_key_ignored_behind_the_jax_adapter_is_named(jit, pattern):
    impl = sd.adapters.from_jax(fz.key_ignored(RATE, jit), keep_prob=KEEP,
                                example_input=_probe((128, 128), 5, np.float32))
    result = sd.verify_dropout(impl, seed=0)
    c = {c.check: c for c in result.checks}[f"check_independence_calls[keep_prob={KEEP:g}]"]
    assert c.status == "failed", str(result)
    assert re.search(pattern, " ".join(result.diagnosis)), result.diagnosis
