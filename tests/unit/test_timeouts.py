"""``timeout=``: a call to the implementation that hangs becomes a failed check naming the call.

The guard (stats_dropout/_internal/timeouts.py) runs each call in one daemon worker thread and
waits at most ``timeout`` seconds; after a hang nothing more of the implementation is called. The
hanging functions here wait on an Event that the test sets afterwards, so no thread outlives it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout._internal.timeouts import (
    CallGuard,
    CallTimeout,
    describe_call,
    guarded_call,
    parse_timeout,
    time_limit,
    timeout_iv,
)
from stats_dropout.cli import main

#: Wall-clock bound of a run that hangs at its first call (timeout 0.5 s; the rest fails at once).
BOUND = 10.0
#: The limit where every call before the hang is a numpy dropout of a small array (microseconds): each
#: such test waits it out once. Torch models and the child interpreter keep 0.5 s.
SHORT = 0.25


@pytest.fixture
def release():
    """An Event the hanging functions wait on; set at teardown so their threads end."""
    event = threading.Event()
    yield event
    event.set()


def dropout(x, keep_prob):
    if not 0 < keep_prob <= 1:
        raise ValueError("keep_prob must be in (0, 1]")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "5", [1]])
def test_timeout_must_be_positive_finite_seconds(bad):
    with pytest.raises((TypeError, ValueError), match="`timeout` must be a positive finite number of seconds"):
        timeout_iv(bad)
    with pytest.raises((TypeError, ValueError), match="`timeout`"):
        sd.verify_dropout(dropout, keep_prob=0.8, timeout=bad)
    with pytest.raises((TypeError, ValueError), match="`timeout`"):
        sd.iter_checks(sd.Implementation(dropout, keep_prob=0.8), timeout=bad)


def test_timeout_values():
    assert timeout_iv(None) is None and timeout_iv(2) == 2.0 and timeout_iv(np.float64(0.5)) == 0.5
    assert parse_timeout("60") == 60.0 and parse_timeout("0.5") == 0.5
    for off in ("0", "none", "None", "off"):
        assert parse_timeout(off) is None
    for bad in ("-1", "abc", "inf", "nan"):
        with pytest.raises(ValueError, match="`--timeout` must be a positive number of seconds, or 0 / none"):
            parse_timeout(bad)


def test_describe_call():
    x = np.zeros(3)
    assert describe_call("train", (x, 0.8)) == "train(x, 0.8)"
    assert describe_call("backward", (x, x, 0.3)) == "backward(x, upstream, 0.3)"


# --- the guard ------------------------------------------------------------------------------------

def test_guard_runs_calls_in_one_worker_thread_and_passes_results_and_errors():
    guard = CallGuard(5)
    threads = [guard.call("f()", threading.current_thread) for _ in range(3)]
    assert len(set(threads)) == 1 and threads[0] is not threading.main_thread()
    assert threads[0].daemon
    assert guard.call("f()", lambda a, b=0: a + b, 1, b=2) == 3

    def leaves():
        sys.exit(5)

    with pytest.raises(SystemExit) as info:
        guard.call("f()", leaves)
    assert info.value.code == 5
    assert info.traceback[-1].name == "leaves"  # the user's frame is where it says it raised


def test_hang_raises_once_then_fails_fast(release):
    guard = CallGuard(0.3)
    started = time.perf_counter()
    with pytest.raises(CallTimeout, match=r"^train\(x, 0.8\) did not return within 0.3 s") as info:
        guard.call("train(x, 0.8)", release.wait)
    assert 0.25 < time.perf_counter() - started < BOUND
    assert guard.hung == "train(x, 0.8) did not return within 0.3 s"
    assert info.value.__traceback__ is not None
    started = time.perf_counter()
    called = []
    with pytest.raises(CallTimeout, match=r"train\(x, 0.8\) did not return within 0.3 s earlier in this run, so "
                                          r"eval\(x\) was not called"):
        guard.call("eval(x)", called.append, 1)
    assert called == [] and time.perf_counter() - started < 0.2


def test_stuck_line_is_the_exceptions_location(release):
    from stats_dropout.verification.evidence import call_user

    def stuck(x):
        release.wait()  # the line reported

    guard = CallGuard(0.3)
    _, error = call_user(guard.wrap(stuck, "train"), np.zeros(2))
    assert error.startswith("CallTimeout: train(x) did not return within 0.3 s")
    line = stuck.__code__.co_firstlineno + 1
    assert error.endswith(f"(at {__file__}:{line})"), error


def test_torch_grad_mode_and_contextvars_carried_to_the_worker():
    torch = pytest.importorskip("torch")
    guard = CallGuard(5)
    with torch.no_grad():
        assert guard.call("f()", torch.is_grad_enabled) is False
    assert guard.call("f()", torch.is_grad_enabled) is True
    with np.errstate(divide="raise"):
        with pytest.raises(FloatingPointError):
            guard.call("f()", lambda: np.float64(1.0) / np.float64(0.0))


def test_ctrl_c_while_waiting_stops_the_run(release):
    def hang(x, keep_prob):
        release.wait()

    # A real SIGINT to the main thread, as Ctrl-C gives: it interrupts the wait for the worker.
    timer = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            sd.verify_dropout(hang, keep_prob=0.8, timeout=30)
    finally:
        timer.cancel()
    assert time.perf_counter() - started < BOUND


# --- the battery ----------------------------------------------------------------------------------

def test_hanging_train_fails_naming_the_call_in_bounded_time(release):
    calls = []

    def hang(x, keep_prob):
        calls.append(keep_prob)
        release.wait()

    started = time.perf_counter()
    result = sd.verify_dropout(hang, keep_prob=0.8, timeout=SHORT)
    elapsed = time.perf_counter() - started
    assert not result.passed and elapsed < BOUND
    assert calls == [0.8]  # called once: never again after the hang, at no keep_prob
    first = result.failed_checks[0]
    assert first.check == "check_output_shape_dtype[keep_prob=0.8]"
    assert "train(x, 0.8) did not return within 0.25 s" in first.message
    later = [c for c in result.failed_checks if c.keep_prob == 0.3]
    assert later and all("was not called" in c.message for c in later)


def test_hanging_backward_fails_naming_the_call(release):
    def hang_backward(x, upstream, keep_prob):
        release.wait()

    result = sd.verify_dropout(dropout, keep_prob=0.8, backward=hang_backward, timeout=SHORT,
                               example_input=np.random.default_rng(0).standard_normal((32, 64)))
    failed = [c for c in result.failed_checks if "backward(x, upstream, 0.8) did not return within 0.25 s" in c.message]
    assert failed and not result.passed


def test_hanging_eval_fails_naming_the_call(release):
    def hang_eval(x):
        release.wait()

    started = time.perf_counter()
    result = sd.verify_dropout(dropout, hang_eval, keep_prob=0.8, timeout=SHORT,
                               example_input=np.random.default_rng(0).standard_normal((32, 64)))
    assert time.perf_counter() - started < 60
    messages = " ".join(c.message for c in result.failed_checks)
    assert "eval(x) did not return within 0.25 s" in messages
    assert any(c.check.startswith("check_eval") for c in result.failed_checks)


def test_results_identical_with_and_without_timeout():
    x = np.random.default_rng(1).standard_normal((32, 64))
    plain = sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.8, example_input=x, seed=3)
    timed = sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.8, example_input=x, seed=3, timeout=30)
    assert plain.to_frame().equals(timed.to_frame())  # ids, verdicts, estimates, intervals, messages
    assert (plain.diagnosis, plain.warnings, plain.passed) == (timed.diagnosis, timed.warnings, True)


def test_no_timeout_calls_in_the_callers_thread():
    seen = set()

    def record(x, keep_prob):
        seen.add(threading.current_thread())
        return dropout(x, keep_prob)

    x = np.random.default_rng(2).standard_normal((16, 32))
    sd.verify_dropout(record, keep_prob=0.8, example_input=x)
    assert seen == {threading.current_thread()}
    seen.clear()
    sd.verify_dropout(record, keep_prob=0.8, example_input=x, timeout=30)
    (worker,) = seen
    assert worker is not threading.current_thread()


def test_iter_checks_share_one_guard(release):
    calls = []

    def hang(x, keep_prob):
        calls.append(keep_prob)
        release.wait()

    impl = sd.Implementation(hang, keep_prob=0.8)
    started = time.perf_counter()
    results = [check(impl) for _, check in sd.iter_checks(impl, timeout=SHORT)]
    assert time.perf_counter() - started < BOUND and calls == [0.8]
    assert any("did not return within 0.25 s" in r.message for r in results if r.status == "failed")


def test_time_limit_block_is_shared_by_batteries(release):
    calls = []

    def hang(x, keep_prob):
        calls.append(keep_prob)
        release.wait()

    started = time.perf_counter()
    with time_limit(SHORT) as guard:
        first = sd.verify_dropout(hang, keep_prob=0.8)
        second = sd.verify_dropout(hang, keep_prob=0.3)
        with pytest.raises(CallTimeout):
            guarded_call("f()", print)
    assert guard.hung.startswith("train(x, 0.8) did not return")
    assert not first.passed and not second.passed and calls == [0.8]
    assert time.perf_counter() - started < BOUND
    assert guarded_call("f()", lambda: 7) == 7  # outside the block: a direct call


# --- the command line -----------------------------------------------------------------------------

HANG = """
import threading, time
import numpy as np

def hang(x, keep_prob):
    threading.Event().wait(30)  # ends by itself: no thread outlives the test run for long

def spin(x, keep_prob):
    end = time.monotonic() + 30
    while time.monotonic() < end:
        pass
"""


def test_cli_timeout_exits_1_with_one_line(tmp_path, capsys):
    (tmp_path / "hang.py").write_text(HANG)
    started = time.perf_counter()
    code = main(["verify", f"{tmp_path / 'hang.py'}:hang", "--keep-prob", "0.8", "--timeout", str(SHORT)])
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code == 1 and elapsed < BOUND
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("stats-dropout verify: FAILED: train(x, 0.8) on a small probe did not return "
                               "within 0.25 s (--timeout 0.25)")
    assert "FAILED" in out


def test_cli_timeout_usage_error(capsys):
    assert main(["verify", "x.py:f", "--keep-prob", "0.8", "--timeout", "soon"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stats-dropout: error: `--timeout` must be a positive number of seconds, or 0 / none for "
                   "no limit; got 'soon'"]


@pytest.mark.parametrize("func", ["hang", pytest.param("spin", marks=pytest.mark.slow)])  # spin: slow tier
def test_cli_process_exits_promptly_despite_the_stuck_thread(tmp_path, func):
    (tmp_path / "hang.py").write_text(HANG)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from stats_dropout.cli import main; sys.exit(main())", "verify",
         f"{tmp_path / 'hang.py'}:{func}", "--keep-prob", "0.8", "--timeout", "0.5"],
        capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("stats-dropout verify: FAILED: train(x, 0.8)")
    assert elapsed < 25  # interpreter start-up and imports included; the stuck thread would add 30 s


def test_verify_model_eval_forward_hang(release):
    torch = pytest.importorskip("torch")

    class Stuck(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 8)
            self.drop = torch.nn.Dropout(0.2)

        def forward(self, x):
            if not self.training:
                release.wait()
            return self.drop(self.linear(x))

    from stats_dropout.verification.model_sites import ROOT

    started = time.perf_counter()
    with time_limit(0.5):
        result = sd.verify_model(Stuck(), torch.randn(64, 8))
    assert time.perf_counter() - started < 60
    assert not result.passed and result.eval_deterministic is None
    (stuck,) = [r for r in result.rows if r.path == ROOT]
    assert stuck.verdict == "failed" and "the eval-mode forward model(batch) did not return within 0.5 s" in stuck.note


STUCK_MODEL = """
import threading
import torch

class Stuck(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.2)

    def forward(self, x):
        if not self.training:
            threading.Event().wait(30)
        return self.drop(self.linear(x))

def factory():
    return Stuck(), torch.randn(64, 8)
"""


def test_cli_verify_model_timeout_exits_1_with_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "stuck.py").write_text(STUCK_MODEL)
    started = time.perf_counter()
    code = main(["verify-model", f"{tmp_path / 'stuck.py'}:factory", "--timeout", "0.5"])
    out, err = capsys.readouterr()
    assert code == 1 and time.perf_counter() - started < 60
    assert err.strip().splitlines() == [
        "stats-dropout verify-model: FAILED: the eval-mode forward model(batch) did not return within 0.5 s "
        "(--timeout 0.5); a hung call cannot be stopped, so nothing more was called and every check from there "
        "on failed"]
    assert "did not return within 0.5 s" in out


def test_verify_model_timeout_bounds_a_hanging_forward():
    torch = pytest.importorskip("torch")
    import threading
    import time as _time

    class Hangs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.2)

        def forward(self, x):
            threading.Event().wait()  # never returns
            return self.drop(x)

    from stats_dropout._internal.timeouts import CallTimeout

    started = _time.perf_counter()
    with pytest.raises(CallTimeout, match="train-mode forward"):
        sd.verify_model(Hangs(), torch.zeros(4, 8), timeout=0.5)
    assert _time.perf_counter() - started < 10
    with pytest.raises(ValueError, match="timeout"):
        sd.verify_model(Hangs(), torch.zeros(4, 8), timeout=-1)
