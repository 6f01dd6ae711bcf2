"""PyTorch modules -> numpy callables; the one place a framework's rate becomes keep_prob."""

from __future__ import annotations

import numbers

import numpy as np

from stats_dropout._internal.validation import keep_prob_iv
from stats_dropout.verification.adapters.common import add_note, named


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


#: Input ranks each channel module accepts, batched first, and the shared axes each one promises
#: in our convention (axis 0 whatever torch reads first). torch's documentation: Dropout1d
#: (N, C, L) or (C, L); Dropout2d (N, C, H, W) or (C, H, W); Dropout3d (N, C, D, H, W) or
#: (C, D, H, W); FeatureAlphaDropout (N, C, D, H, W) or (C, D, H, W). Unbatched input has one
#: mask per channel (axis 0) shared over every other axis.
TORCH_RANKS = {
    "Dropout1d": ((3, (2,)), (2, (1,))),
    "Dropout2d": ((4, (2, 3)), (3, (1, 2))),
    "Dropout3d": ((5, (2, 3, 4)), (4, (1, 2, 3))),
    "FeatureAlphaDropout": ((5, (2, 3, 4)), (4, (1, 2, 3))),
}


def torch_ranks(module):
    """``((ndim, shared_axes, batched), ...)``: the input ranks a torch dropout module documents.

    Channel modules (``Dropout1d/2d/3d``, ``FeatureAlphaDropout``) list their batched and their
    unbatched rank, with the axes one mask is shared over in each reading (see
    :data:`TORCH_RANKS`); element-wise modules list ``(None, (), True)``: any rank.
    """
    kind, _ = _torch_kind(_torch_module_iv(module))
    nn = _import_torch().nn
    for cls_name, ranks in TORCH_RANKS.items():
        if isinstance(module, getattr(nn, cls_name)):
            return tuple((ndim, axes, i == 0) for i, (ndim, axes) in enumerate(ranks))
    return ((None, (), True),)


def keep_prob_from_rate(rate, name="rate"):
    """``1 − rate``: the one place in the package where a framework's drop rate becomes keep_prob.

    Parameters
    ----------
    rate : float
        torch's ``p``, keras' and flax's ``rate``: the probability a unit is *dropped*.
    name : str
        How the value is named in error messages (``"module.p"``, ``"layer.rate"``).

    Raises
    ------
    TypeError
        If ``rate`` is not a real number.
    ValueError
        If ``rate`` is outside [0, 1) (``keep_prob`` would be outside (0, 1]).
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"`{name}` must be a real number in [0, 1); got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1) (keep_prob = 1 - {name.split('.')[-1]} must be in (0, 1]); "
                         f"got {rate!r}")
    return keep_prob_iv(1.0 - float(rate))


def keep_prob_agrees(keep_prob, own, layer):
    """``own`` (the layer's keep_prob); a user's ``keep_prob`` that disagrees raises ValueError."""
    if keep_prob is not None and (np.ndim(keep_prob) != 0 or abs(float(keep_prob) - own) > 1e-12):
        raise ValueError(f"`keep_prob`={keep_prob!r} disagrees with the layer: {layer} keeps units with "
                         f"probability {own!r}; build the layer with the rate you mean to test")
    return own


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
    >>> from stats_dropout.verification.adapters import torch_spec
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
    keep_prob = keep_prob_from_rate(module.p, "module.p")
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


def from_torch(module, layout="merged"):
    """Numpy callables ``(train, eval)`` running a torch module in train and eval mode.

    Parameters
    ----------
    module : torch.nn.Module
        Any module mapping a tensor to a tensor; the dropout modules listed in
        :func:`torch_spec` also get their contract from it.
    layout : {"merged", "native"}
        ``"merged"`` (default): channel modules see the input viewed as (batch, channel,
        spatial...) at their own batched rank, whatever the probe's rank (see Notes).
        ``"native"``: every module gets the array exactly as given, so torch's own rank rules
        apply (unbatched input, 3-D input to ``Dropout2d``: :func:`torch_ranks`).

    Returns
    -------
    train, eval : callable
        ``f(x) -> y`` on numpy arrays. Each call puts the module (and its submodules) in
        train or eval mode, runs it under ``torch.no_grad()`` on a tensor sharing ``x``'s
        memory, and restores every submodule's original mode, even if the module raises.
        The output keeps the module's dtype (torch keeps the input's). Randomness comes from
        torch's global RNG, which the battery seeds. When the module works in place
        (``inplace=True``) and its output shares the input tensor's memory, the array
        returned *is* ``x``: the aliasing stays visible.

    Notes
    -----
    With ``layout="merged"``, for ``nn.Dropout1d/2d/3d`` the input is viewed as (batch, channel,
    spatial...) whatever the number of spatial axes (see ``_channel_layout``), so that a 3-D
    probe means the same to ``Dropout3d`` as to ``Dropout1d``; the output gets ``x``'s shape
    back. That view hides torch's own rank handling: ``Dropout2d`` reads 3-D input as
    (N, C, L), not as the unbatched (C, H, W) its documentation promises (pytorch#69801,
    #77081). ``layout="native"`` (what ``sd.verify_dropout(module)`` uses) shows it.

    Examples
    --------
    >>> import numpy as np, torch
    >>> import stats_dropout as sd
    >>> from stats_dropout.verification.adapters import from_torch, torch_spec
    >>> m = torch.nn.Dropout(p=0.2)
    >>> train, eval = from_torch(m)
    >>> eval(np.ones(3)).tolist()
    [1.0, 1.0, 1.0]
    >>> result = sd.verify_dropout(train, eval, **torch_spec(m))  # doctest: +SKIP
    """
    torch = _import_torch()
    module = _torch_module_iv(module)
    if layout not in ("merged", "native"):
        raise ValueError(f"`layout` must be 'merged' or 'native'; got {layout!r}")
    kind, batched_ndim = _torch_kind(module)
    if layout == "native":
        kind = "native"
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
            raise add_note(exc, f"raised by {label} in {'train' if training else 'eval'} mode "
                                 f"on input of shape {shape}") from None
        finally:
            _restore_modes(modes)
        if kind == "channel" and isinstance(y, torch.Tensor) and y.numel() == int(np.prod(shape)):
            y = y.reshape(shape)
        out = _to_numpy(torch, y)
        if (isinstance(out, np.ndarray) and isinstance(x, np.ndarray) and out.shape == x.shape
                and out.dtype == x.dtype and np.shares_memory(out, x)):
            return x  # an in-place module wrote into x: hand back x itself, the alias is the fact
        return out

    train = named(lambda x: run(x, True), f"{label}.train", "One train-mode pass of the module.")
    evaluate = named(lambda x: run(x, False), f"{label}.eval", "One eval-mode pass of the module.")
    return train, evaluate


def import_torch():
    """torch, or an ImportError saying how to install it."""
    return _import_torch()


def torch_kind(module):
    """``"elementwise"``, ``"channel"``, ``"alpha"``, ``"feature_alpha"`` or None (a custom module)."""
    return _torch_kind(_torch_module_iv(module))[0]
