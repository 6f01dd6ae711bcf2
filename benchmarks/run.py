"""stats_dropout benchmarks: every row a ratio measured in the same run (issue #14, item 5).

Run from the repository root::

    .venv/bin/python benchmarks/run.py              # full table, writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/run.py --readme     # the same, and copies the goals table into README.md
    .venv/bin/python benchmarks/run.py --quick      # smaller sizes, no commands: a smoke test (no file)

Every row times stats_dropout and its baselines in the same process, interleaved round by
round, and keeps each one's best time (the least disturbed by other load on the machine).
Ratios are baseline time / stats_dropout time: above 1 means stats_dropout is faster. Rows
that measure a cost rather than a speed (batteries, commands) give it in units of one naive
train pass measured in the same run, and batteries split their time into the time inside
the implementation's calls and the time around them (``result.cost``).

The first table holds the goals of issue #14: each row's verdict ("met" / "not met") is
computed from the numbers of this run. Framework rows (torch, jax, flax, keras) are skipped
with a note when the framework is not importable; keras runs on ``KERAS_BACKEND`` (default
here: ``jax``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import stats_dropout as sd
from stats_dropout.inference.montecarlo import estimate_masked_matmul_moments, estimate_statistic_moments
from stats_dropout.reference.masks import THREADS_ENV
from stats_dropout.reference.schemes import bernoulli_mask

KEEP = 0.8


def best_times(candidates, rounds):
    """Best wall time of each callable over ``rounds`` interleaved rounds (one warm-up)."""
    for fn in candidates.values():
        fn()
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


class Table:
    def __init__(self):
        self.rows = []

    def speed(self, what, size, times, ours, baselines):
        """Rows for a speed comparison: ``ours`` against each baseline (ratio = base / ours)."""
        t_ours = times[ours]
        parts = []
        for base in baselines:
            parts.append(f"{times[base] / t_ours:.2f}× vs {base}")
        rate = f"{size / t_ours / 1e6:,.0f} M/s" if size else ""
        self.rows.append((what, ours, f"{t_ours * 1e3:,.1f} ms", rate, "; ".join(parts)))
        for base in baselines:
            rate_b = f"{size / times[base] / 1e6:,.0f} M/s" if size else ""
            self.rows.append(("", f"baseline: {base}", f"{times[base] * 1e3:,.1f} ms", rate_b, ""))

    def cost(self, what, ours, seconds, units, extra=""):
        """A cost in units of baseline passes: ``units`` maps a name to that baseline's time."""
        parts = [f"{seconds / t:,.0f} × {name}" for name, t in units.items()]
        self.rows.append((what, ours, f"{seconds * 1e3:,.0f} ms", extra, "= " + "; ".join(parts)))

    def note(self, what, text):
        self.rows.append((what, text, "", "", ""))

    def markdown(self):
        head = ("benchmark", "stats_dropout / baseline", "best time", "throughput", "ratio")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


class Goals:
    """The goals of issue #14 (item 5): each row a measurement, its goal, and a computed verdict."""

    HEAD = ("what", "measured in this run", "as a ratio (same run)", "goal", "verdict")

    def __init__(self):
        self.rows = []

    def check(self, what, measured, ratio, value, op, bound, goal):
        """A row whose verdict is ``value op bound`` (``op`` "≤" or "≥"), computed here."""
        if op not in ("≤", "≥"):
            raise ValueError(f"`op` must be '≤' or '≥'; got {op!r}")
        met = value <= bound if op == "≤" else value >= bound
        self.rows.append((what, measured, ratio, goal, "met" if met else "**not met**"))
        return met

    def skip(self, what, why, goal):
        self.rows.append((what, why, "", goal, "skipped"))

    def info(self, what, measured, ratio, goal, verdict):
        """A row without a computable verdict (``verdict`` says why)."""
        self.rows.append((what, measured, ratio, goal, verdict))

    def verdicts(self):
        return [row[-1] for row in self.rows]

    def markdown(self):
        lines = ["| " + " | ".join(self.HEAD) + " |", "|" + "---|" * len(self.HEAD)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def bench_masks(table, n, rounds, torch):
    rng = np.random.default_rng(0)
    c = {
        "bernoulli_mask": lambda: bernoulli_mask(rng, (n,), KEEP),
        "numpy rng.random(n) < p": lambda: rng.random(n) < KEEP,
    }
    bases = ["numpy rng.random(n) < p"]
    if torch is not None:
        c["torch bernoulli_"] = lambda: torch.empty(n, dtype=torch.float32).bernoulli_(KEEP)
        bases.append("torch bernoulli_")
    t = best_times(c, rounds)
    table.speed(f"mask, {n:.0e} elements, p={KEEP}", n, t, "bernoulli_mask", bases)


def _on_threads(threads, fn):
    """``fn`` run with the C kernel's thread count set through its environment variable."""
    def run():
        before = os.environ.get(THREADS_ENV)
        os.environ[THREADS_ENV] = str(threads)
        try:
            return fn()
        finally:
            if before is None:
                del os.environ[THREADS_ENV]
            else:
                os.environ[THREADS_ENV] = before
    return run


def bench_train(table, n, rounds, torch, dtype, goals=None):
    """Train-pass rows; returns the best times (the naive pass is the unit of the cost rows)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n).astype(dtype)
    inverted = sd.get_scheme("inverted")
    c = {
        "inverted.train": lambda: inverted.train(x, KEEP, rng),
        "naive x*(rng.random(n)<p)/p": lambda: x * (rng.random(n) < KEEP) / KEEP,
        "x * 1.0 (memory bound)": lambda: x * 1.0,
    }
    bases = ["naive x*(rng.random(n)<p)/p"]
    if torch is not None:
        import torch.nn.functional as F

        xt = torch.from_numpy(x)
        c["torch F.dropout"] = lambda: F.dropout(xt, 1 - KEEP, training=True)
        bases.append("torch F.dropout")
    bases.append("x * 1.0 (memory bound)")
    # The C kernel's threads (default: os.cpu_count(), capped by the chunks): same bits.
    threaded = [f"inverted.train ({THREADS_ENV}={k})" for k in (1, 2)]
    for k, name in zip((1, 2), threaded):
        c[name] = _on_threads(k, lambda: inverted.train(x, KEEP, rng))
    # What the lead's input validation (a finiteness pass over x) costs inside train().
    c["inverted._sample (no validation)"] = lambda: inverted._sample(x, KEEP, rng, None)
    t = best_times(c, rounds)
    what = f"train pass, {n:.0e} {np.dtype(dtype).name}"
    table.speed(what, n, t, "inverted.train", bases)
    for name in threaded:
        table.speed(what, n, t, name, bases)
    table.speed(what, n, t, "inverted._sample (no validation)", bases[:2])
    if goals is not None:
        ours, floor = t["inverted.train"], t["x * 1.0 (memory bound)"]
        vs = [f"{t['naive x*(rng.random(n)<p)/p'] / ours:.2f}× naive numpy"]
        if "torch F.dropout" in t:
            vs.append(f"{t['torch F.dropout'] / ours:.2f}× torch F.dropout")
        goals.check(f"inverted train pass, {power_of_ten(n)} {np.dtype(dtype).name} (`get_scheme(\"inverted\").train`)",
                    f"{ours * 1e3:,.1f} ms; `x * 1.0` {floor * 1e3:,.1f} ms; " + ", ".join(vs),
                    f"{floor / ours:.2f}× of the floor", floor / ours, "≥", 0.8, "≥ 0.8× of the floor")
    return t


def bench_sample_train(table, n, rounds, torch):
    rng = np.random.default_rng(0)
    width = 10_000
    draws = n // width
    x = rng.standard_normal(width)
    layer = sd.get_scheme("inverted").bind(KEEP, rng)
    c = {
        "sample_train": lambda: layer.sample_train(x, draws),
        "naive x*(rng.random((k,n))<p)/p": lambda: x * (rng.random((draws, width)) < KEEP) / KEEP,
    }
    bases = ["naive x*(rng.random((k,n))<p)/p"]
    if torch is not None:
        import torch.nn.functional as F

        xt = torch.from_numpy(x)
        c["torch F.dropout(expand)"] = lambda: F.dropout(xt.expand(draws, width), 1 - KEEP, training=True)
        bases.append("torch F.dropout(expand)")
    t = best_times(c, rounds)
    table.speed(f"{draws:,} stacked passes of {width:,}", n, t, "sample_train", bases)


def bench_moments(table, n, rounds, torch):
    rng = np.random.default_rng(0)
    width = 1000
    draws = n // width
    x = rng.standard_normal(width)
    layer = sd.get_scheme("inverted").bind(KEEP)

    def naive():
        s = x * (rng.random((draws, width)) < KEEP) / KEEP
        return s.mean(axis=0), s.var(axis=0, ddof=1)

    c = {
        "estimate_train_moments": lambda: sd.estimate_train_moments(layer, x, draws=draws, seed=1),
        "estimate_train_moments(workers=2)": lambda: sd.estimate_train_moments(
            layer, x, draws=draws, seed=1, workers=2),
        "naive: all draws in memory, mean/var": naive,
    }
    bases = ["naive: all draws in memory, mean/var"]
    if torch is not None:
        import torch.nn.functional as F

        xt = torch.from_numpy(x)

        def torch_moments():
            s = F.dropout(xt.expand(draws, width), 1 - KEEP, training=True)
            return s.mean(0), s.var(0)

        c["torch: all draws in memory, mean/var"] = torch_moments
        bases.append("torch: all draws in memory, mean/var")
    t = best_times(c, rounds)
    what = f"moments of {draws:,} draws of {width:,}"
    table.speed(what, n, t, "estimate_train_moments", bases)
    table.speed(what, n, t, "estimate_train_moments(workers=2)", bases[:1])

    # A user's callable on numpy's global RNG: one call per draw (it cannot be vectorised).
    def user(v):
        return v * (np.random.rand(*v.shape) < KEEP) / KEEP

    def naive_loop():
        s = np.stack([user(x) for _ in range(few)])
        return s.mean(axis=0), s.var(axis=0, ddof=1)

    few = max(2, draws // 10)
    t2 = best_times({
        "estimate_train_moments(user callable)": lambda: sd.estimate_train_moments(
            user, x, draws=few, seed=1),
        "naive loop: stack calls, mean/var": naive_loop,
    }, max(2, rounds // 2))
    table.speed(f"moments of {few:,} calls of a user callable", few * width, t2,
                "estimate_train_moments(user callable)", ["naive loop: stack calls, mean/var"])


def bench_linearity(table, rounds):
    rng = np.random.default_rng(0)
    a, w = rng.standard_normal((64, 256)), rng.standard_normal((256, 128))
    draws = 1000
    layer = sd.get_scheme("inverted").bind(KEEP)
    t = best_times({
        "masked_matmul (masks)": lambda: estimate_masked_matmul_moments(a, w, KEEP, draws=draws, seed=1),
        "masked_matmul (binomial)": lambda: estimate_masked_matmul_moments(
            a, w, KEEP, draws=draws, seed=1, method="binomial"),
        "direct: per-draw products": lambda: estimate_statistic_moments(
            layer, a, lambda y: y @ w, draws=draws, seed=1),
    }, max(2, rounds // 2))
    what = f"E[(D∘A/p)W], A 64×256, W 256×128, {draws} draws"
    table.speed(what, 0, t, "masked_matmul (masks)", ["direct: per-draw products"])
    table.speed(what, 0, t, "masked_matmul (binomial)", ["direct: per-draw products"])


_MEMORY_SCRIPT = """
import json, resource, sys, tracemalloc
import numpy as np
import stats_dropout as sd


def peak_rss_kib():
    # VmHWM is this address space's peak and restarts at exec; ru_maxrss survives exec and
    # can report the parent's (pytest's) size instead of ours.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

draws, workers = int(sys.argv[1]), int(sys.argv[2])
x = np.random.default_rng(0).standard_normal(4096)
layer = sd.get_scheme("inverted").bind(0.8)
tracemalloc.start()
sd.estimate_train_moments(layer, x, draws=draws, seed=1, workers=workers)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"traced": peak, "maxrss_kib": peak_rss_kib()}))
"""


def bench_memory(table, draws):
    """Peak memory of estimate_train_moments at ``draws`` and 10× ``draws``, each in a fresh process."""
    import json

    try:
        import resource  # noqa: F401 (POSIX only)
    except ImportError:
        table.note("memory, 10× draws", "needs the POSIX `resource` module")
        return
    for workers in (1, 2):
        peaks = []
        for k in (draws, 10 * draws):
            out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(k), str(workers)],
                                 capture_output=True, text=True, check=True)
            peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
        traced = [p["traced"] / 2**20 for p in peaks]
        rss = [p["maxrss_kib"] / 2**10 for p in peaks]
        table.rows.append((
            f"memory, moments of {draws:,} vs {10 * draws:,} draws of 4,096 (workers={workers})",
            "estimate_train_moments",
            f"{traced[0]:.1f} → {traced[1]:.1f} MiB traced",
            f"RSS {rss[0]:.0f} → {rss[1]:.0f} MiB",
            (f"10× draws: {traced[1] / traced[0]:.2f}× traced peak, {rss[1] / rss[0]:.2f}× peak RSS "
             f"(all draws in memory: {draws * 4096 * 8 / 2**20:,.0f} → "
             f"{10 * draws * 4096 * 8 / 2**20:,.0f} MiB)"),
        ))


def probe_pass_times(rounds, torch):
    """One naive (and one torch) train pass over the battery's (256, 1024) probe."""
    x = np.random.default_rng(0).standard_normal((256, 1024))
    c = {"naive pass on the probe": lambda: x * (np.random.rand(*x.shape) < KEEP) / KEEP}
    if torch is not None:
        import torch.nn.functional as F

        xt = torch.from_numpy(x)
        c["torch pass on the probe"] = lambda: F.dropout(xt, 1 - KEEP, training=True)
    return best_times(c, rounds * 4)


def power_of_ten(n):
    """``10⁷`` for 10_000_000, else ``n`` with thousands separators."""
    k = len(str(n)) - 1
    if n == 10**k:
        return "10" + "".join("⁰¹²³⁴⁵⁶⁷⁸⁹"[int(d)] for d in str(k))
    return f"{n:,}"


def best_battery(run, rounds):
    """``(wall seconds, result)`` of the fastest of ``rounds`` calls of ``run`` after one warm-up.

    The warm-up pays imports, JIT compilation and first-call caches, which a user pays once per
    process; the battery's own cost is what the timed calls measure.
    """
    run()
    best = None
    for _ in range(max(1, rounds)):
        start = time.perf_counter()
        result = run()
        wall = time.perf_counter() - start
        if best is None or wall < best[0]:
            best = (wall, result)
    return best


def cost_text(result):
    """``"24 calls: 0.07 s inside, 0.11 s around"`` from ``result.cost`` (or a note when absent)."""
    cost = getattr(result, "cost", None)
    if cost is None:
        return "no cost line"
    return (f"{sum(cost.calls.values()):,} calls: {cost.call_seconds:.3f} s inside them, "
            f"{cost.overhead_seconds:.3f} s around them")


def bench_battery(table, rounds, units):
    if not hasattr(sd, "verify_dropout"):
        table.note("verify_dropout battery", "not available in this version")
        return
    def train(x):  # the brief's learner code: numpy's global RNG, inverted dropout
        return x * (np.random.rand(*x.shape) < 0.8) / 0.8

    wall, result = best_battery(lambda: sd.verify_dropout(train, keep_prob=0.8), max(2, rounds // 2))
    table.cost("verify_dropout, (256, 1024) probe", "sd.verify_dropout(train, keep_prob=0.8)",
               wall, units, cost_text(result))


def readme_dropout(x, keep_prob):
    """The function of README.md's "In ten lines" (keep the two in step)."""
    if not 0 < keep_prob <= 1:
        raise ValueError("keep_prob must be in (0, 1]")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def bench_readme(goals, rounds, unit, unit_name):
    """README's ten-line example: ``sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.8)``."""
    wall, result = best_battery(lambda: sd.verify_dropout(readme_dropout, lambda x: x.copy(), keep_prob=0.8),
                                rounds)
    passed = "" if result.passed else " (the battery FAILED: see the example)"
    goals.check("README ten-line example (`sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.8)`)",
                f"{wall:.2f} s (best of {max(1, rounds)}); {cost_text(result)}{passed}",
                f"= {wall / unit:,.0f} {unit_name}; around = {around_ratio(result)} inside",
                wall, "≤", 0.5, "≤ 0.5 s")
    return wall, result


def around_ratio(result):
    cost = getattr(result, "cost", None)
    if cost is None or cost.call_seconds <= 0:
        return "?×"
    return f"{cost.overhead_seconds / cost.call_seconds:.2f}×"


def framework_cases():
    """``(label, run, goal seconds around the calls, skip note)`` per framework battery.

    ``run`` is None (and the note says why) when the framework is not importable.
    """
    cases = []
    try:
        from flax import nnx
    except ImportError as exc:
        cases.append(("flax `nnx.Dropout(rate=0.2)`, float32, one keep_prob", None, 0.1,
                      f"flax not importable ({exc})"))
    else:
        layer = nnx.Dropout(rate=0.2)
        cases.append(("flax `nnx.Dropout(rate=0.2)`, float32, one keep_prob",
                      lambda: sd.verify_dropout(layer), 0.1, ""))
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError as exc:
        cases.append(("keras `layers.Dropout(0.2)`, float32, one keep_prob", None, 0.1,
                      f"keras not importable ({exc})"))
    else:
        klayer = keras.layers.Dropout(0.2)
        cases.append((f"keras `layers.Dropout(0.2)` ({keras.backend.backend()} backend), float32, one keep_prob",
                      lambda: sd.verify_dropout(klayer), 0.1, ""))
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        for label, goal in (("jax `fn(key, x)`", 0.1), ("jax `fn(key, x, keep_prob)`", 0.3)):
            cases.append((label, None, goal, f"jax not importable ({exc})"))
    else:
        @jax.jit
        def jax_dropout(key, x, keep_prob):
            return jnp.where(jax.random.bernoulli(key, keep_prob, x.shape), x / keep_prob, 0.0)

        @jax.jit
        def jax_dropout_08(key, x):
            return jnp.where(jax.random.bernoulli(key, 0.8, x.shape), x / 0.8, 0.0)

        bound = sd.adapters.from_jax(jax_dropout_08, keep_prob=0.8)
        swept = sd.adapters.from_jax(jax_dropout, keep_prob=0.8)
        cases.append(("jax `fn(key, x)` (jit, keep_prob 0.8 bound), float32, one keep_prob",
                      lambda: sd.verify_dropout(bound), 0.1, ""))
        cases.append(("jax `fn(key, x, keep_prob)` (jit), float32, keep_prob swept (`f(x, keep_prob)`)",
                      lambda: sd.verify_dropout(swept), 0.3, ""))
    return cases


def bench_frameworks(goals, rounds):
    """Batteries on float32 framework layers: the time around the layer's own calls."""
    for label, run, goal, note in framework_cases():
        what = f"battery on {label}: time outside the layer's calls"
        if run is None:
            goals.skip(what, note, f"≤ {goal} s")
            continue
        wall, result = best_battery(run, rounds)
        cost = result.cost
        passed = "" if result.passed else " (the battery FAILED)"
        goals.check(what, f"{wall:.2f} s in all (best of {max(1, rounds)}); {cost_text(result)}{passed}",
                    f"around = {around_ratio(result)} inside", cost.overhead_seconds, "≤", goal, f"≤ {goal} s")


def bench_from_torch(goals, rounds, torch, shape=(256, 1024)):
    """``from_torch``'s train call against the module's own call, ``torch.nn.Dropout`` on float64."""
    what = f"`from_torch(nn.Dropout(p=0.2))` train call, {int(np.prod(shape)):,} float64: adapter overhead"
    if torch is None:
        goals.skip(what, "torch not importable", "≤ 0.5× the module's call")
        return None
    module = torch.nn.Dropout(p=0.2)
    x = np.random.default_rng(0).standard_normal(shape)
    xt = torch.from_numpy(x)
    train, _ = sd.adapters.from_torch(module)

    def module_call():
        module.train(True)
        with torch.no_grad():
            return module(xt)

    t = best_times({"adapter": lambda: train(x), "module": module_call}, max(8, rounds * 4))
    overhead = (t["adapter"] - t["module"]) / t["module"]
    goals.check(what, f"adapter {t['adapter'] * 1e3:.2f} ms, module alone {t['module'] * 1e3:.2f} ms",
                f"overhead {overhead:.2f}× the module's call", overhead, "≤", 0.5, "≤ 0.5× the module's call")
    return t


def bench_torch_battery(goals, rounds, torch, unit, unit_name):
    """The battery on ``from_torch(nn.Dropout)`` with a float64 probe: time inside vs around."""
    what = "battery on `from_torch(nn.Dropout(p=0.2))`, float64 (256, 1024) probe"
    if torch is None:
        goals.skip(what, "torch not importable", "no goal (battery time vs time inside)")
        return
    module = torch.nn.Dropout(p=0.2)
    train, evaluate = sd.adapters.from_torch(module)
    probe = np.random.default_rng(0).standard_normal((256, 1024))
    spec = sd.adapters.torch_spec(module)
    wall, result = best_battery(lambda: sd.verify_dropout(train, evaluate, example_input=probe, **spec), rounds)
    goals.info(what, f"{wall:.2f} s (best of {max(1, rounds)}); {cost_text(result)}",
               f"= {wall / unit:,.0f} {unit_name}; around = {around_ratio(result)} inside", "—", "no goal")


def stats_dropout_exe():
    exe = shutil.which("stats-dropout") or str(Path(sys.executable).with_name("stats-dropout"))
    return exe if Path(exe).exists() else None


def time_command(args, timeout=900):
    """``(wall seconds, exit code, last stderr line)`` of ``stats-dropout *args`` in a fresh process."""
    exe = stats_dropout_exe()
    if exe is None:
        raise FileNotFoundError("`stats-dropout` is not installed next to this Python")
    start = time.perf_counter()
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False, timeout=timeout)
    seconds = time.perf_counter() - start
    err = proc.stderr.strip().splitlines()
    return seconds, proc.returncode, (err[-1] if err else "")


COMMANDS = (  # (name, arguments after `stats-dropout`, goal in seconds); OUT is a fresh directory
    ("schemes", ["schemes", "--no-progress"], 5.0),
    ("claims", ["claims", "--no-progress"], 4.0),
    ("report", ["report", "--out", "OUT", "--no-progress"], 12.0),
)


def bench_commands(goals, unit, unit_name, skipped=None):
    """The CLI commands, each once in a fresh process (cold: a new interpreter, an empty --out).

    ``skipped`` maps a command's name to the reason it is not run.
    """
    skipped = skipped or {}
    for name, args, goal in COMMANDS:
        what = f"`stats-dropout {' '.join(args).replace('OUT', 'TMP')}`" + (" (cold)" if name == "report" else "")
        if name in skipped:
            goals.skip(what, f"not run ({skipped[name]})", f"≤ {goal:g} s")
            continue
        if stats_dropout_exe() is None:
            goals.skip(what, "`stats-dropout` not installed", f"≤ {goal:g} s")
            continue
        with tempfile.TemporaryDirectory() as out:
            seconds, code, err = time_command([out if a == "OUT" else a for a in args])
        if code != 0:
            goals.info(what, f"{seconds:.1f} s, exit {code}: {err[:120]}", "", f"≤ {goal:g} s",
                       "**failed**")
            continue
        goals.check(what, f"{seconds:.1f} s", f"= {seconds / unit:,.0f} {unit_name}",
                    seconds, "≤", goal, f"≤ {goal:g} s")


ROOT = Path(__file__).resolve().parents[1]


def calibration_page(path=None):
    """``(date line, wall-time line)`` of the committed calibration page, or None."""
    path = ROOT / "docs" / "CALIBRATION.md" if path is None else Path(path)
    try:
        text = path.read_text()
    except OSError:
        return None
    date = re.search(r"^- Date: (.*)$", text, re.M)
    wall = re.search(r"^- Wall time: (.*)$", text, re.M)
    if not (date and wall):
        return None
    return date.group(1).split(";")[0], wall.group(1)


#: The slow tier's sample: null batteries of the calibration study on numpy's global RNG.
SLOW_TIER_PLAN = {"numpy": {"2d": 48}}


def slow_tier(goals, workers=None):
    """A sample of the slow tier's seed loop (null batteries of the calibration study) in one
    process and on a worker per core, in the same run: the speed-up, and whether the records
    are the same bits (they must be). The last full recorded run is quoted from
    docs/CALIBRATION.md."""
    import pandas as pd

    from stats_dropout.studies import calibration

    what = ("slow tier: calibrations (`benchmarks/calibrate_battery.py`, `pytest -m slow`), sample: "
            f"{sum(SLOW_TIER_PLAN['numpy'].values())} null batteries")
    workers = workers or os.cpu_count() or 1
    page = calibration_page()
    recorded = (f"; last full run (docs/CALIBRATION.md, {page[0]}): {page[1]}" if page else "")
    if workers < 2:
        goals.skip(what, "one CPU: nothing to scale over" + recorded, "scales with cores")
        return
    # Start the pool and import the package in every worker first: the sample times the loop.
    calibration.null_study(plan={"numpy": {"2d": 2 * workers}}, executor="processes", workers=workers)
    times, records = {}, {}
    for name, options in (("one process", dict(executor="local")),
                          (f"{workers} workers", dict(executor="processes", workers=workers))):
        start = time.perf_counter()
        records[name] = pd.DataFrame(calibration.null_study(plan=SLOW_TIER_PLAN, **options))
        times[name] = time.perf_counter() - start
    one, many = times.values()
    same = records["one process"].equals(records[f"{workers} workers"])
    speedup = one / many
    goals.check(what, f"one process {one:.1f} s, {workers} worker processes {many:.1f} s; records "
                      + ("bit-identical" if same else "**differ**") + recorded,
                f"{speedup:.2f}× on {workers} CPUs", speedup if same else 0.0, "≥", 0.75 * workers,
                f"scales with cores (≥ {0.75 * workers:g}× on {workers}, same bits)")


def environment(torch, load_start):
    def version(name):
        module = sys.modules.get(name)
        return f"{name} {getattr(module, '__version__', '?')}" if module is not None else None

    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    parts = [f"Python {platform.python_version()}", f"numpy {np.__version__}"]
    if torch is not None:
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    parts += [v for v in map(version, ("jax", "flax", "keras")) if v]
    load = (f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end"
            if load_start and load_end else "load average unknown")
    return (f"{os.cpu_count()} CPUs ({platform.machine()}), {load}; " + ", ".join(parts))


def git_commit():
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


README_START = ("<!-- benchmarks:start (written by `benchmarks/run.py --readme`, the goals table of "
                "benchmarks/RESULTS.md; do not edit) -->")
README_END = "<!-- benchmarks:end -->"


def readme_block(stamp, goals_text):
    return (f"{README_START}\n{stamp}\n\n{goals_text}\n{README_END}")


def write_readme(path, block):
    """Replace the text between the README's benchmark markers by ``block``."""
    text = Path(path).read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no `{README_START}` ... `{README_END}` block to replace")
    Path(path).write_text(text[:start] + block + text[end + len(README_END):])


NOTES = """## Reading the tables

- *Goals* (issue #14, item 5): the floor of a train pass is `x * 1.0` on the same array (one
  read, one fresh write), so "0.8× of the floor" means at most 1.25 times its time. A battery's
  *time outside the layer's calls* is `result.cost.overhead_seconds`: the battery's wall time
  minus the wall time inside the implementation's (adapted) calls, of the fastest of the timed
  runs after one warm-up (imports, JIT compilation). The *adapter overhead* of `from_torch` is
  (adapter call − module call) / module call on the same float64 array, the module called as
  the adapter does (`train(True)`, `torch.no_grad()`). Commands run once each in a fresh
  interpreter (`report` into an empty temporary directory: cold).
- *Masks* are exact (integer thresholds, proven by enumeration in `tests/unit/test_masks.py`)
  and cost about 8 random bits per element: the top byte of the threshold comparison decides
  all but 1/256 of the elements.
- A *train pass* over 10^7 float64 values cannot beat `x * 1.0`, one read of x and one write
  of a fresh output (the machine's memory bound). On top of that it pays the random bits and
  one fused pass of the optional C kernel (`stats_dropout/reference/_fastmask.c`): compare, exact
  division by `keep_prob` (kept units are `fl(x / p)`; a multiply by 1/p only where
  `masks._exact_reciprocal` proves it gives the same bits), store, and the
  finiteness check of x. Without a compiler the numpy path gives the same bits more slowly.
  Inputs that fit in cache (10^6) are not memory bound: run with `--quick` to see.
- *Moments* stream in blocks of 2^20 elements; their peak memory does not grow with the number
  of draws (memory rows: traced peak and peak RSS of a fresh process at 1× and 10× draws).
- *workers=2* only helps when the second core is idle; timings on a shared machine vary, which
  is why every row keeps the best of interleaved rounds and prints the load average.
- *E[(D∘A/p)W]* uses linearity: the mean of the masks, then one matrix product (exact up to
  rounding, tested against the per-draw products in `tests/unit/test_montecarlo_scale.py`).
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10^6 elements, fewer rounds, no commands, no file unless --out (default: off)")
    parser.add_argument("--no-report", action="store_true",
                        help="skip timing `stats-dropout report` (default: off)")
    parser.add_argument("--no-commands", action="store_true",
                        help="skip timing the `stats-dropout` commands (default: off; --quick implies it)")
    parser.add_argument("--size", type=int, default=None,
                        help="elements of the train pass (default: 10^7; --quick: 10^6)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per row (default: 9; --quick: 3)")
    parser.add_argument("--out", default=None,
                        help="markdown file to write (default: benchmarks/RESULTS.md; --quick: none)")
    parser.add_argument("--readme", action="store_true",
                        help="also copy the goals table into README.md's benchmark block (not with --quick)")
    args = parser.parse_args(argv)
    if args.readme and args.quick:
        parser.error("--readme needs a full run (the README shows the goals' sizes), not --quick")
    n = args.size or (10**6 if args.quick else 10**7)
    rounds = args.rounds or (3 if args.quick else 9)
    out = args.out or (None if args.quick else str(Path(__file__).with_name("RESULTS.md")))
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = git_commit()
    torch = torch_or_none()
    print(f"{date}, {commit}, {os.cpu_count()} CPUs ({platform.machine()}), load average at start "
          f"{load_start[0] if load_start else float('nan'):.2f}", flush=True)
    started = time.perf_counter()
    table, goals = Table(), Goals()
    bench_masks(table, n, rounds, torch)
    t64 = bench_train(table, n, rounds, torch, np.float64, goals)
    bench_train(table, n, rounds, torch, np.float32, goals)
    unit = t64["naive x*(rng.random(n)<p)/p"]  # the cost rows' unit: one naive pass, this run
    unit_name = f"naive passes of {power_of_ten(n)}"
    battery_rounds = max(1, rounds // 3)
    bench_readme(goals, battery_rounds, unit, unit_name)
    bench_frameworks(goals, battery_rounds)
    bench_from_torch(goals, rounds, torch)
    bench_torch_battery(goals, battery_rounds, torch, unit, unit_name)
    bench_sample_train(table, n, rounds, torch)
    bench_moments(table, n * 2, max(3, rounds // 2), torch)
    bench_linearity(table, rounds)
    bench_memory(table, 2_000 if args.quick else 20_000)
    probe_units = probe_pass_times(rounds, torch)
    bench_battery(table, rounds, probe_units)
    why = "--quick" if args.quick else "--no-commands" if args.no_commands else None
    skipped = {name: why for name, _, _ in COMMANDS} if why else {"report": "--no-report"} if args.no_report else {}
    bench_commands(goals, unit, unit_name, skipped)
    if args.quick:
        goals.skip("slow tier: calibrations", "not run (--quick)", "scales with cores")
    else:
        slow_tier(goals)
    wall = time.perf_counter() - started
    env = environment(torch, load_start)
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    stamp = (f"Run {date} ({commit}) with `{command}`: {env}; {wall:.0f} s in all."
             + (" **--quick: smaller sizes than the goals'; a smoke test, not a measurement.**"
                if args.quick or n != 10**7 else ""))
    goals_text, text = goals.markdown(), table.markdown()
    print(goals_text)
    print(text)
    print(stamp)
    if out:
        Path(out).write_text(
            "# Benchmarks\n\n"
            "Command (from the repository root):\n\n"
            "    .venv/bin/python benchmarks/run.py            # add --readme to copy the goals into README.md\n\n"
            f"{stamp}\n\n"
            "## The goals of issue #14\n\n"
            "Each verdict is computed from this run's numbers. Batteries: best of the timed runs after a\n"
            "warm-up, split by `result.cost` into the time inside the implementation's calls and around\n"
            f"them. Command rows: one cold run each, also in units of one naive train pass over\n"
            f"{power_of_ten(n)} float64 (`x * (rng.random(n) < p) / p`, {unit * 1e3:.1f} ms in this run).\n\n"
            + goals_text + "\n\n"
            "## Every row\n\n"
            "Ratios are baseline time / stats_dropout time, measured in the same process, best of\n"
            "interleaved rounds. Cost rows give a time in units of one train pass over the same probe.\n\n"
            + text + "\n\n" + NOTES
        )
        print(f"wrote {out}")
    if args.readme:
        readme = ROOT / "README.md"
        write_readme(readme, readme_block(stamp, goals_text))
        print(f"wrote the benchmark block of {readme}")
    return goals


if __name__ == "__main__":
    main()
