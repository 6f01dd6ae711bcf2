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

import functools
import inspect
import math
import sys

from stats_dropout._internal.threads import single_threaded_blas
from stats_dropout.cli.errors import UsageError, hang_line, timeout_arg
from stats_dropout.cli.learner import print_summary, tuple_return
from stats_dropout.cli.targets import load_target, restored_sys_path

__all__ = ["run", "load_target"]


#: Hidden layers of the course network that get a battery each.
COURSE_LAYERS = (1, 2)

#: Backward functions looked up next to the forward function, per convention.
BACKWARD_NAMES = {"course": "backward_propagation_with_dropout", "cs231n": "dropout_backward"}



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
    from stats_dropout._internal.validation import keep_probs_iv

    try:
        checked = keep_probs_iv(tuple(values), "--keep-prob", distinct=True)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return checked[0] if len(checked) == 1 else checked


def _probe_call(func):
    """``func`` for the one probe call of :func:`~stats_dropout.cli.learner.tuple_return`: under
    the run's time limit, and with ``SystemExit`` (``sys.exit()`` in the learner's code) turned into
    an exception it leaves for the battery to report, never an exit of the command."""
    from stats_dropout._internal.timeouts import describe_call, guarded_call

    @functools.wraps(func)
    def probe(*args):
        try:
            return guarded_call(describe_call("train", args) + " on a small probe", func, *args)
        except (KeyboardInterrupt, Exception):
            raise
        except BaseException as exc:  # noqa: BLE001 — SystemExit and kin: the battery's to report
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None

    return probe


def _run_battery(verify_dropout, train, evaluate, backward, extra, args, keep_prob, seed):
    kwargs = {"keep_prob": keep_prob, "contract": args.contract, "seed": seed, "backward": backward, **extra}
    try:
        return verify_dropout(train, evaluate, **kwargs)
    except (TypeError, ValueError) as exc:
        # Raised by the battery's argument validation (a user's implementation that raises is
        # a failed check, not an exception): a usage error.
        raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None





def run(args):
    """Handle ``stats-dropout verify``; return the exit code (0 pass, 1 fail).

    Every call to the learner's code (the probe call, then the batteries) runs under one time
    limit (``--timeout``): after a hang nothing more is called, so the command ends about
    ``--timeout`` seconds after the hang began, exit code 1, with one line on stderr.
    """
    from stats_dropout._internal.timeouts import time_limit
    from stats_dropout._internal.validation import seed_iv

    keep_prob = _keep_prob_arg(args.keep_prob)
    try:
        seed = seed_iv(args.seed, "--seed")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    timeout = timeout_arg(args)
    details = getattr(args, "details", False)
    with restored_sys_path(), time_limit(timeout) as guard:
        module, func = load_target(args.target)
        convention = _detect(func, args.convention)
        _check_signature(func, convention, args.target)
        batteries = _batteries(args, module, func, convention)

        from stats_dropout.verification.battery import verify_dropout

        contract = batteries[0][4].get("contract", args.contract)
        note = None
        if convention == "plain":
            note = tuple_return(_probe_call(func), keep_prob if isinstance(keep_prob, float) else keep_prob[0])
        if details:
            print(f"stats-dropout verify {args.target}: convention {convention}"
                  + (" (detected)" if args.convention == "auto" else "")
                  + f", contract {contract}, keep_prob {keep_prob}, seed {seed}")
            if note:
                print(f"Diagnosis: {note}")
        failed = False
        runs = []
        with single_threaded_blas():
            for title, train, evaluate, backward, extra in batteries:
                result = _run_battery(verify_dropout, train, evaluate, backward, extra, args, keep_prob, seed)
                if details:
                    if title:
                        print(f"\n== {title} ==")
                    print(result, flush=True)
                runs.append((title.split(" (", 1)[0] if title.startswith("layer ") else title, result))
                failed = failed or not result.passed
        if not details:
            print_summary(args, convention, keep_prob, seed, contract, runs, func, note)
    hung = hang_line("verify", guard, timeout)
    if hung:
        print(hung, file=sys.stderr, flush=True)
    return 1 if failed or note or hung else 0
