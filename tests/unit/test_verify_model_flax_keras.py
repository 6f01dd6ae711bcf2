"""verify_model on flax nnx and keras 3 models: every dropout site found, verified on its real activation.

Subjects (built here, small: a 1024 × 32 batch): an nnx MLP with two ``nnx.Dropout`` sites of different
rates, and the same MLP whose second block calls its Dropout with ``deterministic=False`` (random in
eval mode); a keras functional model with ``Dropout`` and ``GaussianDropout``, and the same model whose
``Dropout`` is a subclass that forgets the rescale. Each skips cleanly without its framework. The
batteries run at looser error rates than the defaults (``RATES``: 1e-3 false fail, 1e-2 false pass per
site) to keep the file fast; every run is seeded, and the planted bugs are far beyond those rates' reach.
The batch is 1024 rows, not fewer: a site's battery needs a fixed number of mask entries, so a small
activation means many calls (each a framework dispatch of about a millisecond) and capped draws; 1024 × 32
gives each site its full draws in a few dozen calls.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

from stats_dropout.verification.models import EVAL_CHECK, verify_model  # noqa: E402

RATES = {"false_fail_rate": 1e-3, "false_pass_rate": 1e-2}
BATCH = 1024  # rows of the example batch (see above)


def row(result, path):
    (found,) = [r for r in result.rows if r.path == path]
    return found


# --- flax nnx -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nnx_models():
    nnx = pytest.importorskip("flax.nnx")
    jnp = pytest.importorskip("jax.numpy")

    class Block(nnx.Module):
        def __init__(self, rate, rngs, eval_bug=False):
            self.lin = nnx.Linear(32, 32, rngs=rngs)
            self.dropout = nnx.Dropout(rate, rngs=rngs)
            self.eval_bug = eval_bug

        def __call__(self, x):
            h = nnx.relu(self.lin(x))
            return self.dropout(h, deterministic=False) if self.eval_bug else self.dropout(h)

    class MLP(nnx.Module):
        def __init__(self, rngs, eval_bug=False):
            self.blocks = nnx.List([Block(0.1, rngs), Block(0.5, rngs, eval_bug)])
            self.out = nnx.Linear(32, 4, rngs=rngs)

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            return self.out(x)

    batch = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, 32)), dtype=jnp.float32)
    return nnx, MLP, batch


def test_nnx_mlp_passes_with_both_sites(nnx_models):
    nnx, MLP, batch = nnx_models
    model = MLP(nnx.Rngs(0))
    before = _counts_and_params(nnx, model)
    call = nnx.Dropout.__call__
    result = verify_model(model, batch, **RATES)
    assert result.passed, str(result)
    assert result.framework == "flax" and result.eval_deterministic is True
    assert [r.path for r in result.rows] == ["blocks.0.dropout", "blocks.1.dropout"]
    assert row(result, "blocks.0.dropout").keep_prob == pytest.approx(0.9)
    assert row(result, "blocks.1.dropout").keep_prob == pytest.approx(0.5)
    assert all(r.input_shape == (BATCH, 32) and r.calls == 1 and r.dtype == "float32" for r in result.rows)
    assert "two eval-mode forwards agree" in str(result)
    # the user's model is untouched: rng counts, flags, parameters; the class method is restored
    assert nnx.Dropout.__call__ is call
    assert model.blocks[0].dropout.deterministic is False
    after = _counts_and_params(nnx, model)
    assert len(after) == len(before) and all(np.array_equal(x, y) for x, y in zip(before, after))


def _counts_and_params(nnx, model):
    import jax

    return [np.asarray(v) for v in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param, nnx.RngCount))]


def test_nnx_dropout_random_in_eval_named_at_its_site(nnx_models):
    nnx, MLP, batch = nnx_models
    result = verify_model(MLP(nnx.Rngs(0), eval_bug=True), batch, sites=["blocks.1.dropout"], **RATES)
    assert not result.passed
    assert result.eval_deterministic is False
    assert result.failed_sites == ("blocks.1.dropout",)
    bad = row(result, "blocks.1.dropout")
    assert EVAL_CHECK in bad.failing_checks and "deterministic=False" in bad.note


def test_nnx_sites_validated(nnx_models):
    nnx, MLP, batch = nnx_models
    with pytest.raises(ValueError, match="did you mean 'blocks.1.dropout'"):
        verify_model(MLP(nnx.Rngs(0)), batch, sites=["blocks.1.dropot"])
    with pytest.raises(ValueError, match="`mc_dropout` is supported for torch models only"):
        verify_model(MLP(nnx.Rngs(0)), batch, mc_dropout=True)


# --- keras 3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_models():
    keras = pytest.importorskip("keras")
    layers = keras.layers

    class NoRescaleDropout(layers.Dropout):
        """Drops at the right rate but forgets to scale the kept units by 1 / (1 − rate)."""

        def call(self, inputs, training=False):
            if not training:
                return inputs
            keep = keras.random.uniform(keras.ops.shape(inputs), seed=self.seed_generator) >= self.rate
            return keras.ops.where(keep, inputs, 0.0)

    def build(bug=False):
        inputs = keras.Input((32,))
        x = layers.Dense(32, activation="relu", name="dense")(inputs)
        x = layers.GaussianDropout(0.3, name="gauss")(x)
        x = layers.Dense(32, name="hidden")(x)
        x = (NoRescaleDropout if bug else layers.Dropout)(0.25, name="drop")(x)
        return keras.Model(inputs, layers.Dense(4, name="head")(x), name="net")

    batch = np.random.default_rng(0).normal(size=(BATCH, 32)).astype(np.float32)
    return keras, build, batch


def test_keras_functional_passes_with_right_keep_probs(keras_models):
    keras, build, batch = keras_models
    model = build()
    before = [np.array(keras.ops.convert_to_numpy(v.value)) for v in model.variables]
    call = keras.layers.Dropout.call
    result = verify_model(model, batch, **RATES)
    assert result.passed, str(result)
    assert result.framework == "keras" and result.eval_deterministic is True
    assert [(r.path, r.kind) for r in result.rows] == [("gauss", "gaussian"), ("drop", "dropout")]
    assert row(result, "gauss").keep_prob == pytest.approx(0.7)
    assert row(result, "drop").keep_prob == pytest.approx(0.75)
    assert all(r.input_shape == (BATCH, 32) for r in result.rows)
    # seed generators and weights restored, the class method too
    assert keras.layers.Dropout.call is call
    assert all(np.array_equal(a, keras.ops.convert_to_numpy(v.value)) for a, v in zip(before, model.variables))


def test_keras_missing_rescale_found_at_its_site(keras_models):
    keras, build, batch = keras_models
    result = verify_model(build(bug=True), batch, sites=["drop"], **RATES)
    assert not result.passed
    assert result.failed_sites == ("drop",)
    bad = row(result, "drop")
    assert bad.keep_prob == pytest.approx(0.75) and "check_kept_scale" in bad.failing_checks
    assert result.eval_deterministic is True


def test_keras_nested_paths(keras_models):
    keras, _, batch = keras_models
    inner = keras.Sequential([keras.layers.Dense(8), keras.layers.Dropout(0.2, name="d")], name="inner")
    model = keras.Sequential([keras.layers.Dense(8, name="first"), inner], name="outer")
    from stats_dropout.verification.model_sites_keras import find_sites

    model(batch)
    assert [(s.path, s.keep_prob) for s in find_sites(model)] == [("inner.d", pytest.approx(0.8))]


def test_keras_random_layer_in_eval_named_even_when_no_site(keras_models):
    keras, _, batch = keras_models

    class NoisyAlways(keras.layers.GaussianNoise):  # no dropout site: named by the module comparison
        def call(self, inputs, training=False):
            return super().call(inputs, training=True)

    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(8, name="dense"), NoisyAlways(0.1, name="noisy"),
                              keras.layers.Dense(4, name="head")])
    result = verify_model(model, batch, **RATES)
    assert not result.passed and result.eval_deterministic is False
    assert [path for path, _ in result.eval_findings] == ["noisy"]
    assert [(r.path, r.kind, r.verdict) for r in result.rows] == [("noisy", "eval-random", "failed")]


# --- neither ------------------------------------------------------------------------------------


def test_not_a_model_names_model():
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module, a flax nnx.Module or a keras model"):
        verify_model(object(), np.zeros((2, 2)))


def test_keras_unbuilt_model_statistics_are_restored():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dropout(0.5)])
    batch = np.random.default_rng(1).normal(3.0, 1.0, size=(2048, 4)).astype("float32")  # 2048 × 8 at the site
    assert not model.built
    verify_model(model, batch, check_eval=False, **RATES)
    bn = model.layers[1]
    mean = keras.ops.convert_to_numpy(bn.moving_mean.value)
    assert np.all(mean == 0.0), mean  # the train forward's update undone
