"""What ``stats-dropout verify`` prints for a learner: about ten lines, and the course's notes.

The concise text comes from ``VerificationResult.summary``; this module adds what only the
command line knows: the target's file and line (a ``np.random.seed`` call the course template
makes), a tuple returned by a plain function, and the two course layers merged into one result.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shlex

from stats_dropout.cli.targets import is_path

__all__ = ["WIDTH", "tuple_return", "reseed_line", "merged_runs", "with_course_note", "where_name",
           "shown_target", "details_command", "print_summary"]

#: Width of the default output (terminal columns).
WIDTH = 100

#: Probe for the one call that looks at what a plain function returns (a tuple, say).
_PROBE = tuple(range(1, 33))

_SEED_CALL = re.compile(r"\b(?:np\.random|numpy\.random|random)\.seed\s*\(.*\)")


def describe_value(value):
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
    parts = ", ".join(describe_value(v) for v in out[:3]) + (", ..." if len(out) > 3 else "")
    return (f"train returned a {kind} of {len(out)}; return only the output array (it returned {parts}: "
            "write `return A`, not `return A, D`)")


def tag_check(check, label):
    base, bracket, rest = check.partition("[")
    return f"{base}[{label}, {rest}" if bracket else f"{base}[{label}]"


def merged_runs(runs):
    """One result for the learner's summary out of several batteries (the course's layers).

    Check names and diagnosis lines carry their layer (``check_mean[layer 1, keep_prob=0.8]``,
    ``layer 1 at keep_prob=0.8: ...``); the summary groups them back by name and text.
    """
    from stats_dropout.inference.verdicts import VerificationResult

    if len(runs) == 1:
        return runs[0][1]
    checks, diagnosis, warnings, na = [], [], [], []
    for label, result in runs:
        checks += [dataclasses.replace(c, check=tag_check(c.check, label)) for c in result.checks]
        diagnosis += [f"{label} {d}" if d.startswith("at keep_prob=") else f"{label}: {d}"
                      for d in result.diagnosis]
        warnings += [w for w in result.warnings if w not in warnings]
        na += [n for n in result.not_applicable if n not in na]
    first = runs[0][1]
    return VerificationResult(tuple(checks), first.contract, first.seed,
                              sum(r.false_fail_rate for _, r in runs), max(r.false_pass_rate for _, r in runs),
                              tuple(warnings), tuple(diagnosis), first.convention, tuple(na),
                              first.per_check_false_fail_rate)


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


def course_reseed_note(func, where_name):
    found = reseed_line(func)
    if found is None:
        return None
    line, code, path = found
    place = where_name(path, line)
    return (f"{code} {place} reseeds numpy's RNG, so every call drops the same units: every "
            "training iteration trains one sub-network. The course's grader needs that seed to match "
            "its expected outputs: keep it in the graded notebook, remove it only outside it")


def with_course_note(result, func, where_name):
    """The course template's reseed, said as the course needs it said (see the module docstring)."""
    if not any("every call drops the same units" in d for d in result.diagnosis):
        return result
    note = course_reseed_note(func, where_name)
    if note is None:
        return result
    out = []
    for d in result.diagnosis:
        if "every call drops the same units" in d:
            head, sep, _ = d.partition(": ")
            d = f"{head}: {note}" if sep and "keep_prob=" in head else note
        out.append(d)
    return dataclasses.replace(result, diagnosis=tuple(out))


def where_name(target_file):
    def name(path, line):
        from stats_dropout.cli.notebook import notebook_place

        nb = notebook_place(path, line)
        if nb:
            return nb
        shown = os.path.basename(path) if path else os.path.basename(target_file)
        return f"(line {line} of {shown})"

    return name


def shown_target(target, room):
    """The target as typed, or relative to the working directory, or its file name: what fits."""
    module_part, _, attr = target.rpartition(":")
    if len(target) <= room or not is_path(module_part):
        return target
    rel = os.path.relpath(module_part) if os.path.isabs(module_part) else module_part
    if len(rel) + len(attr) + 1 <= room and not rel.startswith(".."):
        return f"{rel}:{attr}"
    return f"{os.path.basename(module_part)}:{attr}"


def details_command(args):
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


def print_summary(args, convention, keep_prob, seed, contract, runs, func, note):
    import textwrap

    rest = (f": convention {convention}" + (" (detected)" if args.convention == "auto" else "")
            + (f", contract {contract}" if contract != "inverted" else "") + f", keep_prob {keep_prob}")
    head = shown_target(args.target, WIDTH - len(rest)) + rest
    lines = textwrap.wrap(head, WIDTH, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    result = merged_runs(runs)
    if convention == "course":
        result = with_course_note(result, func, where_name(args.target.rpartition(":")[0]))
    if note:
        result = dataclasses.replace(result, diagnosis=(note,) + tuple(result.diagnosis))
    command = details_command(args)
    details = (f"Full table: {command}" if len(command) + 12 <= WIDTH
               else "Full table: the same command with --details")
    print("\n".join(lines + [result.summary(WIDTH, details=details)]), flush=True)
    return result
