"""The ``stats-dropout`` command line.

Exit codes: 0 success (all checks passed), 1 a check failed (a call that hangs beyond ``--timeout``
or raises, ``SystemExit`` included, is a failed check), 2 usage error (one line, no traceback;
also ``sys.exit()`` in the code under test outside any check, e.g. at import), 130 interrupted
(Ctrl-C; one line, and ``report`` resumes where it stopped).
"""

from __future__ import annotations

import argparse
import sys

from stats_dropout.cli import verify_model
from stats_dropout.cli.errors import UsageError, add_timeout_argument

__all__ = ["main", "UsageError"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="stats-dropout",
        description="Statistical verification of dropout: measured, with stated error rates.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("schemes", help="check every reference scheme across keep_prob and print a table")
    p.add_argument("--keep-probs", type=float, nargs="+", default=None,
                   help="keep probabilities (default: 0.1 0.2 ... 0.9 1.0)")
    p.add_argument("--schemes", nargs="+", default=None, help="scheme names (default: all)")
    p.add_argument("--relative-error", type=float, default=0.01,
                   help="smallest relative error each decision must detect (default: 0.01)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--csv", default=None, help="also write the tidy table to this CSV file")
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_schemes)

    # `verify`: handled by stats_dropout.cli.verify.run(args) -> exit code.
    p = sub.add_parser("verify", help="run the verification battery on your own dropout function")
    p.add_argument("target", help="MODULE:CALLABLE, path/to/file.py:CALLABLE or notebook.ipynb:CALLABLE "
                                  "(a notebook's imports and definitions only are run)")
    p.add_argument("--keep-prob", type=float, nargs="+", required=True, dest="keep_prob",
                   help="keep probability (several values allowed); f(x, keep_prob) is also tested "
                        "at an asymmetric value (0.8 or 0.3), where a keep/drop swap shows")
    p.add_argument("--eval", default=None, help="MODULE:CALLABLE of the eval path (default: none)")
    p.add_argument("--contract", default="inverted",
                   choices=["inverted", "standard", "gaussian", "moments"],
                   help="what the implementation claims to be (default: inverted)")
    p.add_argument("--convention", default="auto",
                   choices=["auto", "plain", "course", "cs231n"],
                   help="call signature: plain f(x) or f(x, keep_prob); course "
                        "forward_propagation_with_dropout; cs231n dropout_forward (default: auto)")
    p.add_argument("--p-means", default="keep", choices=["keep", "drop"], dest="p_means",
                   help="for cs231n: whether dropout_param['p'] is the keep or drop probability (default: keep)")
    p.add_argument("--require-validation", action="store_true", dest="require_validation",
                   help="also require f(x, keep_prob) to raise for keep_prob outside (0, 1] "
                        "(check_invalid_keep_prob; default: off, as learners' code rarely validates)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--details", action="store_true",
                   help="print every check with its evidence (default: a summary of about ten lines: "
                        "the verdict, the diagnosis and the failed checks)")
    add_timeout_argument(p)
    p.set_defaults(func=_delegate("verify"))

    # `verify-model`: handled by stats_dropout.cli.verify_model.run(args) -> exit code.
    p = sub.add_parser("verify-model", help="verify every dropout site of a torch model on its own activations")
    verify_model.add_arguments(p)
    p.set_defaults(func=_delegate("verify_model"))

    # `report` and `claims`: handled by stats_dropout.cli.report.run / stats_dropout.cli.claims.run.
    p = sub.add_parser("report", help="write the full report (CSV, SVG/PNG figures, index.html)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--draws", type=int, default=None, help="cap on Monte-Carlo draws per cell (default: computed)")
    p.add_argument("--keep-probs", type=float, nargs="+", default=None, dest="keep_probs",
                   help="keep probabilities (default: 0.05 0.10 ... 0.95 1.0)")
    p.add_argument("--schemes", nargs="+", default=None, help="scheme names (default: all)")
    p.add_argument("--executor", default="local", choices=["local", "dask"],
                   help="where sweep cells run (default: local)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a LocalCluster)")
    _add_progress_flag(p)
    p.set_defaults(func=_delegate("report"))

    p = sub.add_parser("claims", help="print the claims ledger: every claim of the forum thread, measured")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--csv", default=None, help="also write the ledger to this CSV file")
    _add_progress_flag(p)
    p.set_defaults(func=_delegate("claims"))
    return parser


def _add_progress_flag(p):
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: only when stderr is a terminal, so "
                        "pipes, files and CI logs stay clean)")


def _resolve_progress(args):
    """The one rule for progress bars: ``--progress``/``--no-progress`` if given, else on
    exactly when stderr is a terminal. Handlers read ``args.progress`` (a bool)."""
    if hasattr(args, "progress") and args.progress is None:
        args.progress = sys.stderr.isatty()


def _delegate(module):
    """Handler that imports ``stats_dropout.cli.<module>`` only when its command runs."""

    def handler(args):
        import importlib

        return importlib.import_module(f"stats_dropout.cli.{module}").run(args)

    return handler


def _cmd_schemes(args):
    from stats_dropout.reporting.sweep import DEFAULT_KEEP_PROBS, format_schemes_table, sweep_schemes

    keep_probs = DEFAULT_KEEP_PROBS if args.keep_probs is None else args.keep_probs
    if args.csv:
        from stats_dropout._internal.files import output_file_iv

        try:
            output_file_iv(args.csv, "--csv")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:
        frame = sweep_schemes(args.schemes, keep_probs, relative_error=args.relative_error,
                              seed=args.seed, progress=args.progress)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"stats-dropout schemes: seed {args.seed}; every decision detects a relative error of "
          f"{args.relative_error:g} with probability 0.999; total false-fail rate 1e-06 over "
          f"{len(frame)} decisions")
    print(format_schemes_table(frame))
    if args.csv:
        from stats_dropout._internal.files import write_csv

        write_csv(frame, args.csv)
    failed = frame[~frame["passed"]]
    for _, row in failed.iterrows():
        print(f"FAILED {row['scheme']} keep_prob={row['keep_prob']}: {row['property']} "
              f"(estimate {row['estimate']:.5g}, expected {row['expected']:.5g}, p = {row['pvalue']:.3g})")
    return 1 if len(failed) else 0


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    _resolve_progress(args)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"stats-dropout: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # sys.exit() in the code under test, outside any check: never its exit code
        print(f"stats-dropout: error: the code under test raised SystemExit({exc.code!r}) (sys.exit) while it was "
              "imported or prepared, outside any check; stats-dropout does not exit with its code", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, the conventional 128 + SIGINT
        resumable = (" (finished cells are kept: run the same command again to resume)"
                     if args.command == "report" else "")
        print(f"stats-dropout: interrupted{resumable}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `stats-dropout verify ... | head`: the reader left; no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
