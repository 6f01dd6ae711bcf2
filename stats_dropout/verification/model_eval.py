"""Where a torch model's eval mode is still random: two eval forwards, compared module by module.

:func:`eval_randomness` runs the model twice in eval mode (torch seeded differently before each)
with the functional recorder of :mod:`~stats_dropout.verification.model_sites` on, and, when the
outputs differ, twice more recording every module's first input and output. Inside a
:func:`~stats_dropout._internal.timeouts.time_limit` block (``verify-model --timeout``) each
forward runs under its limit; one that hangs is reported as a finding, not raised.
"""

from __future__ import annotations

from collections.abc import Mapping

from stats_dropout._internal.timeouts import CallTimeout, guarded_call
from stats_dropout.verification.adapters.pytorch import import_torch
from stats_dropout.verification.model_sites import (
    ROOT,
    FunctionalCall,
    call_model,
    functional_recorder,
    module_stack,
)

__all__ = ["eval_randomness", "same", "tensors", "same_arrays", "compare_site_passes"]


def _tensors(torch, obj):
    """The tensors in a (nested) output: tuples, lists, dicts, transformers' ModelOutput."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(torch, v)]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _tensors(torch, v)]
    return []


def tensors(torch, obj):
    """The tensors of a (nested) model output, in order (public: :mod:`~stats_dropout.verification.mc_dropout`)."""
    return _tensors(torch, obj)


def same(torch, a, b):
    """Every tensor of ``a`` equals the one of ``b`` (NaN equal to NaN), shapes included."""
    ta, tb = _tensors(torch, a), _tensors(torch, b)
    if len(ta) != len(tb):
        return False
    for x, y in zip(ta, tb):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point() or x.is_complex():
            if not bool(((x == y) | (x.isnan() & y.isnan())).all()):
                return False
        elif not torch.equal(x, y):
            return False
    return True


def _clone(torch, obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        return {k: _clone(torch, v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_clone(torch, v) for v in obj]
    return None


def _eval_pass(model, batch, seed, record_modules):
    """One eval forward: ``(output, functional calls with training=True, {path: (inputs, output)})``."""
    torch = import_torch()
    seen, active = {}, {}

    def pre(path, module, args, kwargs):
        if record_modules and path not in seen:
            seen[path] = [_clone(torch, (args, kwargs)), None]

    def post(path, module, output):
        if record_modules and path in seen and seen[path][1] is None:
            seen[path][1] = _clone(torch, output)

    def record(name, caller, arguments):
        if arguments.get("training") and float(arguments.get("p", 0.5)) > 0:
            active.setdefault((caller, name), FunctionalCall(
                caller, name, float(arguments.get("p", 0.5)), True, bool(arguments.get("inplace"))))

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed % 2**63)
        with module_stack(model, pre=pre, post=post) as stack:
            with functional_recorder(stack, record):
                output = guarded_call("the eval-mode forward model(batch)", call_model, model, batch)
    return output, active, seen


def eval_randomness(model, batch, *, seed=0):
    """Whether two eval-mode forwards agree, and which modules are random if not.

    Returns
    -------
    deterministic : bool or None
        The two outputs (torch seeded differently before each) are equal, tensor by tensor.
        None when a forward did not return within the enclosing time limit: then ``found`` is
        ``[("<root>", "the eval-mode forward ... did not return within ...")]``.
    found : list of (path, how)
        Functional dropout calls made with ``training=True`` (and p > 0) while the model is in
        eval mode (the classic ``F.dropout(x, p)`` bug: torch's default is ``training=True``),
        from either pass; and, when the outputs differ, the innermost modules whose inputs were
        equal in both passes but whose outputs were not (first call of each). A second random
        module downstream of the first sees differing inputs and is found only by the first
        rule (or by its own battery, if it is a site).
    """
    torch = import_torch()
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        return _compare_passes(torch, model, batch, seed)
    except CallTimeout as exc:
        return None, [(ROOT, str(exc))]
    finally:
        for m, training in modes:
            m.training = training


def _compare_passes(torch, model, batch, seed):
    """The two eval passes compared, and the findings (see :func:`eval_randomness`)."""
    out1, active1, _ = _eval_pass(model, batch, seed, False)
    out2, active2, _ = _eval_pass(model, batch, (seed + 1) % 2**63, False)
    deterministic = same(torch, out1, out2)
    found = {}
    for (caller, name), call in {**active1, **active2}.items():
        found[caller] = (f"calls F.{name}(p={call.p:g}) with training=True while the model is in eval mode "
                         "(torch's default for F.dropout is training=True: pass training=self.training)")
    if not deterministic:
        _, _, seen1 = _eval_pass(model, batch, seed, True)
        _, _, seen2 = _eval_pass(model, batch, (seed + 1) % 2**63, True)
        random = [p for p in seen1 if p in seen2 and same(torch, seen1[p][0], seen2[p][0])
                  and not same(torch, seen1[p][1], seen2[p][1])]
        for path in random:
            prefix = "" if path == ROOT else path + "."
            inner = [q for q in random if q != path and (path == ROOT or q.startswith(prefix))]
            if not inner and path not in found:
                found[path] = ("its eval-mode output differs between two forwards on the same input "
                               "(randomness left on in eval mode)")
    return deterministic, sorted(found.items())


def same_arrays(a, b):
    """Two lists of numpy arrays are equal, shapes and dtypes included (NaN equal to NaN); the
    framework-neutral :func:`same` of the flax nnx and keras model paths."""
    import numpy as np

    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return False
    return True


def compare_site_passes(out1, out2, seen1, seen2, eval_flags=None):
    """Eval-mode findings of the flax nnx and keras model paths from two recorded eval forwards.

    Parameters
    ----------
    out1, out2 : list of numpy arrays
        The two forwards' outputs (flattened).
    seen1, seen2 : dict
        ``{path: (inputs, output)}`` of each recorded module's first call in each pass (lists of
        arrays); paths are ``.``-joined, ``"<root>"`` the model.
    eval_flags : dict, optional
        ``{path: how}`` for sites called with an explicit train flag in eval mode
        (``deterministic=False``, ``training=True``): named even when the outputs agree.

    Returns
    -------
    deterministic : bool
    found : list of (path, how)
        The flagged sites, and the innermost recorded modules whose inputs were equal in both
        passes but whose outputs were not (as :func:`eval_randomness` for torch); when the outputs
        differ and nothing explains it, one ``("<root>", ...)`` finding.
    """
    deterministic = same_arrays(out1, out2)
    found = dict(eval_flags or {})
    random = [p for p in seen1 if p in seen2 and same_arrays(seen1[p][0], seen2[p][0])
              and not same_arrays(seen1[p][1], seen2[p][1])]
    for path in random:
        inner = [q for q in random if q != path and (path == ROOT or q.startswith(path + "."))]
        covered = any(q == path or q.startswith(path + ".") for q in found) if path != ROOT else bool(found)
        if not inner and not covered:
            found[path] = ("its eval-mode output differs between two forwards on the same input "
                           "(randomness left on in eval mode)")
    if not deterministic and not found:
        found[ROOT] = "the eval-mode output differs between two forwards (randomness left on in eval mode)"
    return deterministic, sorted(found.items())
