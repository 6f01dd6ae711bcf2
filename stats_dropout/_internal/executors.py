"""Run independent cells of a sweep in-process or on a Dask cluster, results in input order.

A *cell* is one point of a sweep (a scheme × keep probability × seed, say); ``fn(cell)`` must
depend on its cell only — in particular every cell carries its own seed — so the order and the
place in which cells run cannot change a result. :func:`map_cells` then returns the same list
whichever executor ran it.

``dask.distributed`` is optional (``pip install stats-dropout[dask]``) and imported only when
``executor="dask"`` is asked for.
"""

from __future__ import annotations

import contextlib
import sys

from stats_dropout._internal.validation import choice_iv

__all__ = ["map_cells"]

EXECUTORS = ("local", "dask")

#: Workers of the throw-away ``LocalCluster`` started when no scheduler address is given.
LOCAL_CLUSTER_WORKERS = 2


def _map_cells_iv(fn, cells, executor, scheduler, progress, processes):
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
    return fn, cells, executor


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


@contextlib.contextmanager
def _dask_client(scheduler, processes):
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
        n_workers=LOCAL_CLUSTER_WORKERS,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=":0",  # any free port: never fails on a busy 8787
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


def _map_dask(fn, cells, scheduler, processes, bar):
    import distributed

    with _dask_client(scheduler, processes) as client:
        # pure=False: two equal cells are still two runs (dask would otherwise deduplicate them
        # by hashing, which is only right if fn is a pure function of a hashable cell).
        futures = client.map(fn, cells, pure=False)
        try:
            for _ in distributed.as_completed(futures):
                bar.update()
            return client.gather(futures)  # gathers in the order of `futures`, i.e. of `cells`
        finally:
            client.cancel(futures)


def map_cells(fn, cells, *, executor="local", scheduler=None, progress=False, processes=False):
    """Apply ``fn`` to every cell, locally or on Dask, and return the results in input order.

    Parameters
    ----------
    fn : callable
        ``cell -> result``. Must depend on its cell only (each cell carries its own seed), so
        that every executor returns the same results. With ``executor="dask"`` it is pickled
        with cloudpickle and its results must be picklable.
    cells : iterable
        The sweep's cells; consumed into a list.
    executor : {"local", "dask"}, default "local"
        ``"local"`` runs the cells one after the other in this process. ``"dask"`` submits them
        to a ``distributed`` cluster.
    scheduler : str or distributed.Client, optional
        Dask only: a scheduler address (``"tcp://host:8786"``) or an existing client (left
        open). ``None`` starts a throw-away ``LocalCluster`` of two single-threaded workers.
    progress : bool, default False
        Show progress (tqdm if installed, else a line per cell on stderr).
    processes : bool, default False
        Dask ``LocalCluster`` only: worker processes instead of threads. Use ``True`` when cells
        seed process-global state (numpy's or torch's global RNG), which threads would share.

    Returns
    -------
    list
        ``[fn(cell) for cell in cells]``, whichever executor computed it.

    Raises
    ------
    ImportError
        ``executor="dask"`` without ``dask.distributed`` installed.

    Examples
    --------
    >>> map_cells(lambda c: c * c, [1, 2, 3])
    [1, 4, 9]
    """
    fn, cells, executor = _map_cells_iv(fn, cells, executor, scheduler, progress, processes)
    bar = _Progress(len(cells), progress)
    try:
        if executor == "local":
            return _map_local(fn, cells, bar)
        if not cells:
            return []
        return _map_dask(fn, cells, scheduler, processes, bar)
    finally:
        bar.close()
