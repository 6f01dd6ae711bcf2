"""Run independent cells of a sweep in-process, in local worker processes or on a Dask cluster,
results in input order.

A *cell* is one point of a sweep (a scheme × keep probability × seed, say); ``fn(cell)`` must
depend on its cell only — in particular every cell carries its own seed — so the order and the
place in which cells run cannot change a result. :func:`map_cells` then returns the same list
whichever executor ran it.

``dask.distributed`` is optional (``pip install stats-dropout[dask]``) and imported only when
``executor="dask"`` is asked for. :func:`executor_options` reads the executor of long seed loops
(the slow tests, the calibration benchmark) from the environment: :data:`WORKERS_VARIABLE`,
:data:`SCHEDULER_VARIABLE`.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import multiprocessing
import os
import pickle
import sys
import threading

from stats_dropout._internal.validation import choice_iv, positive_int_iv

__all__ = ["map_cells", "executor_options", "default_workers", "parse_workers"]

EXECUTORS = ("local", "processes", "dask")

#: Workers of the throw-away ``LocalCluster`` started when no scheduler address is given.
LOCAL_CLUSTER_WORKERS = 2

#: Environment variable: worker processes of :func:`executor_options` (default: the cores).
WORKERS_VARIABLE = "STATS_DROPOUT_WORKERS"
#: Environment variable: a Dask scheduler address; when set, :func:`executor_options` uses it.
SCHEDULER_VARIABLE = "STATS_DROPOUT_SCHEDULER"


def _map_cells_iv(fn, cells, executor, scheduler, progress, processes, workers):
    if not callable(fn):
        raise TypeError(f"`fn` must be callable (cell -> result); got {fn!r}")
    try:
        cells = list(cells)
    except TypeError:
        raise TypeError(f"`cells` must be an iterable of cells; got {cells!r}") from None
    if not isinstance(executor, str):
        raise TypeError(f"`executor` must be one of {EXECUTORS}; got {executor!r}")
    executor = choice_iv(executor, "executor", EXECUTORS)
    if scheduler is not None:
        if executor != "dask":
            raise ValueError(f"`scheduler` needs executor='dask'; got executor={executor!r}")
        if not isinstance(scheduler, str) and not hasattr(scheduler, "submit"):
            raise TypeError(
                f"`scheduler` must be a scheduler address (str) or a distributed.Client; got {scheduler!r}"
            )
    if not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True or False; got {progress!r}")
    if not isinstance(processes, bool):
        raise TypeError(f"`processes` must be True or False; got {processes!r}")
    return fn, cells, executor, _workers_iv(workers, executor, scheduler)


def _workers_iv(workers, executor, scheduler):
    """The worker count ``executor`` runs with: ``workers``, or its default when ``None``."""
    if executor == "local" or scheduler is not None:
        if workers is not None:  # one process, or a cluster that has its own workers
            where = "a scheduler" if scheduler is not None else "executor='local'"
            raise ValueError(f"`workers` is not used with {where}; got workers={workers!r}")
        return None
    if workers is None:
        return default_workers() if executor == "processes" else LOCAL_CLUSTER_WORKERS
    return positive_int_iv(workers, "workers")


def default_workers():
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def executor_options(environ=None):
    """``map_cells`` keyword arguments for long seed loops, read from the environment.

    The one place the slow tests and ``benchmarks/calibrate_battery.py`` take their executor
    from.

    Parameters
    ----------
    environ : mapping, optional
        The environment (default ``os.environ``). :data:`SCHEDULER_VARIABLE`, when set and not
        blank, is a Dask scheduler address and wins. Otherwise :data:`WORKERS_VARIABLE` is the
        number of worker processes (default :func:`default_workers`); 1 runs in this process.

    Returns
    -------
    dict
        ``executor`` and, as they apply, ``scheduler`` or ``workers``.

    Raises
    ------
    ValueError
        :data:`WORKERS_VARIABLE` is not a positive integer (the message names it and its value).

    Examples
    --------
    >>> executor_options({"STATS_DROPOUT_WORKERS": "1"})
    {'executor': 'local'}
    >>> executor_options({"STATS_DROPOUT_WORKERS": "2"})
    {'executor': 'processes', 'workers': 2}
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(WORKERS_VARIABLE, "").strip()
    workers = parse_workers(raw) if raw else default_workers()  # checked even when a scheduler wins
    scheduler = environ.get(SCHEDULER_VARIABLE, "").strip()
    if scheduler:
        return dict(executor="dask", scheduler=scheduler)
    # One worker: no pool at all, so the reference run is the plain in-process loop.
    return dict(executor="local") if workers == 1 else dict(executor="processes", workers=workers)


def parse_workers(text, name=WORKERS_VARIABLE):
    """A worker count written as text (a variable, an option) as an int ≥ 1, or raise naming ``name``."""
    try:
        workers = int(text)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ValueError(f"{name} must be a positive integer (worker processes); got {text!r}")
    return workers


class _Progress:
    """A tqdm bar when tqdm is installed, otherwise one line per finished cell on stderr."""

    def __init__(self, total, enabled):
        self._bar = None
        self._done = 0
        self._total = total
        self._enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc="cells", unit="cell")

    def update(self):
        self._done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif self._enabled:
            print(f"cells: {self._done}/{self._total}", file=sys.stderr)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def _map_local(fn, cells, bar):
    results = []
    for cell in cells:
        results.append(fn(cell))
        bar.update()
    return results


#: The one live process pool ``(workers, pool)``: kept between calls, since a spawned worker pays
#: its imports (numpy, scipy, torch, the module of ``fn``) once, not once per seed loop.
_POOL = None
_POOL_LOCK = threading.Lock()


def _process_pool(workers):
    """The cached pool of ``workers`` spawned processes (a new one when the count changes or the
    old one broke, e.g. a worker killed by Ctrl-C while idle)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL[0] == workers and not getattr(_POOL[1], "_broken", False):
            return _POOL[1]
        _discard_pool_locked()
        # spawn, not fork: the parent may hold threads (BLAS, torch, jax, dask) and fork would
        # copy their locks mid-use. Workers inherit this process's environment variables
        # (OMP_NUM_THREADS, ...), not settings made at run time (torch.set_num_threads): a cell
        # that needs one sets it itself.
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers,
                                                      mp_context=multiprocessing.get_context("spawn"))
        _POOL = (workers, pool)
        # Shut down before the interpreter tears its modules down: a pool collected after that
        # prints an ignored AttributeError from concurrent.futures' weakref callback.
        atexit.register(_discard_pool)
        return pool


def _discard_pool():
    with _POOL_LOCK:
        _discard_pool_locked()


def _discard_pool_locked():
    global _POOL
    atexit.unregister(_discard_pool)
    if _POOL is not None:
        _POOL[1].shutdown(wait=True, cancel_futures=True)
        _POOL = None


def _map_processes(fn, cells, workers, bar):
    try:
        pickle.dumps(fn)
    except Exception as exc:  # lambdas, closures: the worker could not import them
        raise TypeError(f"`fn` must be picklable for executor='processes' (a module-level function); "
                        f"got {fn!r}: {exc}") from None
    pool = _process_pool(workers)
    futures = []
    try:
        futures = [pool.submit(fn, cell) for cell in cells]
        for _ in concurrent.futures.as_completed(futures):
            bar.update()
        return [future.result() for future in futures]  # input order, not completion order
    except concurrent.futures.process.BrokenProcessPool:
        _discard_pool()  # a worker died: the next call starts a fresh pool
        raise
    finally:
        for future in futures:
            future.cancel()


@contextlib.contextmanager
def _dask_client(scheduler, processes, workers):
    """Yield a ``distributed.Client``: the caller's, one connected to ``scheduler``, or a local one."""
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "executor='dask' needs dask.distributed: pip install 'stats-dropout[dask]'"
        ) from exc
    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # the caller's client: theirs to close
        return
    if scheduler is not None:
        with distributed.Client(scheduler) as client:
            yield client
        return
    # One thread per worker: a cell may seed numpy's global RNG (user code under test draws
    # from it), and two threads of one process would share that state. With processes=False
    # the workers still share the process, which is why processes=True is the safe choice for
    # such cells; processes=False starts faster and suits cells that use Generators only.
    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=":0",  # any free port: never fails on a busy 8787
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


def _map_dask(fn, cells, scheduler, processes, workers, bar):
    import distributed

    with _dask_client(scheduler, processes, workers) as client:
        # pure=False: two equal cells are still two runs (dask would otherwise deduplicate them
        # by hashing, which is only right if fn is a pure function of a hashable cell).
        futures = client.map(fn, cells, pure=False)
        try:
            for _ in distributed.as_completed(futures):
                bar.update()
            return client.gather(futures)  # gathers in the order of `futures`, i.e. of `cells`
        finally:
            client.cancel(futures)


def map_cells(fn, cells, *, executor="local", scheduler=None, progress=False, processes=False, workers=None):
    """Apply ``fn`` to every cell, here, in worker processes or on Dask; results in input order.

    Parameters
    ----------
    fn : callable
        ``cell -> result``. Must depend on its cell only (each cell carries its own seed), so
        that every executor returns the same results. With ``executor="processes"`` it is
        pickled by reference: a module-level function, which a spawned worker imports with this
        process's ``sys.path`` (a script that calls ``map_cells`` at import time needs the
        ``if __name__ == "__main__":`` guard, as for any spawned process). With ``"dask"`` it
        is pickled by cloudpickle. Cells and results must be picklable.
    cells : iterable
        The sweep's cells; consumed into a list.
    executor : {"local", "processes", "dask"}, default "local"
        ``"local"`` runs the cells one after the other in this process. ``"processes"`` runs
        them in a pool of ``workers`` spawned processes on this machine, kept for later calls.
        ``"dask"`` submits them to a ``distributed`` cluster.
    scheduler : str or distributed.Client, optional
        Dask only: a scheduler address (``"tcp://host:8786"``) or an existing client (left
        open). ``None`` starts a throw-away ``LocalCluster`` of two single-threaded workers.
    progress : bool, default False
        Show progress (tqdm if installed, else a line per cell on stderr).
    processes : bool, default False
        Dask ``LocalCluster`` only: worker processes instead of threads. Use ``True`` when cells
        seed process-global state (numpy's or torch's global RNG), which threads would share.
    workers : int, optional
        Worker processes of ``"processes"`` (default :func:`default_workers`, the cores) or of
        Dask's throw-away ``LocalCluster`` (default :data:`LOCAL_CLUSTER_WORKERS`). Not used
        with ``"local"`` or a scheduler.

    Returns
    -------
    list
        ``[fn(cell) for cell in cells]``, whichever executor computed it.

    Raises
    ------
    ImportError
        ``executor="dask"`` without ``dask.distributed`` installed.
    TypeError, ValueError
        An argument out of its domain (the message names it), or ``fn`` is not picklable for
        ``executor="processes"``.

    Examples
    --------
    >>> map_cells(lambda c: c * c, [1, 2, 3])
    [1, 4, 9]
    """
    fn, cells, executor, workers = _map_cells_iv(fn, cells, executor, scheduler, progress, processes, workers)
    bar = _Progress(len(cells), progress)
    try:
        if executor == "local":
            return _map_local(fn, cells, bar)
        if not cells:
            return []
        if executor == "processes":
            return _map_processes(fn, cells, workers, bar)
        return _map_dask(fn, cells, scheduler, processes, workers, bar)
    finally:
        bar.close()
