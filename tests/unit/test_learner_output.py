"""What a learner reads: ``stats-dropout verify`` prints ``VerificationResult.summary()``.

Three real battery runs (the course template's reseed, a missing rescale, a tuple return); the
rendering rules (grouping, skipped reasons, width) are tested on hand-made results, and the
notebook HTML (``_repr_html_``) directly.
"""

import contextlib
import functools
import io
import pathlib

import pytest

from stats_dropout.cli import main
from stats_dropout.inference.results import Decision
from stats_dropout.inference.verdicts import CheckResult, VerificationResult

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
WIDTH = 100


@functools.lru_cache(maxsize=None)
def cli(*argv):
    """``(exit code, stdout lines)`` of one run (cached: each real battery runs once per session)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["verify", *argv])
    return code, out.getvalue().splitlines()


def assert_fits(lines, most):
    assert len(lines) <= most, "\n".join(lines)
    assert max(map(len, lines)) <= WIDTH, "\n".join(line for line in lines if len(line) > WIDTH)


# --- real runs ---------------------------------------------------------------------------------

def test_course_template_reseed_is_explained_in_fifteen_lines():
    code, lines = cli(f"{FIXTURES / 'course_reseeded.py'}:forward_propagation_with_dropout", "--keep-prob", "0.8")
    text = " ".join(" ".join(lines).split())
    assert code == 1
    assert_fits(lines, 15)
    assert lines[1].startswith("FAILED")
    # The arithmetic is right, as the exact checks verify on the reseeded masks ...
    assert "The dropout arithmetic is correct: the exact checks pass on these masks" in text
    assert "kept-unit scale" in text and "output shape and dtype" in text
    # ... the reseed, with its line, makes every iteration drop the same units ...
    assert "np.random.seed(1) (line 16 of course_reseeded.py)" in text
    assert "every call drops the same units" in text and "every training iteration" in text
    # ... and the grader needs it: remove it only outside the graded notebook.
    assert "grader needs that seed" in text and "remove it only outside it" in text
    # One line for the check that shows it; the statistical failures are its consequences.
    assert sum(line.strip().startswith("check_independence_calls:") for line in lines) == 1
    assert "consequences (the masks never change): check_keep_rate," in text
    assert not any(line.startswith("FAILED check_") for line in lines)
    assert "Skipped check_row_dispersion: fewer than 2 rows" in text
    assert lines[-1].startswith("Full table:") and "--details" in lines[-1]


def test_missing_rescale_names_the_figure_and_groups_its_consequences():
    code, lines = cli(f"{FIXTURES / 'plain_dropout.py'}:dropout_fixed_no_rescale", "--keep-prob", "0.8")
    assert code == 1
    assert_fits(lines, 10)
    assert lines[2] == "Diagnosis: kept units are not rescaled: did you forget to divide by keep_prob?"
    assert lines[3].startswith("  check_kept_scale: kept units are scaled by 1, expected 1.25")
    assert lines[4] == "  consequences (failing because of it): check_mean"
    assert not any(line.startswith("FAILED check") for line in lines)  # no separate "bugs"


def test_tuple_return_is_named(tmp_path):
    learner = tmp_path / "tuple_learner.py"
    learner.write_text("import numpy as np\n\ndef dropout(x):\n    mask = np.random.rand(*x.shape) < 0.8\n"
                       "    return x * mask / 0.8, mask\n")
    code, lines = cli(f"{learner}:dropout", "--keep-prob", "0.8")
    assert code == 1
    assert_fits(lines, 10)
    assert "Diagnosis: train returned a tuple of 2; return only the output array" in lines[2]
    assert any(line.startswith("Skipped check_finite_output: not run: train failed") for line in lines)


# --- rendering rules on hand-made results -------------------------------------------------------

def decision(prop, estimate, expected, rejected=True, ffr=1e-7):
    return Decision(property=prop, method="z", estimate=estimate, expected=expected, ci_low=estimate - 0.01,
                    ci_high=estimate + 0.01, pvalue=0.0 if rejected else 0.5, false_fail_rate=ffr,
                    false_pass_rate=1e-3, min_detectable_effect=0.005, n=100, rejected=rejected)


def result(checks, diagnosis=(), not_applicable=(), warnings=()):
    return VerificationResult(tuple(checks), "inverted", 0, 1e-6, 1e-3, tuple(warnings), tuple(diagnosis),
                              "f(x)", tuple(not_applicable))


def test_summary_passed_skipped_and_not_applicable():
    r = result([CheckResult("check_mean[keep_prob=0.8]", "passed", keep_prob=0.8),
                CheckResult("check_row_dispersion[keep_prob=0.8]", "skipped", "fewer than 2 rows", keep_prob=0.8)],
               not_applicable=["check_eval_contract: needs an eval path (eval=...)"])
    lines = r.summary().splitlines()
    assert lines[0] == "PASSED: all 1 checks that ran passed, 1 skipped (keep_prob 0.8; contract inverted; seed 0)"
    assert "Skipped check_row_dispersion: fewer than 2 rows" in lines
    assert "Not applicable (1 checks), for want of an eval path" in lines
    assert lines[-1].endswith("print(result)")
    assert str(r).startswith("stats_dropout battery")  # print(result) is still the full table


def test_summary_unexplained_failures_one_line_each_within_width():
    long = "x" * 300
    r = result([CheckResult("check_input_unchanged[keep_prob=0.8]", "failed", "train modified its input. " + long),
                CheckResult("check_mean[keep_prob=0.8]", "failed", f"mean: estimate 0.5 (CI) {long}",
                            decision("mean", 0.5, 1.0), 0.8),
                CheckResult("check_mean[keep_prob=0.3]", "failed", f"mean: estimate 0.2 (CI) {long}",
                            decision("mean", 0.2, 1.0), 0.3)],
               warnings=["w" * 250])
    lines = r.summary(width=80).splitlines()
    assert max(map(len, lines)) <= 80
    assert "FAILED check_input_unchanged: train modified its input (keep_prob=0.8)" in lines
    mean = [line for line in lines if line.startswith("FAILED check_mean")]
    assert len(mean) == 1 and "measured 0.5, expected 1" in mean[0] and "(keep_prob=0.8, also 0.3)" in mean[0]


def test_summary_groups_knock_on_failures_under_the_diagnosis():
    cause = "kept units are not rescaled: did you forget to divide by keep_prob?"
    r = result([CheckResult("check_kept_scale[keep_prob=0.8]", "failed",
                            "kept units are scaled by 1, expected 1.25 (1/keep_prob): many differ. "
                            f"Likely cause: {cause}",
                            decision("kept-unit scale", 1.0, 1.25, ffr=0.0), 0.8),
                CheckResult("check_mean[keep_prob=0.8]", "failed", f"m: estimate 0.8. Likely cause: {cause}",
                            decision("m", 0.8, 1.0), 0.8),
                CheckResult("check_input_unchanged[keep_prob=0.8]", "failed", "modified in place.")],
               diagnosis=[f"at keep_prob=0.8: {cause}"])
    lines = r.summary().splitlines()
    assert lines[1] == f"Diagnosis: {cause}"
    assert lines[2] == "  check_kept_scale: kept units are scaled by 1, expected 1.25 (1/keep_prob): many differ"
    assert lines[3] == "  consequences (failing because of it): check_mean"
    assert lines[4] == "FAILED check_input_unchanged: modified in place"  # another bug, on its own


def test_summary_reads_a_stacked_tuple_from_the_shape_message():
    r = result([CheckResult("check_output_shape_dtype[keep_prob=0.8]", "failed",
                            "train returned shape (2, 256, 1024) for an input of shape (256, 1024).")])
    text = " ".join(r.summary().split())
    assert "does it return a tuple such as (out, mask)?" in text


# --- HTML for Jupyter -----------------------------------------------------------------------------

def test_repr_html_has_a_verdict_and_an_escaped_table():
    r = result([CheckResult("check_mean[keep_prob=0.8]", "failed", "x <b>& y", decision("m", 0.5, 1.0), 0.8)],
               diagnosis=["at keep_prob=0.8: <script>"])
    page = r._repr_html_()
    assert "FAILED" in page and "<table>" in page and "<th>check</th>" in page
    assert "x &lt;b&gt;&amp; y" in page and "&lt;script&gt;" in page and "<script>" not in page
    one = r.checks[0]._repr_html_()
    assert "FAILED" in one and "check_mean[keep_prob=0.8]" in one and "&lt;b&gt;" in one
    assert "PASSED" in result([CheckResult("check_mean", "passed")])._repr_html_()


@pytest.mark.parametrize("argv", [["--details"], []])
def test_details_flag_switches_between_table_and_summary(capsys, monkeypatch, argv):
    import stats_dropout.verification.battery as battery

    canned = result([CheckResult("check_mean[keep_prob=0.8]", "passed", keep_prob=0.8)])
    monkeypatch.setattr(battery, "verify_dropout", lambda *a, **k: canned)
    code = main(["verify", f"{FIXTURES / 'plain_dropout.py'}:dropout_fixed", "--keep-prob", "0.8", *argv])
    out = capsys.readouterr().out
    assert code == 0
    assert (str(canned) in out) == bool(argv)
    assert (canned.summary(details="") in out) != bool(argv)
