"""Measured error rates of the battery, per statistical check (issue #12 §5): writes docs/CALIBRATION.md.

Run from the repository root::

    .venv/bin/python benchmarks/calibrate_battery.py                       # full study, a process per core
    .venv/bin/python benchmarks/calibrate_battery.py --workers 1           # one process (same tables)
    .venv/bin/python benchmarks/calibrate_battery.py --scheduler tcp://host:8786   # a Dask cluster
    .venv/bin/python benchmarks/calibrate_battery.py --quick --out /tmp/c.md   # a smoke run
    .venv/bin/python benchmarks/calibrate_battery.py --from-records /tmp/calibration_records.pkl

The full study: every statistical check ≥ 2000 times on correct implementations (false fail) and
≥ 400 seeds of a bug at each check's stated detectable effect (false pass), at the relaxed levels
of :mod:`stats_dropout.studies.calibration`. The raw records are pickled (``--records``) so the
page can be rewritten without rerunning (``--from-records``). Without ``--executor``,
``--workers`` or ``--scheduler`` the seed loops run where the slow tests' do: the environment
variables ``STATS_DROPOUT_WORKERS`` and ``STATS_DROPOUT_SCHEDULER``
(:func:`~stats_dropout._internal.executors.executor_options`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stats_dropout._internal import executors
from stats_dropout.studies import calibration as cal

ROOT = Path(__file__).resolve().parents[1]


def markdown(frame, formats=None):
    """A pipe table; ``formats`` maps a column to a format spec (default: ``{:.4g}`` for floats)."""
    formats = formats or {}
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, (float, np.floating)) and np.isnan(v):
                cells.append("—")
            elif c in formats:
                cells.append(formats[c].format(v))
            elif isinstance(v, (float, np.floating)):
                cells.append(f"{v:.4g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _interval(frame, low, high, fmt="{:.4f}"):
    return [f"[{fmt.format(a)}, {fmt.format(b)}]" for a, b in zip(frame[low], frame[high])]


def _printed(records, check):
    levels = [1 - r["ci_level"] for r in records if r["check"] == check and "ci_level" in r]
    return float(np.mean(levels)) if levels else float("nan")


def null_section(records):
    table = cal.false_fail_table(records)
    show = pd.DataFrame({
        "check": table.check, "decisions": table.decisions, "impls × shapes": [
            f"{a} × {b}" for a, b in zip(table.impls, table.shapes)],
        "rejections": table.rejections, "measured": table.measured.map("{:.4f}".format),
        "95 % CI": _interval(table, "ci_low", "ci_high"), "nominal": table.nominal.map("{:.4f}".format),
        "verdict": table.verdict, "CI excludes expected": table.excluded.map("{:.4f}".format),
        "95 % CI ": _interval(table, "excluded_ci_low", "excluded_ci_high"),
        "stated 1 − coverage": table.stated_exclusion.map("{:.2g}".format), "coverage": table.coverage,
        "printed 1 − ci_level": [f"{_printed(records, c):.2g}" for c in table.check],
    })
    if table.raised.any():
        show.insert(4, "raised", table.raised)
    cells = cal.false_fail_cells(records)
    flagged = cells[cells.verdict == "FAIL"]
    frame = pd.DataFrame.from_records(records)
    ran = frame[frame.status != "skipped"].copy()
    ran["failed"] = ran.status == "failed"
    by = {}
    for key in ("impl", "shape"):
        g = ran.groupby(["check", key], sort=False)
        ratio = (g.failed.mean() / g.nominal.mean()).unstack(key)
        ratio = ratio.reindex([c for c in cal.STATISTICAL if c in ratio.index])
        by[key] = ratio.reset_index()
    warned = frame[frame.warnings.fillna("") != ""].drop_duplicates(["impl", "shape", "seed"])
    return table, show, flagged, by, warned, cells


def power_section(records):
    table = cal.power_table(records)
    show = pd.DataFrame({
        "check": table.check, "bug": table.bug, "design": table.design,
        "effect (as built)": table.effect.map("{:+.4g}".format), "stated mde": table.stated_mde.map("{:.4g}".format),
        "units": table.units, "seeds": table.seeds, "false passes": table.false_passes,
        "measured": table.measured.map("{:.4f}".format), "95 % CI": _interval(table, "ci_low", "ci_high"),
        "stated": table.stated.map("{:g}".format), "verdict": table.verdict,
    })
    if table.raised.any():
        show.insert(8, "raised", table.raised)
    if table.skipped.any():
        show.insert(8, "skipped", table.skipped)
    return table, show


def findings(table, ptable, null_records, power_records):
    """Bullets: every FAIL verdict, and the checks that raised (with a message)."""
    lines = []
    for _, r in table[table.verdict == "FAIL"].iterrows():
        lines.append(f"- False fail, **{r.check}**: {r.rejections} of {r.decisions} rejected, {r.measured:.4f} "
                     f"[{r.ci_low:.4f}, {r.ci_high:.4f}] against nominal {r.nominal:.4f}.")
    for _, r in ptable[ptable.verdict == "FAIL"].iterrows():
        lines.append(f"- False pass, **{r.check}** ({r.bug}): {r.false_passes} of {r.seeds} passed, {r.measured:.4f} "
                     f"[{r.ci_low:.4f}, {r.ci_high:.4f}] against the stated {r.stated:g}.")
    bad = table[table.coverage == "FAIL"]
    if len(bad):
        lines.append("- Printed intervals exclude the expected value more often than their simultaneous level allows: "
                     + ", ".join(f"{c} ({e:.4f} vs {s:.2g})" for c, e, s in zip(bad.check, bad.excluded,
                                                                             bad.stated_exclusion)) + ".")
    raised = [r for r in null_records + power_records if r.get("status") == "failed" and r.get("message")]
    if raised:
        by = pd.Series([r.get("check", r.get("row")) for r in raised]).value_counts()
        lines.append(f"- {len(raised)} failures without a decision (the check raised): "
                     + ", ".join(f"{k} {v}" for k, v in by.items()) + f". Message: `{raised[0]['message'][:160]}`")
    return lines or ["- Every verdict ok."]


def replicate_section(replicate):
    """The null study rerun on fresh seeds (``--replicate``), when it was."""
    if not replicate:
        return []
    offset, records, wall = replicate
    t = cal.false_fail_table(records)
    show = pd.DataFrame({"check": t.check, "decisions": t.decisions, "rejections": t.rejections,
                         "measured": t.measured.map("{:.4f}".format), "95 % CI": _interval(t, "ci_low", "ci_high"),
                         "nominal": t.nominal.map("{:.4f}".format), "verdict": t.verdict})
    return ["## Replicate: the null study on fresh seeds", "",
            f"The same cells with every battery seed shifted by {offset} ({wall:.0f} s):", "", markdown(show), ""]


def page(meta, null_records, power_records):
    table, show, flagged, by, warned, cells_table = null_section(null_records)
    ptable, pshow = power_section(power_records)
    ratio_fmt = {c: "{:.2f}" for c in list(by["impl"].columns)[1:] + list(by["shape"].columns)[1:]}
    impls = pd.DataFrame({"implementation": list(cal.CORRECT), "what": [v[0] for v in cal.CORRECT.values()],
                          "seeds per shape": [", ".join(f"{s} {n}" for s, n in cal.NULL_PLAN[i].items())
                                              for i in cal.CORRECT]})
    shapes = pd.DataFrame({"shape": list(cal.SHAPES), "input": [v[1] for v in cal.SHAPES.values()]})
    cells = cal.null_cells(meta["null_decisions"], seed=meta["seed"])
    first = {}
    for impl, shape, s, _, _ in cells:
        lo, hi = first.get((impl, shape), (s, s))
        first[(impl, shape)] = (min(lo, s), max(hi, s))
    seed_lines = ", ".join(f"{i}/{s} {lo}–{hi}" for (i, s), (lo, hi) in first.items())
    out = [
        "# Calibration: the battery's error rates, measured",
        "",
        "Generated by `benchmarks/calibrate_battery.py` (issue #12 §5); do not edit by hand.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Source: commit {meta.get('commit', 'unknown')} at the start, {meta.get('commit_after', 'unknown')} at "
        "the end",
        f"- Date: {meta['date']}; machine: {meta['machine']}",
        f"- Wall time: {meta['wall']:.0f} s (null study {meta['wall_null']:.0f} s, power study "
        f"{meta['wall_power']:.0f} s) on {meta['executor']}; load average at the start {meta['load']}",
        f"- Levels: total false-fail rate {cal.FALSE_FAIL_RATE} (each statistical check runs at its share: "
        f"the total over the statistical checks that run), false-pass rate {cal.FALSE_PASS_RATE}",
        f"- Null study: {len(cells)} battery runs, ≥ {meta['null_decisions']} decisions per statistical check; "
        f"power study: {meta['power_seeds']} seeds per bug",
        "",
        "## False fail: correct implementations",
        "",
        "Every statistical check's rejections over all runs where it decided (not skipped), against the share "
        "of the false-fail budget it ran at (*nominal*, the mean of `result.per_check_false_fail_rate`). "
        "*verdict* is `ok` when the Clopper–Pearson lower bound of the measured rate at the page's family level "
        "(see Findings) reaches down to nominal (a check may be conservative). *CI excludes expected*: the "
        "fraction of decisions whose printed "
        "interval `[ci_low, ci_high]` excludes the contract's value, against the decision's false-fail rate "
        "(its simultaneous non-coverage, Decision.coverage).",
        "",
        markdown(show),
        "",
        "Measured / nominal by implementation (pooled over shapes):",
        "",
        markdown(by["impl"], ratio_fmt),
        "",
        "Measured / nominal by shape (pooled over implementations):",
        "",
        markdown(by["shape"], ratio_fmt),
        "",
        f"Cells (check × implementation × shape) whose interval lies entirely above nominal, of "
        f"{len(cells_table)} cells with 95 % intervals each (about {0.025 * len(cells_table):.0f} expected by "
        "chance alone, no multiplicity correction): " + ("none." if flagged.empty else ""),
        "",
    ]
    if not flagged.empty:
        out += [markdown(flagged), ""]
    if not warned.empty:
        counts = warned.groupby(["impl", "shape", "warnings"]).size().reset_index(name="runs")
        out += ["Warnings raised inside the battery (runs with each):", "", markdown(counts), ""]
    out += [
        "## False pass: a bug at each check's stated detectable effect",
        "",
        "For each check a bug of exactly the `min_detectable_effect` the check states at the design (read from "
        "a run of the same implementation with the bug switched off: same probe, draws and per-check share), "
        "in the check's own units; the fraction of seeds in which the check itself passes, against its stated "
        "false-pass rate. *verdict* `ok`: the lower bound at the family level reaches down to the stated rate. "
        "Only the target "
        "check is run (`iter_checks`); other checks may well catch the same bug first.",
        "",
        markdown(pshow),
        "",
        "## Findings",
        "",
        *findings(table, ptable, null_records, power_records),
        "",
        f"There are {cal.verdict_count()} verdicts on this page (false fail and coverage per statistical check, "
        "false pass per bug). At 97.5 % one-sided each, about one would read FAIL by chance even if every check "
        "were exactly at its stated rate, so each verdict takes its Bonferroni share of a 95 % family level: "
        f"one-sided {1 - (1 - cal.VERDICT_FAMILY_LEVEL) / cal.verdict_count():.5f} (Clopper–Pearson lower "
        "bound, `calibration.verdict_level`). A page of correct checks then shows a FAIL with probability at "
        "most 0.05; a check whose true rate is 1.25–1.4 × its nominal (at these decision counts) still reads "
        "FAIL at least half the time. The 95 % intervals shown are per row, uncorrected. The coverage column "
        "compares with the decision's "
        "simultaneous non-coverage (its false-fail rate α, `1 − Decision.coverage`). The printed per-element "
        "level `1 − ci_level` of a decision over m groups (Holm, Bonferroni) is `1 − α/m`; its worst group's "
        "interval excludes the expected value exactly when the decision rejects, so at a rate up to α, not α/m "
        "(column *printed 1 − ci_level*).",
        "",
        *replicate_section(meta.get("replicate")),
        "## Design",
        "",
        markdown(impls),
        "",
        markdown(shapes),
        "",
        f"Battery seeds (implementation/shape first–last): {seed_lines}. Power: seeds "
        f"{min(r['seed'] for r in power_records)}–{max(r['seed'] for r in power_records)}, 400 consecutive per "
        "bug; the probe is `make_input(shape, 12)`, the pilot seed 0.",
        "",
        "The bugs (`stats_dropout/studies/calibration_bugs.py`) keep the marginal keep rate except where the keep "
        "rate is the error; Markov copies give neighbour correlation e with the marginal p kept.",
        "",
    ]
    return "\n".join(out), table, ptable


def map_options(args):
    """``map_cells`` options: the command line's where it names any, else the environment's."""
    if args.scheduler:
        options = dict(executor="dask", scheduler=args.scheduler)
    elif args.executor is None:  # --workers alone reads as the variable would (1: this process)
        environ = None if args.workers is None else {executors.WORKERS_VARIABLE: str(args.workers)}
        options = executors.executor_options(environ)
    else:
        options = dict(executor=args.executor, workers=args.workers)
    if options["executor"] == "dask":
        options["processes"] = not args.threads
    return dict(options, progress=args.progress)


def workers_option(text):
    """``--workers``: an int ≥ 1, else argparse's error naming the option and the value."""
    try:
        return executors.parse_workers(text, "--workers")
    except ValueError as exc:  # argparse prints an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(exc)) from None


def describe(options):
    """Where the cells ran, for the page: one process, N worker processes, or Dask."""
    executor, workers = options["executor"], options.get("workers")
    if executor == "local":
        return "one process"
    if executor == "processes":
        return f"{workers or executors.default_workers()} worker processes"
    where = options.get("scheduler") or f"{workers or executors.LOCAL_CLUSTER_WORKERS} local workers"
    return f"dask ({'processes' if options['processes'] else 'threads'}, {where})"


def source_commit():
    """``"<commit>"`` of the checkout, with ``" + uncommitted changes under stats_dropout/"`` if any."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "stats_dropout"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes under stats_dropout/" if dirty else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--null-decisions", type=int, default=2000)
    parser.add_argument("--power-seeds", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", choices=executors.EXECUTORS, default=None,
                        help="default: from STATS_DROPOUT_WORKERS / STATS_DROPOUT_SCHEDULER (a process per core)")
    parser.add_argument("--workers", type=workers_option, default=None, help="worker processes (default: the cores)")
    parser.add_argument("--scheduler", default=None, help="a Dask scheduler address")
    parser.add_argument("--threads", action="store_true", help="Dask LocalCluster threads instead of processes")
    parser.add_argument("--quick", action="store_true", help="100 decisions, 20 seeds: a smoke run")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "docs" / "CALIBRATION.md"))
    parser.add_argument("--records", default="/tmp/calibration_records.pkl")
    parser.add_argument("--from-records", default=None)
    parser.add_argument("--replicate", type=int, default=None, metavar="SEED",
                        help="rerun the null study with this seed offset (fresh seeds) and show it too")
    parser.add_argument("--source", default=None, help="the source's name when not a git checkout "
                        "(e.g. 'abc1234, git archive')")
    args = parser.parse_args(argv)
    if args.quick:
        args.null_decisions, args.power_seeds = 100, 20
    if args.from_records:
        with open(args.from_records, "rb") as f:
            meta, null_records, power_records = pickle.load(f)
    else:
        options = map_options(args)
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        commit = args.source or source_commit()
        cells = cal.null_cells(args.null_decisions, seed=args.seed)
        print(f"null study: {len(cells)} battery runs (seeds {min(c[2] for c in cells)}–{max(c[2] for c in cells)} "
              f"by cell), ≥ {args.null_decisions} decisions per check", flush=True)
        t0 = time.perf_counter()
        null_records = cal.null_study(args.null_decisions, seed=args.seed, **options)
        t1 = time.perf_counter()
        print(f"null study done in {t1 - t0:.0f} s; power study: {args.power_seeds} seeds × "
              f"{len(cal.POWER_DESIGNS)} bugs", flush=True)
        power_records = cal.power_study(args.power_seeds, seed=args.seed, **options)
        t2 = time.perf_counter()
        replicate = None
        if args.replicate is not None:
            print(f"replicate null study, seed offset {args.replicate}", flush=True)
            replicate = (args.replicate, cal.null_study(args.null_decisions, seed=args.replicate, **options),
                         time.perf_counter() - t2)
        meta = dict(command="python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
                    date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), load=load,
                    machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python "
                            f"{platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}",
                    wall=t2 - t0, wall_null=t1 - t0, wall_power=t2 - t1, executor=describe(options),
                    null_decisions=args.null_decisions, power_seeds=args.power_seeds, seed=args.seed,
                    commit=commit, commit_after=args.source or source_commit(), replicate=replicate)
        with open(args.records, "wb") as f:
            pickle.dump((meta, null_records, power_records), f)
        print(f"records: {args.records}; wall time {t2 - t0:.0f} s", flush=True)
    text, table, ptable = page(meta, null_records, power_records)
    Path(args.out).write_text(text)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.drop(columns=["excluded_ci_low"]).to_string(index=False))
        print(ptable.drop(columns=["bug"]).to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
