"""The ledger: claim texts, the :data:`CLAIMS` table, :func:`evaluate_claim`,
:func:`claims_ledger` and :func:`format_ledger`."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd

from stats_dropout._internal.validation import draws_iv, keep_prob_iv, seed_iv
from stats_dropout.studies.claims import masks, single_layer, training
from stats_dropout.studies.claims.common import LEDGER_COLUMNS, LEVEL, VERDICTS, ClaimResult, ClaimSettings

# --- the ledger -----------------------------------------------------------------------------
_TEXTS = {
    "C01a": ("Output at test time equals the expected output at training time — for the dropout "
             "layer itself.",
             "MC mean of an inverted layer's train output vs its eval output, relative bias by the "
             "projection ratio (TOST ±1 %)."),
    "C01b": ("Output at test time equals the expected output at training time — through a "
             "nonlinearity after the dropout layer.",
             "MC mean of a ReLU unit (and a sigmoid unit) fed by the inverted layer vs its test "
             "output: relative gap (TOST ±1 %)."),
    "C02": ("Dividing by keep_prob undoes dropout: the layer then has no effect.",
            "Per-unit train variance relative to x² vs 0 and vs (1−p)/p; fraction of zeroed units."),
    "C03": ("With the 1/keep_prob rescale the expected activation values do not change.",
            "Relative bias of E[train] vs x at keep_prob 0.2, 0.5, 0.8 (TOST ±1 %)."),
    "C04": ("Dividing by keep_prob further reduces the kept units.",
            "|x/p| ÷ |x| of kept units for the thread's 42 and −0.573."),
    "C05": ("The rescale keeps the layer's total energy, the 2-norm of A, the same.",
            "E‖D∘A/p‖ ÷ ‖A‖ and E‖D∘A/p‖² ÷ ‖A‖² on the thread's matrix (TOST ±5 %), without the "
            "rescale, and on a random 64×64 matrix."),
    "C06": ("‖mA‖ = |m|·‖A‖: 2.672810732482017 becomes 3.3410134156025215 at m = 1/0.8.",
            "Both norms recomputed from the thread's matrix."),
    "C07": ("After the rescale, dropout is equivalent to the unregularised network.",
            "Linear regression with input dropout: MC expected loss minus ‖y − pXw‖² vs "
            "p(1−p)‖Γw‖², and the adaptive-ridge minimiser vs least squares."),
    "C08": ("With 100 examples in one iteration there are 100 different thinned networks.",
            "Distinct masks among 100 examples, per-sample vs batch-shared masks, in the course "
            "network (20 + 3 hidden units) at keep_prob 0.86: the course's keep_prob (its dropout "
            "assignment trains with 0.86), not the thread's 0.8."),
    "C09": ("Per-sample and per-batch masks are both valid ways to implement dropout.",
            "Both unbiased (TOST ±1 %); variance of the batch mean, shared vs per-sample, vs THEORY §1."),
    "C10": ("Not rescaling at train and multiplying by keep_prob at test gives the same result.",
            "Standard and inverted layers vs their eval paths; networks trained each way with "
            "W' = pW and the THEORY §3 learning-rate mapping."),
    "C11": ("Dropping units means each next-layer neuron receives less input at train, so test "
            "inputs must be scaled down.",
            "E[next-layer pre-activation at train] (standard dropout) ÷ test without scaling (TOST "
            "±1 % of p)."),
    "C12": ("Regularisation, dropout included, never runs at test time; both the mask and the "
            "1/keep_prob are off.",
            "Eval path deterministic and the identity; MC-dropout averages of T passes vs eval."),
    "C13": ("The paper zeroes units at train and scales by 1/keep_prob at test.",
            "E[train] of standard dropout vs a test path multiplying by 1/p and vs the paper's pW."),
    "C14": ("Upscaling activations by 1/keep_prob during training makes the learned weights come "
            "out downscaled, so no test-time scaling is needed.",
            "Same network trained with standard and inverted dropout on identical masks: ratio of "
            "learned weights, with and without the learning-rate mapping."),
    "C15": ("The paper's w at train / pw at test is the lecture's w'/p at train / w' at test.",
            "The C14 experiment, read as the two parametrisations side by side."),
    "C16": ("Monte-Carlo averaging over many thinned networks approximates the weight-scaled "
            "network.",
            "Test error of the average of k stochastic passes vs the weight-scaled network, "
            "k = 1…1000, on scikit-learn's bundled digits."),
    "C17": ("Each training iteration drops a different random set of units.",
            "Mask agreement between successive calls of a course-template-style forward function "
            "(np.random.seed(1) on entry) vs the same function without the reseed, at keep_prob "
            "0.86: the course's keep_prob (its dropout assignment trains with 0.86), not the "
            "thread's 0.8."),
}

def _claim_function(name):
    """``measure_cNN`` / ``decide_cNN`` from the module that defines it."""
    for module in (single_layer, training, masks):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(name)


CLAIMS = {
    cid: {"claim": text, "measurement": how, "measure": _claim_function(f"measure_{cid.lower()}"),
          "decide": _claim_function(f"decide_{cid.lower()}")}
    for cid, (text, how) in _TEXTS.items()
}


def _level_iv(claim_id, measurement):
    level = float(measurement.get("confidence_level", LEVEL))
    if level != LEVEL:  # a measure function bug: the page says every interval is at LEVEL
        raise AssertionError(f"{claim_id}: interval at level {level}, not the ledger's {LEVEL}")
    return level


def _settings_iv(seed, max_draws, keep_prob, tables):
    if tables is not None and not isinstance(tables, dict):
        raise TypeError(f"`tables` must be a dict of experiment name -> DataFrame; got {tables!r}")
    return ClaimSettings(seed=seed_iv(seed),
                         max_draws=None if max_draws is None else draws_iv(max_draws, "max_draws"),
                         keep_prob=keep_prob_iv(keep_prob), tables=tables)


def evaluate_claim(claim_id, *, seed=0, max_draws=None, keep_prob=0.8, tables=None):
    """Measure one claim and decide it.

    Parameters
    ----------
    claim_id : str
        ``"C01a"``, ``"C01b"``, ``"C02"`` … ``"C17"``.
    seed : int, default 0
    max_draws : int, optional
        Cap on every Monte-Carlo run of the claim (default: the computed sizes).
    keep_prob : float, default 0.8
        The thread's keep probability; C08 and C17 use the course's 0.86 and C06 the thread's
        fixed m = 1/0.8 whatever this is.
    tables : dict, optional
        Experiment tables (``experiments.<name>(seed=seed)`` results, keyed by ``name``) to
        reuse; tables computed here are added to it.

    Returns
    -------
    ClaimResult
    """
    if claim_id not in CLAIMS:
        raise ValueError(f"`claim_id` must be one of {', '.join(CLAIMS)}; got {claim_id!r}")
    settings = _settings_iv(seed, max_draws, keep_prob, tables)
    spec = CLAIMS[claim_id]
    measurement = spec["measure"](settings)
    v = spec["decide"](measurement)
    if v.verdict not in VERDICTS:  # a decide function bug, not a user error
        raise AssertionError(f"{claim_id}: verdict {v.verdict!r} is not one of {VERDICTS}")
    return ClaimResult(
        id=claim_id, claim=spec["claim"], verdict=v.verdict, figure_name=v.figure_name,
        figure=float(v.figure), ci_low=float(v.ci_low), ci_high=float(v.ci_high),
        explanation=v.explanation, measurement=spec["measurement"], seed=settings.seed,
        draws=int(measurement.get("draws", 0)), keep_prob=float(measurement.get("keep_prob", np.nan)),
        # Every ledger interval is at LEVEL, the level the page states; a measurement read from
        # an experiment table (C16) recomputes the table's interval at LEVEL.
        confidence_level=_level_iv(claim_id, measurement),
        measurement_data=measurement)


def claims_ledger(*, seed=0, max_draws=None, keep_prob=0.8, claim_ids=None, tables=None,
                  progress=False):
    """Measure and decide every claim; one row per claim.

    Parameters
    ----------
    seed, max_draws, keep_prob
        As in :func:`evaluate_claim`.
    claim_ids : sequence of str, optional
        A subset of :data:`CLAIMS` (default: all, in order).
    tables : dict, optional
        Experiment tables computed by the caller (the report computes them once for its own
        tables and figures); C07, C10, C14–C16 read them from here.
    progress : bool
        A tqdm bar over claims on stderr (and one over C16's training runs).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LEDGER_COLUMNS`: ``id, claim, verdict, figure_name, figure, ci_low,
        ci_high, explanation, measurement, seed, draws, keep_prob, confidence_level``.
    """
    ids = list(CLAIMS) if claim_ids is None else list(claim_ids)
    tables = {} if tables is None else tables  # shared by C10, C14 and C15
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc="claims", unit="claim")
    rows = []
    try:
        with _training_started(ids, seed, tables, progress) as wait_for_tables:
            for cid in ids:
                if bar is not None:
                    bar.set_postfix_str(cid)
                wait_for_tables(cid)
                rows.append(evaluate_claim(cid, seed=seed, max_draws=max_draws, keep_prob=keep_prob,
                                           tables=tables).to_record())
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


#: Claims whose measurement trains networks for seconds: the experiment table each reads
#: (``experiment_table_for(settings, name)`` in :mod:`.training`) and the options beyond the seed
#: it is started with (``wait=False``: a :class:`~stats_dropout.studies.training_experiments.PendingTable`);
#: none changes a number.
_TRAINING_TABLES = {"C16": ("mc_averaging", {"threads": 2, "wait": False})}


@contextlib.contextmanager
def _training_started(ids, seed, tables, progress):
    """The training tables the claims ``ids`` read (those not in ``tables``), started first.

    Their networks are trained here, before any claim (training is Python-bound: next to the
    claims it would only contend for the GIL); their Monte-Carlo passes then run on two threads
    of their own while this thread measures the other claims, so both cores stay busy. Yields
    ``wait_for_tables(claim_id)``, which puts the tables the claim reads into ``tables``.
    ``progress`` gives them their own bar.
    """
    from stats_dropout.studies import experiments

    pending = {}
    try:
        for cid in ids:
            name, options = _TRAINING_TABLES.get(cid, (None, None))
            if name is not None and name not in tables and name not in pending:
                pending[name] = getattr(experiments, name)(seed=seed_iv(seed), progress=progress, **options)

        def wait_for_tables(claim_id):
            name = _TRAINING_TABLES.get(claim_id, (None,))[0]
            if name in pending:
                tables[name] = pending.pop(name).result()

        yield wait_for_tables
    finally:
        for table in pending.values():  # an error or Ctrl-C before the claim that reads it
            table.close()


def format_ledger(frame, width=100):
    """The ledger as readable text: one block per claim."""
    import textwrap

    lines = []
    for row in frame.itertuples(index=False):
        lines.append(f"{row.id}  {row.verdict.upper()}  — {row.claim}")
        ci = ("" if row.ci_low == row.ci_high else
              f" ({100 * row.confidence_level:g}% CI [{row.ci_low:.6g}, {row.ci_high:.6g}])")
        lines.append(textwrap.fill(f"{row.figure_name}: {row.figure:.6g}{ci}", width,
                                   initial_indent="     ", subsequent_indent="     "))
        lines.append(textwrap.fill(row.explanation, width, initial_indent="     ",
                                   subsequent_indent="     "))
        kp = "" if np.isnan(row.keep_prob) else f", keep_prob {row.keep_prob:g}"
        lines.append(f"     settings: seed {row.seed}, draws {row.draws}{kp}")
        lines.append("")
    return "\n".join(lines)
