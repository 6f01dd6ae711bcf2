"""Handler of ``stats-dropout claims``: the claims ledger, measured and printed."""

from __future__ import annotations

__all__ = ["run"]


def run(args):
    """Print the ledger (and write it to ``args.csv``); exit code 0."""
    from stats_dropout._internal.files import output_file_iv, write_csv
    from stats_dropout._internal.threads import single_threaded_blas
    from stats_dropout.cli.errors import UsageError
    from stats_dropout.studies.claims.common import LEVEL
    from stats_dropout.studies.claims.ledger import claims_ledger, format_ledger

    if args.seed < 0:
        raise UsageError(f"`--seed` must be a non-negative integer; got {args.seed}")
    if args.csv:
        try:
            output_file_iv(args.csv, "--csv")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    # The claims' products are small (C16's digits network: 128 units): on one BLAS thread its
    # Monte-Carlo passes took half the CPU time and no longer than on two (2-core machine), and
    # the ledger runs them on two threads of its own.
    with single_threaded_blas():
        ledger = claims_ledger(seed=args.seed, progress=args.progress)
    print(f"stats-dropout claims: the forum thread's claims, measured (seed {args.seed}; "
          f"{100 * LEVEL:g} % intervals; TOST at level {1 - LEVEL:g})\n")
    print(format_ledger(ledger))
    if args.csv:
        write_csv(ledger, args.csv)
    return 0
