"""The course's three-layer ``forward_propagation_with_dropout`` network, one dropout layer at a time."""

from __future__ import annotations

import numpy as np

from stats_dropout._internal.validation import callable_iv
from stats_dropout.verification.adapters.common import (
    CACHE_INDEX,
    COURSE_CACHE_FIELDS,
    add_note,
    kind_of,
    name_of,
    named,
)


def _layer_iv(layer):
    if isinstance(layer, (bool, np.bool_)) or layer not in (1, 2):
        raise ValueError(f"`layer` must be 1 or 2; got {layer!r}")
    return int(layer)


def _as_columns(x):
    """(batch, features...) -> (features, batch): the course puts examples in columns."""
    x = np.asarray(x)
    if x.ndim == 0:
        x = x.reshape(1)
    return x.reshape(x.shape[0], -1).T


def _from_columns(values, x_shape):
    if len(x_shape) == 0:
        return values.reshape(())
    return values.T.reshape(x_shape)


def _course_parameters(X, layer):
    """Parameters that make the chosen layer's dropped activation ``mask * x / keep_prob``.

    ``X`` is (n, m). Both hidden layers have 2n units. The dropped layer's pre-activation is
    ``[X; -X]``: ``relu`` passes the positive part to the upper half and the negative part to
    the lower half, so ``upper − lower`` is ``D * x / keep_prob`` with ``D`` the mask entry of
    whichever half is active, whatever the sign of ``x`` (the other half is exactly 0).
    Layer 1 gets ``[X; -X]`` from ``W1 = [I; −I]``; layer 2 from ``W2 = 0`` and a bias
    ``b2 = [X; -X]`` (numpy broadcasts an (2n, m) bias like an (2n, 1) one), so layer 1's
    noise cannot leak into layer 2. The output layer is the identity on 2n units so that a
    gradient can be injected unit by unit (:func:`course_backward`). All weights are in
    ``X``'s dtype, so a float32 implementation stays float32.
    """
    n, _ = X.shape
    dtype = X.dtype if X.dtype.kind == "f" else np.float64
    eye = np.eye(n, dtype=dtype)
    split = np.concatenate([eye, -eye])  # (2n, n)
    zeros_bias = np.zeros((2 * n, 1), dtype=dtype)
    if layer == 1:
        W2, b2 = np.eye(2 * n, dtype=dtype), zeros_bias
    else:
        W2, b2 = np.zeros((2 * n, 2 * n), dtype=dtype), np.concatenate([X, -X]).astype(dtype, copy=False)
    return {
        "W1": split, "b1": zeros_bias.copy(),
        "W2": W2, "b2": b2,
        "W3": np.eye(2 * n, dtype=dtype), "b3": zeros_bias.copy(),
    }


def _course_forward_call(forward, x, keep_prob, layer):
    X = _as_columns(x)
    parameters = _course_parameters(X, layer)
    try:
        out = forward(X, parameters, keep_prob)
    except Exception as exc:
        raise add_note(exc, f"raised by {name_of(forward)}(X, parameters, keep_prob={keep_prob!r}) "
                             "called by stats_dropout.adapters.from_course") from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{name_of(forward, 'forward')} must return (A3, cache); got {kind_of(out)}")
    cache = out[1]
    if not (isinstance(cache, (tuple, list)) and len(cache) == len(COURSE_CACHE_FIELDS)):
        raise TypeError(
            f"the cache returned by {name_of(forward, 'forward')} must be the "
            f"{len(COURSE_CACHE_FIELDS)}-tuple {COURSE_CACHE_FIELDS}; got {kind_of(cache)}")
    return X, parameters, tuple(cache)


def _merge_halves(values, x_shape):
    """Upper half minus lower half, back to (batch, features...) layout.

    Exactly one half of each pair is the relu of a non-negative number and the other is 0,
    so the difference is exact. An output of the wrong shape is returned untouched: the
    battery, not the adapter, reports it.
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] % 2:
        return values
    n = values.shape[0] // 2
    merged = values[:n] - values[n:]
    if merged.size != int(np.prod(x_shape, dtype=np.int64)):
        return merged
    return _from_columns(merged, x_shape)


def from_course(forward, *, layer=1):
    """``train(x, keep_prob)``: one layer's dropped-out activation of a course-style network.

    Parameters
    ----------
    forward : callable
        ``forward_propagation_with_dropout(X, parameters, keep_prob) -> (A3, cache)`` with
        examples as columns of ``X``, ``parameters`` the dict ``W1, b1, W2, b2, W3, b3``,
        ``relu`` hidden layers with inverted dropout and a ``sigmoid`` output, and ``cache``
        ``(Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3)``.
    layer : {1, 2}
        Which hidden layer's dropout to expose (default 1).

    Returns
    -------
    train : callable
        ``train(x, keep_prob) -> y`` with ``x`` of shape (batch, features...) and ``y`` the
        layer's activation after dropout (``A1`` or ``A2`` from the cache) in the same layout.
        For a correct implementation ``y = D * x / keep_prob`` elementwise with ``D`` a fresh
        Bernoulli(keep_prob) mask.

    Notes
    -----
    The network is built so that the exposed activation is linear in the mask for inputs of
    either sign (the relu would otherwise zero the negative half of the probe): the layer sees
    ``[x; −x]`` and the adapter returns the upper half minus the lower half, see
    ``_course_parameters``. The hidden layers therefore have twice as many units as ``x`` has
    features, and half of each mask is never observed.

    The adapter calls ``forward`` once per call and never touches numpy's global RNG: a
    ``forward`` that calls ``np.random.seed`` itself (as the course template does) returns the
    same mask on every call, and the battery sees exactly that.
    """
    callable_iv(forward, "forward")
    layer = _layer_iv(layer)
    field = CACHE_INDEX[f"A{layer}"]

    def train(x, keep_prob):
        shape = np.shape(x)
        _, _, cache = _course_forward_call(forward, x, keep_prob, layer)
        return _merge_halves(cache[field], shape)

    return named(train, f"{name_of(forward, 'forward')}[layer={layer}]", train.__doc__)


def course_backward(forward, backward, *, layer=1):
    """``backward(x, upstream, keep_prob) -> (y, grad)`` for a course-style network.

    Parameters
    ----------
    forward : callable
        As in :func:`from_course`.
    backward : callable
        ``backward_propagation_with_dropout(X, Y, cache, keep_prob) -> gradients`` returning a
        dict with ``"dA1"`` and ``"dA2"``: the gradient with respect to the layer's activation
        *before* dropout, i.e. after the backward pass applied the mask and ``1/keep_prob``.
    layer : {1, 2}

    Returns
    -------
    backward : callable
        ``backward(x, upstream, keep_prob) -> (y, grad)``: ``y`` is the forward's dropped
        activation (as :func:`from_course`) and ``grad`` the gradient the implementation
        passes to the layer's input when the loss has gradient ``upstream`` with respect to
        ``y``, from the same forward call (same mask). Correct: ``grad = upstream * D / keep_prob``.

    Notes
    -----
    The course's backward pass starts from ``dZ3 = A3 − Y`` and ``dA2 = W3ᵀ dZ3``. To inject
    ``upstream`` exactly, the cache handed to ``backward`` has ``A3`` replaced by zeros and
    ``Y = −[upstream; −upstream]`` on the active half of each pair and 0 on the other
    (negation is exact; ``W3`` is the identity), so ``dZ3`` is that bit for bit. For
    ``layer=2`` the result is exact.
    For ``layer=1`` the gradient must also cross layer 2's dropout: the cache gets ``D2``
    = all ones and ``A2`` = all ones (a relu that passes everything) and ``Y`` is pre-multiplied
    by ``keep_prob`` to cancel layer 2's ``1/keep_prob``, which costs up to two roundings
    (relative error ≤ 2 machine epsilons of the dtype); and a layer-2 backward that forgets its
    ``1/keep_prob`` shows up as a layer-1 scale error.
    """
    callable_iv(forward, "forward")
    callable_iv(backward, "backward")
    layer = _layer_iv(layer)
    field = CACHE_INDEX[f"A{layer}"]
    i = CACHE_INDEX

    def run(x, upstream, keep_prob):
        shape = np.shape(x)
        X, _, cache = _course_forward_call(forward, x, keep_prob, layer)
        y = _merge_halves(cache[field], shape)
        A3 = np.asarray(cache[i["A3"]])
        g = _as_columns(np.broadcast_to(np.asarray(upstream, dtype=A3.dtype), shape))
        # Only the active half of each pair carries the element, so only it gets the gradient
        # (the lower half holds −x, hence −upstream); the inactive half's gradient is then
        # exactly 0 after the mask and the merge stays exact.
        upper = X >= 0
        zero = np.zeros_like(g)
        g = np.concatenate([np.where(upper, g, zero), np.where(upper, zero, -g)])
        cache = list(cache)
        cache[i["A3"]] = np.zeros_like(A3)
        if layer == 1:
            ones = np.ones_like(np.asarray(cache[i["A2"]]))
            cache[i["D2"]] = ones.astype(np.asarray(cache[i["D2"]]).dtype)
            cache[i["A2"]] = ones
            g = g * np.asarray(keep_prob, dtype=g.dtype)
        Y = -g
        try:
            gradients = backward(X, Y, tuple(cache), keep_prob)
        except Exception as exc:
            raise add_note(exc, f"raised by {name_of(backward)}(X, Y, cache, keep_prob={keep_prob!r}) "
                                 "called by stats_dropout.adapters.course_backward") from None
        key = f"dA{layer}"
        if not isinstance(gradients, dict) or key not in gradients:
            raise TypeError(
                f"{name_of(backward, 'backward')} must return a dict of gradients with "
                f"key {key!r}; got " + (f"keys {sorted(gradients)}" if isinstance(gradients, dict)
                                        else type(gradients).__name__))
        return y, _merge_halves(gradients[key], shape)

    name = f"{name_of(backward, 'backward')}[layer={layer}]"
    return named(run, name, run.__doc__)
