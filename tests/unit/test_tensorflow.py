"""adapters.from_tf and keras layers against real TensorFlow (skipped where TF is not installed).

TensorFlow is not a test dependency: these run in an environment with ``tensorflow-cpu``. Keras is
imported in-process with the jax backend (tests/conftest.py), so keras on the tensorflow backend
runs in a child interpreter.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout import adapters

tf = pytest.importorskip("tensorflow")


def failing(result):
    frame = result.to_frame()
    return sorted({c.split("[")[0] for c in frame[frame.status == "failed"].check})


def replays(impl, shape=(32, 32)):
    """``(same seed replays the first call, successive calls differ, seeds differ)``."""
    x = np.ones(shape, np.float32)
    impl.reseed(5)
    a, b = impl.train(x), impl.train(x)
    impl.reseed(5)
    c = impl.train(x)
    impl.reseed(6)
    d = impl.train(x)
    return bool(np.array_equal(a, c)), not np.array_equal(a, b), not np.array_equal(a, d)


def stateless_dropout(x, seed):
    return tf.nn.experimental.stateless_dropout(x, rate=0.2, seed=seed)


def test_stateless_dropout_passes_and_its_seed_pairs_replay():
    impl = adapters.from_tf(stateless_dropout, lambda x: x, keep_prob=0.8)
    assert (impl.rng_source, impl.dtype) == ("tf-stateless", np.float32)
    out = impl.train(np.ones((4, 4), np.float32))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32  # .numpy() of the tf.Tensor
    assert replays(impl) == (True, True, True)
    result = sd.verify_dropout(impl, seed=0)
    assert result.passed, str(result)


def test_stateless_dropout_in_a_tf_function_and_in_float64():
    traced = tf.function(stateless_dropout)  # the seed pair arrives as a tensor: one trace
    impl = adapters.from_tf(traced, keep_prob=0.8)
    assert impl.rng_source == "tf-stateless" and replays(impl) == (True, True, True)
    assert sd.verify_dropout(impl, seed=0).passed
    wide = adapters.from_tf(stateless_dropout, keep_prob=0.8, dtype=np.float64)
    assert wide.dtype == np.float64 and sd.verify_dropout(wide, seed=0).passed


def test_stateful_dropout_passes_and_set_seed_replays_it():
    impl = adapters.from_tf(lambda x: tf.nn.dropout(x, rate=0.2), keep_prob=0.8)
    assert impl.rng_source == "tf-global" and replays(impl) == (True, True, True)
    result = sd.verify_dropout(impl, seed=0)
    assert result.passed, str(result)
    assert str(sd.verify_dropout(impl, seed=0)) == str(result)  # replayed by the battery's seed


def test_the_global_generator_is_reseeded_too():
    # tf.random.set_seed does not reach tf.random.get_global_generator(); reseed resets it in place,
    # so a generator captured before the adapter was made replays as well.
    gen = tf.random.get_global_generator()

    def generator_dropout(x):
        return tf.where(gen.uniform(tf.shape(x)) < 0.8, x / 0.8, tf.zeros_like(x))

    impl = adapters.from_tf(generator_dropout, keep_prob=0.8)
    assert replays(impl) == (True, True, True)
    assert sd.verify_dropout(impl, seed=0).passed


def test_a_constant_stateless_seed_fails_independence_calls_and_is_named():
    # tensorflow#2789 style: the same seed pair on every step, so every step drops the same units.
    impl = adapters.from_tf(lambda x, seed: tf.nn.experimental.stateless_dropout(x, rate=0.2, seed=[1, 2]),
                            keep_prob=0.8)
    result = sd.verify_dropout(impl, seed=0)
    assert not result.passed and "check_independence_calls" in failing(result)
    text = str(result)
    assert "all 11 successive calls produced identical masks" in text
    assert "a constant seed is passed to a TF stateless random op" in text


def test_set_seed_inside_the_step_is_named():
    def reset_each_call(x):
        tf.random.set_seed(1)
        return tf.nn.dropout(x, rate=0.2)

    result = sd.verify_dropout(adapters.from_tf(reset_each_call, keep_prob=0.8), seed=0)
    assert "check_independence_calls" in failing(result)
    assert "TF's global seed is reset on every call" in str(result)


def test_noise_shape_is_shared_axes():
    def channel_dropout(x, seed):  # one mask entry per (row, column), shared along axis 1
        noise_shape = tf.concat([tf.shape(x)[:1], [1], tf.shape(x)[2:]], 0)
        return tf.nn.experimental.stateless_dropout(x, rate=0.2, seed=seed, noise_shape=noise_shape)

    declared = sd.verify_dropout(adapters.from_tf(channel_dropout, keep_prob=0.8, shared_axes=(1,)), seed=0)
    assert declared.passed, str(declared)
    undeclared = sd.verify_dropout(adapters.from_tf(channel_dropout, keep_prob=0.8), seed=0)
    assert "check_independence_units" in failing(undeclared)
    assert "the mask is constant along axis 1" in str(undeclared)


@pytest.mark.slow  # a child interpreter importing TF and keras: ~15 s
def test_keras_layers_on_the_tensorflow_backend():
    pytest.importorskip("keras")
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf, keras, stats_dropout as sd
        assert keras.backend.backend() == "tensorflow", keras.backend.backend()
        L = keras.layers
        for layer in (L.Dropout(0.2), L.Dropout(0.2, noise_shape=(None, 1)), L.SpatialDropout2D(0.2),
                      L.GaussianDropout(0.2), L.AlphaDropout(0.2), L.Dropout(0.2, dtype="bfloat16")):
            impl = sd.adapters.implementation(layer)
            frame = sd.verify_dropout(impl, seed=0).to_frame()
            bad = sorted({c.split("[")[0] for c in frame[frame.status == "failed"].check}) or ["-"]
            print(impl.name, impl.rng_source, *bad, sep="|")
        # TF's bfloat16 uniform has 128 values (k/128) and the rate rounds to 0.2002: keep 102/128
        y = tf.nn.experimental.stateless_dropout(tf.ones([1 << 20], tf.bfloat16), rate=0.2, seed=[1, 2])
        print("bf16 keep", float(tf.reduce_mean(tf.cast(y != 0, tf.float32))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert out.returncode == 0, out.stderr[-3000:]
    *rows, bf16 = out.stdout.strip().splitlines()
    rows = [r.split("|") for r in rows]
    assert all(source == "keras-seed" for _, source, *_ in rows)
    assert [bad for *_, bad in rows[:5]] == ["-"] * 5, rows
    biased = abs(float(bf16.split()[-1]) - 0.8) > 0.002
    # the battery sees TF's bfloat16 keep-rate bias exactly when it is there
    assert ("check_keep_rate" in rows[5][2:]) == biased, (rows[5], bf16)
