"""The report's experiment tables: :data:`REPORT_EXPERIMENTS` and a cached
:func:`experiment_table`."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd

from stats_dropout._internal.files import atomic_write_pickle
from stats_dropout._internal.provenance import source_fingerprint

#: Experiment tables of the report: experiments function -> (CSV name, keyword options).
#: Options keep the default report within its time budget; ``draws`` caps apply on top.
REPORT_EXPERIMENTS = {
    "inference_gap": ("inference_gap.csv", {}),
    "mc_averaging": ("mc_averaging.csv", {}),
    "training_equivalence": ("training_equivalence.csv", {}),
    "regression_dropout": ("regression_dropout.csv", {}),
    "norm_table": ("norm_inflation.csv", {"keep_probs": (0.1, 0.3, 0.5, 0.7, 0.8, 0.9), "draws": 20_000}),
    "variance_shift_table": ("variance_shift.csv", {}),
    "nwgm_table": ("nwgm.csv", {}),
    "softmax_geometric_mean_check": ("softmax_nwgm.csv", {}),
    # Structured dropout (THEORY.md §7): a slide's worth of cells; the full grids are
    # studies.structured's defaults (minutes). 20,000 draws decide the biased cells; the
    # unbiased ones then say "undecided" at the ±0.5 % margin, with their interval.
    "dropblock_bias_table": ("structured_dropblock.csv", {"feat_sizes": (7, 14), "keep_probs": (0.9,),
                                                          "block_sizes": (3, 7), "max_draws": 20_000}),
    "stochastic_depth_bias_table": ("structured_stochastic_depth.csv", {"batch_sizes": (1, 8),
                                                                        "keep_probs": (0.9,),
                                                                        "max_draws": 20_000}),
}

#: The report's slowest table (it trains four networks and makes 4000 Monte-Carlo passes): queued
#: first for the report's second process, so that the other tables can be balanced against it.
SLOWEST_EXPERIMENT = "mc_averaging"

#: Version of the experiment-table cache entries.
_TABLE_VERSION = 1


def report_experiment_options(name, seed, draws, overrides=None):
    """Keyword options for ``experiments.<name>``: the report's, the caller's overrides, the
    seed, and the draws cap."""
    import inspect

    from stats_dropout.studies import experiments

    fn = getattr(experiments, name)
    options = dict(REPORT_EXPERIMENTS[name][1])
    options.update((overrides or {}).get(name, {}))
    params = inspect.signature(fn).parameters
    if draws is not None and "draws" in params:
        default = options.get("draws", params["draws"].default)
        options["draws"] = draws if default is None else min(int(default), draws)
    options["seed"] = seed
    return options


def experiment_table(name, seed=0, draws=None, cache_dir=None, overrides=None):
    """``experiments.<name>`` with the report's options; cached in ``cache_dir`` if given."""
    from stats_dropout.studies import experiments

    options = report_experiment_options(name, seed, draws, overrides)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([name, sorted((k, repr(v)) for k, v in options.items()),
                                         _TABLE_VERSION, source_fingerprint()]).encode()).hexdigest()[:32]
        path = os.path.join(cache_dir, f"table-{name}-{key}.pkl")
        if os.path.exists(path):
            return pd.read_pickle(path)
    frame = getattr(experiments, name)(**options)
    if path is not None:
        atomic_write_pickle(path, frame)
    return frame


def all_experiment_tables(seed, draws, cache_dir, overrides=None):
    return {name: experiment_table(name, seed, draws, cache_dir, overrides) for name in REPORT_EXPERIMENTS}
