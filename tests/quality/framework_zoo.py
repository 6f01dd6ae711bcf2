"""Real historical dropout bugs of frameworks, reproduced: the battery must catch each one.

Each function reproduces one reported bug — with the installed framework's own code where that
code still computes the buggy thing (torch's ``feature_dropout``/``dropout2d``, ``jax.jit``),
otherwise as a numpy emulation of the reported mechanism — and its docstring cites the report.
:mod:`tests.quality.test_framework_zoo` says which check must fail and what the diagnosis says.
Builders return ``(train, eval)`` so that each test gets fresh framework state.
"""

import numpy as np


def _torch():
    import torch

    return torch


def _to_torch(x):
    return _torch().from_numpy(np.ascontiguousarray(x))


# --- torch: channel dropout reading the wrong axes -------------------------------------------
def dropout2d_3d_read_as_unbatched(rate):
    """torch 1.11 ``Dropout2d`` on a 3-D batch ``(N, C, L)`` (pytorch#77081).

    PR #69885 made ``dropout2d`` treat every 3-D input as one unbatched ``(C, H, W)`` sample: it
    unsqueezes a batch axis and drops "channels" of that view, which are the samples of the real
    batch. Each sample is then kept or dropped whole instead of one mask per (sample, channel).
    Reproduced with the installed torch's own path: ``dropout2d(x.unsqueeze(0)).squeeze(0)``.
    """
    F = _torch().nn.functional

    def train(x):
        return F.dropout2d(_to_torch(x).unsqueeze(0), p=rate, training=True).squeeze(0).numpy()

    return train, None


def dropout2d_unbatched_read_as_batched(rate):
    """torch 1.10 ``Dropout2d`` on an unbatched ``(C, H, W)`` input (pytorch#69801).

    The documented unbatched shape was ``(C, H, W)`` — one mask per channel — but the kernel
    (``_VF.feature_dropout``) always read axis 0 as the batch: the mask was drawn per
    ``(C, H)`` row and shared along ``W`` only ("Dropout2d is instead implementing Dropout1d
    for (N, C, T)"). Reproduced with the installed torch's ``torch.feature_dropout``, the
    kernel 1.10 called directly.
    """
    torch = _torch()

    def train(x):
        return torch.feature_dropout(_to_torch(x), rate, True).numpy()

    return train, None


def functional_dropout_ignores_eval(rate):
    """A module whose ``forward`` calls ``F.dropout(x, p)``: ``.eval()`` does not turn it off
    (pytorch#141557; the mechanism documented in pytorch#26338 and pytorch#11999).

    ``F.dropout``'s ``training`` argument defaults to True and is not tied to
    ``module.training``, so the eval path keeps drawing masks. Real torch module.
    """
    torch = _torch()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = rate

        def forward(self, x):
            return torch.nn.functional.dropout(x, self.p)  # missing training=self.training

    net = Net()

    def train(x):
        net.train()
        with torch.no_grad():
            return net(_to_torch(x)).numpy()

    def eval(x):
        net.eval()
        with torch.no_grad():
            return net(_to_torch(x)).numpy()

    return train, eval


# --- JAX: 16-bit keep probability, jit-frozen seed ---------------------------------------------
def bernoulli_float16_p(rate):
    """``jax.random.bernoulli`` with a float16 ``p`` is always True (jax#28039).

    jax#28022 moved the sampler into the space of the random bits: ``bits < p·2^nbits`` with
    ``nbits = finfo(p.dtype).bits``. For float16, ``2**16 = 65536`` overflows float16 (max 65504)
    to inf, so every comparison is true and nothing is dropped. The installed jax has the fix
    (#28039), so the mechanism is emulated in numpy with the same dtypes; the rescale is
    ``x / keep_prob`` in full precision, as in ``flax.linen.Dropout``.
    """
    keep = 1.0 - rate

    def train(x):
        p = np.float16(keep)
        bits = np.random.randint(0, 2**16, size=x.shape, dtype=np.uint16)
        with np.errstate(over="ignore"):
            threshold = p * np.float16(2**16)  # inf in float16
        mask = bits < threshold
        return np.where(mask, x / keep, 0).astype(x.dtype)

    return train, None


def jit_frozen_seed_generator(rate):
    """A seed advanced at trace time under ``jax.jit``: the same mask on every call (keras#18426).

    keras 3's ``SeedGenerator.next()`` advances its state in Python; inside a jitted function
    that does not return the new state, the advance happens once, while tracing, and the
    compiled function replays the traced seed forever. Reproduced with real ``jax.jit``: the
    counter is bumped in the traced Python body, exactly as the seed generator's state is.
    The returned ``train`` *is* the jitted function.
    """
    import jax
    import jax.numpy as jnp

    keep = 1.0 - rate
    state = {"seed": 0}

    @jax.jit
    def train(x):
        state["seed"] += 1  # runs only while tracing
        key = jax.random.key(state["seed"])
        mask = jax.random.bernoulli(key, keep, x.shape)
        return jnp.where(mask, x / keep, 0).astype(x.dtype)

    return train, None


# --- TensorFlow: masks synchronised over time ---------------------------------------------------
def seeded_dropout_wrapper_static_rnn(rate):
    """``DropoutWrapper(seed=...)`` in a statically unrolled ``rnn``: masks synchronised over
    time steps (tensorflow#2789).

    With an op seed set, every time step's input dropout op is built with the same seed, so
    "the same input dimension is dropped for all time steps for a given entry in a batch".
    Emulated in numpy on ``(batch, time, features)``: the graph-level seed changes per call
    (fresh masks across calls), each step's op is re-created with the same op seed.
    """
    keep = 1.0 - rate

    def train(x):
        op_seed = int(np.random.randint(2**31))  # the run's graph seed: new per call
        steps = []
        for t in range(x.shape[1]):
            rng = np.random.default_rng(op_seed)  # the same (graph, op) seed at every step
            steps.append(x[:, t] * (rng.random(x[:, t].shape) < keep) / keep)
        return np.stack(steps, axis=1).astype(x.dtype)

    return train, None


def tf_nn_dropout(x, rate):
    """``tf.nn.dropout`` semantics: drop with probability ``rate``, scale kept units by 1/(1 − rate)."""
    keep = 1.0 - rate
    return x * (np.random.rand(*x.shape) < keep) / keep


def electra_dropout(x, dropout_prob):
    """ELECTRA's ``dropout(input, dropout_prob)``: ``tf.nn.dropout(input, rate=1.0 - dropout_prob)``
    (google-research/electra#61).

    The docstring says ``rate`` is "the probability of keeping", but ``tf.nn.dropout`` drops
    with probability ``rate``: a drop probability of 0.1 drops 90 % of the units. (The learner
    version is ``tests.quality.zoo.rate_used_as_keep``.)
    """
    if dropout_prob is None or dropout_prob == 0.0:
        return x
    return tf_nn_dropout(x, rate=1.0 - dropout_prob)


def kaldi_general_dropout(x, dropout_proportion):
    """Kaldi's ``GeneralDropoutComponent``: kept units scaled by ``1/dropout_proportion``
    (kaldi-asr/kaldi#2814).

    ``nnet-general-component.cc`` built the mask as ``heaviside(rand − dropout_proportion)``
    (kept with probability 1 − dropout_proportion) and then ``ans->Scale(1.0 /
    dropout_proportion)`` — the drop probability — instead of ``1.0 / (1.0 −
    dropout_proportion)``. Emulated in numpy.
    """
    ans = np.random.rand(*x.shape) - dropout_proportion
    ans = (ans > 0).astype(np.float64)  # ApplyHeaviside
    with np.errstate(divide="ignore"):
        ans *= 1.0 / dropout_proportion
    return (x * ans).astype(x.dtype)


# --- identical masks across calls, one per source of randomness ----------------------------------
def reused_jax_key(rate):
    """One ``jax.random`` key passed to every call instead of a split subkey (the JAX docs'
    "sharp bit": a key is not a stateful generator). ``reseed`` replaces the key, so different
    battery seeds still give different (but per-call constant) masks."""
    import jax
    import jax.numpy as jnp

    keep = 1.0 - rate
    state = {"key": jax.random.key(0)}

    def reseed(seed):
        state["key"] = jax.random.key(seed % 2**32)

    def train(x):
        mask = jax.random.bernoulli(state["key"], keep, x.shape)  # never split
        return np.asarray(jnp.where(mask, x / keep, 0)).astype(x.dtype)

    return train, reseed


def constant_tf_stateless_seed(rate):
    """``tf.random.stateless_uniform(shape, seed=(1, 2))`` with the same seed on every call:
    stateless ops are a pure function of their seed. Emulated with a numpy Generator built from
    the constant seed (Philox, the counter-based family TF's stateless ops use)."""
    keep = 1.0 - rate

    def train(x):
        u = np.random.Generator(np.random.Philox(key=(1 << 32) + 2)).random(x.shape)
        return x * (u < keep) / keep

    return train, None


def torch_manual_seed_in_forward(rate):
    """``torch.manual_seed(0)`` inside ``forward`` (a reproducibility fix put in the wrong place):
    torch's global generator replays one mask on every call. Real torch."""
    torch = _torch()
    F = torch.nn.functional

    def train(x):
        torch.manual_seed(0)
        return F.dropout(_to_torch(x), p=rate, training=True).numpy()

    return train, None


def key_ignored(rate, jit=False):
    """``fn(key, x)`` for :func:`stats_dropout.adapters.from_jax` that draws with a key made inside
    (``jax.random.key(0)``) instead of the one passed in; jitted or not. The adapter hands every
    call a fresh key, so the masks are identical only because the function ignores it."""
    import jax
    import jax.numpy as jnp

    keep = 1.0 - rate

    def fn(key, x):
        mask = jax.random.bernoulli(jax.random.key(0), keep, x.shape)  # `key` unused
        return jnp.where(mask, x / keep, 0)

    return jax.jit(fn) if jit else fn
