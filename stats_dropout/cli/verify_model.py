"""``stats-dropout verify-model MODULE:FACTORY``: every dropout site of a model.

``FACTORY()`` returns ``(model, example_batch)``, the model a torch ``nn.Module``, a flax
``nnx.Module`` or a keras model; it is verified by
:func:`stats_dropout.verification.models.verify_model` and the per-site table printed.
``run(args) -> int`` is the handler :mod:`stats_dropout.cli` delegates to. Exit codes: 0 every
site passed and eval mode is deterministic, 1 a site failed or eval mode is random, 2 usage
error (raised as :class:`~stats_dropout.cli.errors.UsageError`): a malformed target, a factory
that raises or returns something else, an unknown ``--sites`` path, a model that raises on its
example batch, torch not installed. Every call to the model runs under ``--timeout`` (default
60 s): a call that hangs fails its site (or the eval-mode check) with a message naming it, nothing
more of the model is called, and the command exits 1 with one line on stderr.
"""

from __future__ import annotations

import sys

from stats_dropout.cli.errors import UsageError, add_timeout_argument, hang_line, timeout_arg
from stats_dropout.cli.targets import restored_sys_path

__all__ = ["run", "add_arguments", "load_factory", "mc_dropout_arg"]


def add_arguments(parser):
    """The options of ``verify-model`` (what ``stats_dropout.cli`` adds to its sub-parser)."""
    parser.add_argument("target", help="MODULE:FACTORY or path/to/file.py:FACTORY; FACTORY() returns "
                                       "(model, example_batch)")
    parser.add_argument("--sites", nargs="+", default=None,
                        help="module paths to verify (default: every dropout site found by the rule)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--false-fail-rate", type=float, default=1e-6, dest="false_fail_rate",
                        help="false-fail rate of each site's battery; the model's total is at most this "
                             "times the number of sites (default: 1e-6)")
    parser.add_argument("--mc-dropout", nargs="*", default=None, dest="mc_dropout", metavar="PATH",
                        help="eval mode is random by design (MC dropout): alone for the whole model, or the "
                             "module paths that are; their eval-mode randomness is then expected and checked "
                             "to converge (default: only modules with an attribute mc_dropout = True); "
                             "it takes every word after it, so put the target first")
    parser.add_argument("--csv", default=None, help="also write the per-site table to this CSV file")
    add_timeout_argument(parser)
    return parser


def load_factory(target):
    """``(model, example_batch)`` from calling the factory named by ``target`` (under the enclosing
    time limit, if any)."""
    from stats_dropout._internal.timeouts import guarded_call
    from stats_dropout.cli.targets import load_target

    _, factory = load_target(target)
    try:
        made = guarded_call(f"{target}()", factory)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 — the user's factory failing (sys.exit too) is theirs to fix
        raise UsageError(f"{target}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(made, tuple) or len(made) != 2:
        raise UsageError(f"{target}() must return (model, example_batch); got {type(made).__name__}"
                         + (f" of length {len(made)}" if isinstance(made, tuple) else ""))
    if not _is_model(made[0]):
        raise UsageError(f"{target}() must return a torch.nn.Module, flax nnx.Module or keras model first; "
                         f"got {type(made[0]).__name__}")
    return made


def _is_model(obj):
    """A model of a framework the factory has imported (none is imported here)."""
    torch, nnx, keras = (sys.modules.get(name) for name in ("torch", "flax.nnx", "keras"))
    return bool((torch is not None and isinstance(obj, torch.nn.Module))
                or (nnx is not None and isinstance(obj, nnx.Module))
                or (keras is not None and isinstance(obj, keras.layers.Layer)))


def mc_dropout_arg(values):
    """``--mc-dropout`` as verify_model's ``mc_dropout``: None (absent), True (no paths), the paths."""
    if values is None:
        return None
    return True if len(values) == 0 else list(values)


def run(args):
    """Handle ``stats-dropout verify-model``; return the exit code (0 pass, 1 fail)."""
    from stats_dropout._internal.timeouts import CallTimeout, time_limit
    from stats_dropout._internal.validation import probability_iv, seed_iv

    try:
        seed = seed_iv(args.seed, "--seed")
        rate = probability_iv(args.false_fail_rate, "--false-fail-rate")
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    timeout = timeout_arg(args)
    if args.csv:
        from stats_dropout._internal.files import output_file_iv

        try:
            output_file_iv(args.csv, "--csv")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    with restored_sys_path(), time_limit(timeout) as guard:
        model, batch = load_factory(args.target)
        from stats_dropout.verification.models import verify_model

        try:
            result = verify_model(model, batch, sites=args.sites, seed=seed, false_fail_rate=rate,
                                  mc_dropout=mc_dropout_arg(args.mc_dropout))
        except CallTimeout as exc:  # a forward outside the batteries hung: a failure, not a usage error
            print(f"stats-dropout verify-model {args.target}: FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 — the model raising (sys.exit too) on its own example batch
            raise UsageError(f"the model raised on its example batch: {type(exc).__name__}: {exc}") from None
    print(f"stats-dropout verify-model {args.target}: seed {seed}")
    print(result, flush=True)
    if args.csv:
        from stats_dropout._internal.files import write_csv

        write_csv(result.to_frame(), args.csv)
    hung = hang_line("verify-model", guard, timeout)
    if hung:
        print(hung, file=sys.stderr, flush=True)
    return 0 if result.passed and not hung else 1
