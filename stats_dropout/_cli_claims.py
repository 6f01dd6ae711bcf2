"""Handler of ``stats-dropout claims``: the claims ledger, measured and printed."""

from __future__ import annotations

import sys

__all__ = ["run"]


def run(args):
    """Print the ledger (and write it to ``args.csv``); exit code 0."""
    from .claims import LEVEL, claims_ledger, format_ledger
    from .cli import UsageError
    from .reporting import write_csv

    if args.seed < 0:
        raise UsageError(f"`--seed` must be a non-negative integer; got {args.seed}")
    ledger = claims_ledger(seed=args.seed, progress=sys.stderr.isatty())
    print(f"stats-dropout claims: the forum thread's claims, measured (seed {args.seed}; "
          f"{100 * LEVEL:g} % intervals; TOST at level {1 - LEVEL:g})\n")
    print(format_ledger(ledger))
    if args.csv:
        write_csv(ledger, args.csv)
    return 0
