"""Sweeps over schemes × keep_prob, summarised as tidy pandas DataFrames, CSV and HTML.

Two sweeps live here:

:func:`sweep_schemes`
    The verification battery (:func:`stats_dropout.checks.verify_scheme`) at every scheme and
    keep probability, one row per decision; the ``stats-dropout schemes`` command prints it.
:func:`sweep_summary`
    What the report shows a learner: per scheme and keep probability, the mean bias (absolute
    and relative) with its confidence interval and a TOST equivalence verdict at a stated
    margin, the empirical against the theoretical variance with a ratio interval, and the keep
    rate with an exact binomial interval. One Monte-Carlo run per cell; cells are independent
    (each has its own seed derived from the run seed and the cell), may run on any executor,
    and are cached on disk so an interrupted sweep resumes where it stopped.

CSV files are written with a fixed float format, atomically (temporary file, then
``os.replace``), so the same seed and options give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np
import pandas as pd
from scipy import stats as _sps

from ._validation import keep_prob_iv, positive_int_iv, probability_iv, seed_iv
from .montecarlo import estimate_statistic_moments
from .scheme_checks import count_scheme_decisions, scheme_probe, verify_scheme
from .schemes import SCHEMES, _resolve_shared_axes, get_scheme
from .stats import decide_equivalence, decide_keep_rate, projection_ratio, squared_deviation_ratio

__all__ = [
    "sweep_schemes",
    "format_schemes_table",
    "sweep_summary",
    "summary_cell",
    "write_csv",
    "DEFAULT_KEEP_PROBS",
    "REPORT_KEEP_PROBS",
    "CONTRASTS",
    "CSV_FLOAT_FORMAT",
]

#: The ``schemes`` command's grid: 0.1, 0.2, …, 0.9 and 1.0.
DEFAULT_KEEP_PROBS = tuple(round(0.1 * k, 1) for k in range(1, 11))

#: The report's grid (issue #5): 0.05, 0.10, …, 0.95 and 1.0.
REPORT_KEEP_PROBS = tuple(round(0.05 * k, 2) for k in range(1, 20)) + (1.0,)

#: Deliberately wrong implementations swept next to the reference schemes so that a learner
#: sees what a bias looks like. ``no_rescale``: units masked at train without the 1/keep_prob,
#: identity at eval — the bug the seed thread's question 2 is about.
CONTRASTS = {"no_rescale": "masked without 1/keep_prob at train, identity at eval (a bug)"}

#: Fixed float format of every CSV: ten significant digits are more than any Monte-Carlo
#: figure here supports, and cut the last-bit noise that would break byte identity.
CSV_FLOAT_FORMAT = "%.10g"

#: Version of the per-cell computation; part of the cache key, bump when a cell changes.
_CELL_VERSION = 1


# --- the battery sweep (the `schemes` command) ---------------------------------------------
def _sweep_schemes_iv(schemes, keep_probs, relative_error, false_fail_rate, false_pass_rate, seed,
                      max_draws):
    schemes = tuple(SCHEMES) if schemes is None else tuple(schemes)
    if not schemes:
        raise ValueError("`schemes` must name at least one scheme; got an empty sequence")
    for name in schemes:
        get_scheme(name)
    keep_probs = tuple(keep_prob_iv(p, "keep_probs") for p in keep_probs)
    if not keep_probs:
        raise ValueError("`keep_probs` must hold at least one value; got an empty sequence")
    return (schemes, keep_probs, probability_iv(relative_error, "relative_error"),
            probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"), seed_iv(seed),
            None if max_draws is None else positive_int_iv(max_draws, "max_draws"))


def sweep_schemes(schemes=None, keep_probs=DEFAULT_KEEP_PROBS, *, relative_error=0.01,
                  false_fail_rate=1e-6, false_pass_rate=1e-3, seed=0, max_draws=None,
                  progress=False):
    """Verify every scheme at every keep probability; one row per decision.

    The total ``false_fail_rate`` covers the whole sweep (Bonferroni over every decision of
    every scheme and keep probability), so a correct sweep fails by chance with probability
    at most ``false_fail_rate``.

    Returns
    -------
    pandas.DataFrame
        Columns ``scheme, keep_prob, contract, decision, property, estimate, expected, ci_low,
        ci_high, pvalue, min_detectable_effect, n_draws, false_fail_rate, passed, seed``.
    """
    (schemes, keep_probs, relative_error, false_fail_rate, false_pass_rate, seed,
     max_draws) = _sweep_schemes_iv(schemes, keep_probs, relative_error, false_fail_rate,
                                    false_pass_rate, seed, max_draws)
    # Count decisions first so the total error rate is split over all of them.
    n_decisions = sum(count_scheme_decisions(name, p) for name in schemes for p in keep_probs)
    grid = [(name, p) for name in schemes for p in keep_probs]
    if progress:
        from tqdm.auto import tqdm

        grid = tqdm(grid, desc="schemes × keep_prob", unit="cell")
    rows = []
    for name, p in grid:
        res = verify_scheme(name, p, relative_error=relative_error, false_fail_rate=false_fail_rate,
                            false_pass_rate=false_pass_rate, seed=seed, n_decisions=n_decisions,
                            max_draws=max_draws)
        for key, d in res["decisions"].items():
            rows.append({
                "scheme": name, "keep_prob": p, "contract": get_scheme(name).contract,
                "decision": key, "property": d.property, "estimate": d.estimate,
                "expected": d.expected, "ci_low": d.ci_low, "ci_high": d.ci_high,
                "pvalue": d.pvalue, "min_detectable_effect": d.min_detectable_effect,
                "n_draws": res["draws"], "false_fail_rate": d.false_fail_rate,
                "passed": not d.rejected, "seed": seed,
            })
    return pd.DataFrame(rows)


def format_schemes_table(frame):
    """A compact text table of :func:`sweep_schemes`: one line per scheme and keep_prob."""
    wide = frame.pivot_table(index=["scheme", "keep_prob"], columns="decision", values="estimate",
                             aggfunc="first", sort=False)
    wide["n_draws"] = frame.groupby(["scheme", "keep_prob"], sort=False)["n_draws"].first()
    wide["verdict"] = np.where(frame.groupby(["scheme", "keep_prob"], sort=False)["passed"].all(),
                               "pass", "FAIL")
    return wide.reset_index().to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="")


# --- the summary sweep (the report) --------------------------------------------------------
SUMMARY_COLUMNS = [
    "scheme", "keep_prob", "contract", "n_draws", "expected_output_rms",
    "bias", "bias_ci_low", "bias_ci_high",
    "relative_bias", "relative_bias_ci_low", "relative_bias_ci_high", "relative_bias_pvalue",
    "tost_margin", "tost_pvalue", "equivalent",
    "var_theory", "var_empirical", "var_ratio", "var_ratio_ci_low", "var_ratio_ci_high",
    "keep_rate", "keep_rate_ci_low", "keep_rate_ci_high", "keep_rate_pvalue", "keep_trials",
    "confidence_level", "seed", "cell_seed",
]


def cell_seed(seed, scheme, keep_prob):
    """Seed of one cell: a hash of the run seed and the cell, independent of the grid's order.

    Cells get independent streams (their intervals are independent), and adding a keep
    probability to the grid leaves every other cell's numbers unchanged.
    """
    digest = hashlib.sha256(f"{seed}|{scheme}|{float(keep_prob)!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _summary_target(name):
    """``(scheme, eval_fn, contract)``: the scheme whose train pass is sampled, and the eval."""
    if name == "no_rescale":
        scheme = get_scheme("standard")
        return scheme, lambda x, p: np.array(x, dtype=np.float64), "mean"
    scheme = get_scheme(name)
    return scheme, scheme.eval, scheme.contract


def _draws_for_margin(sd, margin, alpha, power, min_draws, max_draws):
    """Draws for TOST to declare equivalence at ``margin`` with probability ``power`` when the
    true bias is 0: ``n = ((z_{1−α} + z_{(1+power)/2}) σ / ε)²`` (normal approximation)."""
    if not sd > 0:
        return min_draws
    z = _sps.norm.isf(alpha) + _sps.norm.isf((1 - power) / 2)
    n = int(np.ceil((z * sd / margin) ** 2))
    n = max(n, min_draws)
    return n if max_draws is None else min(n, max_draws)


def summary_cell(cell):
    """One cell of :func:`sweep_summary`; a pure function of ``cell`` (a dict), picklable.

    ``cell`` holds ``scheme, keep_prob, seed, margin, alpha, power, level, min_draws,
    max_draws`` and optionally ``cache_dir``: if given, a finished cell is written there
    atomically and read back instead of recomputed.
    """
    cache_path = None
    if cell.get("cache_dir"):
        cache_path = os.path.join(cell["cache_dir"], _cell_key(cell) + ".json")
        if os.path.exists(cache_path):
            with open(cache_path, encoding="utf-8") as fh:
                return json.load(fh)
    row = _compute_summary_cell(cell)
    if cache_path is not None:
        _atomic_write_text(cache_path, json.dumps(row, sort_keys=True))
    return row


def _cell_key(cell):
    keyed = {k: v for k, v in cell.items() if k != "cache_dir"}
    keyed["_version"] = _CELL_VERSION
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:32]


def _compute_summary_cell(cell):
    name, p, seed = cell["scheme"], float(cell["keep_prob"]), int(cell["seed"])
    level, margin, alpha = cell["level"], cell["margin"], cell["alpha"]
    scheme, eval_fn, contract = _summary_target(name)
    x = scheme_probe(seed=seed)
    e = np.asarray(eval_fn(x, p), dtype=np.float64)
    mu = scheme.train_mean(x, p)
    var = scheme.train_var(x, p)
    # Exact variance of one draw of the projection ratio sizes the run (checks.py's reasoning).
    sd_ratio = np.sqrt(scheme.linear_statistic_var(e / np.sum(e**2), x, p))
    draws = _draws_for_margin(sd_ratio, margin, alpha, cell["power"], cell["min_draws"],
                              cell["max_draws"])

    axes = _resolve_shared_axes(scheme.shared_axes, x.ndim, scheme.name)
    # One element per mask entry: index 0 along the shared axes. Entries are independent
    # Bernoulli(p) trials, so their kept count is exactly binomial.
    rep = (slice(None),) + tuple(0 if ax in axes else slice(None) for ax in range(x.ndim))
    has_mask = scheme.noise in ("bernoulli", "alpha")
    if scheme.noise == "alpha":
        from .theory import alpha_dropped_value

        dropped = alpha_dropped_value(p)
    else:
        dropped = 0.0
    ratio = projection_ratio(x, e)
    devs = squared_deviation_ratio(mu, var) if np.sum(var) > 0 else None

    def statistic(samples):
        cols = [ratio(samples)]
        cols.append(devs(samples) if devs is not None
                    else np.sum((samples - mu) ** 2, axis=tuple(range(1, samples.ndim))))
        kept = samples[rep] != dropped
        cols.append(kept.reshape(len(samples), -1).sum(axis=1).astype(np.float64))
        return np.column_stack(cols)

    # Seeded BoundScheme: vectorised blocks; the result does not depend on the workers.
    train = scheme.bind(p)
    moments = estimate_statistic_moments(train, x, statistic, draws=draws, seed=int(cell["cell_seed"]),
                                         workers=int(cell.get("workers", 1)))
    n = moments.n_draws
    mean, se = moments.mean, moments.std_error
    tq = _sps.t.isf((1 - level) / 2, n - 1)
    rms = float(np.sqrt(np.mean(e**2)))

    rel = float(mean[0] - 1.0)
    rel_se = float(se[0])
    t_stat = rel / rel_se if rel_se > 0 else (0.0 if rel == 0 else np.inf)
    rel_p = float(2 * _sps.t.sf(abs(t_stat), n - 1))
    tost = decide_equivalence(rel, rel_se, margin, df=n - 1, alpha=alpha)

    var_theory = float(np.mean(var))
    if devs is not None:
        ratio_mean, ratio_half = float(mean[1]), float(tq * se[1])
        var_emp = ratio_mean * var_theory
        var_ratio = (ratio_mean, ratio_mean - ratio_half, ratio_mean + ratio_half)
    else:
        var_emp = float(mean[1]) / x.size
        var_ratio = (np.nan, np.nan, np.nan)

    n_entries = int(np.prod([1 if ax in axes else s for ax, s in enumerate(x.shape)]))
    if has_mask:
        trials = n_entries * n
        kept_total = int(round(float(mean[2]) * n))
        keep = decide_keep_rate(np.int64(kept_total), np.int64(trials), p, false_fail_rate=1 - level)
        keep_fields = (keep.estimate, keep.ci_low, keep.ci_high, keep.pvalue, trials)
    else:
        keep_fields = (np.nan, np.nan, np.nan, np.nan, 0)

    row = {
        "scheme": name, "keep_prob": p, "contract": contract, "n_draws": n,
        "expected_output_rms": rms,
        "bias": rel * rms, "bias_ci_low": (rel - tq * rel_se) * rms, "bias_ci_high": (rel + tq * rel_se) * rms,
        "relative_bias": rel, "relative_bias_ci_low": rel - tq * rel_se,
        "relative_bias_ci_high": rel + tq * rel_se, "relative_bias_pvalue": rel_p,
        "tost_margin": margin, "tost_pvalue": tost.pvalue, "equivalent": bool(tost.equivalent),
        "var_theory": var_theory, "var_empirical": var_emp, "var_ratio": var_ratio[0],
        "var_ratio_ci_low": var_ratio[1], "var_ratio_ci_high": var_ratio[2],
        "keep_rate": keep_fields[0], "keep_rate_ci_low": keep_fields[1],
        "keep_rate_ci_high": keep_fields[2], "keep_rate_pvalue": keep_fields[3],
        "keep_trials": keep_fields[4], "confidence_level": level, "seed": seed,
        "cell_seed": int(cell["cell_seed"]),
    }
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()}


def _sweep_summary_iv(schemes, keep_probs, seed, margin, alpha, power, level, min_draws, max_draws):
    known = tuple(SCHEMES) + tuple(CONTRASTS)
    schemes = known if schemes is None else tuple(schemes)
    if not schemes:
        raise ValueError("`schemes` must name at least one scheme; got an empty sequence")
    for name in schemes:
        if name not in known:
            raise ValueError(f"`schemes` must hold names from {', '.join(known)}; got {name!r}")
    keep_probs = tuple(keep_prob_iv(p, "keep_probs") for p in keep_probs)
    if not keep_probs:
        raise ValueError("`keep_probs` must hold at least one value; got an empty sequence")
    if not (isinstance(margin, (int, float)) and margin > 0):
        raise ValueError(f"`margin` must be a positive number; got {margin!r}")
    return (schemes, keep_probs, seed_iv(seed), float(margin), probability_iv(alpha, "alpha"),
            probability_iv(power, "power"), probability_iv(level, "level"),
            positive_int_iv(min_draws, "min_draws"),
            None if max_draws is None else positive_int_iv(max_draws, "max_draws"))


def sweep_summary(schemes=None, keep_probs=REPORT_KEEP_PROBS, *, seed=0, margin=0.01, alpha=0.05,
                  power=0.999, level=0.95, min_draws=2000, max_draws=200_000, cache_dir=None,
                  executor="local", scheduler=None, progress=False, workers=1):
    """Bias, variance and keep rate of every scheme at every keep probability.

    Parameters
    ----------
    schemes : sequence of str, optional
        Registered scheme names and/or :data:`CONTRASTS`; default all of both.
    keep_probs : sequence of float in (0, 1], default :data:`REPORT_KEEP_PROBS`
    seed : int, default 0
        Run seed; each cell derives its own (:func:`cell_seed`).
    margin : float, default 0.01
        TOST equivalence margin on the *relative* bias: "E[train] equals eval within 1 %".
    alpha : float, default 0.05
        TOST level: probability of declaring equivalence when the bias is at the margin.
    power : float, default 0.999
        Draws are computed so that an unbiased scheme is declared equivalent with this
        probability (capped by ``max_draws``).
    level : float, default 0.95
        Confidence level of every reported interval.
    min_draws, max_draws : int
        Bounds on the computed number of draws per cell (``max_draws=None``: no cap).
    cache_dir : str, optional
        Per-cell cache: finished cells are stored here (keyed by every option) and reused.
    executor, scheduler : see :func:`stats_dropout._executors.map_cells`
    progress : bool
        A progress bar over cells.
    workers : int
        Threads per cell for the Monte-Carlo blocks (results do not depend on it).

    Returns
    -------
    pandas.DataFrame
        One row per (scheme, keep_prob), columns :data:`SUMMARY_COLUMNS`:
        ``bias`` is the relative bias times the RMS of the expected output (the probe is a
        standardised normal array of shape ``checks.PROBE_SHAPE``); ``relative_bias`` is β in
        ``E[train] = (1 + β) eval`` estimated by the projection ratio; ``var_ratio`` is the
        summed empirical over theoretical per-unit variance; ``keep_rate`` counts kept mask
        entries (independent trials; NaN for Gaussian noise, which has no mask).
    """
    (schemes, keep_probs, seed, margin, alpha, power, level, min_draws,
     max_draws) = _sweep_summary_iv(schemes, keep_probs, seed, margin, alpha, power, level,
                                    min_draws, max_draws)
    from ._executors import map_cells

    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    cells = [
        {"scheme": name, "keep_prob": p, "seed": seed, "cell_seed": cell_seed(seed, name, p),
         "margin": margin, "alpha": alpha, "power": power, "level": level,
         "min_draws": min_draws, "max_draws": max_draws, "cache_dir": cache_dir,
         "workers": workers}
        for name in schemes for p in keep_probs
    ]
    rows = map_cells(summary_cell, cells, executor=executor, scheduler=scheduler, progress=progress)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return frame


# --- files ---------------------------------------------------------------------------------
def _default_mode():
    """Permissions of a newly created file under the current umask (mkstemp uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write_text(path, text):
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``,
    so a reader (or an interrupted run) never sees a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write_bytes(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_csv(frame, path):
    """Write ``frame`` to ``path`` atomically with :data:`CSV_FLOAT_FORMAT` and ``\\n`` endings.

    Booleans are written as ``True``/``False`` and missing values as an empty field, so the
    bytes depend on the values only.
    """
    text = frame.to_csv(index=False, float_format=CSV_FLOAT_FORMAT, lineterminator="\n")
    _atomic_write_text(path, text)


# --- the report ----------------------------------------------------------------------------
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
}

#: Version of the experiment-table cache entries.
_TABLE_VERSION = 1


def _experiment_options(name, seed, draws, overrides=None):
    """Keyword options for ``experiments.<name>``: the report's, the caller's overrides, the
    seed, and the draws cap."""
    import inspect

    from . import experiments

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
    from . import experiments

    options = _experiment_options(name, seed, draws, overrides)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([name, sorted((k, repr(v)) for k, v in options.items()),
                                         _TABLE_VERSION]).encode()).hexdigest()[:32]
        path = os.path.join(cache_dir, f"table-{name}-{key}.pkl")
        if os.path.exists(path):
            return pd.read_pickle(path)
    frame = getattr(experiments, name)(**options)
    if path is not None:
        tmp = path + ".tmp"
        frame.to_pickle(tmp)
        os.replace(tmp, path)
    return frame


def _all_experiment_tables(seed, draws, cache_dir, overrides=None):
    return {name: experiment_table(name, seed, draws, cache_dir, overrides) for name in REPORT_EXPERIMENTS}


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
        Where sweep cells run (:func:`stats_dropout._executors.map_cells`).
    progress : bool
        Progress bars on stderr.
    parallel : bool
        Compute the experiment tables in a second process while the sweep runs (the report's
        two-core budget); the results do not depend on it.
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
    import concurrent.futures
    import multiprocessing
    import time

    started = time.perf_counter()
    keep_probs = REPORT_KEEP_PROBS if keep_probs is None else tuple(keep_probs)
    draws = None if draws is None else positive_int_iv(draws, "draws")
    seed = seed_iv(seed)
    cache = os.path.join(out, ".cells")
    os.makedirs(cache, exist_ok=True)

    pool = None
    if parallel:
        # spawn, not fork: the parent may hold threads (BLAS, dask), and fork would copy locks.
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        future = pool.submit(_all_experiment_tables, seed, draws, cache, experiment_options)
    try:
        summary = sweep_summary(schemes, keep_probs, seed=seed,
                                max_draws=200_000 if draws is None else draws, cache_dir=cache,
                                executor=executor, scheduler=scheduler, progress=progress)
        tables = (future.result() if parallel
                  else _all_experiment_tables(seed, draws, cache, experiment_options))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    from .claims import claims_ledger

    ledger = claims_ledger(seed=seed, max_draws=draws, tables=dict(tables), progress=progress)
    files = {}
    files["summary"] = os.path.join(out, "summary.csv")
    write_csv(summary, files["summary"])
    files["claims"] = os.path.join(out, "claims.csv")
    write_csv(ledger, files["claims"])
    for name, (csv_name, _) in REPORT_EXPERIMENTS.items():
        files[name] = os.path.join(out, csv_name)
        write_csv(tables[name], files[name])

    figures = _write_figures(out, summary, tables, figure_formats)
    runtime = time.perf_counter() - started
    metadata = _metadata(seed=seed, draws=draws, keep_probs=keep_probs, schemes=schemes,
                         executor=executor, runtime=runtime, summary=summary,
                         experiment_options=experiment_options)
    files["metadata"] = os.path.join(out, "metadata.json")
    _atomic_write_text(files["metadata"], json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    files["index"] = os.path.join(out, "index.html")
    _atomic_write_text(files["index"], _html(summary, ledger, tables, figures, metadata))
    files.update({f"figure:{k}": v["path"] for k, v in figures.items()})
    return files


FIGURES = {
    "bias": ("Mean bias vs keep_prob",
             "Relative bias β of the train output, E[train] = (1 + β)·eval, with 95 % confidence "
             "bands. Left: every scheme with a mean contract stays inside the TOST margin at every "
             "keep_prob. Right: alpha dropout promises moments over N(0, 1) inputs only, so per "
             "input its mean moves; the no-rescale bug is biased by exactly p − 1."),
    "variance": ("Variance: Monte Carlo vs theory",
                 "Per-unit variance of the train output (mean over the probe's units): dots are "
                 "Monte-Carlo estimates with 95 % intervals, lines the closed forms of THEORY.md "
                 "(x²(1−p)/p for inverted dropout). Dropout's noise grows without bound as "
                 "keep_prob falls."),
    "norm_inflation": ("Norm inflation",
                       "E‖D∘A/p‖ / ‖A‖ on the thread's 3×4 matrix and on random matrices, with 95 % "
                       "intervals: the 1/keep_prob rescale keeps each unit's mean but inflates the "
                       "2-norm by about 1/√p; without it the norm shrinks by about √p."),
    "inference_gap": ("Inference gap per activation",
                      "E[f(train)] − f(eval) for one dropped layer feeding an activation f: zero for "
                      "the identity (linear networks are exact), non-zero after ReLU, tanh, sigmoid, "
                      "SELU and softmax. Bars: simultaneous intervals; line: exact enumeration where "
                      "available."),
    "mc_averaging": ("MC averaging vs weight scaling",
                     "Test error on scikit-learn's digits of the average of k stochastic passes "
                     "against the one-pass weight-scaled network (dashed, with its interval), "
                     "across independently trained networks."),
}


def _write_figures(out, summary, tables, formats=("svg", "png")):
    from . import figures as fg

    directory = os.path.join(out, "figures")
    os.makedirs(directory, exist_ok=True)
    makers = {
        "bias": lambda: fg.plot_bias(summary),
        "variance": lambda: fg.plot_variance(summary),
        "norm_inflation": lambda: fg.plot_norm_inflation(tables["norm_table"]),
        "inference_gap": lambda: fg.plot_inference_gap(tables["inference_gap"]),
        "mc_averaging": lambda: fg.plot_mc_averaging(tables["mc_averaging"]),
    }
    result = {}
    for name, make in makers.items():
        stem = os.path.join(directory, name)
        svg = fg.save_figure(make(), stem, formats=formats)
        result[name] = {"svg": svg, "path": stem + ".svg"}
    return result


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

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", here],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def _metadata(*, seed, draws, keep_probs, schemes, executor, runtime, summary, experiment_options):
    import datetime

    experiments = {name: {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in _experiment_options(name, seed, draws, experiment_options).items()}
                   for name in REPORT_EXPERIMENTS}
    return {
        "command": "stats-dropout report",
        "seed": seed,
        "options": {"draws": draws, "keep_probs": list(keep_probs),
                    "schemes": None if schemes is None else list(schemes), "executor": executor},
        "experiments": experiments,
        "sweep": {"cells": int(len(summary)), "total_draws": int(summary["n_draws"].sum()),
                  "tost_margin": float(summary["tost_margin"].iloc[0]),
                  "confidence_level": float(summary["confidence_level"].iloc[0])},
        "versions": _versions(),
        "source": dict(zip(("git_commit", "uncommitted_changes"), _source_revision())),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runtime_seconds": round(runtime, 1),
    }


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;vertical-align:top}th{background:#f3f3f3}
.verdict-holds{background:#dff0d8}.verdict-false{background:#f2dede}
.verdict-approx{background:#fcf8e3}.verdict-expect{background:#d9edf7}
figure{margin:1.2em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.9em;color:#444}
.scroll{overflow-x:auto}code{background:#f5f5f5;padding:0 .2em}
"""

_VERDICT_CLASS = {"holds": "verdict-holds", "false": "verdict-false",
                  "holds approximately": "verdict-approx", "holds in expectation only": "verdict-expect"}


def _inline_svg(svg):
    """SVG markup without its XML prolog and DOCTYPE, for inlining in HTML."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def _styled(frame, uuid, *, precision=4, columns=None):
    """A pandas Styler table with a fixed uuid (stable HTML) and compact number formats."""
    from pandas.io.formats.style import Styler

    frame = frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    # cell_ids=False: no per-cell element ids, which would double the page's size.
    styler = Styler(frame, uuid=uuid, cell_ids=False).hide(axis="index")
    floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    styler = styler.format({c: f"{{:.{precision}g}}" for c in floats}, na_rep="")
    return styler.to_html()


def _ledger_html(ledger):
    from html import escape

    rows = []
    for r in ledger.itertuples(index=False):
        cls = _VERDICT_CLASS.get(r.verdict, "")
        ci = ("" if r.ci_low == r.ci_high else
              f"<br><small>{100 * r.confidence_level:g} % CI [{r.ci_low:.5g}, {r.ci_high:.5g}]</small>")
        kp = "" if np.isnan(r.keep_prob) else f", keep_prob {r.keep_prob:g}"
        rows.append(
            f"<tr id='{r.id}'><td><b>{r.id}</b></td><td>{escape(r.claim)}</td>"
            f"<td class='{cls}'><b>{escape(r.verdict)}</b></td>"
            f"<td>{escape(r.figure_name)}: <b>{r.figure:.6g}</b>{ci}</td>"
            f"<td>{escape(r.explanation)}<br><small>Measured by: {escape(r.measurement)} "
            f"Seed {r.seed}, {r.draws} draws{kp}.</small></td></tr>")
    return ("<table class='ledger'><thead><tr><th>id</th><th>claim (from the thread)</th>"
            "<th>verdict</th><th>deciding figure</th><th>what it means</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _html(summary, ledger, tables, figures, metadata):
    from html import escape

    v = metadata["versions"]
    sweep = metadata["sweep"]
    counts = ledger["verdict"].value_counts()
    verdict_line = ", ".join(f"{counts[k]} {k}" for k in
                             ("holds", "holds in expectation only", "holds approximately", "false")
                             if k in counts)
    fig_html = []
    for name, (title, caption) in FIGURES.items():
        fig_html.append(f"<figure id='fig-{name}'><h3>{escape(title)}</h3>"
                        f"{_inline_svg(figures[name]['svg'])}"
                        f"<figcaption>{escape(caption)} (Standalone files: "
                        f"<code>figures/{name}.svg</code>, <code>figures/{name}.png</code>.)"
                        f"</figcaption></figure>")
    summary_cols = ["scheme", "keep_prob", "contract", "n_draws", "relative_bias",
                    "relative_bias_ci_low", "relative_bias_ci_high", "equivalent", "var_theory",
                    "var_empirical", "var_ratio", "var_ratio_ci_low", "var_ratio_ci_high",
                    "keep_rate", "keep_rate_ci_low", "keep_rate_ci_high"]
    exp_html = []
    for name, (csv_name, _) in REPORT_EXPERIMENTS.items():
        exp_html.append(f"<h3>{escape(name)} <small>(<code>{csv_name}</code>)</small></h3>"
                        f"<div class='scroll'>{_styled(tables[name], name)}</div>")
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    options = metadata["options"]
    draws_cap = "" if options["draws"] is None else f", capped at {options['draws']}"
    dirty = " (with uncommitted changes)" if metadata["source"]["uncommitted_changes"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stats_dropout report — seed {metadata['seed']}</title>
<style>{_CSS}</style></head>
<body>
<h1>stats_dropout report</h1>
<p>What dropout does at train time, measured: the bias and the spread of every reference scheme
across keep_prob, what happens after a nonlinearity, and every claim of the forum thread on
inverted dropout answered by a measurement. Seed {metadata['seed']};
{sweep['cells']} sweep cells, {sweep['total_draws']:,} Monte-Carlo draws in the sweep.
Every number can be reproduced with <code>stats-dropout report --out DIR --seed {metadata['seed']}</code>
(same options give byte-identical CSV files).</p>
<p>Contents: <a href="#ledger">claims ledger</a> · <a href="#figures">figures</a> ·
<a href="#summary">sweep table</a> · <a href="#experiments">experiments</a> ·
<a href="#methods">methods</a></p>

<h2 id="ledger">Claims ledger</h2>
<p>Each claim of the thread (paraphrased), the verdict computed from its measurement at run
time ({verdict_line}), the figure that decides it with its confidence interval, and one
sentence. Verdicts: <b>holds</b>; <b>holds in expectation only</b> (true of the average over
masks, not of a single pass); <b>holds approximately</b>; <b>false</b>.</p>
<div class="scroll">{_ledger_html(ledger)}</div>

<h2 id="figures">Figures</h2>
{''.join(fig_html)}

<h2 id="summary">Sweep: schemes × keep_prob (<code>summary.csv</code>)</h2>
<p>Relative bias β (E[train] = (1 + β)·eval) by the projection ratio, with its 95 % interval;
<code>equivalent</code> is the TOST decision that |β| &lt; {sweep['tost_margin']:g} at level 0.05;
variance ratio = empirical / theoretical per-unit variance; keep rate over independent mask
entries with its exact (Clopper–Pearson) 95 % interval. <code>no_rescale</code> is a
deliberately wrong implementation shown for contrast. Alpha dropout's contract is
distribution-level (moments over N(0, 1) inputs), so its per-input bias is expected.</p>
<div class="scroll">{_styled(summary, "summary", columns=summary_cols)}</div>

<h2 id="experiments">Experiments through nonlinearities and training</h2>
{''.join(exp_html)}

<h2 id="methods">Methods</h2>
<ul>
<li><b>Seeds.</b> Run seed {metadata['seed']}. Each sweep cell draws from its own stream,
seeded by a hash of (seed, scheme, keep_prob), so cells are independent and adding a keep_prob
leaves the others unchanged. Monte-Carlo draws come in blocks with their own
<code>SeedSequence</code> children: results do not depend on workers or executors.</li>
<li><b>Draws.</b> Sweep: per cell, the number of draws that lets TOST declare an unbiased
scheme equivalent within ±{sweep['tost_margin']:g} (relative) with probability 0.999, computed
from the exact variance of the statistic, at least 2000 and at most
{'200000' if options['draws'] is None else options['draws']}. Claims: sizes computed the same
way at a 99 % level (TOST level 0.01, power 0.999){draws_cap}.</li>
<li><b>Error rates.</b> Sweep intervals are 95 % per cell (so about one correct cell in twenty
has an interval missing 0 by chance; the TOST verdict is the decision). Ledger intervals are
99 %; "differs" means the 99 % interval excludes the value; "equal within ε" is a TOST at level
0.01. Experiment tables state their own levels and false-fail rates (columns
<code>confidence_level</code>, <code>pvalue</code>, <code>rejected</code>).</li>
<li><b>Probe.</b> Sweep cells use a standardised normal array of shape (32, 4, 8): batch,
channels or time, features.</li>
<li><b>Versions.</b> {escape(versions)}; source commit
<code>{escape(str(metadata['source']['git_commit']))}</code>{dirty}.</li>
<li><b>Run.</b> {escape(metadata['timestamp'])}, {metadata['runtime_seconds']} s.
Options: {escape(json.dumps(options))}. Full details in <code>metadata.json</code>.</li>
</ul>
</body></html>
"""
