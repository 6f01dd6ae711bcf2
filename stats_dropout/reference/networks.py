"""Small numpy MLPs with dropout at any layer, DropConnect, inference rules and training.

A network is a stack of dense layers ``a_{l+1} = f_l(W_l · drop_l(a_l) + b_l)`` (row-vector
convention: ``a @ W``). ``drop_l`` is any registered unit scheme applied to the layer's
*input* (:data:`stats_dropout.reference.schemes.SCHEMES`), or DropConnect applied to ``W_l`` itself.
Three inference rules compute the eval output:

``weight_scaling``
    The scheme's eval path (identity for inverted dropout, ``p·a`` for standard dropout,
    ``p·W`` for DropConnect) — Srivastava et al.'s rule [1]_.
``mc``
    The average of ``T`` stochastic train passes (Monte-Carlo model averaging [1]_, MC
    dropout [4]_).
``moment_matching``
    Each pre-activation is treated as Gaussian with the exact mean and variance of its
    dropout noise (units assumed independent), and the activation is averaged over that
    Gaussian: fast dropout [2]_ for units, DropConnect's inference rule [3]_ for weights.
    Sigmoid uses Wang & Manning's closed form, ReLU and SELU exact Gaussian means, tanh
    numerical quadrature; softmax uses the softmax of the mean
    (the normalised geometric mean, exact for one dropped layer — THEORY.md §4).

References
----------
.. [1] N. Srivastava et al., "Dropout: a simple way to prevent neural networks from
   overfitting", JMLR 15 (2014) 1929-1958.
.. [2] S. Wang, C. Manning, "Fast dropout training", ICML 2013.
.. [3] L. Wan, M. Zeiler, S. Zhang, Y. LeCun, R. Fergus, "Regularization of neural networks
   using DropConnect", ICML 2013.
.. [4] Y. Gal, Z. Ghahramani, "Dropout as a Bayesian approximation", ICML 2016.
.. [5] G. Klambauer et al., "Self-normalizing neural networks", NeurIPS 2017 (SELU).
.. [6] D. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from stats_dropout._internal.rng import stream_rng
from stats_dropout._internal.validation import (
    choice_iv,
    float_array_iv,
    keep_prob_iv,
    positive_int_iv,
    rng_iv,
    seed_iv,
)
from stats_dropout.reference import theory
from stats_dropout.reference.activations import ACTIVATIONS, activate, gaussian_activation_mean
from stats_dropout.reference.masks import CHUNK
from stats_dropout.reference.schemes import SCHEMES, bernoulli_mask

__all__ = [
    "ACTIVATIONS",
    "DenseLayer",
    "MLP",
    "BoundMLP",
    "INFERENCE_RULES",
    "activate",
    "gaussian_activation_mean",
    "init_mlp",
    "to_inverted",
]

INFERENCE_RULES = ("weight_scaling", "mc", "moment_matching")
MULTIPLICATIVE = ("bernoulli", "gaussian")



@dataclasses.dataclass(frozen=True)
class DenseLayer:
    """One dense layer ``f(W · drop(a) + b)``.

    Parameters
    ----------
    weights : ndarray, shape (n_in, n_out)
    bias : ndarray, shape (n_out,)
    activation : {"identity", "relu", "tanh", "sigmoid", "softmax", "selu"}
    dropout : str or None
        A registered scheme name applied to the layer's input, ``"dropconnect"`` (applied to
        ``weights``), or None.
    keep_prob : float in (0, 1]
    """

    weights: np.ndarray
    bias: np.ndarray
    activation: str = "identity"
    dropout: str | None = None
    keep_prob: float = 1.0

    def __post_init__(self):
        w = float_array_iv(self.weights, "weights")
        b = float_array_iv(self.bias, "bias")
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise ValueError(f"`weights` must be (n_in, n_out) and `bias` (n_out,); got {w.shape}, {b.shape}")
        choice_iv(self.activation, "activation", ACTIVATIONS)
        if self.dropout is not None:
            choice_iv(self.dropout, "dropout", tuple(SCHEMES))
        object.__setattr__(self, "weights", np.array(w, dtype=np.float64))
        object.__setattr__(self, "bias", np.array(b, dtype=np.float64))
        object.__setattr__(self, "keep_prob", keep_prob_iv(self.keep_prob))

    @property
    def scheme(self):
        return None if self.dropout is None else SCHEMES[self.dropout]

    @property
    def consumes_dropped(self):
        """True if ``weights`` multiply a unit-dropped activation (THEORY.md §3 'consuming')."""
        return self.dropout is not None and self.dropout != "dropconnect" and self.keep_prob < 1

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _noise_multipliers(scheme, shape, keep_prob, n_draws, rng):
    """Multiplicative noise for ``n_draws`` passes over activations of ``shape`` (per draw).

    Drawn on a tensor of ones so the scheme's own mask sampler (exact integer thresholds,
    shared axes) is used; ``ones / p`` is ``fl(1/p)``.
    """
    return scheme.sample_train(np.ones(shape), keep_prob, n_draws, rng)


#: Elements of the last dropped activation per slab of :meth:`MLP.sample_train` (8 mask chunks,
#: 8 MiB): the slabs' arrays are reused from the heap, while a whole block's (tens of MiB) are
#: fresh pages every block (mc_averaging: 2.4 s of system time on a loaded 2-core machine, 0.5 s
#: when they are reused).
SLAB_ELEMENTS = 8 * CHUNK


def _draws_noise(layer):
    """Whether ``layer``'s train pass draws random numbers."""
    return layer.dropout is not None and layer.keep_prob < 1


def _chunk_sliceable(layer):
    """Whether ``layer``'s noise, drawn slab by slab at mask-chunk boundaries, is the very noise it
    draws for the whole block: unshared Bernoulli masks consume the generator chunk after chunk
    of :data:`~stats_dropout.reference.masks.CHUNK` elements (``masks.mask_chunks``)."""
    scheme = layer.scheme
    return (layer.dropout != "dropconnect" and scheme.noise == "bernoulli"
            and scheme.shared_axes == ())


def _slab_rows(width):
    """Rows of a slab of width ``width``: a whole number of mask chunks, about :data:`SLAB_ELEMENTS`."""
    unit = CHUNK // math.gcd(CHUNK, width)  # fewest rows whose elements fill whole chunks
    return unit * max(1, SLAB_ELEMENTS // (unit * width))


def _affine(layer, a):
    """``f(a W + b)`` for stacked activations ``a`` (..., n_in)."""
    # one 2-D BLAS call: numpy's stacked 3-D @ 2-D matmul is ~10x slower here
    a2 = np.ascontiguousarray(a).reshape(-1, a.shape[-1])
    u = (a2 @ layer.weights).reshape(a.shape[:-1] + (layer.weights.shape[1],))
    u += layer.bias  # in place: these arrays are draws × batch × width
    if layer.activation == "relu":
        return np.maximum(u, 0.0, out=u)
    return activate(layer.activation, u)


def _layer_train(layer, a, rng):
    """One layer's train pass of stacked activations ``a`` (n_draws, batch, n_in)."""
    if layer.dropout == "dropconnect" and layer.keep_prob < 1:
        w = layer.weights
        mask = bernoulli_mask(rng, a.shape[:2] + w.shape, layer.keep_prob)
        u = np.einsum("nbi,nbio->nbo", a, mask * w) + layer.bias
        return activate(layer.activation, u)
    if layer.dropout is not None:
        a = _drop_stacked(layer, a, rng)
    return _affine(layer, a)


def _drop_stacked(layer, a, rng):
    """Train-time dropout of stacked activations ``a`` of shape (n_draws, *batch_shape)."""
    scheme = layer.scheme
    if scheme.shared_axes == ():
        return scheme.train(a, layer.keep_prob, rng)  # iid per element, draws included
    if scheme.noise in MULTIPLICATIVE:
        return a * _noise_multipliers(scheme, a.shape[1:], layer.keep_prob, a.shape[0], rng)
    return np.stack([scheme.train(a_i, layer.keep_prob, rng) for a_i in a])


@dataclasses.dataclass(frozen=True)
class MLP:
    """A feed-forward network of :class:`DenseLayer` s (numpy, float64).

    Examples
    --------
    >>> import numpy as np
    >>> from stats_dropout.reference.networks import init_mlp
    >>> net = init_mlp([4, 8, 3], ["relu", "softmax"], dropout=[None, "inverted"],
    ...                keep_prob=[1.0, 0.5], seed=0)
    >>> net.predict(np.ones((2, 4))).shape
    (2, 3)
    """

    layers: tuple

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers or not all(isinstance(l, DenseLayer) for l in layers):
            raise TypeError(f"`layers` must be a non-empty sequence of DenseLayer; got {self.layers!r}")
        for prev, nxt in zip(layers, layers[1:]):
            if prev.weights.shape[1] != nxt.weights.shape[0]:
                raise ValueError(f"layer widths do not chain: {prev.weights.shape} then {nxt.weights.shape}")
        object.__setattr__(self, "layers", layers)

    @property
    def n_in(self):
        return self.layers[0].weights.shape[0]

    def _x_iv(self, x):
        x = float_array_iv(x).astype(np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"`x` must have shape (batch, {self.n_in}); got {x.shape}")
        return x

    # --- train path ----------------------------------------------------------------------
    def sample_train(self, x, n_draws, rng=None):
        """``n_draws`` independent train passes, stacked on axis 0: shape (n_draws, batch, n_out).

        Each pass draws fresh noise for every layer and every example (DropConnect: one
        weight mask per example, as Wan et al. [3]_).
        """
        x = self._x_iv(x)
        n_draws = positive_int_iv(n_draws, "n_draws")
        rng = rng_iv(rng)
        a = np.broadcast_to(x, (n_draws,) + x.shape)
        noisy = [i for i, layer in enumerate(self.layers) if _draws_noise(layer)]
        if not noisy or not _chunk_sliceable(self.layers[noisy[-1]]):
            for layer in self.layers:
                a = _layer_train(layer, a, rng)
            return a  # every layer allocates its output afresh: never a view of `x`
        return self._sample_in_slabs(a, noisy[-1], rng)

    def _sample_in_slabs(self, a, last, rng):
        """:meth:`sample_train` with the layers from ``last`` (the last that draws noise, an
        unshared Bernoulli mask) on slabs of rows (draw × example), bit for bit the same.

        The noise of the earlier layers is drawn on the whole block first, in layer order; the
        last mask is then drawn slab after slab, each a whole number of mask chunks, which is the
        order the whole block draws it in. Only the slabs' arrays are ever allocated.
        """
        head, before = self.layers[:last], None
        if head and not (head[-1].dropout == "dropconnect" and _draws_noise(head[-1])):
            head, before = head[:-1], head[-1]  # its affine map is noiseless: done slab by slab
        for layer in head:
            a = _layer_train(layer, a, rng)
        if before is not None and before.dropout is not None:
            a = _drop_stacked(before, a, rng)
        rows = np.ascontiguousarray(a).reshape(-1, a.shape[-1])
        out = np.empty((rows.shape[0], self.layers[-1].weights.shape[1]))
        step = _slab_rows(self.layers[last].weights.shape[0])
        for start in range(0, rows.shape[0], step):
            slab = rows[start:start + step]
            if before is not None:
                slab = _affine(before, slab)
            for layer in self.layers[last:]:
                if layer.dropout is not None:  # only `last` draws: the later ones keep every unit
                    slab = _drop_stacked(layer, slab, rng)
                slab = _affine(layer, slab)
            out[start:start + step] = slab
        return out.reshape(a.shape[:-1] + out.shape[1:])

    def train_pass(self, x, rng=None):
        """One stochastic train-time forward pass."""
        return self.sample_train(x, 1, rng)[0]

    def bind(self, rng=None):
        """A :class:`BoundMLP`: a callable train pass with its own Generator (for the MC engine)."""
        return BoundMLP(self, rng_iv(rng))

    # --- inference rules -----------------------------------------------------------------
    def predict(self, x, *, rule="weight_scaling", n_passes=100, rng=None):
        """Eval output under an inference ``rule`` (see the module docstring).

        Parameters
        ----------
        x : array_like, shape (batch, n_in)
        rule : {"weight_scaling", "mc", "moment_matching"}
        n_passes : int
            T for ``rule="mc"``.
        rng : Generator or seed, optional
            For ``rule="mc"``.
        """
        choice_iv(rule, "rule", INFERENCE_RULES)
        x = self._x_iv(x)
        if rule == "mc":
            n_passes = positive_int_iv(n_passes, "n_passes")
            return self.sample_train(x, n_passes, rng).mean(axis=0)
        if rule == "moment_matching":
            return self._moment_matching(x)
        a = x
        for layer in self.layers:
            w = layer.weights
            if layer.dropout == "dropconnect":
                w = layer.keep_prob * w  # E[M∘W] = pW [3]_
            elif layer.dropout is not None:
                a = layer.scheme.eval(a, layer.keep_prob)
            a = activate(layer.activation, a @ w + layer.bias)
        return a

    def _moment_matching(self, x):
        mean, var = x, np.zeros_like(x)
        for layer in self.layers:
            p, w = layer.keep_prob, layer.weights
            second = var + mean**2
            if layer.dropout == "dropconnect":
                # u_o = Σ_i M_io W_io a_i: mean p W a, var Σ W² (p E a² − p² (E a)²)
                mu = p * mean @ w + layer.bias
                s2 = (p * second - p**2 * mean**2) @ w**2
            elif layer.dropout is not None:
                scheme = layer.scheme
                if scheme.noise == "alpha":
                    # affine in the mask: y = a(α' + d(x − α')) + b, d ~ Bernoulli(p) [5]_
                    a_, b_ = theory.alpha_affine(p)
                    c = a_ * theory.ALPHA_PRIME + b_
                    m_in = c + a_ * p * (mean - theory.ALPHA_PRIME)
                    e2 = c**2 + 2 * c * a_ * p * (mean - theory.ALPHA_PRIME) + a_**2 * p * (
                        second - 2 * theory.ALPHA_PRIME * mean + theory.ALPHA_PRIME**2)
                else:
                    # z = ξ a with ξ independent of a: E z = Eξ E a, E z² = E ξ² E a²
                    e_xi = float(scheme.train_mean(1.0, p))
                    m_in = e_xi * mean
                    e2 = (float(scheme.train_var(1.0, p)) + e_xi**2) * second
                v_in = e2 - m_in**2
                mu = m_in @ w + layer.bias
                s2 = v_in @ w**2
            else:
                mu = mean @ w + layer.bias
                s2 = var @ w**2
            if layer.activation == "softmax":
                mean, var = activate("softmax", mu), np.zeros_like(mu)
            else:
                mean, var = gaussian_activation_mean(layer.activation, mu, s2)
        return mean


@dataclasses.dataclass(frozen=True)
class BoundMLP:
    """An :class:`MLP` with a Generator: ``__call__`` is one train pass; vectorised ``sample_train``."""

    net: MLP
    rng: np.random.Generator = dataclasses.field(repr=False, compare=False)

    def __call__(self, x):
        return self.net.train_pass(x, self.rng)

    def eval(self, x):
        return self.net.predict(x)

    def sample_train(self, x, n_draws, rng=None):
        return self.net.sample_train(x, n_draws, self.rng if rng is None else rng)


def init_mlp(sizes, activations, *, dropout=None, keep_prob=1.0, seed=0, scale="he"):
    """A randomly initialised :class:`MLP`.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_in, h_1, …, n_out]``.
    activations : sequence of str
        One per layer (``len(sizes) − 1``).
    dropout : sequence of (str or None), optional
        Scheme applied to each layer's input.
    keep_prob : float or sequence of float
    seed : int
    scale : {"he", "glorot"}
        ``N(0, 2/n_in)`` or ``N(0, 1/n_in)`` weights; zero biases.
    """
    sizes = [positive_int_iv(s, "sizes") for s in sizes]
    n_layers = len(sizes) - 1
    if n_layers < 1 or len(activations) != n_layers:
        raise ValueError(f"`activations` must have {max(n_layers, 1)} entries; got {list(activations)!r}")
    dropout = [None] * n_layers if dropout is None else list(dropout)
    keep = [keep_prob] * n_layers if np.ndim(keep_prob) == 0 else list(keep_prob)
    if len(dropout) != n_layers or len(keep) != n_layers:
        raise ValueError(f"`dropout` and `keep_prob` must have {n_layers} entries; got {dropout!r}, {keep!r}")
    choice_iv(scale, "scale", ("he", "glorot"))
    rng = stream_rng(seed_iv(seed), "network_init")
    gain = 2.0 if scale == "he" else 1.0
    layers = [
        DenseLayer(rng.standard_normal((n_in, n_out)) * np.sqrt(gain / n_in), np.zeros(n_out),
                   act, drop, kp)
        for n_in, n_out, act, drop, kp in zip(sizes[:-1], sizes[1:], activations, dropout, keep)
    ]
    return MLP(tuple(layers))


def to_inverted(net):
    """The inverted-dropout twin of a standard-dropout network: ``W' = p W`` (THEORY.md §3).

    Every ``standard`` layer becomes ``inverted`` and its (consuming) weights are multiplied
    by ``keep_prob``; biases and other layers are unchanged. Then ``W'(r∘a)/p = W(r∘a)`` at
    train and ``W' a = (pW) a`` at eval: the same function [1]_ §10.
    """
    layers = []
    for layer in net.layers:
        if layer.dropout == "standard":
            layer = layer.replace(dropout="inverted", weights=layer.keep_prob * layer.weights)
        layers.append(layer)
    return MLP(tuple(layers))
