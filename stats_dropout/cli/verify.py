"""``stats-dropout verify``: run the battery on a learner's dropout function.

``run(args) -> int`` is the handler :mod:`stats_dropout.cli` delegates to. Exit codes: 0 every
check passed, 1 a check failed, 2 usage error (raised as :class:`stats_dropout.cli.UsageError`
and printed in one line by ``main``).

By default a learner reads about ten lines (``VerificationResult.summary``: the verdict, the
diagnosis with the check that shows it, its knock-on failures on one line, what else failed);
``--details`` prints every check's table as before. The course network's two dropout layers are
summarised together, and a course function that reseeds numpy's RNG is told that its arithmetic
is right and that the grader needs the seed. A notebook target (``homework.ipynb:f``) runs only
the notebook's imports and definitions (:mod:`stats_dropout.cli.notebook`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import itertools
import math
import os
import re
import shlex
import sys

from stats_dropout.cli.errors import UsageError

__all__ = ["run", "load_target"]


#: Hidden layers of the course network that get a battery each.
COURSE_LAYERS = (1, 2)

#: Backward functions looked up next to the forward function, per convention.
BACKWARD_NAMES = {"course": "backward_propagation_with_dropout", "cs231n": "dropout_backward"}

_file_counter = itertools.count()


def _split_target(target, option):
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise UsageError(
            f"`{option}` must look like MODULE:CALLABLE or path/to/file.py:CALLABLE; got {target!r}")
    return module_part, attr


def _is_path(module_part):
    return module_part.endswith((".py", ".ipynb")) or os.sep in module_part or "/" in module_part


def _import_file(path):
    if not os.path.isfile(path):
        raise UsageError(f"file not found: {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    # A learner's file imports its neighbours (helper modules next to the notebook): make
    # them importable for the duration of the run.
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = f"_stats_dropout_target_{next(_file_counter)}_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 — any failure to import is the user's to fix
        sys.modules.pop(name, None)
        raise UsageError(f"importing {path!r} failed: {type(exc).__name__}: {exc}") from None
    return module


def _import_module(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"no module named {name!r} (is it on PYTHONPATH, or did you mean a file path?)") from None
        raise UsageError(f"importing {name!r} failed: ModuleNotFoundError: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None


def load_target(target, option="target"):
    """Import ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``; return ``(module, callable)``.

    Raises
    ------
    UsageError
        Malformed target, missing module or file, an import that raises, a missing attribute
        (the message lists the module's callables) or an attribute that is not callable.
    """
    module_part, attr = _split_target(target, option)
    if module_part.endswith(".ipynb"):
        from stats_dropout.cli.notebook import load_notebook

        module = load_notebook(module_part)
    else:
        module = _import_file(module_part) if _is_path(module_part) else _import_module(module_part)
    where = module_part
    if not hasattr(module, attr):
        available = sorted(k for k, v in vars(module).items()
                           if callable(v) and not k.startswith("_") and not inspect.isclass(v)
                           and not inspect.ismodule(v))
        hint = f"; its functions: {', '.join(available)}" if available else ""
        raise UsageError(f"{where!r} has no attribute {attr!r}{hint}")
    func = getattr(module, attr)
    if not callable(func):
        raise UsageError(f"{where}:{attr} is not callable; got {type(func).__name__}")
    return module, func


def _is_torch_module(obj):
    # Only a target that is already a torch object can be one: never import torch for the check.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _detect(func, convention):
    from stats_dropout.verification.adapters.ready import detect_convention

    if _is_torch_module(func):
        if convention not in ("auto", "plain"):
            raise UsageError(f"the target is a torch module; --convention {convention} does not apply")
        return "torch"
    if convention != "auto":
        return convention
    return detect_convention(func)


def _check_signature(func, convention, target):
    """Catch a convention that cannot possibly fit before the battery turns it into 40 failures."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return
    if convention == "torch":
        return
    need = {"plain": 1, "course": 3, "cs231n": 2}[convention]
    try:
        sig.bind(*range(need))
    except TypeError:
        if convention == "plain":
            try:
                sig.bind(0, 0)
                return
            except TypeError:
                pass
        raise UsageError(
            f"{target} has signature {func.__name__}{sig}, which does not fit the {convention!r} convention "
            f"(expected {_SIGNATURES[convention]}); pass --convention") from None


_SIGNATURES = {
    "plain": "f(x) or f(x, keep_prob)",
    "course": "forward_propagation_with_dropout(X, parameters, keep_prob)",
    "cs231n": "dropout_forward(x, dropout_param)",
}


def _batteries(args, module, func, convention):
    """``(title, train, eval, backward, extra kwargs)`` for each battery to run."""
    from stats_dropout.verification import adapters

    backward_name = BACKWARD_NAMES.get(convention)
    backward_func = getattr(module, backward_name, None) if backward_name else None
    if backward_func is not None and not callable(backward_func):
        backward_func = None
    eval_func = None
    if args.eval is not None:
        _, eval_func = load_target(args.eval, "--eval")
    if convention == "torch":
        return [_torch_battery(args, func, eval_func)]
    if convention == "course":
        if eval_func is not None:
            raise UsageError("--eval does not apply to the course convention (its eval path is the "
                             "network without dropout); omit it")
        out = []
        for layer in COURSE_LAYERS:
            backward = (adapters.course_backward(func, backward_func, layer=layer)
                        if backward_func is not None else None)
            out.append((f"layer {layer} (A{layer} after dropout, read from the cache)",
                        adapters.from_course(func, layer=layer), None, backward,
                        {"example_input": adapters.course_probe(args.seed),
                         "validates_keep_prob": False}))
        return out
    if convention == "cs231n":
        train, evaluate = adapters.from_cs231n(func, p_means=args.p_means)
        backward = (adapters.cs231n_backward(func, backward_func, p_means=args.p_means)
                    if backward_func is not None else None)
        return [(f"dropout_param['p'] = {args.p_means} probability", train,
                 eval_func if eval_func is not None else evaluate, backward, {"validates_keep_prob": False})]
    return [("", func, eval_func, None, {"validates_keep_prob": getattr(args, "require_validation", False)})]


def _torch_battery(args, module, eval_func):
    """A torch dropout module knows its keep_prob and contract; the command line must agree."""
    from stats_dropout.verification import adapters

    if eval_func is not None:
        raise UsageError("--eval does not apply to a torch module (its eval mode is the eval path); omit it")
    train, evaluate = adapters.from_torch(module)
    try:
        spec = adapters.torch_spec(module)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    # 1 - p rounds (1 - 0.7 is 0.30000000000000004): agree up to rounding, then use the module's.
    if len(args.keep_prob) != 1 or not math.isclose(args.keep_prob[0], spec["keep_prob"], rel_tol=1e-9):
        raise UsageError(f"the module drops with p={module.p}, i.e. keep_prob {spec['keep_prob']:g}; "
                         f"got --keep-prob {' '.join(f'{v:g}' for v in args.keep_prob)}")
    if args.contract not in ("inverted", spec["contract"]):  # "inverted" is the default
        raise UsageError(f"{type(module).__name__} follows the {spec['contract']!r} contract; "
                         f"got --contract {args.contract}")
    return (type(module).__name__, train, evaluate, None,
            {"keep_prob": spec["keep_prob"], "contract": spec["contract"], "shared_axes": spec["shared_axes"]})


def _keep_prob_arg(values):
    from stats_dropout._internal.validation import keep_prob_iv

    try:
        checked = tuple(keep_prob_iv(v, "--keep-prob") for v in values)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return checked[0] if len(checked) == 1 else checked


@contextlib.contextmanager
def _restored_sys_path():
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved


@contextlib.contextmanager
def _single_threaded_blas():
    """Limit BLAS to one thread while the battery runs, if threadpoolctl is installed.

    The implementations under test make thousands of small matrix products (the course
    network); threads only add synchronisation to them, and on a loaded machine a lot of it.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _run_battery(verify_dropout, train, evaluate, backward, extra, args, keep_prob, seed):
    kwargs = {"keep_prob": keep_prob, "contract": args.contract, "seed": seed, "backward": backward, **extra}
    try:
        return verify_dropout(train, evaluate, **kwargs)
    except (TypeError, ValueError) as exc:
        # Raised by the battery's argument validation (a user's implementation that raises is
        # a failed check, not an exception): a usage error.
        raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


#: Width of the default output (terminal columns).
WIDTH = 100

#: Probe for the one call that looks at what a plain function returns (a tuple, say).
_PROBE = tuple(range(1, 33))


def _describe(value):
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"array {tuple(shape)}"
    return type(value).__name__


def tuple_return(func, keep_prob):
    """A sentence if a plain ``f(x)`` / ``f(x, keep_prob)`` returns a tuple or list, else None.

    One call on a small float probe; an exception is left for the battery to report.
    """
    import numpy as np

    x = np.array(_PROBE, dtype=np.float64).reshape(4, 8) / 32
    try:
        takes = True
        try:
            inspect.signature(func).bind(x, keep_prob)
        except TypeError:
            takes = False
        except ValueError:
            pass
        out = func(x, keep_prob) if takes else func(x)
    except Exception:  # noqa: BLE001 — the battery reports it, with the check that saw it
        return None
    if not isinstance(out, (tuple, list)):
        return None
    kind = "tuple" if isinstance(out, tuple) else "list"
    parts = ", ".join(_describe(v) for v in out[:3]) + (", ..." if len(out) > 3 else "")
    return (f"train returned a {kind} of {len(out)}; return only the output array (it returned {parts}: "
            "write `return A`, not `return A, D`)")


def _tag(check, label):
    base, bracket, rest = check.partition("[")
    return f"{base}[{label}, {rest}" if bracket else f"{base}[{label}]"


def _merged(runs):
    """One result for the learner's summary out of several batteries (the course's layers).

    Check names and diagnosis lines carry their layer (``check_mean[layer 1, keep_prob=0.8]``,
    ``layer 1 at keep_prob=0.8: ...``); the summary groups them back by name and text.
    """
    from stats_dropout.inference.results import VerificationResult

    if len(runs) == 1:
        return runs[0][1]
    checks, diagnosis, warnings, na = [], [], [], []
    for label, result in runs:
        checks += [dataclasses.replace(c, check=_tag(c.check, label)) for c in result.checks]
        diagnosis += [f"{label} {d}" if d.startswith("at keep_prob=") else f"{label}: {d}"
                      for d in result.diagnosis]
        warnings += [w for w in result.warnings if w not in warnings]
        na += [n for n in result.not_applicable if n not in na]
    first = runs[0][1]
    return VerificationResult(tuple(checks), first.contract, first.seed,
                              sum(r.false_fail_rate for _, r in runs), max(r.false_pass_rate for _, r in runs),
                              tuple(warnings), tuple(diagnosis), first.convention, tuple(na),
                              first.per_check_false_fail_rate)


_SEED_CALL = re.compile(r"\b(?:np\.random|numpy\.random|random)\.seed\s*\(.*\)")


def reseed_line(func):
    """``(line number, code, file)`` of the first ``np.random.seed(...)`` in ``func``'s source, or None."""
    try:
        lines, start = inspect.getsourcelines(inspect.unwrap(func))
        where = inspect.getsourcefile(func) or ""
    except (OSError, TypeError):
        return None
    for i, line in enumerate(lines):
        code = line.split("#", 1)[0]
        m = _SEED_CALL.search(code)
        if m:
            return start + i, m.group(0).strip(), where
    return None


def _course_reseed_note(func, where_name):
    found = reseed_line(func)
    if found is None:
        return None
    line, code, path = found
    place = where_name(path, line)
    return (f"{code} {place} reseeds numpy's RNG, so every call drops the same units: every "
            "training iteration trains one sub-network. The course's grader needs that seed to match "
            "its expected outputs: keep it in the graded notebook, remove it only outside it")


def _with_course_note(result, func, where_name):
    """The course template's reseed, said as the course needs it said (see the module docstring)."""
    if not any("every call drops the same units" in d for d in result.diagnosis):
        return result
    note = _course_reseed_note(func, where_name)
    if note is None:
        return result
    out = []
    for d in result.diagnosis:
        if "every call drops the same units" in d:
            head, sep, _ = d.partition(": ")
            d = f"{head}: {note}" if sep and "keep_prob=" in head else note
        out.append(d)
    return dataclasses.replace(result, diagnosis=tuple(out))


def _where_name(target_file):
    def name(path, line):
        from stats_dropout.cli.notebook import notebook_place

        nb = notebook_place(path, line)
        if nb:
            return nb
        shown = os.path.basename(path) if path else os.path.basename(target_file)
        return f"(line {line} of {shown})"

    return name


def _shown_target(target, room):
    """The target as typed, or relative to the working directory, or its file name: what fits."""
    module_part, _, attr = target.rpartition(":")
    if len(target) <= room or not _is_path(module_part):
        return target
    rel = os.path.relpath(module_part) if os.path.isabs(module_part) else module_part
    if len(rel) + len(attr) + 1 <= room and not rel.startswith(".."):
        return f"{rel}:{attr}"
    return f"{os.path.basename(module_part)}:{attr}"


def _command(args):
    """The command that prints the full table (the learner's own, plus --details)."""
    parts = ["stats-dropout", "verify", args.target, "--keep-prob", *(f"{v:g}" for v in args.keep_prob)]
    for option, value, default in (("--eval", args.eval, None), ("--contract", args.contract, "inverted"),
                                   ("--convention", args.convention, "auto"), ("--p-means", args.p_means, "keep"),
                                   ("--seed", args.seed, 0)):
        if value != default:
            parts += [option, str(value)]
    if getattr(args, "require_validation", False):
        parts.append("--require-validation")
    return " ".join(shlex.quote(p) for p in parts + ["--details"])


def _print_summary(args, convention, keep_prob, seed, contract, runs, func, note):
    import textwrap

    rest = (f": convention {convention}" + (" (detected)" if args.convention == "auto" else "")
            + (f", contract {contract}" if contract != "inverted" else "") + f", keep_prob {keep_prob}")
    head = _shown_target(args.target, WIDTH - len(rest)) + rest
    lines = textwrap.wrap(head, WIDTH, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    result = _merged(runs)
    if convention == "course":
        result = _with_course_note(result, func, _where_name(args.target.rpartition(":")[0]))
    if note:
        result = dataclasses.replace(result, diagnosis=(note,) + tuple(result.diagnosis))
    command = _command(args)
    details = (f"Full table: {command}" if len(command) + 12 <= WIDTH
               else "Full table: the same command with --details")
    print("\n".join(lines + [result.summary(WIDTH, details=details)]), flush=True)
    return result


def run(args):
    """Handle ``stats-dropout verify``; return the exit code (0 pass, 1 fail)."""
    from stats_dropout._internal.validation import seed_iv

    keep_prob = _keep_prob_arg(args.keep_prob)
    try:
        seed = seed_iv(args.seed, "--seed")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    details = getattr(args, "details", False)
    with _restored_sys_path():
        module, func = load_target(args.target)
        convention = _detect(func, args.convention)
        _check_signature(func, convention, args.target)
        batteries = _batteries(args, module, func, convention)

        from stats_dropout.verification.battery import verify_dropout

        contract = batteries[0][4].get("contract", args.contract)
        note = None
        if convention == "plain":
            note = tuple_return(func, keep_prob if isinstance(keep_prob, float) else keep_prob[0])
        if details:
            print(f"stats-dropout verify {args.target}: convention {convention}"
                  + (" (detected)" if args.convention == "auto" else "")
                  + f", contract {contract}, keep_prob {keep_prob}, seed {seed}")
            if note:
                print(f"Diagnosis: {note}")
        failed = False
        runs = []
        with _single_threaded_blas():
            for title, train, evaluate, backward, extra in batteries:
                result = _run_battery(verify_dropout, train, evaluate, backward, extra, args, keep_prob, seed)
                if details:
                    if title:
                        print(f"\n== {title} ==")
                    print(result, flush=True)
                runs.append((title.split(" (", 1)[0] if title.startswith("layer ") else title, result))
                failed = failed or not result.passed
        if not details:
            _print_summary(args, convention, keep_prob, seed, contract, runs, func, note)
    return 1 if failed or note else 0
