"""The dropout sites of a flax nnx model, their real inputs and its eval-mode randomness.

The flax path of :func:`~stats_dropout.verification.models.verify_model`. nnx has no hooks, so:

- :func:`find_sites` walks the module graph (``nnx.iter_graph``): every ``nnx.Dropout`` (or
  subclass) is a site, at the path of its attributes joined with ``.`` (``"blocks.0.dropout"``);
  a Dropout shared by several parents is one site, at the first path the walk gives it.
- :func:`capture` runs the model once in train mode (``model.train()``, then ``model(batch)``)
  with ``__call__`` of the sites' classes wrapped **at class level** by
  :func:`~stats_dropout.verification.model_sites.patched_methods` (calls recorded by instance
  identity, originals restored in ``finally``): each site's first input and call count.
- :func:`eval_randomness` runs ``model.eval()`` and two forwards, compares the outputs, and
  names the sites (and other modules: the innermost) whose output differs on an equal input, or sites called with
  ``deterministic=False`` while the model is in eval mode.

These functions change the train/eval flags and advance the rng streams of the model they are
given: ``verify_model`` gives them :func:`prepare`'s clone (``nnx.clone``), never the user's model.
"""

from __future__ import annotations

import sys

import numpy as np

from stats_dropout._internal.timeouts import CallTimeout, guarded_call
from stats_dropout.verification.adapters.pytorch import keep_prob_from_rate
from stats_dropout.verification.model_eval import compare_site_passes
from stats_dropout.verification.model_sites import ROOT, Capture, DropoutSite, call_model, listed_sites, patched_methods

__all__ = ["import_nnx", "is_nnx_model", "prepare", "named_modules", "find_sites", "capture", "eval_randomness",
           "MODE_ARGUMENTS"]

#: Keyword arguments of ``nnx.Dropout.__call__`` that are no extra inputs (the battery sets them).
MODE_ARGUMENTS = ("deterministic", "rngs", "inputs")


def import_nnx():
    """``flax.nnx`` (imported if the user has not)."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        from flax import nnx
    return nnx


def is_nnx_model(obj):
    """True for a ``flax.nnx.Module`` (flax imported by the user)."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Module)


def prepare(model):
    """A clone of ``model`` (``nnx.clone``: its own parameters, rng streams and flags) to run."""
    return import_nnx().clone(model)


def named_modules(model):
    """``{path: module}`` of every ``nnx.Module`` in the graph of ``model`` (``"<root>"`` for the model)."""
    nnx = import_nnx()
    out = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            out.setdefault(".".join(map(str, path)) or ROOT, node)
    return out


def classify(module):
    """``(kind, keep_prob, rule)`` of an ``nnx.Dropout``, or None for another module."""
    nnx = import_nnx()
    if not isinstance(module, nnx.Dropout):
        return None
    subclass = "" if type(module) is nnx.Dropout else f" (subclass {type(module).__name__})"
    try:
        keep_prob = keep_prob_from_rate(module.rate, f"{type(module).__name__}.rate")
    except (TypeError, ValueError):
        keep_prob = None
    return "dropout", keep_prob, f"flax class nnx.Dropout{subclass}"


def find_sites(model, sites=None):
    """The dropout sites of an nnx model, in the order of ``nnx.iter_graph``.

    Parameters
    ----------
    model : flax.nnx.Module
    sites : list of str or dict, optional
        Only these paths (keys of :func:`named_modules`); a dict maps a path to Implementation
        fields for its battery. A listed module that is no ``nnx.Dropout`` is kind ``"user"``
        (the flax adapter cannot run it: reported as unsupported).

    Raises
    ------
    ValueError
        A listed path that is no module of the model (with the closest names).
    """
    named = named_modules(model)
    if sites is None:
        return [DropoutSite(path, *found, module) for path, module in named.items()
                if (found := classify(module)) is not None]
    return listed_sites(sites, named, classify, "module")


def _array(jax, x):
    """A numpy copy of a concrete array, None for anything else (a tracer: the model runs under jit)."""
    if not isinstance(x, (jax.Array, np.ndarray)):
        return None
    try:
        return np.array(x, copy=True)
    except Exception:  # noqa: BLE001 — a jax tracer (nnx.jit) has no value
        return None


def _first_input(jax, args, kwargs):
    """``(numpy array or None, number of extra arguments)`` of a recorded ``__call__``."""
    x = args[0] if args else kwargs.get("inputs")
    extra = max(len(args) - 1, 0) + sum(k not in MODE_ARGUMENTS for k in kwargs)
    return _array(jax, x), extra


def _leaves(jax, obj):
    return [a for a in (_array(jax, v) for v in jax.tree_util.tree_leaves(obj)) if a is not None]


def capture(model, batch, sites):
    """Run ``model`` once in train mode; record each site's first input.

    ``model.train()`` is called and left (pass :func:`prepare`'s clone). The rng streams are the
    model's own: the capture draws what the model would draw next.

    Returns
    -------
    Capture
        ``inputs[path] = (numpy copy of the first argument, number of other arguments)``,
        ``calls[path]``; no functional calls.
    """
    import jax

    nnx = import_nnx()
    instances = {id(s.module): (s.path, s.module) for s in sites}
    inputs, calls = {}, {}

    def record(path, args, kwargs, output):
        calls[path] = calls.get(path, 0) + 1
        if path not in inputs:
            inputs[path] = _first_input(jax, args, kwargs)

    model.train()
    with patched_methods(instances, "__call__", record, stop=(nnx.Module,)):
        output = guarded_call("the train-mode forward model(batch)", call_model, model, batch)
    return Capture(inputs, calls, {}, output)


def eval_randomness(model, batch, sites):
    """``(deterministic, found)`` of two eval-mode forwards (``model.eval()``, left so).

    ``found`` lists the sites called with ``deterministic=False`` in eval mode and the sites
    random on an equal input, and the innermost other modules random on an equal input
    (:func:`~stats_dropout.verification.model_eval.compare_site_passes`: every module's call is
    recorded in these two forwards);
    ``(None, [("<root>", message)])`` when a forward did not return within the time limit.
    """
    import jax

    nnx = import_nnx()
    site_paths = {s.path for s in sites}
    # every module is recorded: a random one that is no site is named too (the innermost)
    instances = {id(m): (path, m) for path, m in named_modules(model).items()}
    instances.update({id(s.module): (s.path, s.module) for s in sites})
    flags = {}

    def one_pass():
        seen = {}

        def record(path, args, kwargs, output):
            if path in site_paths and kwargs.get("deterministic") is False:
                flags.setdefault(path, "called with deterministic=False while the model is in eval mode "
                                       "(model.eval() sets deterministic=True; a call-time flag overrides it)")
            if path not in seen:
                seen[path] = (_leaves(jax, (args, kwargs)), _leaves(jax, output))

        with patched_methods(instances, "__call__", record, stop=(nnx.Module,)):
            out = guarded_call("the eval-mode forward model(batch)", call_model, model, batch)
        return _leaves(jax, out), seen

    model.eval()
    try:
        out1, seen1 = one_pass()
        out2, seen2 = one_pass()
    except CallTimeout as exc:
        return None, [(ROOT, str(exc))]
    return compare_site_passes(out1, out2, seen1, seen2, flags)
