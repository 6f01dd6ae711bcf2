"""``stats-dropout verify``: targets, signature detection, exit codes, usage errors.

Real battery runs are few (each costs seconds); the wiring of each convention is tested with a
recording stand-in for ``verify_dropout``.
"""

import pathlib

import numpy as np
import pytest

import stats_dropout.verification.battery
from stats_dropout import adapters
from stats_dropout.cli import main
from stats_dropout.cli import verify as _cli_verify
from stats_dropout.inference.verdicts import VerificationResult

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


def target(file, func):
    return f"{FIXTURES / file}:{func}"


def verify(capsys, *argv):
    code = main(["verify", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def recorded(monkeypatch):
    """Replace the battery by a recorder that passes; returns the list of calls."""
    calls = []

    def fake_verify_dropout(train, eval=None, **kwargs):
        calls.append({"train": train, "eval": eval, **kwargs})
        return VerificationResult(checks=(), contract=kwargs.get("contract", "inverted"),
                                  seed=kwargs.get("seed", 0), false_fail_rate=1e-6, false_pass_rate=1e-3)

    monkeypatch.setattr(stats_dropout.verification.battery, "verify_dropout", fake_verify_dropout)
    return calls


# --- real battery runs --------------------------------------------------------------------------

def test_correct_plain_function_passes(capsys):
    code, out, err = verify(capsys, target("plain_dropout.py", "dropout_fixed"), "--keep-prob", 0.8)
    assert code == 0, out
    assert "convention plain (detected)" in out
    assert "PASSED: all 14 checks that ran passed" in out
    assert "--details" in out.splitlines()[-1]  # where the full table is
    assert err == ""


def test_broken_plain_function_fails_with_evidence_and_hint_in_details(capsys):
    # --details prints today's full output: every failure with its evidence and hint, and the table.
    code, out, _ = verify(capsys, target("plain_dropout.py", "dropout_fixed_no_rescale"), "--keep-prob", 0.8,
                          "--details")
    assert code == 1
    failures = [line for line in out.splitlines() if line.startswith("FAILED check_kept_scale")]
    assert failures and "keep_prob" in failures[0]  # the hint names the missing division
    assert any(line.startswith("FAILED check_mean") and "CI" in line for line in out.splitlines())
    assert any(line.strip().startswith("check_keep_rate[keep_prob=0.8]") for line in out.splitlines())


# The course template's reseed, end to end, is in tests/unit/test_learner_output.py.


def test_correct_course_forward_and_backward_pass(capsys, monkeypatch):
    monkeypatch.setattr(_cli_verify, "COURSE_LAYERS", (1,))
    code, out, _ = verify(capsys, target("course_correct.py", "forward_propagation_with_dropout"),
                          "--keep-prob", 0.8, "--details")
    failed = {line.split()[1].split("[")[0] for line in out.splitlines() if line.startswith("FAILED ")}
    # The sibling backward_propagation_with_dropout was found and checked.
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("check_backward_mask[")]
    assert [row[2] for row in rows] == ["passed", "passed"], out
    # The course's template does not validate keep_prob; the adapter says so, so it passes.
    assert (code, failed) == (0, set()), out


def test_unvalidated_plain_function_passes_unless_validation_is_required(capsys):
    code, out, _ = verify(capsys, target("plain_dropout.py", "dropout_unvalidated"), "--keep-prob", 0.8)
    assert code == 0, out
    code, out, _ = verify(capsys, target("plain_dropout.py", "dropout_unvalidated"), "--keep-prob", 0.8,
                          "--require-validation")
    assert code == 1 and "check_invalid_keep_prob" in out


def test_torch_module_target(capsys):
    pytest.importorskip("torch")
    code, out, _ = verify(capsys, target("torch_layers.py", "dropout"), "--keep-prob", 0.8)
    assert code == 0, out
    assert "convention torch (detected)" in out and "PASSED" in out


# --- wiring, with a recording battery -------------------------------------------------------------

def test_plain_wiring_and_eval_option(capsys, recorded):
    code, out, _ = verify(capsys, target("plain_dropout.py", "dropout"), "--keep-prob", 0.8, 0.5,
                          "--eval", target("plain_dropout.py", "identity"), "--contract", "standard",
                          "--seed", 7)
    assert code == 0
    (call,) = recorded
    assert call["train"].__name__ == "dropout" and call["eval"].__name__ == "identity"
    assert call["keep_prob"] == (0.8, 0.5) and call["contract"] == "standard" and call["seed"] == 7
    assert call["backward"] is None


def test_importable_module_target(capsys, recorded, monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    code, _, _ = verify(capsys, "plain_dropout:dropout_fixed", "--keep-prob", 0.8)
    assert code == 0
    assert recorded[0]["train"].__name__ == "dropout_fixed" and recorded[0]["keep_prob"] == 0.8


def test_course_wiring(capsys, recorded):
    code, out, _ = verify(capsys, target("course_correct.py", "forward_propagation_with_dropout"),
                          "--keep-prob", 0.8, "--details")
    assert code == 0
    assert [c["train"].__name__ for c in recorded] == [
        "forward_propagation_with_dropout[layer=1]", "forward_propagation_with_dropout[layer=2]"]
    for layer, call in zip((1, 2), recorded):
        assert call["eval"] is None
        assert call["backward"].__name__ == f"backward_propagation_with_dropout[layer={layer}]"
        assert np.shape(call["example_input"]) == adapters.COURSE_PROBE_SHAPE
        x = call["example_input"][:64]
        np.random.seed(0)
        y = call["train"](x, 0.5)  # the adapter really reads that layer of the learner's network
        assert set(np.unique(y[x != 0] / x[x != 0]).tolist()) == {0.0, 2.0}
    assert "== layer 1" in out and "== layer 2" in out


def test_course_without_backward(capsys, recorded):
    code, _, _ = verify(capsys, target("course_reseeded.py", "forward_propagation_with_dropout"),
                        "--keep-prob", 0.8)
    assert code == 0 and [c["backward"] for c in recorded] == [None, None]


def test_cs231n_wiring(capsys, recorded):
    code, _, _ = verify(capsys, target("cs231n_drop.py", "dropout_forward"), "--keep-prob", 0.8,
                        "--p-means", "drop")
    assert code == 0
    (call,) = recorded
    x = np.linspace(1, 2, 20_000)
    np.random.seed(0)
    kept = call["train"](x, 0.8) != 0
    assert abs(kept.mean() - 0.8) < 0.02  # 7 standard errors: "p" was passed as 1 - keep_prob
    np.testing.assert_allclose(call["eval"](x, 0.8), 0.8 * x)  # this layer's test mode, as is
    y, dx = call["backward"](x, np.ones_like(x), 0.8)
    assert np.array_equal(dx != 0, y != 0)


def test_torch_channel_module_wiring(capsys, recorded):
    pytest.importorskip("torch")
    code, _, _ = verify(capsys, target("torch_layers.py", "channel"), "--keep-prob", 0.5)
    assert code == 0
    (call,) = recorded
    assert (call["keep_prob"], call["contract"], call["shared_axes"]) == (0.5, "inverted", "spatial")
    assert call["train"].__name__ == "Dropout2d(p=0.5).train" and call["eval"].__name__ == "Dropout2d(p=0.5).eval"


def test_torch_keep_prob_agrees_up_to_rounding(capsys, recorded):
    pytest.importorskip("torch")
    code, _, err = verify(capsys, target("torch_layers.py", "mostly_dropped"), "--keep-prob", 0.3)
    assert code == 0, err
    assert recorded[0]["keep_prob"] == 1 - 0.7  # the module's own value


def test_forced_convention(capsys, recorded):
    code, out, _ = verify(capsys, target("cs231n_keep.py", "dropout_forward"), "--keep-prob", 0.8,
                          "--convention", "cs231n")
    assert code == 0 and "convention cs231n," in out and "(detected)" not in out


def test_exit_code_one_when_any_battery_fails(capsys, monkeypatch):
    from stats_dropout.inference.verdicts import CheckResult

    def failing(train, eval=None, **kwargs):
        return VerificationResult(checks=(CheckResult("check_mean[keep_prob=0.8]", "failed", "off"),),
                                  contract="inverted", seed=0, false_fail_rate=1e-6, false_pass_rate=1e-3)

    monkeypatch.setattr(stats_dropout.verification.battery, "verify_dropout", failing)
    code, out, _ = verify(capsys, target("plain_dropout.py", "dropout"), "--keep-prob", 0.8)
    assert code == 1 and "FAILED check_mean: off" in out  # the summary
    code, out, _ = verify(capsys, target("plain_dropout.py", "dropout"), "--keep-prob", 0.8, "--details")
    assert code == 1 and "FAILED check_mean[keep_prob=0.8]: off" in out  # the full output


# --- usage errors: exit 2, one line on stderr, no traceback --------------------------------------

SYNTAX_ERROR = "def dropout(x, keep_prob):\n    return x *\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["{missing_file}:dropout", "--keep-prob", "0.8"], "file not found"),
    (["no_such_module_xyz:dropout", "--keep-prob", "0.8"], "no module named 'no_such_module_xyz'"),
    (["{plain}:nope", "--keep-prob", "0.8"], "has no attribute 'nope'; its functions: dropout, "),
    (["{plain}:not_callable", "--keep-prob", "0.8"], "not_callable is not callable; got int"),
    (["{plain}", "--keep-prob", "0.8"], "must look like MODULE:CALLABLE"),
    (["{plain}:dropout", "--keep-prob", "0"], "`--keep-prob` must be in (0, 1]; got 0.0"),
    (["{plain}:dropout", "--keep-prob", "0.5", "1.5"], "`--keep-prob` must be in (0, 1]; got 1.5"),
    (["{plain}:dropout", "--keep-prob", "nan"], "`--keep-prob` must be in (0, 1]; got nan"),
    (["{plain}:dropout", "--keep-prob", "0.8", "--seed", "-1"],
     "`--seed` must be a non-negative integer; got -1"),
    (["{plain}:dropout", "--keep-prob", "0.8", "--eval", "{plain}:missing"], "has no attribute 'missing'"),
    (["{course}:forward_propagation_with_dropout", "--keep-prob", "0.8", "--eval", "{plain}:identity"],
     "--eval does not apply to the course convention"),
    (["{plain}:dropout", "--keep-prob", "0.8", "--convention", "course"],
     "does not fit the 'course' convention"),
    (["{broken}:dropout", "--keep-prob", "0.8"], "failed: SyntaxError"),
    (["{torch}:dropout", "--keep-prob", "0.5"], "drops with p=0.2, i.e. keep_prob 0.8; got --keep-prob 0.5"),
    (["{torch}:dropout", "--keep-prob", "0.8", "--contract", "moments"],
     "Dropout follows the 'inverted' contract; got --contract moments"),
    (["{torch}:dropout", "--keep-prob", "0.8", "--convention", "course"], "--convention course does not apply"),
])
def test_usage_errors(capsys, tmp_path, recorded, argv, message):
    broken = tmp_path / "broken_learner.py"
    broken.write_text(SYNTAX_ERROR)
    paths = {"missing_file": tmp_path / "missing.py", "plain": FIXTURES / "plain_dropout.py",
             "course": FIXTURES / "course_correct.py", "broken": broken,
             "torch": FIXTURES / "torch_layers.py"}
    if "{torch}" in argv[0]:
        pytest.importorskip("torch")
    code, out, err = verify(capsys, *[a.format(**paths) for a in argv])
    assert code == 2
    assert recorded == []  # the battery never ran
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stats-dropout: error: "), err
    assert message in lines[0]
    assert "Traceback" not in err + out


def test_learner_file_can_import_its_neighbours(capsys, tmp_path, recorded):
    (tmp_path / "helpers_for_learner.py").write_text("def keep(x):\n    return x\n")
    learner = tmp_path / "learner.py"
    learner.write_text("from helpers_for_learner import keep\n\ndef dropout(x):\n    return keep(x)\n")
    import sys

    before = list(sys.path)
    code, _, err = verify(capsys, f"{learner}:dropout", "--keep-prob", 0.8)
    assert code == 0, err
    assert sys.path == before  # the learner's directory is not left on sys.path


def test_timeout_option_sets_one_limit_for_every_battery(capsys, monkeypatch):
    # --timeout (default 60 s; 0 / none: no limit) is one guard for the command: the course
    # network's two batteries share it, so after a hang the second fails at once.
    from stats_dropout._internal.timeouts import current_guard

    seen = []

    def fake_verify_dropout(train, eval=None, **kwargs):
        guard = current_guard()
        seen.append(None if guard is None else (guard.timeout, id(guard)))
        return VerificationResult(checks=(), contract="inverted", seed=0, false_fail_rate=1e-6, false_pass_rate=1e-3)

    monkeypatch.setattr(stats_dropout.verification.battery, "verify_dropout", fake_verify_dropout)
    course = target("course_correct.py", "forward_propagation_with_dropout")
    assert verify(capsys, course, "--keep-prob", 0.86)[0] == 0
    assert [s[0] for s in seen] == [60.0, 60.0] and seen[0][1] == seen[1][1]
    seen.clear()
    assert verify(capsys, target("plain_dropout.py", "dropout_fixed"), "--keep-prob", 0.8, "--timeout", 2.5)[0] == 0
    assert seen[0][0] == 2.5
    seen.clear()
    for off in ("0", "none"):
        assert verify(capsys, target("plain_dropout.py", "dropout_fixed"), "--keep-prob", 0.8, "--timeout", off)[0] == 0
    assert seen == [None, None]
    code, _, err = verify(capsys, target("plain_dropout.py", "dropout_fixed"), "--keep-prob", 0.8, "--timeout", "-2")
    assert code == 2 and "`--timeout` must be a positive number of seconds, or 0 / none for no limit; got '-2'" in err
