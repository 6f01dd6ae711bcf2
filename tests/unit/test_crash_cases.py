"""Crash audit (issue #12 §3–4): each case once crashed or exited with a foreign code; now a clear result.

The command line exits 0 (passed), 1 (a check failed), 2 (usage error, one line) or 130 (Ctrl-C,
one line) and never with an exit code of the code under test, nor with a raw traceback. Helpers
name the parameter, the allowed range and the value they reject.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import stats_dropout as sd
from stats_dropout._internal import files
from stats_dropout.cli import main
from stats_dropout.inference import design
from stats_dropout.inference import stats as stats_mod
from stats_dropout.inference.intervals import t_interval

#: The command line in a child interpreter, Ctrl-C answered as in a terminal: a test run started in the
#: background (``pytest &``) ignores SIGINT, the child would inherit that, and Python installs its
#: KeyboardInterrupt handler only where SIGINT is not ignored (the Ctrl-C tests then waited 30 s and failed).
CLI = [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "from stats_dropout.cli import main; sys.exit(main())"]

USER = """
import sys
import numpy as np

def exits(x, keep_prob):
    sys.exit(CODE)

def exits_plain(x):
    sys.exit(CODE)

def correct(x, keep_prob):
    if not 0 < keep_prob <= 1:
        raise ValueError("keep_prob must be in (0, 1]")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob

def identity(x):
    return x.copy()

def factory():
    sys.exit(CODE)
"""


def user_file(tmp_path, code, top=""):
    path = tmp_path / "user.py"
    path.write_text(top + USER.replace("CODE", repr(code)))
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- SystemExit in user code ----------------------------------------------------------------------
# Before: `verify file.py:exits` ended the command with the learner's exit code (5, 7 — and 0, a
# pass, for sys.exit()), since the command's probe call caught Exception only.

@pytest.mark.parametrize("code", [0, 5, None])
@pytest.mark.parametrize("func", ["exits", "exits_plain"])
def test_sys_exit_in_train_is_a_failed_check(tmp_path, capsys, func, code):
    path = user_file(tmp_path, code)
    status, out, err = cli(capsys, "verify", f"{path}:{func}", "--keep-prob", 0.8, "--details")
    assert status == 1, (out, err)
    assert "SystemExit" in out and "FAILED" in out and "Traceback" not in out + err


def test_sys_exit_in_train_without_time_limit(tmp_path, capsys):
    path = user_file(tmp_path, 3)
    status, out, _ = cli(capsys, "verify", f"{path}:exits", "--keep-prob", 0.8, "--timeout", "none")
    assert status == 1 and "SystemExit" in out


def test_sys_exit_in_eval_is_a_failed_check(tmp_path, capsys):
    path = user_file(tmp_path, 7)
    status, out, err = cli(capsys, "verify", f"{path}:correct", "--eval", f"{path}:exits_plain", "--keep-prob", 0.8)
    assert status == 1 and "check_eval" in out and "Traceback" not in err


def test_sys_exit_in_the_api_is_a_failed_check():
    def leaves(x, keep_prob):
        sys.exit(5)

    for timeout in (None, 30):
        result = sd.verify_dropout(leaves, keep_prob=0.8, timeout=timeout)
        assert not result.passed and "SystemExit: 5" in result.failed_checks[0].message


@pytest.mark.parametrize("code", [0, 3, None])
def test_sys_exit_at_import_is_a_usage_error_not_its_exit_code(tmp_path, capsys, code):
    # Before: the command exited with the module's code (0 would read as "every check passed").
    path = user_file(tmp_path, code, top=f"import sys\nsys.exit({code!r})\n")
    status, _, err = cli(capsys, "verify", f"{path}:correct", "--keep-prob", 0.8)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"stats-dropout: error: the code under test raised SystemExit({code!r})")


def test_sys_exit_in_a_model_factory_is_a_usage_error(tmp_path, capsys):
    path = user_file(tmp_path, 4)
    status, _, err = cli(capsys, "verify-model", f"{path}:factory")
    assert status == 2
    assert err.strip().splitlines() == [f"stats-dropout: error: {path}:factory() raised SystemExit: 4"]


# --- Ctrl-C -----------------------------------------------------------------------------------------

def test_keyboard_interrupt_from_user_code_is_130(tmp_path, capsys):
    path = tmp_path / "interrupts.py"
    path.write_text("def f(x, keep_prob):\n    raise KeyboardInterrupt\n")
    for timeout in ("60", "none"):  # through the worker thread, and directly
        status, _, err = cli(capsys, "verify", f"{path}:f", "--keep-prob", 0.8, "--timeout", timeout)
        assert status == 130 and err.strip().splitlines() == ["stats-dropout: interrupted"]


def test_ctrl_c_during_a_timed_call_is_130_and_one_line(tmp_path):
    marker = tmp_path / "entered"
    path = tmp_path / "hangs.py"
    path.write_text(f"import threading\ndef f(x, keep_prob):\n    open({str(marker)!r}, 'w').close()\n"
                    "    threading.Event().wait(60)\n")
    proc = subprocess.Popen(CLI + ["verify", f"{path}:f", "--keep-prob", "0.8"],  # default --timeout 60
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "never called"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["stats-dropout: interrupted"]


# --- output paths: fail before computing, one line ----------------------------------------------------
# Before: `schemes --csv /proc/x.csv` and `claims --csv /proc/x.csv` computed everything, then
# crashed with a FileNotFoundError traceback (the directory exists, and root passes os.access).

@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc (a directory that takes no new file)")
@pytest.mark.parametrize("argv, computes", [
    (["schemes", "--csv", "/proc/x.csv", "--schemes", "inverted"], ("stats_dropout.reporting.sweep", "sweep_schemes")),
    (["claims", "--csv", "/proc/x.csv"], ("stats_dropout.studies.claims.ledger", "claims_ledger")),
])
def test_csv_onto_a_directory_that_takes_no_file(monkeypatch, capsys, argv, computes):
    import importlib

    def never(*args, **kwargs):
        raise AssertionError("computed before checking the output path")

    monkeypatch.setattr(importlib.import_module(computes[0]), computes[1], never)
    status, _, err = cli(capsys, *argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "`--csv` must be a writable path: cannot create a file in '/proc'" in lines[0]


def test_output_file_iv_tries_the_directory(tmp_path, monkeypatch):
    assert files.output_file_iv(tmp_path / "ok.csv") == str(tmp_path / "ok.csv")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(ValueError, match=r"`out.csv` must be a writable path: cannot create a file in .*"
                                         r"\(Permission denied\)"):
        files.output_file_iv(tmp_path / "x.csv", "out.csv")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_is_written_in_place_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []

    def read():
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read)
    reader.start()
    files.output_file_iv(fifo)
    files.atomic_write_text(fifo, "a,b\n1,2\n")
    reader.join(10)
    assert got == [b"a,b\n1,2\n"]
    assert not os.path.isfile(fifo)  # still the pipe (os.replace would have made it a regular file)


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    # reporting/tables.py caches through atomic_write_pickle: a unique mkstemp name per writer, never
    # path + ".tmp" (two report processes sharing one cache raced on that name).
    import inspect

    from stats_dropout.reporting import tables

    assert '".tmp"' not in inspect.getsource(tables) and "atomic_write_pickle" in inspect.getsource(tables)
    path = tmp_path / "table.pkl"
    frames = [pd.DataFrame({"writer": [i] * 1000}) for i in range(8)]
    errors = []

    def write(frame):
        try:
            for _ in range(10):
                files.atomic_write_pickle(path, frame)
        except Exception as exc:  # noqa: BLE001 — collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f,)) for f in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pd.read_pickle(path)["writer"].nunique() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["table.pkl"]  # no temporary file left behind


# --- seeds beyond 2**64 with torch imported ---------------------------------------------------------------
# torch.manual_seed takes seeds below 2**64: the battery folds them (seeded_global_rngs), so a
# large seed is accepted and reproducible rather than an OverflowError from inside torch.

def test_seed_beyond_2_64_with_torch_imported(capsys, tmp_path):
    pytest.importorskip("torch")

    def raises(x, keep_prob):
        raise ValueError("not implemented")

    for seed in (2**64, 2**64 + 1, 10**30):
        result = sd.verify_dropout(raises, keep_prob=0.8, seed=seed)
        assert result.seed == seed and not result.passed
        checks = sd.iter_checks(sd.Implementation(raises, keep_prob=0.8), seed=seed)
        assert checks and checks[0][1](sd.Implementation(raises, keep_prob=0.8)).status == "failed"
    path = user_file(tmp_path, 0)
    status, out, err = cli(capsys, "verify", f"{path}:exits", "--keep-prob", 0.8, "--seed", 2**64)
    assert status == 1 and "Traceback" not in err


def test_seed_beyond_2_64_in_verify_model():
    torch = pytest.importorskip("torch")
    from stats_dropout.verification.model_eval import eval_randomness

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    assert eval_randomness(model, torch.randn(3, 4), seed=2**64 + 3) == (True, [])


# --- design twins: the parameter, its allowed range and the value ----------------------------------------

@pytest.mark.parametrize("call, err, msg", [
    (lambda: design.min_draws_for_mean_error(0.01, np.inf), ValueError,
     r"`sd` must be finite and non-negative; got inf"),
    (lambda: design.min_draws_for_mean_error(0.01, "1"), TypeError, r"`sd` must be a real number; got '1'"),
    (lambda: design.min_draws_for_mean_error(np.inf, 1.0), ValueError, r"`effect` must be finite; got inf"),
    (lambda: design.min_draws_for_mean_error(np.nan, 1.0), ValueError, r"`effect` must be positive; got nan"),
    (lambda: design.min_draws_for_mean_error(1e-300, 1.0), ValueError,
     r"needs more than 1e\+18 draws: `effect` must be at least about 7.98e-09 at this `sd`"),
    (lambda: design.min_draws_for_mean_error(0.01, 1.0, n_tests=0), ValueError,
     r"`n_tests` must be a positive integer"),
    (lambda: design.min_trials_for_keep_rate_error(0.5, 1e-300), ValueError,
     r"`effect` 1e-300 needs more than 1e\+18 trials: `effect` must be at least about 3.99e-09 at keep_prob=0.5"),
    (lambda: design.min_trials_for_keep_rate_error(0.8, np.inf), ValueError,
     r"`effect` must be at most 0.8 at keep_prob=0.8 \(no keep rate is further from it\); got inf"),
    (lambda: design.min_trials_for_keep_rate_error(0.5, 2.0), ValueError, r"`effect` must be at most 0.5"),
    (lambda: design.min_mean_error_detectable_by_t(10, -1.0), ValueError, r"`sd` must be finite and non-negative"),
    (lambda: design.tost_sample_size(1.0, 0.0, alpha=0.05, power=0.9, min_draws=10), ValueError,
     r"`margin` must be positive; got 0.0"),
    (lambda: design.tost_sample_size(1.0, 0.1, alpha=1.5, power=0.9, min_draws=10), ValueError,
     r"`alpha` must be in \(0, 1\); got 1.5"),
])
def test_design_twins_name_parameter_range_and_value(call, err, msg):
    # Before: effect=inf gave 2 draws and 0 trials, effect=2 a number, n_tests=0 a ZeroDivisionError.
    with pytest.raises(err, match=msg):
        call()


def test_design_twins_still_answer():
    assert design.min_trials_for_keep_rate_error(0.5, 0.5) >= 1  # the largest possible error
    assert design.min_draws_for_mean_error(0.01, 0.0) == 2


# --- t_interval --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, msg", [
    ((0.0, 1.0, 10, 1.5), r"`level` must be in \(0, 1\); got 1.5"),
    ((0.0, 1.0, 0, 0.95), r"`df` must be positive \(n − 1 for the mean of n ≥ 2 draws\); got 0.0"),
    ((0.0, 1.0, -1, 0.95), r"`df` must be positive .*; got -1.0"),
    ((0.0, 1.0, np.nan, 0.95), r"`df` must be positive .*; got nan"),
    ((np.zeros(3), np.ones(3), np.array([3, 0, 2]), 0.95), r"`df` must be positive .*; got 0.0"),
    ((0.0, -1.0, 10, 0.95), r"`std_error` must be non-negative; got -1.0"),
])
def test_t_interval_rejects_what_gives_no_interval(args, msg):
    # Before: df <= 0 or NaN gave (nan, nan) and a negative std_error an inverted interval.
    with pytest.raises(ValueError, match=msg):
        t_interval(*args)


def test_t_interval_values():
    low, high = t_interval(1.0, 0.5, 10, 0.95)
    assert low < 1.0 < high and np.isclose(high - 1.0, 1.0 - low)
    low, high = t_interval(0.0, np.nan, 10, 0.95)  # an unknown error gives an unknown interval
    assert np.isnan(low) and np.isnan(high)


# --- keep_prob ----------------------------------------------------------------------------------------------

def test_zero_dimensional_keep_probs_and_repeats():
    impl = sd.Implementation(lambda x, keep_prob: x, keep_prob=np.float64(0.5))
    assert impl.keep_probs() == (0.5, 0.8)
    assert sd.Implementation(lambda x: x, keep_prob=np.array(0.3)).keep_probs() == (0.3,)
    with pytest.raises(ValueError, match=r"`keep_prob` holds 0.5 more than once"):
        sd.Implementation(lambda x: x, keep_prob=np.array([0.5, 0.5])).keep_probs()


def test_cli_repeated_keep_prob_names_the_option(tmp_path, capsys):
    path = user_file(tmp_path, 0)
    status, _, err = cli(capsys, "verify", f"{path}:correct", "--keep-prob", 0.5, 0.5)
    assert status == 2
    assert err.strip().splitlines() == ["stats-dropout: error: `--keep-prob` holds 0.5 more than once; got (0.5, 0.5)"]


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: stats_mod.decide_equivalence(0, 1, margin=float("inf")), ValueError, "margin"),
    (lambda: stats_mod.decide_equivalence(0, 1, 1, df=0), ValueError, "df"),
    (lambda: stats_mod.decide_equivalence("a", 1, 1), TypeError, "estimate"),
    (lambda: stats_mod.decide_equivalence(np.array([1.0, 2.0]), 1, 1), TypeError, "estimate"),
    (lambda: stats_mod.decide_dispersion([5, 5], [10, 10.5], 0.5), ValueError, "size"),
    (lambda: stats_mod.decide_dispersion([1.5, 2], 10, 0.5), ValueError, "counts"),
    (lambda: stats_mod.holm_adjust(["a"]), TypeError, "pvalues"),
    (lambda: sd.estimate_train_moments(sd.get_scheme("inverted").bind(0.8), np.ones(4), draws=10**30),
     ValueError, "draws"),
])
def test_decisions_and_engines_name_the_bad_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT are POSIX")
def test_ctrl_c_during_report_is_one_line_and_prompt(tmp_path):
    """Ctrl-C reaches the whole process group: the spawned experiments worker must stay silent
    (it ignores SIGINT from its first instruction) and be stopped, not waited for."""
    out = tmp_path / "report"
    proc = subprocess.Popen([*CLI, "report", "--out", str(out), "--draws", "100"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".cells").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(5)  # the worker is importing or computing by now
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("stats-dropout: interrupted"), err
    assert len(err.strip().splitlines()) == 1, err
    assert elapsed < 15
