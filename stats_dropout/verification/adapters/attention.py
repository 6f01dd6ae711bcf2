"""Attention layers with dropout on their probabilities -> :class:`~stats_dropout.LinearOp`.

For fixed inputs an attention output is linear in its dropout mask D (docs/THEORY.md §8):
``out = (D∘P/keep) V`` for scaled dot-product attention, and
``out_bij = b_o,j + Σ_{h,k} D_bhik P_bhik U_bhkj / keep`` with ``U_bhkj = Σ_d V_bhkd W_o[h,d,j]``
for a multi-head layer whose output projection W_o (and bias b_o) follows the attention. Each
adapter reads P from the framework with dropout off (torch ``need_weights=True,
average_attn_weights=False`` in eval mode; flax ``sow_weights=True, deterministic=True``; keras
``return_attention_scores=True, training=False``; for ``F.scaled_dot_product_attention``,
which returns no weights, P is recomputed in float64 from its documented formula), the
projected values and W_o from the layer, and the no-dropout output from the layer's own
deterministic path; :func:`~stats_dropout.verify_linear` checks that the loadings reproduce that
output before any statistics.

Mask layout: torch (SDPA, ``nn.MultiheadAttention``) and keras draw one entry per (batch, head,
query, key); flax ``nnx.MultiHeadAttention`` with its default ``broadcast_dropout=True`` draws one
(query, key) mask shared by every batch row and head, and the adapter states exactly that.
Frameworks' rates become keep_prob here (:func:`~.pytorch.keep_prob_from_rate`).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from stats_dropout.verification.adapters.common import add_note, named
from stats_dropout.verification.adapters.jax_functions import KeyState, import_jax
from stats_dropout.verification.adapters.pytorch import import_torch, keep_prob_from_rate
from stats_dropout.verification.linear import LinearOp

__all__ = ["from_sdpa", "from_torch_mha", "from_flax_mha", "from_keras_mha"]


def _tensor(torch, x, name):
    if isinstance(x, torch.Tensor):
        return x.detach()
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(f"`{name}` must be a floating-point array or tensor; got dtype {arr.dtype}")
    return torch.from_numpy(np.array(arr, copy=True))


def _np(torch, y):
    return y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y


def _mha_loadings(p, u):
    """``L[b, i, j, h, k] = P[b, h, i, k] U[b, h, k, j]`` (float64)."""
    return np.einsum("bhik,bhkj->bijhk", np.asarray(p, np.float64), np.asarray(u, np.float64))


def from_sdpa(query, key, value, dropout_p, *, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
              attention=None, name=None):
    """:class:`LinearOp` of ``torch.nn.functional.scaled_dot_product_attention(..., dropout_p=...)``.

    Parameters
    ----------
    query, key, value : tensor or array
        ``(N, ..., H, L, E)``, ``(N, ..., H, S, E)``, ``(N, ..., H, S, Ev)`` (SDPA's shapes).
    dropout_p : float
        Drop probability (keep_prob = 1 − dropout_p).
    attn_mask, is_causal, scale, enable_gqa
        As for SDPA; passed on only when not at their defaults.
    attention : callable, optional
        A function with SDPA's signature to verify instead (a hand-written attention).

    Returns
    -------
    LinearOp
        Output axes (batch..., head, query) are groups (one mask row each), ``Ev`` the units;
        independent axes ``batch`` (axis 0), ``head`` and ``query``. ``rng_source="torch"``:
        torch's global RNG, seeded by the verification.
    """
    torch = import_torch()
    fn = attention or torch.nn.functional.scaled_dot_product_attention
    keep = keep_prob_from_rate(dropout_p, "dropout_p")
    q, k, v = (_tensor(torch, a, n) for a, n in ((query, "query"), (key, "key"), (value, "value")))
    if q.ndim < 3:
        raise ValueError(f"`query` must be (N, ..., H, L, E) with at least 3 axes; got shape {tuple(q.shape)}")
    mask = None if attn_mask is None else (attn_mask if isinstance(attn_mask, torch.Tensor)
                                           else torch.from_numpy(np.asarray(attn_mask)))
    kw = {key_: val for key_, val, default in (("attn_mask", mask, None), ("is_causal", is_causal, False),
                                              ("scale", scale, None), ("enable_gqa", enable_gqa, False))
          if val is not default}
    label = name or f"{getattr(fn, '__name__', 'attention')}(dropout_p={dropout_p})"
    with torch.no_grad():
        ref = _np(torch, fn(q, k, v, dropout_p=0.0, **kw))
        q64, k64, v64 = q.double(), k.double(), v.double()
        if enable_gqa:
            k64 = k64.repeat_interleave(q.size(-3) // k.size(-3), -3)
            v64 = v64.repeat_interleave(q.size(-3) // v.size(-3), -3)
        factor = 1 / math.sqrt(q.size(-1)) if scale is None else scale
        scores = q64 @ k64.transpose(-2, -1) * factor
        n_q, n_k = q.size(-2), k.size(-2)
        if is_causal:
            scores = scores.masked_fill(~torch.ones(n_q, n_k, dtype=torch.bool).tril(0), float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.double()
        p = torch.softmax(scores, dim=-1).numpy()
        loadings = np.einsum("...ik,...kj->...ijk", p, v64.numpy())

    def train():
        with torch.no_grad():
            return _np(torch, fn(q, k, v, dropout_p=dropout_p, **kw))

    nd = ref.ndim
    axes = {"batch": 0, "head": nd - 3, "query": nd - 2} if nd >= 4 else {"batch": 0, "query": nd - 2}
    return LinearOp(named(train, f"{label}.train"), loadings, keep, reference=ref, group_axes=tuple(range(nd - 1)),
                    independent_axes=axes, name=label, rng_source="torch", dtype=ref.dtype)


def from_torch_mha(module, query, key=None, value=None, *, key_padding_mask=None, attn_mask=None,
                   need_weights=False, name=None):
    """:class:`LinearOp` of a ``torch.nn.MultiheadAttention`` in train mode on fixed inputs.

    ``need_weights=False`` (default, what ``nn.TransformerEncoderLayer`` uses) runs torch's SDPA
    path; ``True`` its explicit path (``F.dropout`` on the weights). P comes from the module in
    eval mode with ``need_weights=True, average_attn_weights=False``; V and W_o from its
    parameters. Output in (batch, query, embed) order whatever ``batch_first``; groups are
    (batch, query) rows; independent axes ``batch``, ``query`` (groups) and ``head`` (an entry
    axis: heads mix in W_o). Every submodule's mode is restored after each call.
    """
    torch = import_torch()
    if not isinstance(module, torch.nn.MultiheadAttention):
        raise TypeError(f"`module` must be a torch.nn.MultiheadAttention; got {type(module).__name__}")
    if module.bias_k is not None or module.add_zero_attn:
        raise ValueError("`module` with add_bias_kv or add_zero_attn is not supported: its extra key positions "
                         "are not in the attention weights the module returns")
    keep = keep_prob_from_rate(module.dropout, "module.dropout")
    key = query if key is None else key
    value = key if value is None else value
    q, k, v = (_tensor(torch, a, n) for a, n in ((query, "query"), (key, "key"), (value, "value")))
    if q.ndim != 3:
        raise ValueError(f"`query` must be batched (3-D); got shape {tuple(q.shape)}")
    kw = {"key_padding_mask": key_padding_mask, "attn_mask": attn_mask}
    label = name or f"nn.MultiheadAttention(dropout={module.dropout}, need_weights={need_weights})"

    def run(training, weights):
        modes = [(m, m.training) for m in module.modules()]
        try:
            module.train(training)
            with torch.no_grad():
                out, w = module(q, k, v, need_weights=weights, average_attn_weights=False, **kw)
        except Exception as exc:
            raise add_note(exc, f"raised by {label} in {'train' if training else 'eval'} mode") from None
        finally:
            for m, t in modes:
                m.training = t
        out = _np(torch, out)
        return (out if module.batch_first else np.swapaxes(out, 0, 1)), _np(torch, w)

    ref, p = run(False, True)
    h, e = module.num_heads, module.embed_dim
    with torch.no_grad():
        w_v = module.in_proj_weight[2 * e:] if module.in_proj_weight is not None else module.v_proj_weight
        b_v = module.in_proj_bias[2 * e:] if module.in_proj_bias is not None else None
        vb = v if module.batch_first else v.transpose(0, 1)
        vp = torch.nn.functional.linear(vb.double(), w_v.double(), None if b_v is None else b_v.double())
        vh = vp.reshape(vp.shape[0], vp.shape[1], h, e // h).numpy()  # (B, S, H, hd)
        w_o = module.out_proj.weight.double().numpy().reshape(e, h, e // h)
        b_o = 0.0 if module.out_proj.bias is None else module.out_proj.bias.double().numpy()
    u = np.einsum("bkhd,jhd->bhkj", vh, w_o)
    train = named(lambda: run(True, need_weights)[0], f"{label}.train")
    return LinearOp(train, _mha_loadings(p, u), keep, reference=ref, offset=b_o, group_axes=(0, 1),
                    independent_axes={"batch": 0, "query": 1, "head": 3}, name=label, rng_source="torch",
                    dtype=ref.dtype)


def from_flax_mha(module, inputs_q, inputs_k=None, inputs_v=None, *, mask=None, seed=0, name=None):
    """:class:`LinearOp` of a flax ``nnx.MultiHeadAttention`` with ``deterministic=False``.

    Each train call gets a fresh key (``rngs=nnx.Rngs(dropout=key)``) from a key state the
    verification's seed resets; the call is ``jax.jit``-compiled once on the module's split state
    (the module is not changed). With ``broadcast_dropout=True`` (flax's default) one (query,
    key) mask is shared by every batch row and head — documented flax behaviour, so the loadings
    sum over batch and heads and groups are query rows; with ``False`` groups are (batch, query)
    rows and heads must be independent.
    """
    jax = import_jax()
    nnx = sys.modules.get("flax.nnx")
    if nnx is None or not isinstance(module, nnx.MultiHeadAttention):
        raise TypeError(f"`module` must be a flax nnx.MultiHeadAttention; got {type(module).__name__}")
    if module.num_kv_heads != module.num_heads or module.decode:
        raise ValueError("`module` with grouped key/value heads or decode=True is not supported")
    keep = keep_prob_from_rate(module.dropout_rate, "module.dropout_rate")
    xq = jax.numpy.asarray(inputs_q)
    xk = xq if inputs_k is None else jax.numpy.asarray(inputs_k)
    xv = xk if inputs_v is None else jax.numpy.asarray(inputs_v)
    if xq.ndim != 3:
        raise ValueError(f"`inputs_q` must be (batch, length, features); got shape {xq.shape}")
    label = name or f"nnx.MultiHeadAttention(dropout_rate={module.dropout_rate}, " \
                    f"broadcast_dropout={module.broadcast_dropout})"
    if hasattr(nnx, "capture"):  # flax ≥ 0.12: sow() outside capture() is deprecated
        ref, sown = nnx.capture(module, nnx.Intermediate)(xq, xk, xv, mask=mask, deterministic=True,
                                                          sow_weights=True)
    else:  # pragma: no cover - older flax
        ref = module(xq, xk, xv, mask=mask, deterministic=True, sow_weights=True)
        sown = nnx.pop(module, nnx.Intermediate)
    ref = np.asarray(ref)
    p = np.asarray(jax.tree_util.tree_leaves(sown["attention_weights"])[0], dtype=np.float64)
    vh = np.asarray(module.value(xv), dtype=np.float64)  # (B, S, H, hd)
    w_o = np.asarray(module.out.kernel[...], dtype=np.float64)  # (H, hd, out)
    b_o = np.asarray(module.out.bias[...], dtype=np.float64) if module.out.bias is not None else 0.0
    u = np.einsum("bkhd,hdj->bhkj", vh, w_o)
    graph, state = nnx.split(module)
    keys = KeyState(seed)

    @jax.jit
    def step(state_, key_):
        return nnx.merge(graph, state_)(xq, xk, xv, mask=mask, deterministic=False, rngs=nnx.Rngs(dropout=key_))

    def train():
        return np.asarray(step(state, keys.next()))

    if module.broadcast_dropout:
        lo = np.einsum("bhik,bhkj->bijk", p, u)
        groups, axes = (1,), {"query": 1}
    else:
        lo, groups, axes = _mha_loadings(p, u), (0, 1), {"batch": 0, "query": 1, "head": 3}
    return LinearOp(named(train, f"{label}.train"), lo, keep, reference=ref, offset=b_o, group_axes=groups,
                    independent_axes=axes, reseed=keys.reseed, name=label, rng_source="flax-rngs", dtype=ref.dtype)


def from_keras_mha(layer, query, value, key=None, *, attention_mask=None, name=None):
    """:class:`LinearOp` of a keras 3 ``MultiHeadAttention`` called with ``training=True``.

    The adapter runs a clone with the layer's weights (the user's layer and its seed generator
    are never touched); ``reseed(seed)`` sets the clone's dropout seed generator to ``[seed, 0]``
    and every call advances it, as keras does (``rng_source="keras-seed"``). On the jax backend
    the train call is ``layer.stateless_call`` under ``jax.jit`` (eager keras-on-jax costs about
    0.3 s a call). Only the default attention axes and a 1-D output projection are supported;
    a gated layer (``use_gate``) enters the loadings through its gate.
    """
    keras = sys.modules.get("keras")
    if keras is None or not isinstance(layer, keras.layers.MultiHeadAttention):
        raise TypeError(f"`layer` must be a keras.layers.MultiHeadAttention; got {type(layer).__name__}")
    keep = keep_prob_from_rate(layer.dropout, "layer.dropout")
    query, value = np.asarray(query), np.asarray(value)
    key = value if key is None else np.asarray(key)
    kw = {} if attention_mask is None else {"attention_mask": np.asarray(attention_mask)}
    if not layer.built:
        layer(query, value, key, training=False, **kw)
    clone = type(layer).from_config(layer.get_config())
    clone(query, value, key, training=False, **kw)
    for mine, theirs in zip(clone.weights, layer.weights):  # (get_weights() warns under numpy 2)
        mine.assign(theirs.value)
    out, scores = clone(query, value, key, return_attention_scores=True, training=False, **kw)
    ref, p = np.asarray(keras.ops.convert_to_numpy(out)), np.asarray(keras.ops.convert_to_numpy(scores), np.float64)
    kernel = np.asarray(keras.ops.convert_to_numpy(clone._output_dense.kernel.value), np.float64)
    if p.ndim != 4 or kernel.ndim != 3:
        raise ValueError("only keras MultiHeadAttention with the default attention_axes and output_shape is supported")
    vh = np.asarray(keras.ops.convert_to_numpy(clone._value_dense(value)), np.float64)  # (B, S, H, hd)
    gate = (np.asarray(keras.ops.convert_to_numpy(clone._gate_dense(query)), np.float64)
            if getattr(clone, "_use_gate", False) else None)
    bias = getattr(clone._output_dense, "bias", None)
    b_o = 0.0 if bias is None else np.asarray(keras.ops.convert_to_numpy(bias.value), np.float64)
    if gate is None:
        lo = _mha_loadings(p, np.einsum("bkhd,hdj->bhkj", vh, kernel))
    else:
        lo = np.einsum("bhik,bkhd,bihd,hdj->bijhk", p, vh, gate, kernel, optimize=True)
    label = name or f"keras.MultiHeadAttention(dropout={layer.dropout})"
    gen = clone._dropout_layer.seed_generator

    def reseed(seed):
        gen.state.assign(np.array([int(seed) % 2**32, 0], dtype=np.uint32))

    if keras.backend.backend() == "jax":
        jax = import_jax()
        trainable = [v.value for v in clone.trainable_variables]
        holder = {}

        @jax.jit
        def step(non_trainable):
            return clone.stateless_call(trainable, non_trainable, query, value, key, training=True, **kw)

        def train():
            y, holder["state"] = step(holder.get("state") or [v.value for v in clone.non_trainable_variables])
            return np.asarray(y)

        def reseed_jax(seed):
            reseed(seed)
            holder.pop("state", None)

        return LinearOp(named(train, f"{label}.train"), lo, keep, reference=ref, offset=b_o, group_axes=(0, 1),
                        independent_axes={"batch": 0, "query": 1, "head": 3}, reseed=reseed_jax, name=label,
                        rng_source="keras-seed", dtype=ref.dtype)

    def train_eager():
        return np.asarray(keras.ops.convert_to_numpy(clone(query, value, key, training=True, **kw)))

    return LinearOp(named(train_eager, f"{label}.train"), lo, keep, reference=ref, offset=b_o, group_axes=(0, 1),
                    independent_axes={"batch": 0, "query": 1, "head": 3}, reseed=reseed, name=label,
                    rng_source="keras-seed", dtype=ref.dtype)
