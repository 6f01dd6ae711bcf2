"""The report: :func:`write_report` runs the sweep, the experiments and the claims ledger and
writes CSV files, figures, ``metadata.json`` and ``index.html``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading

from stats_dropout._internal.files import atomic_write_text, write_csv
from stats_dropout._internal.threads import single_threaded_blas
from stats_dropout._internal.validation import draws_iv, seed_iv
from stats_dropout.reporting.html import render_page
from stats_dropout.reporting.sweep import REPORT_KEEP_PROBS, sweep_summary
from stats_dropout.reporting.tables import (
    REPORT_EXPERIMENTS,
    SLOWEST_EXPERIMENT,
    experiment_table,
    report_experiment_options,
)


def write_report(out, *, seed=0, draws=None, keep_probs=None, schemes=None, executor="local",
                 scheduler=None, progress=False, parallel=True, experiment_options=None,
                 figure_formats=("svg", "png")):
    """Run the sweeps, the experiments and the claims ledger; write CSVs, figures and HTML.

    Parameters
    ----------
    out : str
        Output directory (created). Finished sweep cells and experiment tables are cached in
        ``out/.cells`` keyed by every option, so an interrupted run resumes where it stopped.
    seed : int
    draws : int, optional
        Cap on Monte-Carlo draws per sweep cell, per claim measurement and per experiment
        (default: the computed sizes).
    keep_probs, schemes : sequence, optional
        The sweep's grid (default :data:`REPORT_KEEP_PROBS`, every scheme and contrast).
    executor, scheduler : str
        Where sweep cells run (:func:`stats_dropout._internal.executors.map_cells`).
    progress : bool
        Progress bars on stderr, one per phase: sweep, experiments, claims, figures (they draw
        no random numbers and change no result).
    parallel : bool
        Compute the experiment tables in a second process while the sweep runs (the report's
        two-core budget; see :func:`_compute`); the results do not depend on it.
    experiment_options : dict, optional
        ``{experiments function name: {option: value}}`` overriding :data:`REPORT_EXPERIMENTS`
        (smaller runs for tests); recorded in ``metadata.json``.
    figure_formats : tuple of {"svg", "png"}
        Standalone figure files to write (the HTML inlines the SVG either way).

    Returns
    -------
    dict
        Paths of the files written, by name.
    """
    import time

    started = time.perf_counter()
    keep_probs = REPORT_KEEP_PROBS if keep_probs is None else tuple(keep_probs)
    draws = None if draws is None else draws_iv(draws, "draws")
    seed = seed_iv(seed)
    cache = os.path.join(out, ".cells")
    os.makedirs(cache, exist_ok=True)

    # Both processes keep BLAS to one thread: two of them on the two cores leave no room for
    # more, and the networks' products are too small to gain from threads anyway.
    with single_threaded_blas():
        summary, tables, figures = _compute(out, cache, seed=seed, draws=draws, keep_probs=keep_probs,
                                            schemes=schemes, executor=executor, scheduler=scheduler,
                                            progress=progress, parallel=parallel,
                                            experiment_options=experiment_options,
                                            figure_formats=figure_formats)
        from stats_dropout.studies.claims.ledger import claims_ledger

        ledger = claims_ledger(seed=seed, max_draws=draws, tables=dict(tables), progress=progress)
    files = {}
    files["summary"] = os.path.join(out, "summary.csv")
    write_csv(summary, files["summary"])
    files["claims"] = os.path.join(out, "claims.csv")
    write_csv(ledger, files["claims"])
    for name, (csv_name, _) in REPORT_EXPERIMENTS.items():
        files[name] = os.path.join(out, csv_name)
        write_csv(tables[name], files[name])

    runtime = time.perf_counter() - started
    metadata = _metadata(seed=seed, draws=draws, keep_probs=keep_probs, schemes=schemes,
                         executor=executor, runtime=runtime, summary=summary,
                         experiment_options=experiment_options, figure_formats=figure_formats)
    files["metadata"] = os.path.join(out, "metadata.json")
    atomic_write_text(files["metadata"], json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    files["index"] = os.path.join(out, "index.html")
    atomic_write_text(files["index"], render_page(summary, ledger, tables, figures, metadata))
    files.update({f"figure:{k}": v["path"] for k, v in figures.items()})
    return files


#: The table each figure plots: the sweep's "summary" or an experiment's name (page order: FIGURES).
FIGURE_SOURCES = {"bias": "summary", "variance": "summary", "norm_inflation": "norm_table",
                  "inference_gap": "inference_gap", "mc_averaging": "mc_averaging"}


def _compute(out, cache, *, seed, draws, keep_probs, schemes, executor, scheduler, progress, parallel,
             experiment_options, figure_formats):
    """The sweep, the experiment tables and the figures: ``(summary, tables, figures)``.

    Each table's figure is drawn by the process that computed the table. With ``parallel`` the
    tables are queued for a second process, the slowest first, while this one sweeps; then this
    one takes back the tables the worker has not started, from the end of the queue, draws the
    sweep's figures and waits for the rest: the two processes finish about together. Where a
    table or figure is made changes none of its bytes.
    """
    names = list(REPORT_EXPERIMENTS)
    directory = os.path.join(out, "figures")
    os.makedirs(directory, exist_ok=True)
    task = functools.partial(_table_and_figures, directory=directory, formats=figure_formats,
                             compute=functools.partial(experiment_table, seed=seed, draws=draws,
                                                       cache_dir=cache, overrides=experiment_options))
    bar = _ExperimentsBar(names, cache) if progress else None
    pool = futures = None
    if parallel:
        pool, futures = _start_worker(names, task, bar)
    try:
        summary = sweep_summary(schemes, keep_probs, seed=seed,
                                max_draws=200_000 if draws is None else draws, cache_dir=cache,
                                executor=executor, scheduler=scheduler, progress=progress)
        results = _take_back_unstarted(futures, task, bar) if parallel else _run_here(names, task, bar)
        figures_bar = _figures_bar(progress)
        figures = {}
        for name in (name for name, source in FIGURE_SOURCES.items() if source == "summary"):
            figures[name] = _draw_figure(name, summary, directory, figure_formats)
            figures_bar.update(1)
        if parallel:
            results.update((name, f.result()) for name, f in futures.items() if name not in results)
            for name in names:  # a callback may still be on its way when result() returns
                _done(bar, name)
    except KeyboardInterrupt:
        if pool is not None:
            _stop_workers(pool)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    for name in names:  # the tables' figures, drawn where each table was computed
        figures.update(results[name][1])
        figures_bar.update(len(results[name][1]))
    figures_bar.close()
    return summary, {name: results[name][0] for name in names}, {k: v for k, v in figures.items() if v}


def _table_and_figures(name, *, compute, directory, formats):
    """``(table, figures)``: ``compute(name)`` and the figures that plot it, ``{figure: entry}``."""
    table = compute(name)
    return table, {fig: _draw_figure(fig, table, directory, formats)
                   for fig, source in FIGURE_SOURCES.items() if source == name}


def _draw_figure(name, data, directory, formats):
    """Draw figure ``name`` of ``data`` and write its files: ``{"svg", "caption", "path"}``, or
    None when the run computed nothing it could plot."""
    from stats_dropout.reporting import figures as fg

    if data is None or len(data) == 0 or (name == "variance" and not fg.variance_schemes(data)):
        return None
    stem = os.path.join(directory, name)
    svg = fg.save_figure(getattr(fg, f"plot_{name}")(data), stem, formats=formats)
    return {"svg": svg, "caption": getattr(fg, f"caption_{name}")(data), "path": stem + ".svg"}


def _start_worker(names, task, bar):
    """A one-process pool running ``task(name)`` for every table, the slowest first.

    Returns ``(pool, futures)``, ``futures`` in ``names`` order. spawn, not fork: the parent may
    hold threads (BLAS, dask), and fork would copy locks. The worker ignores SIGINT: Ctrl-C
    reaches the whole process group, and the parent alone answers it (one line, exit 130); the
    worker is then stopped, not waited for.
    """
    import concurrent.futures
    import multiprocessing

    order = sorted(names, key=lambda name: name != SLOWEST_EXPERIMENT)  # stable: the rest in order
    with _sigint_ignored():  # inherited by the spawned worker from its first instruction
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
        submitted = {name: pool.submit(_single_threaded, task, name) for name in order}
    if bar is not None:
        for name, future in submitted.items():
            future.add_done_callback(bar.callback(name))
    return pool, {name: submitted[name] for name in names}


def _single_threaded(task, name):
    """``task(name)`` with BLAS on one thread: the worker's share of the two cores."""
    with single_threaded_blas():
        return task(name)


def _take_back_unstarted(futures, task, bar):
    """``task(name)`` here for the tables the worker has not started: ``{name: result}``.

    From the end of the worker's queue: ``Future.cancel`` succeeds only for a table not yet
    started, and the worker takes them from the front, so the first refusal ends the loop.
    """
    results = {}
    for name in reversed(list(futures)):
        if not futures[name].cancel():
            break
        results[name] = task(name)
        _done(bar, name)
    return results


def _run_here(names, task, bar):
    results = {}
    for name in names:
        results[name] = task(name)
        _done(bar, name)
    return results


def _figures_bar(progress):
    """The figures phase's bar (a no-op bar without ``progress``)."""
    from tqdm.auto import tqdm

    return tqdm(total=len(FIGURE_SOURCES), desc="figures", unit="figure", disable=not progress)


def _done(bar, name):
    if bar is not None:
        bar.done(name)


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in this block (main thread only; elsewhere nothing changes).

    A process started here inherits the ignored disposition through exec, so a spawned worker
    is deaf to Ctrl-C even while it is still importing (the initializer alone runs too late).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_workers(pool):
    """Stop a process pool now, mid-table: shutdown() alone would wait for the running one.

    ``ProcessPoolExecutor`` has no public terminate before Python 3.14; its worker processes
    are reached through the private ``_processes`` map, with ``terminate_workers`` preferred
    where it exists. Finished tables are in the cache already, so a rerun resumes.
    """
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list(getattr(pool, "_processes", {}).values()):
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


class _ExperimentsBar:
    """The experiments phase's bar: one step per table, the running table's name as postfix,
    and how many came from the cache (a table computed here leaves a new ``table-NAME-*.pkl``
    in ``cache``; one read from it leaves none)."""

    def __init__(self, names, cache):
        import threading

        from tqdm.auto import tqdm

        self._names, self._cache = list(names), cache
        self._before = set(os.listdir(cache))
        self._finished, self._cached, self._closed = set(), 0, False
        self._lock = threading.Lock()  # callbacks run in the process pool's thread
        self._bar = tqdm(total=len(self._names), desc="experiments", unit="table")
        self._bar.set_postfix_str(self._names[0] if self._names else "")

    def callback(self, name):
        """A ``Future.add_done_callback`` hook: ``done(name)`` if the table was computed."""
        def hook(future):
            if not future.cancelled() and future.exception() is None:
                self.done(name)
        return hook

    def done(self, name):
        with self._lock:
            if self._closed or name in self._finished:
                return
            self._finished.add(name)
            new = {f for f in os.listdir(self._cache) if f not in self._before}
            if not any(f.startswith(f"table-{name}-") for f in new):
                self._cached += 1
            upcoming = next((n for n in self._names if n not in self._finished), "")
            cached = f"{self._cached} from cache" if self._cached else ""
            self._bar.set_postfix_str(", ".join(x for x in (upcoming, cached) if x), refresh=False)
            self._bar.update(1)

    def close(self):
        with self._lock:
            self._closed = True
            self._bar.close()


def _versions():
    import platform
    import sys
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("stats-dropout", "numpy", "scipy", "pandas", "matplotlib", "scikit-learn"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _source_revision():
    """``(commit, dirty)`` of the git checkout holding this package, or ``(None, None)``.

    Numbers depend on the code that drew them, not only on the version string; a reviewer
    reproducing a report needs the commit.
    """
    import subprocess

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # stats_dropout/
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", here],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def _metadata(*, seed, draws, keep_probs, schemes, executor, runtime, summary, experiment_options,
              figure_formats=("svg", "png")):
    import datetime

    experiments = {name: {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in report_experiment_options(name, seed, draws, experiment_options).items()}
                   for name in REPORT_EXPERIMENTS}
    return {
        "command": "stats-dropout report",
        "seed": seed,
        "options": {"draws": draws, "keep_probs": list(keep_probs),
                    "schemes": None if schemes is None else list(schemes), "executor": executor},
        "experiments": experiments,
        "figure_formats": list(figure_formats),
        "sweep": {"cells": int(len(summary)), "total_draws": int(summary["n_draws"].sum()),
                  "tost_margin": float(summary["tost_margin"].iloc[0]),
                  "confidence_level": float(summary["confidence_level"].iloc[0])},
        "versions": _versions(),
        "source": dict(zip(("git_commit", "uncommitted_changes"), _source_revision())),
        # The date and the run time live here only, never in index.html (byte-identical pages).
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runtime_seconds": round(runtime, 1),
    }
