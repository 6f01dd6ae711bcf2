"""Seeded minibatch training of :class:`stats_dropout.reference.networks.MLP` (SGD, momentum, Adam).

Masks come from one Generator and the minibatch
order from another, so two networks with the same mask shapes see identical masks — what makes
the standard-vs-inverted equivalence of THEORY.md §3 testable exactly.

References
----------
.. [1] D. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.
.. [2] N. Srivastava et al., "Dropout: a simple way to prevent neural networks from
   overfitting", JMLR 15 (2014) 1929-1958, §10.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stats_dropout._internal.rng import stream_rng
from stats_dropout._internal.validation import choice_iv, positive_int_iv, seed_iv
from stats_dropout.reference.activations import activate, activation_grad
from stats_dropout.reference.networks import MLP, MULTIPLICATIVE

__all__ = ["TrainingHistory", "train_mlp"]


@dataclasses.dataclass(frozen=True)
class TrainingHistory:
    """What :func:`train_mlp` recorded: the weights after every ``record_every`` steps and the loss."""

    weights: list
    biases: list
    loss: np.ndarray
    steps: int


def _loss_and_delta(out, y, loss):
    """Loss and ``∂L/∂u`` of the last pre-activation (softmax + cross-entropy, or identity + MSE)."""
    n = out.shape[0]
    if loss == "cross_entropy":
        value = -np.mean(np.log(np.maximum(out[np.arange(n), y], 1e-300)))
        delta = out.copy()
        delta[np.arange(n), y] -= 1.0
        return value, delta / n
    resid = out - y
    return float(np.mean(np.sum(resid**2, axis=1))), 2.0 * resid / n


def _train_mlp_iv(net, X, y, loss, optimizer, lr, epochs, batch_size, seed, weight_lr_scale,
                  weight_eps_scale):

    if not isinstance(net, MLP):
        raise TypeError(f"`net` must be an MLP; got {net!r}")
    X = net._x_iv(X)
    choice_iv(loss, "loss", ("cross_entropy", "mse"))
    choice_iv(optimizer, "optimizer", ("sgd", "adam"))
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"`lr` must be a positive number; got {lr!r}")
    n_layers = len(net.layers)
    for name, v in (("weight_lr_scale", weight_lr_scale), ("weight_eps_scale", weight_eps_scale)):
        if v is not None and len(v) != n_layers:
            raise ValueError(f"`{name}` must have one entry per layer ({n_layers}); got {v!r}")
    last = net.layers[-1].activation
    if loss == "cross_entropy" and last != "softmax":
        raise ValueError(f"`loss`='cross_entropy' needs a softmax output layer; got {last!r}")
    if loss == "mse" and last != "identity":
        raise ValueError(f"`loss`='mse' needs an identity output layer; got {last!r}")
    for layer in net.layers:
        unsupported = layer.dropout == "dropconnect" or (
            layer.dropout is not None and layer.scheme.noise not in MULTIPLICATIVE)
        if unsupported:
            raise ValueError(
                f"training supports multiplicative unit schemes only; got dropout={layer.dropout!r}")
    y = np.asarray(y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"`y` must have {X.shape[0]} rows; got shape {y.shape}")
    return (X, y, positive_int_iv(epochs, "epochs"), positive_int_iv(batch_size, "batch_size"),
            seed_iv(seed))


class _SGD:
    """Minibatch SGD with optional heavy-ball momentum: ``v ← μ v + g``, ``θ ← θ − η v``."""

    def __init__(self, params, lrs, momentum):
        self.lrs, self.momentum = lrs, momentum
        self.velocity = [np.zeros_like(q) for q in params]

    def update(self, params, grads, step):
        for k, (q, g) in enumerate(zip(params, grads)):
            if self.momentum:
                self.velocity[k] = self.momentum * self.velocity[k] + g
                g = self.velocity[k]
            q -= self.lrs[k] * g


class _Adam:
    """Adam [1]_: bias-corrected first and second moments, ``θ ← θ − η m̂ / (√v̂ + ε)``."""

    def __init__(self, params, lrs, betas, epss):
        self.lrs, self.betas, self.epss = lrs, betas, epss
        self.m = [np.zeros_like(q) for q in params]
        self.v = [np.zeros_like(q) for q in params]

    def update(self, params, grads, step):
        b1, b2 = self.betas
        for k, (q, g) in enumerate(zip(params, grads)):
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g**2
            m_hat = self.m[k] / (1 - b1 ** step)
            v_hat = self.v[k] / (1 - b2 ** step)
            q -= self.lrs[k] * m_hat / (np.sqrt(v_hat) + self.epss[k])


def _forward(net, W, B, a, mask_rng):
    """One train pass of a minibatch: the output and, per layer, its (dropped) input, its
    pre-activation and its noise multipliers (None where the layer has no dropout)."""
    inputs, pre, noise = [], [], []
    for i, layer in enumerate(net.layers):
        m = None
        if layer.dropout is not None and layer.keep_prob < 1:
            m = layer.scheme.train(np.ones_like(a), layer.keep_prob, mask_rng)
            a = a * m
        noise.append(m)
        inputs.append(a)
        u = a @ W[i] + B[i]
        pre.append(u)
        a = activate(layer.activation, u)
    return a, inputs, pre, noise


def _backward(net, W, inputs, pre, noise, delta):
    """Gradients of the loss w.r.t. weights and biases by backpropagation through the same masks."""
    n_layers = len(net.layers)
    grads_w, grads_b = [None] * n_layers, [None] * n_layers
    for i in range(n_layers - 1, -1, -1):
        grads_w[i] = inputs[i].T @ delta
        grads_b[i] = delta.sum(axis=0)
        if i:
            back = delta @ W[i].T
            if noise[i] is not None:
                back = back * noise[i]
            prev = net.layers[i - 1]
            act_prev = activate(prev.activation, pre[i - 1])
            delta = back * activation_grad(prev.activation, pre[i - 1], act_prev)
    return grads_w + grads_b


def train_mlp(net, X, y, *, loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=10, batch_size=32,
              momentum=0.0, betas=(0.9, 0.999), eps=1e-8, weight_lr_scale=None, weight_eps_scale=None,
              seed=0, record_every=None):
    """Train ``net`` with dropout by minibatch SGD (optional momentum) or Adam [1]_.

    Masks are drawn from one Generator and minibatch order from another, both derived from
    ``seed``: two networks with the same layer shapes, schemes' mask shapes and seed see
    *identical* masks (standard vs inverted dropout draw the same Bernoulli mask; only the
    kept value differs). This is what makes THEORY.md §3's equivalence testable exactly.

    Parameters
    ----------
    net : MLP
        Output layer softmax (``loss="cross_entropy"``, integer labels ``y``) or identity
        (``loss="mse"``, targets ``y`` of shape (n, n_out)).
    optimizer : {"sgd", "adam"}
    lr : float
        Learning rate η of biases and weights.
    weight_lr_scale, weight_eps_scale : sequence of float, optional
        Per-layer multipliers on the *weights'* learning rate and Adam ε (biases keep ``lr``,
        ``eps``): the lr mapping of THEORY.md §3 (SGD ``p²``, Adam ``p`` and ``1/p``).
    record_every : int, optional
        Record weights every this many steps (and after the last).

    Returns
    -------
    (MLP, TrainingHistory)
        The trained network (the input is not modified) and the history.
    """

    X, y, epochs, batch_size, seed = _train_mlp_iv(net, X, y, loss, optimizer, lr, epochs, batch_size,
                                                   seed, weight_lr_scale, weight_eps_scale)
    n_layers = len(net.layers)
    w_lr = [lr * (1.0 if weight_lr_scale is None else weight_lr_scale[i]) for i in range(n_layers)]
    w_eps = [eps * (1.0 if weight_eps_scale is None else weight_eps_scale[i]) for i in range(n_layers)]
    W = [l.weights.copy() for l in net.layers]
    B = [l.bias.copy() for l in net.layers]
    params = W + B
    lrs = w_lr + [lr] * n_layers
    opt = (_SGD(params, lrs, momentum) if optimizer == "sgd"
           else _Adam(params, lrs, betas, w_eps + [eps] * n_layers))
    order_rng, mask_rng = stream_rng(seed, "training_order"), stream_rng(seed, "training_masks")
    n = X.shape[0]
    hist_w, hist_b, losses = [], [], []
    step = 0
    for _ in range(epochs):
        order = order_rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            out, inputs, pre, noise = _forward(net, W, B, X[idx], mask_rng)
            value, delta = _loss_and_delta(out, y[idx], loss)
            losses.append(value)
            step += 1
            opt.update(params, _backward(net, W, inputs, pre, noise, delta), step)
            if record_every and step % record_every == 0:
                hist_w.append([w.copy() for w in W])
                hist_b.append([b.copy() for b in B])
    if record_every and step % record_every:
        hist_w.append([w.copy() for w in W])
        hist_b.append([b.copy() for b in B])
    trained = MLP(tuple(l.replace(weights=w, bias=b) for l, w, b in zip(net.layers, W, B)))
    return trained, TrainingHistory(hist_w, hist_b, np.asarray(losses), step)
