"""Framework adapters: torch modules at their own ranks, flax, keras 3 (jax and torch backends), JAX and TF
functions. Every test is seeded; the long batteries live in tests/statistical/test_framework_calibration.py."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported (keras reads it once)

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout import adapters

PYTHON = sys.executable


def run_child(code, **env):
    """Run ``code`` in a fresh interpreter; its stdout."""
    out = subprocess.run([PYTHON, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def failing(result):
    frame = result.to_frame()
    return sorted({c.split("[")[0] for c in frame[frame.status == "failed"].check})


# --- laziness (and keras on the torch backend: one child interpreter for both) ---------------

@pytest.mark.slow  # a child interpreter importing torch and keras: ~10 s; the slow tier runs it
def test_no_framework_imported_then_keras_on_the_torch_backend():
    have = [m for m in ("keras", "torch") if __import__("importlib").util.find_spec(m) is not None]
    out = run_child(f"""
        import sys, numpy as np, stats_dropout as sd
        assert not sd.adapters.is_layer(object()) and not sd.adapters.is_layer(lambda x: x)
        print(sorted(m for m in ("torch", "jax", "keras", "flax", "tensorflow") if m in sys.modules))
        if {len(have) == 2}:
            import keras
            # keras' torch backend: an unseeded Dropout is torch.nn.functional.dropout (torch's RNG)
            assert sd.adapters.implementation(keras.layers.Dropout(0.5)).rng_source == "torch"
            layer = keras.layers.Dropout(0.5, seed=3)
            impl = sd.adapters.implementation(layer)
            x = np.ones((16, 16), np.float32)
            impl.reseed(1); a = impl.train(x); impl.reseed(1)
            assert np.array_equal(impl.train(x), a) and set(np.unique(a).tolist()) == {{0.0, 2.0}}
            assert np.array_equal(impl.eval(x), x)
            print(keras.backend.backend(), sd.adapters.framework_of(layer), impl.rng_source)
    """, KERAS_BACKEND="torch")
    lines = out.strip().splitlines()
    assert lines[0] == "[]"  # importing stats_dropout imports no framework
    if len(have) == 2:
        assert lines[1].split() == ["torch", "keras", "keras-seed"]  # a keras layer first, not a torch module


# --- torch -------------------------------------------------------------------------------------

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_torch_layers_table(torch):
    nn = torch.nn
    table = [  # module, keep_prob, contract, shared_axes, channel_axis, probe ndim
        (nn.Dropout(0.25), 0.75, "inverted", (), None, 2),
        (nn.Dropout1d(0.5), 0.5, "inverted", (2,), 1, 3),
        (nn.Dropout2d(0.5), 0.5, "inverted", (2, 3), 1, 4),
        (nn.Dropout3d(0.0), 1.0, "inverted", (2, 3, 4), 1, 5),
        (nn.AlphaDropout(0.1), 0.9, "moments", (), None, 2),
        (nn.FeatureAlphaDropout(0.2), 0.8, "moments", (2, 3, 4), 1, 5),
    ]
    for module, keep_prob, contract, axes, channel_axis, ndim in table:
        impl = adapters.implementation(module)
        assert sd.adapters.is_layer(module) and adapters.framework_of(module) == "torch"
        got = (impl.keep_prob, impl.contract, impl.shared_axes, impl.channel_axis, impl.rng_source, impl.dtype)
        assert got == (keep_prob, contract, axes, channel_axis, "torch", np.float32), type(module).__name__
        assert len(sd.reference.probes.probe_shape(axes)) == ndim and impl.inplace is False


def test_torch_keep_prob_errors_name_the_parameter(torch):
    with pytest.raises(ValueError, match=r"`keep_prob`=0.5 disagrees with the layer: Dropout\(p=0.2\) keeps units "
                                         r"with probability 0.8"):
        adapters.implementation(torch.nn.Dropout(0.2), keep_prob=0.5)
    assert adapters.implementation(torch.nn.Dropout(0.2), keep_prob=0.8).keep_prob == 0.8
    with pytest.raises(ValueError, match=r"`ndim` must be one of \[3, 4\] for Dropout2d; got 5"):
        adapters.implementation(torch.nn.Dropout2d(0.2), ndim=5)
    mine = np.ones((4, 3, 5), np.float64)  # the user's probe picks torch's rank reading, and its dtype
    impl = adapters.implementation(torch.nn.Dropout2d(0.2), example_input=mine)
    assert (impl.shared_axes, impl.channel_axis, impl.dtype) == ((1, 2), 0, None)
    with pytest.raises(ValueError, match=r"`example_input` has 2 dimensions; Dropout2d documents 4 or 3-D input"):
        adapters.implementation(torch.nn.Dropout2d(0.2), example_input=np.ones((4, 3)))
    with pytest.raises(TypeError, match=r"unknown Implementation field\(s\) in overrides: \['keepprob'\]"):
        adapters.implementation(torch.nn.Dropout(0.2), keepprob=0.8)
    with pytest.raises(TypeError, match=r"`obj` must be a framework dropout layer"):
        adapters.implementation(np.negative)


def test_torch_custom_module_keep_prob_from_user_or_attribute(torch):
    class Mine(torch.nn.Module):
        def __init__(self, **attrs):
            super().__init__()
            self.__dict__.update(attrs)

        def forward(self, t):
            return torch.nn.functional.dropout(t, 0.3, self.training)

    assert adapters.implementation(Mine(keep_prob=0.7)).keep_prob == 0.7
    assert adapters.implementation(Mine(p=0.3)).keep_prob == 0.7     # p is torch's drop rate
    assert adapters.implementation(Mine(rate=0.3)).keep_prob == 0.7  # rate is keras' drop rate
    assert adapters.implementation(Mine(), keep_prob=0.7).keep_prob == 0.7
    with pytest.raises(TypeError, match=r"`keep_prob` is required for Mine"):
        adapters.implementation(Mine())
    with pytest.raises(ValueError, match=r"`module.p` must be in \[0, 1\) .*; got 1.5"):
        adapters.implementation(Mine(p=1.5))
    module = Mine(p=0.3).eval()
    result = sd.verify_dropout(module, seed=2)
    assert result.passed, str(result)
    assert not module.training  # its mode is restored


def test_torch_inplace_output_is_the_input(torch):
    impl = adapters.implementation(torch.nn.Dropout(0.5, inplace=True))
    assert impl.inplace is True
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    torch.manual_seed(0)
    assert impl.train(x) is x                 # written into x: the alias is returned
    plain = adapters.implementation(torch.nn.Dropout(0.5))
    x = np.ones((8, 16), np.float32)
    y = plain.train(x)
    assert not np.shares_memory(y, x) and np.array_equal(x, np.ones((8, 16)))


@pytest.mark.filterwarnings("ignore:dropout2d. Received a 3D input:UserWarning")
def test_torch_dropout2d_on_3d_input_is_caught(torch):
    # torch 2.x reads 3-D input to Dropout2d as (N, C, L) (pytorch#79611 reverted #69885), not as the
    # documented unbatched (C, H, W): whole channels are not dropped (pytorch#69801).
    assert adapters.torch_ranks(torch.nn.Dropout2d(0.5)) == ((4, (2, 3), True), (3, (1, 2), False))
    impl = adapters.implementation(torch.nn.Dropout2d(0.2), ndim=3)
    assert impl.shared_axes == (1, 2) and impl.channel_axis == 0 and impl.example_input.ndim == 3
    assert impl.name == "Dropout2d(p=0.2)[unbatched 3-D]"
    result = sd.verify_dropout(impl)
    assert "check_sharing_pattern" in failing(result)
    assert any("69801" in line for line in result.diagnosis)


def test_torch_unbatched_dropout1d_masks_rows(torch):
    impl = adapters.implementation(torch.nn.Dropout1d(0.5), ndim=2)
    x = np.random.default_rng(1).uniform(1, 2, (64, 8)).astype(np.float32)
    torch.manual_seed(0)
    dropped = impl.train(x) == 0
    assert np.array_equal(dropped, np.broadcast_to(dropped[:, :1], dropped.shape)) and 0 < dropped.mean() < 1


# --- JAX functions -----------------------------------------------------------------------------

@pytest.fixture
def jax():
    return pytest.importorskip("jax")


def test_from_jax_conventions_and_keys(jax):
    jnp = jax.numpy

    def with_rate(key, x, rate):
        return jnp.where(jax.random.bernoulli(key, 1 - rate, x.shape), x / (1 - rate), 0)

    def bound(key, x):
        return with_rate(key, x, 0.2)

    impl = adapters.from_jax(with_rate, keep_prob=0.8)
    assert (impl.convention.takes_keep_prob, impl.convention.means, impl.rng_source) == (True, "drop", "jax-key")
    assert impl.dtype == np.float32 and impl.keep_probs() == (0.8, 0.3)
    fixed = adapters.from_jax(bound, lambda x: x, keep_prob=0.8)
    assert not fixed.convention.takes_keep_prob
    x = np.ones((64, 64), np.float32)
    fixed.reseed(5)
    a, b = fixed.train(x), fixed.train(x)
    fixed.reseed(5)
    assert np.array_equal(fixed.train(x), a) and not np.array_equal(a, b)  # fresh key per call, reset by reseed
    fixed.reseed(6)
    assert not np.array_equal(fixed.train(x), a)
    assert isinstance(a, np.ndarray) and set(np.unique(a).tolist()) == {0.0, 1.25}
    with pytest.raises(TypeError, match="`fn` must be"):
        adapters.from_jax("dropout", keep_prob=0.8)


def test_from_jax_battery_is_reproducible(jax):
    jnp = jax.numpy

    @jax.jit
    def dropout(key, x):
        return jnp.where(jax.random.bernoulli(key, 0.8, x.shape), x / 0.8, 0)

    impl = adapters.from_jax(dropout, lambda x: x, keep_prob=0.8)
    first, second, other = (sd.verify_dropout(impl, seed=s) for s in (3, 3, 4))
    one, two = first.to_frame(), second.to_frame()
    assert one.equals(two) and not one.equals(other.to_frame())
    assert first.passed


# --- flax --------------------------------------------------------------------------------------

def test_flax_layers(jax):
    pytest.importorskip("flax")
    from flax import linen, nnx

    user_rngs = nnx.Rngs(dropout=0)
    layers = [nnx.Dropout(0.25, rngs=user_rngs), nnx.Dropout(0.5, broadcast_dims=(1,)),
              linen.Dropout(0.5, broadcast_dims=(0, 2))]
    expected = [(0.75, ()), (0.5, (1,)), (0.5, (0, 2))]
    own_stream = layers[0].rngs  # nnx.Dropout forks the user's Rngs into its own stream when built
    before = (int(user_rngs.dropout.count[...]), int(own_stream.count[...]))
    for layer, (keep_prob, axes) in zip(layers, expected):
        assert adapters.is_layer(layer) and adapters.framework_of(layer) == "flax"
        impl = adapters.implementation(layer)
        assert (impl.keep_prob, impl.shared_axes, impl.contract, impl.rng_source, impl.dtype) == (
            keep_prob, axes, "inverted", "flax-rngs", np.float32)
        x = np.random.default_rng(0).uniform(1, 2, (16, 8, 4)).astype(np.float32)
        impl.reseed(1)
        y = impl.train(x)
        impl.reseed(1)
        assert np.array_equal(impl.train(x), y) and np.array_equal(impl.eval(x), x)
        kept = y != 0
        for a in axes:
            assert np.array_equal(kept, np.broadcast_to(np.take(kept, [0], axis=a), kept.shape))
        np.testing.assert_allclose(y[kept], x[kept] / keep_prob, rtol=1e-6)
    # neither the user's Rngs nor the layer's stream were drawn from: the keys are the adapter's
    assert (int(user_rngs.dropout.count[...]), int(own_stream.count[...])) == before
    with pytest.raises(ValueError, match=r"`keep_prob`=0.5 disagrees with the layer: nnx.Dropout\(rate=0.25\)"):
        adapters.implementation(layers[0], keep_prob=0.5)
    with pytest.raises(TypeError, match=r"`ndim` applies to torch channel dropout modules only"):
        adapters.implementation(layers[0], ndim=3)


# --- keras 3 (jax backend in process, torch backend in a child) --------------------------------

@pytest.fixture
def keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip(f"keras was imported with the {keras.backend.backend()} backend")
    return keras


def test_keras_layers_table(keras):
    L = keras.layers
    table = [  # layer, keep_prob, contract, shared_axes, channel_axis
        (L.Dropout(0.2), 0.8, "inverted", (), None),
        (L.Dropout(0.2, noise_shape=(None, 1, 8)), 0.8, "inverted", (1,), None),
        (L.SpatialDropout1D(0.5), 0.5, "inverted", (1,), -1),
        (L.SpatialDropout2D(0.5), 0.5, "inverted", (1, 2), -1),
        (L.SpatialDropout2D(0.5, data_format="channels_first"), 0.5, "inverted", (2, 3), 1),
        (L.SpatialDropout3D(0.5), 0.5, "inverted", (1, 2, 3), -1),
        (L.SpatialDropout3D(0.5, data_format="channels_first"), 0.5, "inverted", (2, 3, 4), 1),
        (L.GaussianDropout(0.3), 0.7, "gaussian", (), None),
        (L.AlphaDropout(0.3), 0.7, "moments", (), None),
    ]
    for layer, keep_prob, contract, axes, channel_axis in table:
        assert adapters.is_layer(layer) and adapters.framework_of(layer) == "keras"
        impl = adapters.implementation(layer)
        got = (impl.keep_prob, impl.contract, impl.shared_axes, impl.channel_axis, impl.rng_source)
        assert got == (keep_prob, contract, axes, channel_axis, "keras-seed"), impl.name
    ns = adapters.implementation(L.Dropout(0.2, noise_shape=(None, 1, 8)))
    assert ns.example_input.shape == (2**14, 2, 8) and ns.example_input.dtype == np.float32


def test_keras_dtypes(keras):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    half = adapters.implementation(keras.layers.Dropout(0.2, dtype="float16"))
    assert half.dtype == np.float16 and half.compute_dtype is None
    bf = adapters.implementation(keras.layers.Dropout(0.2, dtype="bfloat16"))
    x = bf.example_input
    assert x.dtype == np.float32 and np.array_equal(x.astype(ml_dtypes.bfloat16).astype(np.float32), x)
    assert str(bf.compute_dtype) == "bfloat16" and bf.train(x).dtype == np.float32
    mine = np.ones((4, 8), np.float64)
    assert adapters.implementation(keras.layers.Dropout(0.2), example_input=mine).dtype is None


def test_keras_seed_generator_is_driven_and_the_users_layer_untouched(keras):
    layer = keras.layers.Dropout(0.5, seed=7)
    state = np.asarray(layer.seed_generator.state.value).copy()
    impl = adapters.implementation(layer)
    x = np.ones((32, 32), np.float32)
    impl.reseed(3)
    a, b = impl.train(x), impl.train(x)
    impl.reseed(3)
    assert np.array_equal(impl.train(x), a) and not np.array_equal(a, b)
    impl.reseed(4)
    assert not np.array_equal(impl.train(x), a)
    assert np.array_equal(impl.eval(x), x)
    assert np.array_equal(np.asarray(layer.seed_generator.state.value), state)


# --- TensorFlow functions (TF itself is not a test dependency) ---------------------------------

def fake_stateless_dropout(x, seed):
    """A numpy stand-in for ``tf.nn.experimental.stateless_dropout(x, rate=0.2, seed=seed)``."""
    rng = np.random.default_rng([int(s) for s in seed])
    return np.where(rng.random(x.shape) < 0.8, x / np.float32(0.8), np.float32(0)).astype(x.dtype)


def test_from_tf_stateless_seed_pairs():
    impl = adapters.from_tf(fake_stateless_dropout, lambda x: x, keep_prob=0.8, as_tensors=False)
    assert (impl.rng_source, impl.dtype, impl.convention.takes_keep_prob) == ("tf-stateless", np.float32, False)
    x = np.ones((16, 16), np.float32)
    impl.reseed(9)
    a, b = impl.train(x), impl.train(x)
    impl.reseed(9)
    assert np.array_equal(impl.train(x), a) and not np.array_equal(a, b)
    result = sd.verify_dropout(impl, seed=0)
    assert result.passed, str(result)


def test_from_tf_without_tensorflow_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(ImportError, match=r"needs TensorFlow, which is not installed; install it with "
                                          r"`pip install tensorflow-cpu`"):
        adapters.from_tf(fake_stateless_dropout, keep_prob=0.8)
    with pytest.raises(ImportError, match="needs TensorFlow"):
        adapters.from_tf(lambda x: x, keep_prob=0.8, as_tensors=False)  # stateful: tf.random.set_seed


def test_from_tf_with_tensorflow():
    tf = pytest.importorskip("tensorflow")
    impl = adapters.from_tf(lambda x, seed: tf.nn.experimental.stateless_dropout(x, rate=0.2, seed=seed),
                            lambda x: x, keep_prob=0.8)
    assert sd.verify_dropout(impl).passed
