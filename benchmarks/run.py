"""stats_dropout benchmarks: ratios against naive numpy and PyTorch CPU, measured in one run.

Run from the repository root::

    /work/venv/bin/python benchmarks/run.py            # full table, writes benchmarks/RESULTS.md
    /work/venv/bin/python benchmarks/run.py --quick    # smaller sizes, a smoke test (no file)

Every row times stats_dropout and its baselines in the same process, interleaved round by
round, and keeps each one's best time (the least disturbed by other load on the machine).
Ratios are baseline time / stats_dropout time: above 1 means stats_dropout is faster. Rows
that measure a cost rather than a speed (the battery, the report) give it in units of one
naive train pass over the same probe.
"""

from __future__ import annotations

import argparse
import os
import platform
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

    def cost(self, what, ours, seconds, units):
        """A cost in units of baseline passes: ``units`` maps a name to that baseline's time."""
        parts = [f"{seconds / t:,.0f} × {name}" for name, t in units.items()]
        self.rows.append((what, ours, f"{seconds * 1e3:,.0f} ms", "", "= " + "; ".join(parts)))

    def note(self, what, text):
        self.rows.append((what, text, "", "", ""))

    def markdown(self):
        head = ("benchmark", "stats_dropout / baseline", "best time", "throughput", "ratio")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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


def bench_train(table, n, rounds, torch, dtype):
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


def bench_battery(table, rounds, units):
    if not hasattr(sd, "verify_dropout"):
        table.note("verify_dropout battery", "not available in this version")
        return
    def train(x):  # the brief's learner code: numpy's global RNG, inverted dropout
        return x * (np.random.rand(*x.shape) < 0.8) / 0.8

    t = best_times({"verify_dropout": lambda: sd.verify_dropout(train, keep_prob=0.8)}, max(2, rounds // 2))
    table.cost("verify_dropout, (256, 1024) probe", "sd.verify_dropout(train, keep_prob=0.8)",
               t["verify_dropout"], units)


def bench_report(table, units):
    exe = shutil.which("stats-dropout") or str(Path(sys.executable).with_name("stats-dropout"))
    if not Path(exe).exists():
        table.note("default report", "`stats-dropout` not installed")
        return
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.run([exe, "report", "--out", out], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        table.note("default report", f"`stats-dropout report` failed (exit {proc.returncode})")
        return
    table.cost("default report (one run)", "stats-dropout report --out DIR", seconds, units)


def environment():
    torch = torch_or_none()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"Python {platform.python_version()}, numpy {np.__version__}, "
            + (f"torch {torch.__version__} ({torch.get_num_threads()} threads), " if torch else "no torch, ")
            + f"{os.cpu_count()} CPUs ({platform.machine()}), load average at start {load[0]:.2f}")


NOTES = """## Reading the table

- *Masks* are exact (integer thresholds, proven by enumeration in `tests/unit/test_masks.py`)
  and cost about 8 random bits per element: the top byte of the threshold comparison decides
  all but 1/256 of the elements.
- A *train pass* over 10^7 float64 values cannot beat `x * 1.0`, one read of x and one write
  of a fresh output (the machine's memory bound). On top of that it pays the random bits and
  one fused pass of the optional C kernel (`stats_dropout/_fastmask.c`): compare, exact
  division by `keep_prob` (kept units are `fl(x / p)`, not `x * (1/p)`), store, and the
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
    parser.add_argument("--quick", action="store_true", help="small sizes, no report, no file (default: off)")
    parser.add_argument("--no-report", action="store_true",
                        help="skip timing `stats-dropout report` (default: off)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")),
                        help="markdown file to write (default: benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    n, rounds = (10**6, 3) if args.quick else (10**7, 9)
    torch = torch_or_none()
    env = environment()
    print(env, flush=True)
    started = time.perf_counter()
    table = Table()
    bench_masks(table, n, rounds, torch)
    bench_train(table, n, rounds, torch, np.float64)
    bench_train(table, n, rounds, torch, np.float32)
    bench_sample_train(table, n, rounds, torch)
    bench_moments(table, n * 2, max(3, rounds // 2), torch)
    bench_linearity(table, rounds)
    bench_memory(table, 2_000 if args.quick else 20_000)
    units = probe_pass_times(rounds, torch)
    bench_battery(table, rounds, units)
    if not (args.quick or args.no_report):
        bench_report(table, units)
    text = table.markdown()
    print(text)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    footer = f"Load average at end {load:.2f}; benchmark wall time {time.perf_counter() - started:.0f} s."
    print(footer)
    if not args.quick:
        Path(args.out).write_text(
            "# Benchmarks\n\n"
            "Command (from the repository root):\n\n"
            "    /work/venv/bin/python benchmarks/run.py\n\n"
            f"Environment: {env}.\n\n"
            "Ratios are baseline time / stats_dropout time, measured in the same process, best of\n"
            "interleaved rounds. Cost rows give a time in units of one train pass over the same probe.\n\n"
            + text + "\n\n" + footer + "\n\n" + NOTES
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
