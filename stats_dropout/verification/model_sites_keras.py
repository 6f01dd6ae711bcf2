"""The dropout sites of a keras 3 model, their real inputs and its eval-mode randomness.

The keras path of :func:`~stats_dropout.verification.models.verify_model` (any keras backend):

- :func:`find_sites` walks the layers recursively (``layer._flatten_layers``, else
  ``layer.layers``): a layer of the dropout family the keras adapter supports (``Dropout``,
  ``SpatialDropout1D/2D/3D``, ``GaussianDropout``, ``AlphaDropout``, or a subclass) is a site,
  at the path of the layer names joined with ``.`` (``"encoder.dropout_1"``). Layers inside a
  site are not sites. ``GaussianNoise`` is not a site (additive noise: no keep probability).
- :func:`capture` runs ``model(batch, training=True)`` once with ``call`` of the sites' classes
  wrapped **at class level** (:func:`~stats_dropout.verification.model_sites.patched_methods`,
  calls recorded by instance identity, originals restored in ``finally``); symbolic calls
  (``KerasTensor``, while a model builds) are not recorded.
- :func:`eval_randomness` runs ``model(batch, training=False)`` twice, compares the outputs and
  names the layers (the innermost) whose output differs on an equal input, or sites that get ``training=True`` while
  the model is called with ``training=False``.

A training forward advances the layers' seed generators and updates e.g. BatchNormalization's
moving statistics: :func:`restored_variables` puts every variable of the model back.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from stats_dropout._internal.timeouts import CallTimeout, guarded_call
from stats_dropout.verification.adapters.keras_layers import KERAS_CLASSES, is_keras_layer
from stats_dropout.verification.adapters.pytorch import keep_prob_from_rate
from stats_dropout.verification.model_eval import compare_site_passes
from stats_dropout.verification.model_sites import ROOT, Capture, DropoutSite, listed_sites, patched_methods

__all__ = ["is_keras_model", "named_layers", "classify", "find_sites", "capture", "eval_randomness",
           "restored_variables", "KINDS"]

#: The site kind of each keras class of the adapter.
KINDS = {"SpatialDropout1D": "channel", "SpatialDropout2D": "channel", "SpatialDropout3D": "channel",
         "GaussianDropout": "gaussian", "AlphaDropout": "alpha", "Dropout": "dropout"}
#: Keyword arguments of ``call`` that are no extra inputs.
MODE_ARGUMENTS = ("training", "mask", "inputs")


def is_keras_model(obj):
    """True for a keras 3 layer (a ``keras.Model`` or any layer, with sublayers or not)."""
    return is_keras_layer(obj)


def _children(layer):
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", ()) or ())


def named_layers(model):
    """``{path: layer}`` of every layer under ``model`` (names joined with ``.``), InputLayers excluded."""
    keras = sys.modules["keras"]
    out, seen = {}, {id(model)}

    def walk(layer, prefix):
        for child in _children(layer):
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            path = prefix + child.name
            out[path] = child
            walk(child, path + ".")

    walk(model, "")
    return out


def classify(layer):
    """``(kind, keep_prob, rule)`` of a layer of the adapter's dropout classes, or None."""
    keras = sys.modules["keras"]
    for name, _contract, _kind in KERAS_CLASSES:
        cls = getattr(keras.layers, name, None)
        if cls is not None and isinstance(layer, cls):
            subclass = "" if type(layer) is cls else f" (subclass {type(layer).__name__})"
            try:
                keep_prob = keep_prob_from_rate(layer.rate, f"{type(layer).__name__}.rate")
            except (TypeError, ValueError, AttributeError):
                keep_prob = None
            return KINDS[name], keep_prob, f"keras class {name}{subclass}"
    return None


def find_sites(model, sites=None):
    """The dropout sites of a keras model, in layer order (see the module notes).

    Parameters
    ----------
    model : keras.layers.Layer
    sites : list of str or dict, optional
        Only these paths (keys of :func:`named_layers`); a dict maps a path to Implementation
        fields. A listed layer of another class is kind ``"user"`` (reported as unsupported).

    Raises
    ------
    ValueError
        A listed path that is no layer of the model (with the closest names).
    """
    named = named_layers(model)
    if sites is None:
        out = []
        for path, layer in named.items():
            if any(path.startswith(s.path + ".") for s in out):
                continue
            found = classify(layer)
            if found is not None:
                out.append(DropoutSite(path, *found, layer))
        if not out and classify(model) is not None:  # the model is a dropout layer itself
            out.append(DropoutSite(ROOT, *classify(model), model))
        return out
    return listed_sites(sites, named, classify, "layer")


def _to_numpy(keras, x):
    if isinstance(x, keras.KerasTensor):
        return None
    try:
        return np.asarray(keras.ops.convert_to_numpy(x))
    except Exception:  # noqa: BLE001 — not an array of this backend
        return None


def _first_input(keras, args, kwargs):
    x = args[0] if args else kwargs.get("inputs")
    extra = max(len(args) - 1, 0) + sum(k not in MODE_ARGUMENTS for k in kwargs)
    return _to_numpy(keras, x), extra


def _leaves(keras, obj):
    out = []
    for v in keras.tree.flatten(obj):
        if v is not None and not isinstance(v, (str, bytes, bool, int, float)):
            a = _to_numpy(keras, v)
            if a is not None:
                out.append(a)
    return out


def _symbolic(keras, args, kwargs):
    return any(isinstance(v, keras.KerasTensor) for v in keras.tree.flatten((args, kwargs)))


@contextlib.contextmanager
def restored_variables(model):
    """Every variable of ``model`` (weights, moving statistics, seed-generator states) is put back on exit."""
    keras = sys.modules["keras"]
    # An unbuilt model creates its variables in its first forward: verify_model builds it
    # first, so those are saved too.
    saved = [(v, keras.ops.convert_to_numpy(v.value)) for v in model.variables]
    try:
        yield
    finally:
        for v, value in saved:
            v.assign(value)


def capture(model, batch, sites):
    """Run ``model(batch, training=True)`` once; record each site's first (concrete) input.

    Returns
    -------
    Capture
        ``inputs[path] = (numpy copy of the first argument, number of other arguments)``,
        ``calls[path]``; no functional calls. The caller restores the variables
        (:func:`restored_variables`).
    """
    keras = sys.modules["keras"]
    instances = {id(s.module): (s.path, s.module) for s in sites}
    inputs, calls = {}, {}

    def record(path, args, kwargs, output):
        if _symbolic(keras, args, kwargs):
            return
        calls[path] = calls.get(path, 0) + 1
        if path not in inputs:
            inputs[path] = _first_input(keras, args, kwargs)

    with patched_methods(instances, "call", record, stop=(keras.layers.Layer,)):
        output = guarded_call("the train-mode forward model(batch, training=True)", model, batch, training=True)
    return Capture(inputs, calls, {}, output)


def eval_randomness(model, batch, sites):
    """``(deterministic, found)`` of two ``model(batch, training=False)`` forwards.

    ``found`` lists the sites called with ``training=True`` in them and the sites random on an
    equal input, and the innermost other modules random on an equal input
    (:func:`~stats_dropout.verification.model_eval.compare_site_passes`: every module's call is
    recorded in these two forwards);
    ``(None, [("<root>", message)])`` when a forward did not return within the time limit.
    """
    keras = sys.modules["keras"]
    site_paths = {s.path for s in sites}
    # every module is recorded: a random one that is no site is named too (the innermost)
    instances = {id(m): (path, m) for path, m in {ROOT: model, **named_layers(model)}.items()}
    instances.update({id(s.module): (s.path, s.module) for s in sites})
    flags = {}

    def one_pass():
        seen = {}

        def record(path, args, kwargs, output):
            if _symbolic(keras, args, kwargs):
                return
            if path in site_paths and kwargs.get("training") is True:
                flags.setdefault(path, "called with training=True while the model is called with training=False "
                                       "(an explicit training flag overrides the model's)")
            if path not in seen:
                seen[path] = (_leaves(keras, (args, kwargs)), _leaves(keras, output))

        with patched_methods(instances, "call", record, stop=(keras.layers.Layer,)):
            out = guarded_call("the eval-mode forward model(batch, training=False)", model, batch, training=False)
        return _leaves(keras, out), seen

    try:
        out1, seen1 = one_pass()
        out2, seen2 = one_pass()
    except CallTimeout as exc:
        return None, [(ROOT, str(exc))]
    return compare_site_passes(out1, out2, seen1, seen2, flags)
