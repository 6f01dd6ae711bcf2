"""The dropout sites of a torch model and their real inputs.

:func:`find_sites` lists the sites (the rule is in its docstring); :func:`capture` runs the model
once with hooks and returns each site's first input and the functional dropout calls it saw.
:mod:`stats_dropout.verification.model_eval` finds where eval mode is still random;
:mod:`stats_dropout.verification.models` turns both into batteries (``verify_model``).

Hooks are registered on this model's modules only and removed before returning; the functional
recorder replaces ``torch.nn.functional.dropout`` and its siblings by recording wrappers for the
duration of one forward and puts the originals back, even if the forward raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import numbers
from collections.abc import Mapping

from stats_dropout._internal.timeouts import guarded_call
from stats_dropout.verification.adapters.pytorch import import_torch, keep_prob_from_rate, torch_kind

__all__ = ["DropoutSite", "find_sites", "classify", "capture", "call_model", "module_stack", "functional_recorder",
           "NAME_MARKERS", "KEEP_ATTRIBUTES", "RATE_ATTRIBUTES", "FUNCTIONAL_CONTRACTS", "ROOT", "Capture",
           "FunctionalCall", "patched_methods", "listed_sites"]

#: A module of a class torch does not define is a dropout site if its class name contains one of
#: these (case-insensitive) and it has a keep or rate attribute.
NAME_MARKERS = ("dropout", "droppath", "drop_path", "stochasticdepth", "dropblock")
#: Attributes read as the keep probability, then as the drop rate (converted: keep = 1 − rate).
KEEP_ATTRIBUTES = ("keep_prob",)
RATE_ATTRIBUTES = ("p", "drop_prob", "drop_rate", "rate", "dropout_rate")
#: Functional dropout of ``torch.nn.functional`` -> (contract, shared_axes) of one call.
FUNCTIONAL_CONTRACTS = {
    "dropout": ("inverted", ()),
    "dropout1d": ("inverted", "spatial"),
    "dropout2d": ("inverted", "spatial"),
    "dropout3d": ("inverted", "spatial"),
    "alpha_dropout": ("moments", ()),
    "feature_alpha_dropout": ("moments", "spatial"),
}
ROOT = "<root>"


@dataclasses.dataclass(frozen=True)
class DropoutSite:
    """One place of a model where dropout happens.

    Attributes
    ----------
    path : str
        ``model.get_submodule(path)`` (e.g. ``"encoder.layer.1.attention.self.dropout"``); for a
        functional call, the calling module's path and the function (``"encoder.layer.1:F.dropout"``).
    kind : str
        ``"dropout"`` (``nn.Dropout``), ``"channel"`` (``Dropout1d/2d/3d``), ``"alpha"``,
        ``"feature_alpha"``, ``"drop_path"`` (a DropPath / StochasticDepth class: one mask per
        sample), ``"dropblock"`` (a DropBlock class with a ``block_size``), ``"custom"`` (another
        class named like dropout), ``"user"`` (listed by the user,
        matching no rule) or ``"functional"`` (``F.dropout`` called in a module's own forward).
    keep_prob : float or None
        None when it cannot be read (the site is then reported as unsupported).
    rule : str
        Why this is a site, in words.
    module : torch.nn.Module or None
    overrides : dict
        Implementation fields for the battery (``shared_axes`` of a drop-path site, the user's).
    """

    path: str
    kind: str
    keep_prob: float | None
    rule: str
    module: object = dataclasses.field(default=None, compare=False, repr=False)
    overrides: dict = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass
class FunctionalCall:
    """A ``torch.nn.functional`` dropout call seen during a forward (the first per caller and function)."""

    caller: str
    function: str
    p: float
    training: bool
    inplace: bool
    calls: int = 1
    input: object = None
    caller_training: bool = True


@dataclasses.dataclass
class Capture:
    """What one train-mode forward showed: each site's first input and call count, functional calls."""

    inputs: dict      # path -> (tensor clone, n extra arguments)
    calls: dict       # path -> number of calls
    functional: dict  # (caller, function) -> FunctionalCall
    output: object = None


def _match_name(module):
    name = type(module).__name__.lower()
    return any(marker in name for marker in NAME_MARKERS)


def _attribute_keep_prob(module):
    """``(keep_prob, attribute)`` read from the module, or ``(None, None)``."""
    for attr in KEEP_ATTRIBUTES + RATE_ATTRIBUTES:
        value = getattr(module, attr, None)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if attr in KEEP_ATTRIBUTES:
                return float(value), attr
            try:
                return keep_prob_from_rate(float(value), f"{type(module).__name__}.{attr}"), attr
            except (TypeError, ValueError):
                return None, attr
    return None, None


def classify(module):
    """``(kind, keep_prob, rule)`` of a module, or None if it is not a dropout site by the rule."""
    kind = torch_kind(module)
    if kind is not None:
        names = {"elementwise": "dropout"}
        base = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
        subclass = "" if base is type(module) else f" (subclass {type(module).__name__})"
        rule = f"torch class nn.{base.__name__}{subclass}"
        try:
            keep_prob = keep_prob_from_rate(module.p, f"{type(module).__name__}.p")
        except (TypeError, ValueError):
            keep_prob = None
        return names.get(kind, kind), keep_prob, rule
    if not _match_name(module):
        return None
    keep_prob, attr = _attribute_keep_prob(module)
    if attr is None:
        return None
    name = type(module).__name__
    lowered = name.lower()
    kind = "drop_path" if any(m in lowered for m in ("droppath", "drop_path", "stochasticdepth")) else "custom"
    if "dropblock" in lowered:
        # DropBlock needs its block size; without one it is an ordinary custom site.
        bs = getattr(module, "block_size", None)
        if isinstance(bs, numbers.Integral) and not isinstance(bs, bool):
            return "dropblock", keep_prob, f"class name {name} with attributes {attr} and block_size = {bs}"
    reads = "keep probability" if attr in KEEP_ATTRIBUTES else "drop rate"
    return kind, keep_prob, f"class name {name} with attribute {attr} (read as the {reads})"


def listed_sites(sites, named, classify, what="module"):
    """The sites a user listed, for any framework: ``sites`` are paths, or path -> Implementation fields.

    ``named`` maps paths to modules (layers); ``classify(module)`` is the framework's rule
    (``(kind, keep_prob, rule)`` or None: then the site is ``"user"``, with no keep_prob unless the
    fields give one). ValueError for a path that is not in ``named`` (with the closest names),
    TypeError for fields that are not a dict.
    """
    listed = dict(sites) if isinstance(sites, Mapping) else {s: {} for s in sites}
    out = []
    for path, overrides in listed.items():
        if not isinstance(path, str) or path not in named:
            close = difflib.get_close_matches(str(path), [n for n in named if n and n != ROOT], n=3)
            raise ValueError(f"`sites` names {path!r}, which is no {what} of the model"
                             + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""))
        if not isinstance(overrides, Mapping):
            raise TypeError(f"`sites[{path!r}]` must be a dict of Implementation fields; got {overrides!r}")
        kind, keep_prob, rule = classify(named[path]) or ("user", None, "listed by the user")
        out.append(_site(path, named[path], kind, keep_prob, rule, overrides))
    return out


def _site(path, module, kind, keep_prob, rule, overrides):
    overrides = dict(overrides)
    if kind == "drop_path":
        overrides.setdefault("shared_axes", "non_batch")  # one mask per sample
    if kind == "dropblock":
        overrides.setdefault("block_size", int(module.block_size))
    if "keep_prob" in overrides:
        keep_prob = float(overrides["keep_prob"])
    return DropoutSite(path, kind, keep_prob, rule, module, overrides)


def find_sites(model, sites=None):
    """The dropout sites of ``model``, in module order.

    The rule: a module is a site if it is an instance of a torch dropout class (``nn.Dropout``,
    ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout`` or a subclass), or if
    its class name contains ``Dropout``, ``DropPath``, ``StochasticDepth`` or ``DropBlock`` (any case) *and* it
    has a numeric attribute ``keep_prob`` (read as the keep probability) or ``p``, ``drop_prob``,
    ``drop_rate``, ``rate``, ``dropout_rate`` (read as the drop rate: keep_prob = 1 − rate). A
    DropPath / StochasticDepth class is held to one mask per sample (``shared_axes="non_batch"``);
    a DropBlock class with an integer ``block_size`` is a ``"dropblock"`` site, verified by
    :func:`~stats_dropout.verification.dropblock.verify_dropblock` on ``(..., H, W)`` inputs.
    Modules inside a site are not sites of their own. Functional calls (``F.dropout`` in a
    module's forward) are found by :func:`capture`, not here.

    Parameters
    ----------
    sites : list of str or dict, optional
        Only these module paths (``model.named_modules()`` names); a dict maps each path to
        Implementation fields for its battery (``keep_prob``, ``contract``, ``shared_axes``,
        ``channel_axis``), needed for a module the rule does not recognise.

    Raises
    ------
    ValueError
        A listed path that is no module of the model (with the closest names).
    """
    named = dict(model.named_modules())
    if sites is not None:
        return listed_sites(sites, named, classify)
    out = []
    for path, module in named.items():
        if any(path.startswith(s.path + ".") for s in out):
            continue
        found = classify(module)
        if found is not None:
            out.append(_site(path or ROOT, module, *found, {}))
    return out


def call_model(model, batch):
    """``model(batch)``, ``model(**batch)`` for a mapping, ``model(*batch)`` for a tuple or list."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


@contextlib.contextmanager
def module_stack(model, pre=None, post=None):
    """Hooks on every module of ``model`` keeping the stack of paths being run.

    ``pre(path, module, args, kwargs)`` and ``post(path, module, output)`` are called on each
    call; the yielded list is the stack (innermost last).
    """
    stack, handles = [], []
    for path, module in model.named_modules():
        path = path or ROOT

        def push(mod, args, kwargs, _path=path):
            stack.append(_path)
            if pre is not None:
                pre(_path, mod, args, kwargs)

        def pop(mod, args, output, _path=path):
            if stack and stack[-1] == _path:
                stack.pop()
            if post is not None:
                post(_path, mod, output)

        handles.append(module.register_forward_pre_hook(push, with_kwargs=True))
        handles.append(module.register_forward_hook(pop, always_call=True))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def functional_recorder(stack, record):
    """Replace torch.nn.functional's dropout functions by wrappers calling ``record(name, caller, args)``."""
    F = import_torch().nn.functional
    originals = {name: getattr(F, name) for name in FUNCTIONAL_CONTRACTS if hasattr(F, name)}

    def wrap(name, original):
        signature = inspect.signature(original)

        def wrapper(*args, **kwargs):
            try:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
            except TypeError:
                arguments = None
            if arguments is not None:
                record(name, stack[-1] if stack else ROOT, arguments)
            return original(*args, **kwargs)

        wrapper.__wrapped__ = original
        return wrapper

    for name, original in originals.items():
        setattr(F, name, wrap(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(F, name, original)


def _first_tensor(torch, args, kwargs):
    values = list(args) + list(kwargs.values())
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    return (tensors[0] if tensors else None), len(values) - 1


def capture(model, batch, sites, *, seed=0, functional=True):
    """Run ``model`` once in train mode on ``batch``; record each site's first input.

    Returns
    -------
    Capture
        ``inputs[path] = (clone of the first tensor argument, number of other arguments)``,
        ``calls[path]`` = how many times the site ran, and ``functional[(caller, function)]``: the
        first call of each ``torch.nn.functional`` dropout function made directly by a module's
        own forward (not by a site's nor by a module the rule of :func:`find_sites` calls a
        site), with its input. torch's RNG is seeded with ``seed`` and
        restored afterwards; every module's mode is restored.
    """
    torch = import_torch()
    by_path = {s.path: s for s in sites}
    # A dropout module's own F.dropout call (nn.Dropout.forward) is that module's business, listed
    # or not: only other modules' calls are functional sites.
    own = set(by_path) | {path or ROOT for path, m in model.named_modules() if classify(m) is not None}
    inputs, calls, functional_calls = {}, {}, {}

    def pre(path, module, args, kwargs):
        if path in by_path:
            calls[path] = calls.get(path, 0) + 1
            if path not in inputs:
                tensor, extra = _first_tensor(torch, args, kwargs)
                inputs[path] = (None if tensor is None else tensor.detach().clone(), extra)

    def record(name, caller, arguments):
        if caller in own:
            return
        key = (caller, name)
        if key in functional_calls:
            functional_calls[key].calls += 1
            return
        x = arguments.get("input")
        functional_calls[key] = FunctionalCall(
            caller, name, float(arguments.get("p", 0.5)), bool(arguments.get("training")),
            bool(arguments.get("inplace")), input=x.detach().clone() if isinstance(x, torch.Tensor) else None)

    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed % 2**63)
            model.train()
            with module_stack(model, pre=pre) as stack:
                with functional_recorder(stack, record) if functional else contextlib.nullcontext():
                    output = guarded_call("the train-mode forward model(batch)", call_model, model, batch)
    finally:
        for m, training in modes:
            m.training = training
    return Capture(inputs, calls, functional_calls, output)


@contextlib.contextmanager
def patched_methods(instances, method, record, stop=()):
    """Wrap ``method`` of the classes of ``instances`` so that their calls are recorded, by identity.

    Used by the flax nnx (``__call__``) and keras (``call``) model paths, which have no hooks:
    every class in the MRO of an instance's type that defines ``method`` itself (up to, not
    including, a class of ``stop``) is patched **at class level**, and the originals are put
    back on exit, even if the body raises. Only calls on the given instances are recorded, and
    only the outermost one (a subclass's method calling ``super()``'s is one call).

    Parameters
    ----------
    instances : dict
        ``{id(instance): (path, instance)}``.
    method : str
    record : callable
        ``record(path, args, kwargs, output)`` after each recorded call (``args`` without self).
    stop : tuple of type
        Classes whose (and whose bases') ``method`` is left alone.
    """
    active = set()
    patched = []
    for cls in _site_classes(instances, stop):
        if method in cls.__dict__:
            patched.append(cls)
    originals = [(cls, cls.__dict__[method]) for cls in patched]
    paths = {key: path for key, (path, _) in instances.items()}

    def wrap(original):
        def wrapper(self, *args, **kwargs):
            key = id(self)
            if key not in paths or key in active:
                return original(self, *args, **kwargs)
            active.add(key)
            try:
                output = original(self, *args, **kwargs)
            finally:
                active.discard(key)
            record(paths[key], args, kwargs, output)
            return output

        wrapper.__wrapped__ = original
        return wrapper

    for cls, original in originals:
        setattr(cls, method, wrap(original))
    try:
        yield
    finally:
        for cls, original in originals:
            setattr(cls, method, original)


def _site_classes(instances, stop):
    """The classes of the instances' MROs, each before the first class of ``stop``."""
    out = []
    for _, obj in instances.values():
        for cls in type(obj).__mro__:
            if cls in stop or cls is object:
                break
            if cls not in out:
                out.append(cls)
    return out
