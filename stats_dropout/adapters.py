"""Adapters: every implementation under test becomes numpy callables ``train`` and ``eval``.

The battery speaks one language: ``train(x)`` or ``train(x, keep_prob)`` on numpy arrays with
axis 0 the batch, ``keep_prob`` the probability a unit is *kept*, and (for gradient checks)
``backward(x, upstream, keep_prob) -> (y, grad)``. This module translates three other
languages into it:

PyTorch modules (:func:`from_torch`, :func:`torch_spec`)
    ``nn.Dropout``, ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout``.
    Frameworks' ``rate`` (``module.p``) is converted to ``keep_prob = 1 − p`` here and nowhere
    else. torch is imported only when a torch function is called.
The course's three-layer network (:func:`from_course`, :func:`course_backward`)
    ``forward_propagation_with_dropout(X, parameters, keep_prob) -> (A3, cache)`` with examples
    as columns. The adapter chooses the network's weights so that the dropped-out activation of
    one layer is exactly ``mask * x / keep_prob`` for *any* sign of ``x`` (see Notes of
    :func:`from_course`), and reads it from the cache.
CS231n-style layers (:func:`from_cs231n`, :func:`cs231n_backward`)
    ``dropout_forward(x, dropout_param) -> (out, cache)`` with ``dropout_param["p"]`` either the
    keep or the drop probability, and ``dropout_backward(dout, cache) -> dx``.

Plain numpy callables ``f(x)`` or ``f(x, keep_prob)`` need no adapter.

What an adapter never does: reseed a random number generator (a user function that reseeds
itself must stay visible to the battery), catch a user's exception, or repair a user's output
(wrong shape, wrong dtype, NaN, an input modified in place). Such behaviour passes through
unchanged so that the battery reports it; exceptions may gain a note saying which adapter
call raised them.
"""

from __future__ import annotations

import functools
import inspect
import numbers

import numpy as np

from ._validation import callable_iv, choice_iv, keep_prob_iv

__all__ = [
    "from_torch",
    "torch_spec",
    "from_course",
    "course_backward",
    "from_cs231n",
    "cs231n_backward",
    "detect_convention",
    "torch_implementation",
    "course_implementation",
    "cs231n_implementation",
    "course_probe",
    "COURSE_CACHE_FIELDS",
    "COURSE_PROBE_SHAPE",
]

#: Field order of the course's ``cache`` tuple.
COURSE_CACHE_FIELDS = ("Z1", "D1", "A1", "W1", "b1", "Z2", "D2", "A2", "W2", "b2", "Z3", "A3", "W3", "b3")

#: Probe shape for the course network: two features, many examples. Its matrix products cost
#: O(features² × examples) per call, so the battery's default (256, 1024) probe spends ~0.2 s
#: a call in BLAS instead of in the dropout; and thin products with a few more features cross
#: OpenBLAS's threading threshold, which on a busy 2-core machine made each call 5x slower
#: (measured per battery: (32768, 2) 3 s, (16384, 4) 21 s).
COURSE_PROBE_SHAPE = (32768, 2)
_CACHE_INDEX = {name: i for i, name in enumerate(COURSE_CACHE_FIELDS)}


def _add_note(exc, note):
    """Attach ``note`` to ``exc`` (PEP 678) without changing its type or message."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def _name_of(func, default="function"):
    return getattr(func, "__name__", default)


def _kind_of(obj):
    """``"tuple of length 3"``-style description of an unexpected return value."""
    length = f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else ""
    return type(obj).__name__ + length


def _named(func, name, doc=None):
    """Give an adapter closure a readable name: it shows up in pytest ids and messages."""
    func.__name__ = name
    func.__qualname__ = name
    if doc:
        func.__doc__ = doc
    return func


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------

def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch installed
        raise ImportError(
            "stats_dropout.adapters.from_torch needs PyTorch; install it with "
            "`pip install stats-dropout[torch]`") from exc
    return torch


def _torch_kind(module):
    """``(kind, batched_ndim)`` for a supported torch dropout module, else ``(None, None)``.

    Subclasses of the torch classes are accepted (most specific class first): a user's
    ``class MyDropout(nn.Dropout)`` promises what ``nn.Dropout`` promises.
    """
    nn = _import_torch().nn
    table = (
        (nn.FeatureAlphaDropout, "feature_alpha", None),
        (nn.AlphaDropout, "alpha", None),
        (nn.Dropout1d, "channel", 3),
        (nn.Dropout2d, "channel", 4),
        (nn.Dropout3d, "channel", 5),
        (nn.Dropout, "elementwise", None),
    )
    for cls, kind, ndim in table:
        if isinstance(module, cls):
            return kind, ndim
    return None, None


def _torch_module_iv(module, name="module"):
    torch = _import_torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"`{name}` must be a torch.nn.Module; got {module!r}")
    return module


def torch_spec(module):
    """Keyword arguments of :func:`~stats_dropout.verify_dropout` for a torch dropout module.

    Parameters
    ----------
    module : torch.nn.Module
        One of ``nn.Dropout``, ``nn.Dropout1d``, ``nn.Dropout2d``, ``nn.Dropout3d``,
        ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout`` (or a subclass).

    Returns
    -------
    dict
        ``keep_prob`` (``1 − module.p``: torch's ``p`` is the drop rate), ``contract``
        (``"inverted"`` for Bernoulli dropout, ``"moments"`` for alpha dropout) and
        ``shared_axes`` (``"spatial"`` for the channel variants: one mask per (sample,
        channel), shared over every axis from 2 on; ``()`` otherwise).

    Raises
    ------
    TypeError
        If ``module`` is not one of the supported classes.
    ValueError
        If ``module.p`` is 1 (nothing kept: ``keep_prob`` would be 0) or outside [0, 1].

    Examples
    --------
    >>> import torch
    >>> from stats_dropout.adapters import torch_spec
    >>> torch_spec(torch.nn.Dropout2d(p=0.25))
    {'keep_prob': 0.75, 'contract': 'inverted', 'shared_axes': 'spatial'}
    """
    module = _torch_module_iv(module)
    kind, _ = _torch_kind(module)
    if kind is None:
        raise TypeError(
            "`module` must be nn.Dropout, nn.Dropout1d/2d/3d, nn.AlphaDropout or "
            f"nn.FeatureAlphaDropout to infer its contract; got {type(module).__name__}. "
            "Call verify_dropout(*from_torch(module), keep_prob=..., contract=...) yourself.")
    rate = module.p
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"`module.p` must be a real number in [0, 1); got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"`module.p` must be in [0, 1) (keep_prob = 1 - p must be in (0, 1]); got {rate!r}")
    # The one place in the package where a framework's drop rate becomes a keep probability.
    keep_prob = keep_prob_iv(1.0 - float(rate))
    contract = "moments" if kind in ("alpha", "feature_alpha") else "inverted"
    shared_axes = "spatial" if kind in ("channel", "feature_alpha") else ()
    return {"keep_prob": keep_prob, "contract": contract, "shared_axes": shared_axes}


def _to_tensor(torch, x):
    """numpy -> torch, sharing memory where torch can, so in-place modules stay visible.

    ``torch.from_numpy`` shares the buffer: an ``inplace=True`` module then modifies the
    caller's array, which the battery must see. Read-only arrays (torch warns about them) and
    layouts torch cannot view (negative strides) are copied: a read-only array cannot be
    modified by the caller's code either, so nothing is hidden.
    """
    arr = np.asarray(x)
    if arr.flags.writeable and all(s >= 0 for s in arr.strides):
        return torch.from_numpy(arr)
    return torch.from_numpy(np.array(arr, copy=True))


def _to_numpy(torch, y):
    if isinstance(y, torch.Tensor):
        return y.detach().cpu().numpy()
    return y  # an odd return value goes to the battery as it is


def _channel_layout(x_shape, batched_ndim):
    """Shape torch's ``DropoutNd`` needs to read ``x_shape`` as (batch, channel, spatial...).

    Our convention is axis 0 batch, axis 1 channel, the rest spatial, for any number of
    spatial axes; torch's ``Dropout1d/2d/3d`` want exactly 1/2/3 of them (other ranks are
    read as unbatched input or warn). One mask per (sample, channel) shared over all spatial
    positions does not depend on how those positions are laid out, so merging them into one
    axis (or padding with length-1 axes) is exact.
    """
    if len(x_shape) < 2:
        raise ValueError(
            "channel dropout needs input of shape (batch, channel, spatial...); "
            f"got an array of shape {tuple(x_shape)}")
    spatial = int(np.prod(x_shape[2:], dtype=np.int64))
    return tuple(x_shape[:2]) + (spatial,) + (1,) * (batched_ndim - 3)


def _module_modes(module):
    return [(m, m.training) for m in module.modules()]


def _restore_modes(modes):
    for m, training in modes:
        m.training = training


def from_torch(module):
    """Numpy callables ``(train, eval)`` running a torch module in train and eval mode.

    Parameters
    ----------
    module : torch.nn.Module
        Any module mapping a tensor to a tensor; the dropout modules listed in
        :func:`torch_spec` also get their contract from it.

    Returns
    -------
    train, eval : callable
        ``f(x) -> y`` on numpy arrays. Each call puts the module (and its submodules) in
        train or eval mode, runs it under ``torch.no_grad()`` on a tensor sharing ``x``'s
        memory, and restores every submodule's original mode, even if the module raises.
        The output keeps the module's dtype (torch keeps the input's). Randomness comes from
        torch's global RNG, which the battery seeds.

    Notes
    -----
    For ``nn.Dropout1d/2d/3d`` the input is viewed as (batch, channel, spatial...) whatever the
    number of spatial axes (see ``_channel_layout``), so that a 3-D probe means the same to
    ``Dropout3d`` as to ``Dropout1d``; the output gets ``x``'s shape back.

    Examples
    --------
    >>> import numpy as np, torch
    >>> import stats_dropout as sd
    >>> from stats_dropout.adapters import from_torch, torch_spec
    >>> m = torch.nn.Dropout(p=0.2)
    >>> train, eval = from_torch(m)
    >>> eval(np.ones(3)).tolist()
    [1.0, 1.0, 1.0]
    >>> result = sd.verify_dropout(train, eval, **torch_spec(m))  # doctest: +SKIP
    """
    torch = _import_torch()
    module = _torch_module_iv(module)
    kind, batched_ndim = _torch_kind(module)
    label = type(module).__name__
    if hasattr(module, "p"):
        label += f"(p={module.p})"

    def run(x, training):
        modes = _module_modes(module)
        t = _to_tensor(torch, x)
        shape = tuple(t.shape)
        if kind == "channel":
            t = t.reshape(_channel_layout(shape, batched_ndim))
        try:
            module.train(training)
            with torch.no_grad():
                y = module(t)
        except Exception as exc:
            raise _add_note(exc, f"raised by {label} in {'train' if training else 'eval'} mode "
                                 f"on input of shape {shape}") from None
        finally:
            _restore_modes(modes)
        if kind == "channel" and isinstance(y, torch.Tensor) and y.numel() == int(np.prod(shape)):
            y = y.reshape(shape)
        return _to_numpy(torch, y)

    train = _named(lambda x: run(x, True), f"{label}.train", "One train-mode pass of the module.")
    evaluate = _named(lambda x: run(x, False), f"{label}.eval", "One eval-mode pass of the module.")
    return train, evaluate


# --------------------------------------------------------------------------------------------
# The course's three-layer network
# --------------------------------------------------------------------------------------------

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
        raise _add_note(exc, f"raised by {_name_of(forward)}(X, parameters, keep_prob={keep_prob!r}) "
                             "called by stats_dropout.adapters.from_course") from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{_name_of(forward, 'forward')} must return (A3, cache); got {_kind_of(out)}")
    cache = out[1]
    if not (isinstance(cache, (tuple, list)) and len(cache) == len(COURSE_CACHE_FIELDS)):
        raise TypeError(
            f"the cache returned by {_name_of(forward, 'forward')} must be the "
            f"{len(COURSE_CACHE_FIELDS)}-tuple {COURSE_CACHE_FIELDS}; got {_kind_of(cache)}")
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
    field = _CACHE_INDEX[f"A{layer}"]

    def train(x, keep_prob):
        shape = np.shape(x)
        _, _, cache = _course_forward_call(forward, x, keep_prob, layer)
        return _merge_halves(cache[field], shape)

    return _named(train, f"{_name_of(forward, 'forward')}[layer={layer}]", train.__doc__)


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
    field = _CACHE_INDEX[f"A{layer}"]
    i = _CACHE_INDEX

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
            raise _add_note(exc, f"raised by {_name_of(backward)}(X, Y, cache, keep_prob={keep_prob!r}) "
                                 "called by stats_dropout.adapters.course_backward") from None
        key = f"dA{layer}"
        if not isinstance(gradients, dict) or key not in gradients:
            raise TypeError(
                f"{_name_of(backward, 'backward')} must return a dict of gradients with "
                f"key {key!r}; got " + (f"keys {sorted(gradients)}" if isinstance(gradients, dict)
                                        else type(gradients).__name__))
        return y, _merge_halves(gradients[key], shape)

    name = f"{_name_of(backward, 'backward')}[layer={layer}]"
    return _named(run, name, run.__doc__)


# --------------------------------------------------------------------------------------------
# CS231n-style layers
# --------------------------------------------------------------------------------------------

def _p_means_iv(p_means):
    return choice_iv(p_means, "p_means", ("keep", "drop"))


def _cs231n_param(keep_prob, p_means, mode):
    # keep_prob is passed through unvalidated: the battery probes odd values on purpose and a
    # user layer's reaction to them is part of what is measured.
    p = keep_prob if p_means == "keep" else 1 - keep_prob
    return {"p": p, "mode": mode}


def _cs231n_forward_call(forward, x, keep_prob, p_means, mode):
    param = _cs231n_param(keep_prob, p_means, mode)
    try:
        out = forward(x, param)
    except Exception as exc:
        raise _add_note(exc, f"raised by {_name_of(forward)}(x, {param!r}) "
                             "called by stats_dropout.adapters.from_cs231n") from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{_name_of(forward, 'forward')} must return (out, cache); got {_kind_of(out)}")
    return out


def from_cs231n(forward, *, p_means="keep"):
    """``(train, eval)`` for a CS231n-style ``dropout_forward(x, dropout_param)``.

    Parameters
    ----------
    forward : callable
        ``dropout_forward(x, dropout_param) -> (out, cache)`` with ``dropout_param`` the dict
        ``{"p": ..., "mode": "train" | "test"}``.
    p_means : {"keep", "drop"}
        Whether ``dropout_param["p"]`` is the probability of keeping a unit (default) or of
        dropping it; assignments differ on this, so say which one yours uses.

    Returns
    -------
    train, eval : callable
        ``f(x, keep_prob) -> out`` calling ``forward`` in mode ``"train"`` and ``"test"``. No
        ``"seed"`` key is ever passed: randomness comes from numpy's global RNG.
    """
    callable_iv(forward, "forward")
    p_means = _p_means_iv(p_means)
    base = getattr(forward, "__name__", "dropout_forward")

    def train(x, keep_prob):
        return _cs231n_forward_call(forward, x, keep_prob, p_means, "train")[0]

    def evaluate(x, keep_prob):
        return _cs231n_forward_call(forward, x, keep_prob, p_means, "test")[0]

    return (_named(train, f"{base}[train]", "``forward`` in mode 'train'."),
            _named(evaluate, f"{base}[test]", "``forward`` in mode 'test'."))


def cs231n_backward(forward, backward, *, p_means="keep"):
    """``backward(x, upstream, keep_prob) -> (y, grad)`` for CS231n-style dropout.

    Parameters
    ----------
    forward : callable
        ``dropout_forward(x, dropout_param) -> (out, cache)``.
    backward : callable
        ``dropout_backward(dout, cache) -> dx``.
    p_means : {"keep", "drop"}
        As in :func:`from_cs231n`.

    Returns
    -------
    backward : callable
        Runs ``forward`` in train mode, then ``backward(upstream, cache)`` on its cache, and
        returns ``(out, dx)``. Correct inverted dropout: ``dx = upstream * mask / keep_prob``.
    """
    callable_iv(forward, "forward")
    callable_iv(backward, "backward")
    p_means = _p_means_iv(p_means)

    def run(x, upstream, keep_prob):
        out, cache = _cs231n_forward_call(forward, x, keep_prob, p_means, "train")
        try:
            dx = backward(upstream, cache)
        except Exception as exc:
            raise _add_note(exc, f"raised by {_name_of(backward)}(dout, cache) "
                                 "called by stats_dropout.adapters.cs231n_backward") from None
        return out, dx

    return _named(run, getattr(backward, "__name__", "dropout_backward"), run.__doc__)


# --------------------------------------------------------------------------------------------
# Signature detection
# --------------------------------------------------------------------------------------------

def _positional_names(func):
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.kind in kinds]


def detect_convention(func):
    """Guess which calling convention ``func`` follows.

    Returns
    -------
    {"course", "cs231n", "plain"}
        ``"course"`` for ``forward_propagation_with_dropout(X, parameters, keep_prob)`` (by
        name, or a second parameter called ``parameters``); ``"cs231n"`` for
        ``dropout_forward(x, dropout_param)`` (by name, or a parameter called
        ``dropout_param``); ``"plain"`` otherwise (``f(x)`` or ``f(x, keep_prob)``).
    """
    target = func.func if isinstance(func, functools.partial) else func
    name = getattr(target, "__name__", "")
    names = _positional_names(func) or []
    if name == "forward_propagation_with_dropout" or (len(names) >= 2 and names[1] == "parameters"):
        return "course"
    if name == "dropout_forward" or "dropout_param" in names:
        return "cs231n"
    return "plain"


# --------------------------------------------------------------------------------------------
# Ready-made Implementations (for parametrize_with_checks and iter_checks)
# --------------------------------------------------------------------------------------------

def course_probe(seed=0):
    """The battery's standardised N(0, 1) probe in :data:`COURSE_PROBE_SHAPE`."""
    from .scheme_checks import scheme_probe

    return scheme_probe(COURSE_PROBE_SHAPE, seed=seed)


def torch_implementation(module, *, name=None):
    """:class:`~stats_dropout.Implementation` of a torch dropout module (see :func:`torch_spec`)."""
    from .checks import Implementation

    train, evaluate = from_torch(module)
    return Implementation(train, evaluate, **torch_spec(module), name=name or train.__name__[:-len(".train")])


def course_implementation(forward, backward=None, *, layer=1, keep_prob=0.8, name=None):
    """:class:`~stats_dropout.Implementation` of one layer of a course-style network.

    ``validates_keep_prob`` is False (the course's functions do not check their keep_prob) and
    the probe is :func:`course_probe`, which keeps the network's matrix products cheap.
    ``backward``, if given, is ``backward_propagation_with_dropout`` (:func:`course_backward`).
    """
    from .checks import Implementation

    train = from_course(forward, layer=layer)
    grad = course_backward(forward, backward, layer=layer) if backward is not None else None
    return Implementation(train, None, keep_prob=keep_prob, backward=grad, validates_keep_prob=False,
                          example_input=course_probe(), name=name or train.__name__)


def cs231n_implementation(forward, backward=None, *, p_means="keep", keep_prob=0.8, name=None):
    """:class:`~stats_dropout.Implementation` of a CS231n-style ``dropout_forward`` (and backward).

    ``validates_keep_prob`` is False: the assignment's layer does not check ``p``.
    """
    from .checks import Implementation

    train, evaluate = from_cs231n(forward, p_means=p_means)
    grad = cs231n_backward(forward, backward, p_means=p_means) if backward is not None else None
    return Implementation(train, evaluate, keep_prob=keep_prob, backward=grad, validates_keep_prob=False,
                          name=name or _name_of(forward, "dropout_forward"))
