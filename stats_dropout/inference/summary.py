"""Results rendered for a person: the ten-line summary a learner reads, and the notebook table.

:meth:`VerificationResult.summary` and the ``_repr_html_`` methods of
:mod:`stats_dropout.inference.results` delegate here. The grouping reads only the result: a
failed check whose message names a diagnosis ("Likely cause: ...") is a consequence of it; with
identical masks on every call every statistical check is (its draws are not independent).
"""

from __future__ import annotations

import html
import math
import re
import textwrap

__all__ = ["summary_lines", "html_rows", "HTML_STYLE"]


# --- rendering for a person: the concise summary and the notebook table ------------------------
#
# VerificationResult.summary() turns the checks and the diagnosis into about ten lines: the
# verdict, each diagnosis with the checks that show it, the checks that fail *because of* it on
# one line, what else failed, what was skipped and why. The grouping reads only the result: a
# failed check whose message names a diagnosis ("Likely cause: ...") is a consequence of it; with
# identical masks on every call every statistical check is (its draws are not independent).

#: Words for the exact checks, in "the exact checks pass (...)".
_EXACT_WORDS = {
    "check_kept_scale": "kept-unit scale",
    "check_output_shape_dtype": "output shape and dtype",
    "check_finite_output": "finite output",
    "check_input_unchanged": "input left unchanged",
    "check_eval_deterministic": "deterministic eval",
    "check_eval_contract": "eval output",
    "check_sharing_pattern": "mask sharing",
    "check_keep_prob_one": "keep_prob=1 returns x",
    "check_invalid_keep_prob": "invalid keep_prob rejected",
    "check_backward_mask": "backward uses the forward mask",
}

#: (words in a diagnosis, the checks that measure it directly); the first match wins.
_DIRECT_EVIDENCE = (
    (("returned a tuple", "returns a tuple", "a tuple such as"), ("check_output_shape_dtype",)),
    (("every call drops the same units", "successive calls drew identical masks"),
     ("check_independence_calls",)),
    (("used as the drop probability",), ("check_keep_rate", "check_kept_scale")),
    (("only 0s and 1s",), ("check_kept_scale",)),
    (("eval",), ("check_eval_contract", "check_eval_deterministic")),
    (("keep rate", "nothing is dropped", "every unit is dropped"), ("check_keep_rate",)),
    (("kept units", "rescale"), ("check_kept_scale",)),
    (("mask is shared", "same mask", "mask varies", "constant along", "mask for the whole batch"),
     ("check_sharing_pattern", "check_independence_units", "check_independence_rows")),
)

_WHERE = re.compile(r"^(?P<where>(?:layer \d+ )?at keep_prob=[^\s:]+): (?P<text>.+)$", re.S)
_TUPLE_SHAPE = re.compile(r"returned shape \((\d+), (.*?),?\) for an input of shape \((.*?),?\)")


def _base(check):
    return check.split("[", 1)[0]


def _place(text):
    """``"layer 1, keep_prob=0.8"`` from a check name or a diagnosis prefix ("" if it names none)."""
    layer = re.search(r"layer (\d+)", text)
    kp = re.search(r"keep_prob=([^\s,\]:]+)", text)
    return ", ".join(([f"layer {layer.group(1)}"] if layer else []) + ([f"keep_prob={kp.group(1)}"] if kp else []))


def _where_of(check):
    _, _, rest = check.partition("[")
    return _place(rest)


def _is_statistical(c):
    """A check that spends false-fail budget (an exact check's evidence is an ExactComparison)."""
    return c.decision is not None and c.decision.statistical


def _top_level_cut(text, seps):
    """Index of the first separator in ``seps`` outside parentheses and brackets, or -1."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(depth - 1, 0)
        elif depth == 0:
            for sep in seps:
                if text.startswith(sep, i):
                    return i
    return -1


def _figure(c):
    """The one-line evidence of a failed check: its figure, not its whole message."""
    d = c.decision
    msg = " ".join(c.message.split())
    if d is not None and d.statistical and msg.startswith(f"{d.property}: estimate"):
        return f"measured {d.estimate:.4g}, expected {d.expected:.4g} (p = {d.pvalue:.2g}): {d.property}"
    cut = _top_level_cut(msg, (". ", "; "))
    sentence = msg[:cut + (msg[cut] == ".")] if cut >= 0 else msg
    return sentence.rstrip(".") or c.status


def _fit(line, width):
    return line if len(line) <= width else line[:width - 1].rstrip() + "…"


def _fit_figure(text, width):
    """Cut a figure to ``width``: the half of "words: figure" without the figure, trailing
    parentheses, then the end of the text."""
    colon = _top_level_cut(text, (": ",))
    if len(text) > width and colon > 0:
        before, after = text[:colon], text[colon + 2:]
        if any(ch.isdigit() for ch in before):
            text = before if len(before) <= width or len(after) > width else after
        elif any(ch.isdigit() for ch in after):
            text = after
    while len(text) > width and text.endswith(")"):
        depth, i = 0, len(text) - 1
        for i in range(len(text) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(text[i], 0)
            if depth == 0:
                break
        if i <= 0:
            break
        text = text[:i].rstrip()
    return _fit(text, width)


def _wrap(text, width, first, rest="  ", max_lines=None):
    lines = textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
                          break_long_words=False, break_on_hyphens=False) or [first.rstrip()]
    if max_lines and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(lines[-1] + " …", width) if len(lines[-1]) + 2 <= width else _fit(lines[-1], width)
    return [_fit(line, width) for line in lines]


def _names(checks):
    """Base names in order, once each."""
    return list(dict.fromkeys(_base(c.check) for c in checks))


def _places(wheres, every, first_figure=False):
    """Where a diagnosis holds or a check failed, when more than one place was tested.

    A diagnosis that holds everywhere says nothing more; a check line (``first_figure``) quotes
    its first failure, so it names that place and how many others failed too.
    """
    wheres = [w for w in dict.fromkeys(wheres) if w]
    if not wheres or len(every) <= 1:
        return ""
    if not first_figure:
        return "" if set(wheres) >= set(every) else " (at " + "; ".join(wheres) + ")"
    rest = wheres[1:]
    if len(every) > 2 and set(wheres) >= set(every):
        return f" (all {len(every)} tested)"
    layer = wheres[0].split(", keep_prob=")[0] + ", " if wheres[0].startswith("layer ") else ""
    rest = [w[len(layer):] if layer and w.startswith(layer) else w for w in rest]
    rest = [w.replace("keep_prob=", "") if not w.startswith("layer ") else w for w in rest]
    also = "" if not rest else (f", also {rest[0]}" if len(rest) == 1 else f", +{len(rest)} more")
    return f" ({wheres[0]}{also})"


class _Group:
    def __init__(self, text, where):
        self.texts, self.wheres = [text], [where]
        low = text.lower()
        self.identical = "every call drops the same units" in low
        self.tuple_like = any(w in low for w in _DIRECT_EVIDENCE[0][0])
        self.direct = next((checks for words, checks in _DIRECT_EVIDENCE if any(w in low for w in words)), ())
        self.evidence, self.consequences = [], []

    def explains(self, c):
        if self.tuple_like:
            return True  # an output that is not one array breaks every check that reads it
        if self.identical and _is_statistical(c):
            return True  # the draws are one draw repeated: no statistic means anything
        return any(t in c.message for t in self.texts)


def _diagnosis_groups(result):
    groups = {}
    lines = list(result.diagnosis)
    shape_fail = next((c for c in result.failed_checks if _base(c.check) == "check_output_shape_dtype"
                       and _TUPLE_SHAPE.search(c.message)), None)
    if shape_fail is not None and not any("tuple" in d for d in lines):
        m = _TUPLE_SHAPE.search(shape_fail.message)
        if m.group(2).strip() == m.group(3).strip():
            lines.insert(0, f"train's output has shape ({m.group(1)}, {m.group(2)}): {m.group(1)} arrays of "
                            "the input's shape stacked — does it return a tuple such as (out, mask)? "
                            "Return only the output array")
    for line in lines:
        m = _WHERE.match(line)
        where, text = (_place(m.group("where")), m.group("text")) if m else ("", line)
        key = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", "#", text)
        if key in groups:
            groups[key].texts.append(text)
            groups[key].wheres.append(where)
        else:
            groups[key] = _Group(text, where)
    return list(groups.values())


def summary_lines(result, width, details):
    checks = result.checks
    failed = list(result.failed_checks)
    skipped = [c for c in checks if c.status == "skipped"]
    n_passed = sum(c.passed for c in checks)
    every = list(dict.fromkeys(_where_of(c.check) for c in checks if _where_of(c.check)))
    if result.passed:
        head = f"PASSED: all {n_passed} checks that ran passed" + (f", {len(skipped)} skipped" if skipped else "")
    else:
        head = (f"FAILED: {len(failed)} of {len(checks)} checks failed, {n_passed} passed"
                + (f", {len(skipped)} skipped" if skipped else ""))
    tested = list(dict.fromkeys(c.keep_prob for c in checks if c.keep_prob is not None))
    setting = (f"keep_prob {', '.join(f'{p:g}' for p in tested)}; " if tested else "") + \
        f"contract {result.contract}; seed {result.seed}"
    lines = [_fit(f"{head} ({setting})", width)]
    groups = _diagnosis_groups(result) if failed else []
    others = []
    for c in failed:
        base = _base(c.check)
        home = next((g for g in groups if base in g.direct), None)
        if home is not None:
            home.evidence.append(c)
            continue
        home = next((g for g in groups if g.explains(c)), None)
        (home.consequences if home is not None else others).append(c)
    exact_failed = any(not _is_statistical(c) for c in failed)
    for g in groups:
        lines += _wrap(g.texts[0] + _places(g.wheres, every), width, "Diagnosis: ", max_lines=4)
        if g.identical and not exact_failed:
            ok = [_EXACT_WORDS.get(name, name) for name in
                  _names(c for c in checks if c.passed and not _is_statistical(c))]
            if ok:
                lines += _wrap("The dropout arithmetic is correct: the exact checks pass on these masks ("
                               + ", ".join(ok) + ").", width, "", max_lines=2)
        lines += _check_lines(g.evidence, every, width, "  ")
        if g.consequences:
            order = {name: i for i, name in enumerate(_names(checks))}
            g.consequences.sort(key=lambda c: order.get(_base(c.check), len(order)))
            why = "the masks never change" if g.identical else "failing because of it"
            lines += _wrap(", ".join(_names(g.consequences)), width, f"  consequences ({why}): ", "    ",
                           max_lines=3)
    if others:
        shown = _check_lines(others, every, width, "FAILED " if groups else "FAILED ")
        if len(shown) > 5:
            shown = shown[:4] + [f"… and {len(shown) - 4} more failed checks (see the full table)"]
        lines += shown
    for w in result.warnings:
        lines += _wrap(w, width, "Warning: ", max_lines=2)
    by_reason = {}
    for c in skipped:
        by_reason.setdefault(" ".join(c.message.split()) or "no reason given", []).append(c)
    for reason, cs in by_reason.items():
        names = _names(cs)
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        lines.append(_fit(f"Skipped {listed}: {reason.rstrip('.')}", width))
    if result.not_applicable:
        needs = []
        for item in result.not_applicable:
            _, _, need = item.partition(": needs ")
            for part in need.split(", "):
                part = re.sub(r"\s*\([^)]*\)$", "", part).strip()
                if part and part not in needs:
                    needs.append(part)
        line = f"Not applicable ({len(result.not_applicable)} checks), for want of "
        for k, need in enumerate(needs):
            last = k == len(needs) - 1
            reserve = 0 if last else len(f" and {len(needs) - k - 1} more")
            if k and len(line) + len(need) + reserve > width:
                line = line.rstrip(", ") + f" and {len(needs) - k} more"
                break
            line += need + ("" if last else ", ")
        lines.append(_fit(line, width))
    if details:
        lines.append(_fit(details, width))
    return lines


def _check_lines(cs, every, width, prefix):
    """One line per failed check name: its first failure's figure and where else it failed."""
    by_name = {}
    for c in cs:
        by_name.setdefault(_base(c.check), []).append(c)
    out = []
    for name, instances in by_name.items():
        where = _places([_where_of(c.check) for c in instances], every, first_figure=True)
        head = f"{prefix}{name}: "
        room = width - len(head) - len(where)
        if room < 30:  # a long place list gives way to the figure
            where, room = "", width - len(head)
        out.append(head + _fit_figure(_figure(instances[0]), room) + where)
    return out


def _fmt(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.5g}"


HTML_STYLE = {"passed": "color:#1a7f37", "failed": "color:#cf222e;font-weight:bold", "skipped": "color:#6e7781"}


def html_rows(checks):
    esc = html.escape
    rows = []
    for c in checks:
        d = c.decision
        ci = f"[{_fmt(d.ci_low)}, {_fmt(d.ci_high)}]" if d is not None else ""
        cells = [esc(c.check), f'<span style="{HTML_STYLE.get(c.status, "")}">{esc(c.status)}</span>',
                 esc(_fmt(d.estimate) if d else ""), esc(_fmt(d.expected) if d else ""), esc(ci),
                 esc(_fmt(d.pvalue) if d else ""), esc(c.message)]
        rows.append("<tr>" + "".join(f'<td style="text-align:left">{x}</td>' for x in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("check", "status", "estimate", "expected", "CI", "p-value", "message"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
