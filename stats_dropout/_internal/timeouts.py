"""Time limits on calls to user code: a hang becomes an exception naming the call.

``verify_dropout(..., timeout=60)`` and the command line's ``--timeout`` run every call to the
implementation under test (train, eval, backward; a model's forward) through a
:class:`CallGuard`: the call runs in the guard's worker thread while the caller waits at most
``timeout`` seconds. A call that does not return in time raises :class:`CallTimeout` in the
caller (``"train(x, 0.8) did not return within 60 s"``), which the battery reports as a failed
check, like any exception of the implementation.

A thread cannot be killed: the hung call keeps running in its (daemon) worker thread until the
process exits, possibly holding locks or still mutating its state. So a guard never calls the
implementation again after a hang: every later call fails at once with a :class:`CallTimeout`
that names the call that hung, and a run that hangs costs one ``timeout``, not one per check.
The worker is a daemon thread, so the process can exit while it is stuck.

What the worker sees: calls run one at a time, in the caller's order, all on the same worker
thread (thread-local state of the implementation persists from call to call); the caller's
``contextvars`` (numpy's ``errstate``, ``decimal`` contexts) and torch's grad / inference modes
(thread-local in torch) are carried over to each call. Process-wide state — numpy's and
torch's global RNGs, which the battery seeds, threadpool limits — is shared anyway, so results
are identical with and without a limit. Not carried over: other thread-local state of the
caller (torch autocast, a ``threading.local``), and signals: only the main thread can set a
signal handler, so code that calls ``signal.signal`` fails under a limit. A call stuck in C code
that holds the GIL cannot be timed out (the waiting caller needs the GIL to return).

Without a limit (``timeout=None`` outside a :func:`time_limit` block) nothing here runs: the
implementation is called directly, in the caller's thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
import os
import queue
import sys
import sysconfig
import threading
import types

__all__ = ["CallTimeout", "CallGuard", "timeout_iv", "parse_timeout", "time_limit", "current_guard", "guarded_call"]


class CallTimeout(Exception):
    """A call to user code did not return within its time limit, or was not made because an
    earlier call of the same run did not return (see :class:`CallGuard`)."""


def timeout_iv(timeout, name="timeout"):
    """``timeout`` as a float number of seconds in (0, ∞), or None (no limit); else raise naming ``name``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or type(timeout).__name__ == "bool_":
        raise TypeError(f"`{name}` must be a positive finite number of seconds or None; got {timeout!r}")
    value = float(timeout)
    if not 0 < value < math.inf:  # also rejects NaN
        raise ValueError(f"`{name}` must be a positive finite number of seconds or None; got {timeout!r}")
    return value


def parse_timeout(text, name="--timeout"):
    """A command line's ``--timeout``: seconds (> 0), or ``0`` / ``none`` / ``off`` for no limit (None)."""
    word = str(text).strip().lower()
    if word in ("none", "off", "no", "0", "0.0"):
        return None
    try:
        value = float(word)
    except ValueError:
        value = None
    if value is None or not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a positive number of seconds, or 0 / none for no limit; got {text!r}")
    return value


def _seconds(value):
    return f"{value:g} s"


#: Names of array arguments in a call's description, per role.
_ARG_NAMES = {"train": ("x",), "eval": ("x",), "backward": ("x", "upstream")}


def describe_call(role, args):
    """``"train(x, 0.8)"``: the role, array arguments by name, numbers by value."""
    names = iter(_ARG_NAMES.get(role, ()))
    parts = []
    for a in args:
        if isinstance(a, numbers.Real) and not isinstance(a, bool):
            parts.append(f"{float(a):g}")
        elif hasattr(a, "shape"):
            parts.append(next(names, "array"))
        else:
            parts.append(type(a).__name__)
    return f"{role}({', '.join(parts)})"


_LIBRARY_DIRS = tuple(os.path.normcase(os.path.realpath(p)) + os.sep for p in {
    sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib")} if p)
_PACKAGE_DIR = os.path.normcase(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))) + os.sep


def _is_own_or_library(filename):
    path = os.path.normcase(os.path.realpath(filename)) if filename and not filename.startswith("<") else ""
    return not path or path.startswith(_PACKAGE_DIR) or any(
        path.startswith(d) and "site-packages" not in path[len(d):] for d in _LIBRARY_DIRS)


def _stuck_frame(thread):
    """The frame where ``thread`` is stuck: the innermost outside the standard library and this
    package (the user's line that waits), else the innermost; None if unavailable."""
    try:
        frame = sys._current_frames().get(thread.ident)
    except Exception:  # noqa: BLE001 — a debugging aid only
        return None
    while frame is not None:
        if not _is_own_or_library(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


class _Task:
    __slots__ = ("fn", "args", "kwargs", "context", "torch_modes", "done", "result", "error")

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.context = contextvars.copy_context()
        torch = sys.modules.get("torch")
        self.torch_modes = None
        if torch is not None:
            try:
                self.torch_modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
            except Exception:  # noqa: BLE001 — a partial torch import: nothing to carry over
                self.torch_modes = None
        self.done = threading.Event()
        self.result = self.error = None

    def _call(self):
        if self.torch_modes is None:
            return self.fn(*self.args, **self.kwargs)
        torch = sys.modules["torch"]
        grad, inference = self.torch_modes
        with torch.inference_mode(inference) if inference else contextlib.nullcontext(), \
                torch.set_grad_enabled(grad):
            return self.fn(*self.args, **self.kwargs)

    def run(self):
        try:
            self.result = self.context.run(self._call)
        except BaseException as exc:  # noqa: BLE001 — handed to the caller, SystemExit included
            self.error = exc
        finally:
            self.fn = self.args = self.kwargs = self.context = None
            self.done.set()


def _serve(tasks):
    while True:
        task = tasks.get()
        if task is None:
            return
        task.run()
        del task


class CallGuard:
    """Runs calls to one implementation in one daemon worker thread, each within ``timeout`` seconds.

    Parameters
    ----------
    timeout : float
        Seconds a call may take (validated by :func:`timeout_iv`; must not be None).

    Attributes
    ----------
    hung : str or None
        ``"train(x, 0.8) did not return within 60 s"`` once a call has hung; then every call
        raises :class:`CallTimeout` at once, without calling.
    """

    def __init__(self, timeout):
        self.timeout = timeout_iv(timeout)
        if self.timeout is None:
            raise ValueError("`timeout` must be a positive finite number of seconds; got None")
        self.hung = None
        self._stuck = None  # (frame, lasti, lineno) where the hung call was stuck
        self._tasks = None
        self._thread = None
        self._lock = threading.Lock()

    def _worker(self):
        if self._thread is None:
            self._tasks = queue.SimpleQueue()
            self._thread = threading.Thread(target=_serve, args=(self._tasks,), daemon=True,
                                            name="stats_dropout-call")
            self._thread.start()
        return self._tasks, self._thread

    def _abandon(self):
        """Forget a worker that is still busy: it ends after its call (if ever); a new one serves."""
        if self._tasks is not None:
            self._tasks.put(None)
        self._tasks = self._thread = None

    def call(self, description, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` in the worker; :class:`CallTimeout` if it does not return in time.

        ``description`` names the call in messages (``"train(x, 0.8)"``). An exception of the call
        (``SystemExit`` included) is raised here, with its traceback; ``KeyboardInterrupt`` while
        waiting (Ctrl-C reaches the main thread only) abandons the worker and propagates.
        """
        if self.hung is not None:
            raise self._timeout(f"{self.hung} earlier in this run, so {description} was not called (a hung "
                                "implementation is not called again: its thread cannot be stopped)")
        if threading.current_thread() is self._thread:  # a guarded call made by a guarded call
            return fn(*args, **kwargs)
        with self._lock:  # one call at a time, in the caller's order
            tasks, thread = self._worker()
            task = _Task(fn, args, kwargs)
            tasks.put(task)
            try:
                finished = task.done.wait(self.timeout)
            except BaseException:
                self._abandon()
                raise
            if not finished:
                self._abandon()
                frame = _stuck_frame(thread)
                if frame is not None:
                    self._stuck = (frame, frame.f_lasti, frame.f_lineno)
                self.hung = f"{description} did not return within {_seconds(self.timeout)}"
                raise self._timeout(f"{self.hung} (timeout={self.timeout:g} s; abandoned: the implementation "
                                    "is not called again in this run)")
        error, task.error = task.error, None
        if error is not None:
            try:
                raise error
            finally:
                del error
        return task.result

    def _timeout(self, message):
        """A :class:`CallTimeout` whose location (``describe_exception``'s "at file:line") is the
        line the hung call is stuck on, not this module."""
        exc = CallTimeout(message)
        if self._stuck is None:
            return exc
        frame, lasti, lineno = self._stuck
        return exc.with_traceback(types.TracebackType(None, frame, lasti, lineno))

    def wrap(self, fn, role):
        """``fn`` called through :meth:`call`, described as ``role(args)``; None stays None.

        The wrapper keeps ``fn``'s name, signature and attributes (``functools.wraps``), so
        signature-based detection (keep_prob, jax.jit) reads the same.
        """
        if fn is None:
            return None
        guard = self

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            return guard.call(describe_call(role, args), fn, *args, **kwargs)

        if not hasattr(fn, "__name__"):  # a partial or callable object: keep the label it had
            guarded.__name__ = guarded.__qualname__ = type(fn).__name__
        guarded.__stats_dropout_guard__ = guard
        return guarded


_GUARD = contextvars.ContextVar("stats_dropout_call_guard", default=None)


@contextlib.contextmanager
def time_limit(timeout, name="timeout"):
    """Within the block, calls made through :func:`guarded_call` and batteries run without their
    own ``timeout`` share one :class:`CallGuard` of ``timeout`` seconds (None: no limit; the
    block then changes nothing). Yields the guard (or None).

    Sharing matters after a hang: the command line's batteries (the course network's two
    layers, a model's sites) then fail at once instead of each waiting ``timeout`` again.
    """
    timeout = timeout_iv(timeout, name)
    guard = None if timeout is None else CallGuard(timeout)
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def current_guard():
    """The :class:`CallGuard` of the enclosing :func:`time_limit` block, or None."""
    return _GUARD.get()


def guarded_call(description, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` under the enclosing :func:`time_limit` block's guard, or directly."""
    guard = _GUARD.get()
    if guard is None:
        return fn(*args, **kwargs)
    return guard.call(description, fn, *args, **kwargs)
