"""The ``linear`` contract (stats_dropout.verification.linear): dropout inside attention, dropout
then a linear layer, DropConnect — verified from outputs alone at the default false-fail rate 1e-6.

Correct ops pass; each planted bug fails by the check named for it: no rescale and keep used as
the drop probability (check_linear_mean), a keep/drop swap with the matching rescale
(check_linear_variance), one mask replayed by a reseeded generator
(check_linear_independence_calls), one mask shared across heads or batch rows
(check_linear_independence_<axis>). Seeds are fixed; every failure message names its seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout.verification.linear import LinearOp, dropconnect, dropout_then_linear, verify_linear
from stats_dropout.verification.linear_checks import LinearModel

torch = pytest.importorskip("torch")
F = torch.nn.functional
from stats_dropout.verification.adapters.attention import from_sdpa, from_torch_mha  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops run far faster on one thread on a shared 2-core machine (torch SDPA: 0.6 ms
    against 70 ms a call under load); BLAS too, if threadpoolctl is installed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        limits = None
    else:
        limits = threadpool_limits(limits=1, user_api="blas")
    yield
    torch.set_num_threads(threads)
    if limits is not None:
        limits.restore_original_limits()


def failed_names(res):
    return {c.check.split("[")[0] for c in res.failed_checks}


@pytest.fixture(scope="module")
def qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, 4, 32, 16, generator=g) for _ in range(3))


def attention(q, k, v, dropout_p=0.0, *, shape=None, keep_as_drop=False, rescale=True, reseed=False):
    """A hand-written SDPA with switchable bugs."""
    p = torch.softmax(q @ k.transpose(-2, -1) / q.size(-1) ** 0.5, -1)
    if dropout_p > 0:
        keep = 1 - dropout_p
        gen = torch.Generator().manual_seed(0) if reseed else None
        mask = (torch.rand(shape or p.shape, generator=gen) < (dropout_p if keep_as_drop else keep)).to(p.dtype)
        p = p * mask / (keep if rescale else 1.0)
    return p @ v


# --- the null model's formulas, against simulation ------------------------------------------
def test_null_moments_match_simulation():
    """Every statistic's exact null mean and sd (loadings with groups, units < and > entries)."""
    rng = np.random.default_rng(1)
    for units in (3, 12):
        shape, entries, p = (3, 4, units), (2, 5), 0.7
        lo = rng.normal(size=shape + entries) * rng.uniform(0.2, 2, size=shape + entries)
        off = rng.normal(size=shape)
        model = LinearModel(lo, off, off + lo.sum(axis=(-1, -2)), p, (0, 1),
                            {"g0": 0, "g1": 1, "e0": 3, "e1": 4}, np.float64)
        values, previous = {k: [] for k in model.stats}, None
        for _ in range(1500):
            y = off + np.einsum("abuij,abij->abu", lo, (rng.random((3, 4) + entries) < p) / p)
            got, _, previous = model.statistics(model.to_groups(y) - model.ref, previous)
            for k, v in got.items():
                values[k].append(v)
        for k, (sd_, _, expected) in model.stats.items():
            x = np.asarray(values[k])
            assert abs(x.mean() - expected) < 5 * sd_ / np.sqrt(x.size), (units, k)
            assert abs(x.std() / sd_ - 1) < 0.1, (units, k, x.std(), sd_)


# --- numpy ops: dropout then linear, DropConnect -----------------------------------------------
@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 32)), rng.normal(size=(16, 32)), rng.normal(size=16)


@pytest.mark.parametrize("bug, check", [
    (None, None),
    ("no_rescale", "check_linear_mean"),
    ("swap", "check_linear_variance"),
    ("reseeded", "check_linear_independence_calls"),
    ("row_shared", "check_linear_independence_batch"),
])
def test_dropout_then_linear(layer, bug, check):
    x, w, b = layer
    p = 0.8

    def train():
        rand = np.random.default_rng(0).random if bug == "reseeded" else np.random.random_sample
        keep = 1 - p if bug == "swap" else p
        mask = rand((1, x.shape[1]) if bug == "row_shared" else x.shape) < keep
        return (x * mask / (1 if bug == "no_rescale" else keep)) @ w.T + b

    res = verify_linear(dropout_then_linear(train, x, w, b, keep_prob=p))
    if bug is None:
        assert res.passed, str(res)
    else:
        assert check in failed_names(res), str(res)
        assert "seed=0" in next(c.message for c in res.failed_checks if c.check.startswith(check))
        assert res.diagnosis


def test_dropconnect_inverted_and_standard():
    rng = np.random.default_rng(1)  # one weight mask per call: 2048 entries (the draws scale as 1/entries)
    x, w, b = rng.normal(size=(32, 64)), rng.normal(size=(32, 64)), rng.normal(size=32)
    p = 0.75

    def inverted():
        return x @ (w * (np.random.random_sample(w.shape) < p) / p).T + b

    def standard():  # Wan et al.: no rescale at train, E u = p W v
        return x @ (w * (np.random.random_sample(w.shape) < p)).T + b

    assert verify_linear(dropconnect(inverted, x, w, b, keep_prob=p)).passed
    assert verify_linear(dropconnect(standard, x, w, b, keep_prob=p, scaling="standard")).passed
    res = verify_linear(dropconnect(standard, x, w, b, keep_prob=p))
    assert "check_linear_mean" in failed_names(res)
    assert "rescale is missing" in res.diagnosis[0]
    # one weight mask per example claimed, one per batch drawn: the batch rows share it
    res = verify_linear(dropconnect(inverted, x, w, b, keep_prob=p, per_example=True))
    assert "check_linear_independence_batch" in failed_names(res)


def test_keep_prob_one_is_checked_exactly(layer):
    x, w, b = layer
    res = verify_linear(dropout_then_linear(lambda: x @ w.T + b, x, w, b, keep_prob=1.0))
    assert res.passed and [c.check for c in res.checks][-1] == "check_linear_fixed_units[keep_prob=1]"
    noisy = verify_linear(dropout_then_linear(lambda: x @ w.T + b + 1e-6 * np.random.randn(16), x, w, b,
                                              keep_prob=1.0))
    assert failed_names(noisy) == {"check_linear_fixed_units"}


def test_wrong_loadings_fail_the_reference_check(layer):
    x, w, b = layer
    op = dropout_then_linear(lambda: x @ w.T + b, x, w, b, keep_prob=0.9, reference=x @ w.T)  # bias missing
    assert "check_linear_reference" in failed_names(verify_linear(op))


@pytest.mark.parametrize("train, words", [
    (lambda: 1 / 0, "ZeroDivisionError"),
    (lambda: np.zeros(3), "instead of an array of shape"),
    (lambda: np.full((64, 16), np.nan), "NaN"),
])
def test_a_broken_train_call_is_a_failed_check_not_a_crash(layer, train, words):
    x, w, b = layer
    res = verify_linear(dropout_then_linear(train, x, w, b, keep_prob=0.9))
    out = next(c for c in res.checks if c.check.startswith("check_linear_output"))
    assert out.failed and words in out.message and "seed 0" in out.message
    assert all(c.status == "skipped" for c in res.checks if "independence" in c.check or "mean" in c.check)


def test_input_validation(layer):
    x, w, _ = layer
    lo = np.ones((4, 3, 5))
    with pytest.raises(ValueError, match="`keep_prob` must be in"):
        LinearOp(lambda: None, lo, 0.0)
    with pytest.raises(ValueError, match="`loadings` must have shape"):
        LinearOp(lambda: None, lo, 0.5, reference=np.ones((4, 2)))
    with pytest.raises(ValueError, match="`group_axes` must be an axis"):
        LinearOp(lambda: None, lo, 0.5, reference=np.ones((4, 3)), group_axes=(2,))
    with pytest.raises(ValueError, match="unit axis"):
        LinearOp(lambda: None, lo, 0.5, reference=np.ones((4, 3)), group_axes=(0,), independent_axes={"u": 1})
    with pytest.raises(TypeError, match="`train` must be callable"):
        LinearOp(None, lo, 0.5)
    with pytest.raises(TypeError, match="`op` must be a LinearOp"):
        verify_linear(lambda: None)
    with pytest.raises(ValueError, match="`draws` must be at least 3"):
        verify_linear(LinearOp(lambda: None, lo, 0.5), draws=2)
    with pytest.raises(ValueError, match="`relative_bias` must be a positive number"):
        verify_linear(LinearOp(lambda: None, lo, 0.5), relative_bias=0)
    with pytest.raises(ValueError, match="`x` must be"):
        dropout_then_linear(lambda: None, x, w.T, keep_prob=0.5)


def test_public_names():
    assert sd.verify_linear is verify_linear and sd.LinearOp is LinearOp
    assert sd.adapters.attention.from_sdpa is from_sdpa


# --- torch attention ---------------------------------------------------------------------------
@pytest.mark.parametrize("dropout_p, kwargs", [(0.1, {}), (0.3, {"is_causal": True})], ids=["full", "causal"])
def test_torch_sdpa_cpu_passes(qkv, dropout_p, kwargs):
    res = verify_linear(from_sdpa(*qkv, dropout_p, **kwargs))
    assert res.passed, str(res)


def test_the_hand_written_attention_without_bugs_passes(qkv):
    assert verify_linear(from_sdpa(*qkv, 0.1, attention=attention)).passed


def test_torch_sdpa_with_masks_and_float64(qkv):
    q, k, v = qkv
    mask = torch.rand(32, 32, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[:, 0] = True  # no fully masked row (torch gives NaN there)
    assert verify_linear(from_sdpa(q, k, v, 0.2, attn_mask=mask)).passed
    assert verify_linear(from_sdpa(q.double(), k.double(), v.double(), 0.2, scale=0.1)).passed


@pytest.mark.parametrize("bug, check, cause", [
    ({"rescale": False}, "check_linear_mean", "rescale is missing"),
    ({"keep_as_drop": True}, "check_linear_mean", "keep_prob used as the drop probability"),
    ({"reseed": True}, "check_linear_independence_calls", "torch generator is reseeded"),
    ({"shape": (2, 1, 32, 32)}, "check_linear_independence_head", "shared along 'head'"),
    ({"shape": (1, 4, 32, 32)}, "check_linear_independence_batch", "shared along 'batch'"),
])
def test_broken_attention_fails_by_its_check(qkv, bug, check, cause):
    res = verify_linear(from_sdpa(*qkv, 0.1, attention=lambda *a, **kw: attention(*a, **kw, **bug)))
    assert check in failed_names(res), str(res)
    assert any(cause in d for d in res.diagnosis), res.diagnosis


@pytest.mark.parametrize("need_weights", [False, True])
def test_torch_multihead_attention_passes(need_weights):
    torch.manual_seed(0)
    m = torch.nn.MultiheadAttention(32, 4, dropout=0.2, batch_first=need_weights)
    x = torch.randn(4, 16, 32)
    op = from_torch_mha(m, x, need_weights=need_weights)
    assert op.out_shape == (16, 4, 32) if not need_weights else (4, 16, 32)
    assert verify_linear(op).passed
    assert m.training  # the module's mode is restored


def test_torch_mha_with_a_mask_shared_by_heads_fails_the_head_check():
    torch.manual_seed(0)
    m = torch.nn.MultiheadAttention(32, 4, dropout=0.2, batch_first=True)
    x = torch.randn(4, 16, 32)

    def shared_heads():
        with torch.no_grad():
            q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, -1)
            q, k, v = (t.reshape(4, 16, 4, 8).transpose(1, 2) for t in (q, k, v))
            p = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, -1)
            p = p * (torch.rand(4, 1, 16, 16) < 0.8) / 0.8  # one mask for every head
            return m.out_proj((p @ v).transpose(1, 2).reshape(4, 16, 32)).numpy()

    op = dataclasses.replace(from_torch_mha(m, x), train=shared_heads)
    res = verify_linear(op)
    assert failed_names(res) == {"check_linear_independence_head"}, str(res)


# --- flax and keras multi-head attention -----------------------------------------------------
@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).normal(size=(4, 16, 32)).astype(np.float32)


#: Slow tier: jax 0.10 with threefry_partitionable (its default) compiles jax.random.bernoulli on
#: XLA-CPU in a time that grows with the number of non-unit mask axes: measured on the shared
#: 2-core machine (load ~9) 1.1 s for (1, 1, 16, 16), 5.9 s for (16, 16, 16), 13.7 s for
#: (4, 4, 16, 16) (1.2 s with the flag off); with flax's eager module init (~2 s) the cheapest of
#: these tests (flax's default broadcast mask, (1, 1, L, S)) still took 9-13 s, beyond the default
#: tier's budget. Measured: broadcast 13 s, per head 28 s, keras 29 s.
SLOW_COMPILE = pytest.mark.slow


@SLOW_COMPILE
@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast_dropout", "per_head"])
def test_flax_nnx_multihead_attention_passes(tokens, broadcast):
    pytest.importorskip("jax")
    nnx = pytest.importorskip("flax.nnx")
    from stats_dropout.verification.adapters.attention import from_flax_mha

    m = nnx.MultiHeadAttention(num_heads=4, in_features=32, dropout_rate=0.2, broadcast_dropout=broadcast,
                               decode=False, rngs=nnx.Rngs(0))
    op = from_flax_mha(m, tokens)
    # flax's default draws one (query, key) mask for every batch row and head: stated, not "found"
    assert op.independent_axes == ({"query": 1} if broadcast else {"batch": 0, "query": 1, "head": 3})
    res = verify_linear(op)
    assert res.passed, str(res)
    # reseeded from the seed: the same keys, the same draws; another seed, other draws
    first, again, other = (verify_linear(op, draws=5, seed=s) for s in (1, 1, 2))
    assert first.checks[2].decision.estimate == again.checks[2].decision.estimate != other.checks[2].decision.estimate


@SLOW_COMPILE
def test_keras_multihead_attention_passes(tokens):
    keras = pytest.importorskip("keras")
    from stats_dropout.verification.adapters.attention import from_keras_mha

    layer = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8, dropout=0.2, seed=3)
    layer(tokens, tokens)
    state = np.asarray(layer._dropout_layer.seed_generator.state.value).copy()
    res = verify_linear(from_keras_mha(layer, tokens, tokens))
    assert res.passed, str(res)
    np.testing.assert_array_equal(np.asarray(layer._dropout_layer.seed_generator.state.value), state)  # untouched
