"""map_cells: local, process-pool and Dask executors return the same results, in input order."""

import concurrent.futures
import operator
import os

import numpy as np
import pytest

import stats_dropout as sd
from stats_dropout._internal import executors
from stats_dropout._internal.executors import executor_options, map_cells


def _cell_estimate(cell):
    """A small seeded sweep cell: Monte-Carlo mean of inverted dropout at (seed, keep_prob)."""
    seed, keep_prob = cell
    layer = sd.get_scheme("inverted").bind(keep_prob)
    est = sd.estimate_train_moments(layer, np.linspace(-1, 1, 64), draws=3000, seed=seed)
    return est.mean, est.var


CELLS = [(seed, p) for seed in (0, 1, 2) for p in (0.3, 0.5, 0.9)]


def test_local_is_in_order_and_in_process():
    seen = []

    def fn(cell):
        seen.append(cell)  # only observable if fn runs here, in this process
        return -cell

    assert map_cells(fn, iter(range(5))) == [0, -1, -2, -3, -4]
    assert seen == list(range(5))
    assert map_cells(fn, []) == []


def test_input_validation():
    with pytest.raises(TypeError, match="`fn` must be callable"):
        map_cells(3, [1])
    with pytest.raises(TypeError, match="`cells` must be an iterable"):
        map_cells(abs, 3)
    with pytest.raises(ValueError, match="`executor` must be one of 'local', 'processes', 'dask'; got 'ray'"):
        map_cells(abs, [1], executor="ray")
    with pytest.raises(TypeError, match="`executor` must be one of"):
        map_cells(abs, [1], executor=None)
    with pytest.raises(ValueError, match="`scheduler` needs executor='dask'"):
        map_cells(abs, [1], scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(TypeError, match="`scheduler` must be a scheduler address"):
        map_cells(abs, [1], executor="dask", scheduler=8786)
    with pytest.raises(TypeError, match="`progress` must be True or False"):
        map_cells(abs, [1], progress="yes")
    with pytest.raises(TypeError, match="`processes` must be True or False"):
        map_cells(abs, [1], processes=1)


@pytest.mark.parametrize("workers, error", [(0, ValueError), (-2, ValueError), ("2", TypeError), (True, TypeError),
                                            (2.0, TypeError)])
def test_bad_worker_count_names_the_argument_and_value(workers, error):
    with pytest.raises(error, match=f"`workers` must be a positive integer; got {workers!r}"):
        map_cells(abs, [1], executor="processes", workers=workers)


def test_workers_only_where_they_are_used():
    with pytest.raises(ValueError, match="`workers` is not used with executor='local'; got workers=2"):
        map_cells(abs, [1], workers=2)
    with pytest.raises(ValueError, match="`workers` is not used with a scheduler; got workers=2"):
        map_cells(abs, [1], executor="dask", scheduler="tcp://127.0.0.1:8786", workers=2)


def test_processes_need_a_picklable_fn():
    with pytest.raises(TypeError, match="`fn` must be picklable for executor='processes'"):
        map_cells(lambda c: c, [1], executor="processes", workers=2)


@pytest.mark.parametrize("environ, options", [
    ({}, dict(executor="processes", workers=2)),  # the default: every core (two, as patched)
    ({"STATS_DROPOUT_WORKERS": "1"}, dict(executor="local")),
    ({"STATS_DROPOUT_WORKERS": " 3 "}, dict(executor="processes", workers=3)),
    ({"STATS_DROPOUT_WORKERS": ""}, dict(executor="processes", workers=2)),
    ({"STATS_DROPOUT_SCHEDULER": "tcp://10.0.0.1:8786", "STATS_DROPOUT_WORKERS": "1"},
     dict(executor="dask", scheduler="tcp://10.0.0.1:8786")),
    ({"STATS_DROPOUT_SCHEDULER": "  "}, dict(executor="processes", workers=2)),
])
def test_executor_options_from_the_environment(monkeypatch, environ, options):
    monkeypatch.setattr(executors, "default_workers", lambda: 2)
    assert executor_options(environ) == options


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_bad_worker_variable_names_the_variable_and_value(raw):
    with pytest.raises(ValueError, match=f"STATS_DROPOUT_WORKERS must be a positive integer .*got {raw!r}"):
        executor_options({"STATS_DROPOUT_WORKERS": raw})
    with pytest.raises(ValueError, match="STATS_DROPOUT_WORKERS"):  # a typo is not hidden by a scheduler
        executor_options({"STATS_DROPOUT_WORKERS": raw, "STATS_DROPOUT_SCHEDULER": "tcp://10.0.0.1:8786"})


def test_executor_options_reads_os_environ(monkeypatch):
    monkeypatch.setenv("STATS_DROPOUT_WORKERS", "oops")
    with pytest.raises(ValueError, match="STATS_DROPOUT_WORKERS"):
        executor_options()


def test_progress_without_breaking_results(capsys):
    assert map_cells(abs, [-1, -2], progress=True) == [1, 2]


def _assert_same(results, expected):
    assert len(results) == len(expected)
    for (mean, var), (mean_ref, var_ref) in zip(results, expected):
        np.testing.assert_array_equal(mean, mean_ref)  # bit-identical, not just close
        np.testing.assert_array_equal(var, var_ref)


def test_process_pool_matches_local_run_bit_for_bit():
    # The pool is spawned once (a few seconds of imports) and kept: the second call reuses it.
    expected = map_cells(_cell_estimate, CELLS)
    _assert_same(map_cells(_cell_estimate, CELLS, executor="processes", workers=2), expected)
    pool = executors._POOL
    assert map_cells(operator.neg, range(5), executor="processes", workers=2, progress=True) == [0, -1, -2, -3, -4]
    assert executors._POOL is pool
    assert map_cells(operator.neg, [], executor="processes", workers=2) == []


def _fail_on_two(cell):
    if cell == 2:
        raise ValueError(f"cell {cell}")
    return cell


def _die(cell):
    os._exit(3)  # a worker killed mid-cell (out of memory, a segfault in an extension)


def test_process_pool_errors_reach_the_caller_and_a_broken_pool_is_replaced():
    with pytest.raises(ValueError, match="cell 2"):
        map_cells(_fail_on_two, range(4), executor="processes", workers=2)
    assert map_cells(_fail_on_two, [0, 1], executor="processes", workers=2) == [0, 1]  # the same pool, still fine
    with pytest.raises(concurrent.futures.process.BrokenProcessPool):
        map_cells(_die, [0], executor="processes", workers=2)
    assert map_cells(operator.neg, [1, 2], executor="processes", workers=2) == [-1, -2]  # a fresh pool


def test_dask_local_cluster_matches_local_run():
    pytest.importorskip("distributed")
    expected = map_cells(_cell_estimate, CELLS)
    results = map_cells(_cell_estimate, CELLS, executor="dask")
    _assert_same(results, expected)


@pytest.mark.slow  # worker processes start in seconds; the threaded cluster tests run by default
def test_dask_worker_processes():
    pytest.importorskip("distributed")
    # Worker processes import fn by reference, so it must live in an installed module.
    assert map_cells(operator.neg, range(6), executor="dask", processes=True) == [0, -1, -2, -3, -4, -5]


def test_dask_scheduler_address_and_client():
    distributed = pytest.importorskip("distributed")
    expected = map_cells(_cell_estimate, CELLS[:4])
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        by_address = map_cells(_cell_estimate, CELLS[:4], executor="dask", scheduler=address)
        with distributed.Client(cluster) as client:
            by_client = map_cells(_cell_estimate, CELLS[:4], executor="dask", scheduler=client)
            assert client.status == "running"  # the caller's client is left open
    _assert_same(by_address, expected)
    _assert_same(by_client, expected)

