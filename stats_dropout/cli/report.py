"""Handler of ``stats-dropout report``: the full report (CSV, SVG/PNG figures, index.html)."""

from __future__ import annotations

__all__ = ["run"]


def _report_args_iv(args):
    from stats_dropout._internal.files import output_dir_iv
    from stats_dropout.cli.errors import UsageError
    from stats_dropout.reference.schemes import SCHEMES
    from stats_dropout.reporting.sweep import CONTRASTS, REPORT_KEEP_PROBS

    if args.draws is not None and args.draws < 2:
        raise UsageError(f"`--draws` must be an integer ≥ 2; got {args.draws}")
    if args.seed < 0:
        raise UsageError(f"`--seed` must be a non-negative integer; got {args.seed}")
    keep_probs = REPORT_KEEP_PROBS if args.keep_probs is None else tuple(args.keep_probs)
    bad = [p for p in keep_probs if not 0 < p <= 1]
    if bad:
        raise UsageError(f"`--keep-probs` must lie in (0, 1]; got {bad[0]!r}")
    if args.schemes is not None:
        known = tuple(SCHEMES) + tuple(CONTRASTS)
        unknown = [s for s in args.schemes if s not in known]
        if unknown:
            raise UsageError(f"`--schemes`: unknown scheme {unknown[0]!r}; known: {', '.join(known)}")
    if args.scheduler is not None and args.executor != "dask":
        raise UsageError(f"`--scheduler` needs `--executor dask`; got --executor {args.executor}")
    try:
        output_dir_iv(args.out, "--out")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return keep_probs


def run(args):
    """Write the report to ``args.out``; return the exit code (0 when written)."""
    from stats_dropout.reporting.report import write_report

    keep_probs = _report_args_iv(args)
    files = write_report(args.out, seed=args.seed, draws=args.draws, keep_probs=keep_probs,
                         schemes=args.schemes, executor=args.executor, scheduler=args.scheduler,
                         progress=args.progress)
    print(f"stats-dropout report: wrote {files['index']} and {len(files) - 1} more files "
          f"(seed {args.seed})")
    return 0
