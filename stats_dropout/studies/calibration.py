"""The battery's error rates, measured: false-fail and false-pass per statistical check (issue #12 §5).

Every statistical check states a false-fail rate (its share of the battery's total) and, at that
rate, a false-pass rate for an error of its ``min_detectable_effect``. This study measures both
by simulation, at relaxed levels where a few thousand runs resolve them:

* **False fail** (:func:`null_study`): the whole battery on correct implementations
  (:data:`CORRECT`: numpy, float32, the reference scheme, the standard contract, torch's
  ``nn.Dropout``, Gaussian and alpha dropout) × input shapes (:data:`SHAPES`: tiny, 2-D, 4-D,
  4-D with half its entries 0, log-normal magnitudes), every statistical check run at least
  ``min_decisions`` times. Per check: the rejection rate with its Clopper–Pearson interval
  against the per-check share it ran at, and how often its printed interval excludes the
  contract's value (against the decision's simultaneous ``1 − coverage`` = its false-fail rate).
* **False pass** (:func:`power_study`, designs in :mod:`.calibration_bugs`): for each check a
  buggy implementation whose error equals the check's stated detectable effect (read from a
  run of the correct implementation at the same design), run over ``seeds`` seeds; the
  fraction of runs the check passes against the stated false-pass rate.

Cells are picklable tuples and each carries its seed, so :func:`map_cells` returns the same
records whichever executor runs them (one process, local worker processes, Dask); battery passes hold a
process-wide lock, since the battery seeds numpy's and torch's global RNGs and Dask threads
of one process would share them. ``benchmarks/calibrate_battery.py`` runs the full study and
writes ``docs/CALIBRATION.md``.
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from stats_dropout._internal.executors import map_cells
from stats_dropout.studies.calibration_bugs import CORRECT, POWER_DESIGNS, SHAPES, buggy_implementation, make_input
from stats_dropout.verification.battery import iter_checks, verify_dropout
from stats_dropout.verification.registry import REGISTRY

__all__ = ["FALSE_FAIL_RATE", "FALSE_PASS_RATE", "SHAPES", "CORRECT", "POWER_DESIGNS", "NULL_PLAN", "STATISTICAL",
           "battery_lock", "null_cells", "null_cell", "null_study", "false_fail_table", "false_fail_cells",
           "power_pilot", "power_cells", "power_cell", "power_study", "power_table", "clopper_pearson",
           "verdict_level", "verdict_count", "calibrate", "VERDICT_FAMILY_LEVEL"]

#: Relaxed battery levels of the study: total false-fail rate (split over the statistical checks
#: that run) and false-pass rate.
FALSE_FAIL_RATE = 0.2
FALSE_PASS_RATE = 0.1
#: Level of the intervals around measured rates shown in the tables.
CI_LEVEL = 0.95
#: Family-wise level of a calibration's verdicts. A page holds K verdicts (false fail and
#: coverage per statistical check, false pass per power design); at 97.5 % one-sided each, about
#: K/40 of them would read FAIL by chance if every check were exactly at its stated rate (K = 44:
#: at least one FAIL with probability 0.67), so a fixed-seed slow test of all of them would fail
#: by chance most of the time. Each verdict therefore uses the Bonferroni share (one-sided
#: 1 − 0.05/K, :func:`verdict_level`): a page with every check at its stated rate shows a FAIL
#: with probability at most 0.05.
VERDICT_FAMILY_LEVEL = 0.95

#: Names of the checks that make a statistical decision.
STATISTICAL = tuple(spec.name for spec in REGISTRY if spec.statistical)

#: Seeds per (implementation, shape) cell for min_decisions = 2000, chosen so that every
#: statistical check runs ≥ 2000 times (the Gaussian-only and alpha-only checks in their own
#: cells, per-channel in the two 4-D shapes) at the least cost; scaled linearly otherwise.
NULL_PLAN = {
    "numpy": {"tiny": 30, "2d": 40, "4d": 60, "zeros": 30, "lognormal": 30},
    "float32": {"tiny": 30, "2d": 40, "4d": 160, "zeros": 30, "lognormal": 30},
    "reference": {"tiny": 30, "2d": 40, "4d": 160, "zeros": 30, "lognormal": 30},
    "standard": {"tiny": 30, "2d": 40, "4d": 160, "zeros": 30, "lognormal": 30},
    "torch": {"tiny": 30, "2d": 40, "4d": 160, "zeros": 30, "lognormal": 30},
    "gaussian": {"tiny": 60, "2d": 1580, "4d": 200, "zeros": 100, "lognormal": 60},
    "alpha": {"tiny": 40, "2d": 840, "4d": 1000, "zeros": 80, "lognormal": 40},
}

#: First battery seed of each cell: cell k (in NULL_PLAN order) uses seeds k·SEED_STRIDE + base + i.
SEED_STRIDE = 100_000

#: Held around every battery pass: the battery seeds process-global RNGs (numpy's, torch's).
battery_lock = threading.RLock()


def null_cells(min_decisions=2000, *, seed=0, plan=None):
    """The null study's cells ``(implementation, shape, battery_seed, false_fail_rate, false_pass_rate)``."""
    plan = NULL_PLAN if plan is None else plan
    cells = []
    for impl, shapes in plan.items():
        for shape, n in shapes.items():
            first = (list(CORRECT).index(impl) * len(SHAPES) + list(SHAPES).index(shape)) * SEED_STRIDE + seed
            count = max(1, math.ceil(n * min_decisions / 2000))
            if count > SEED_STRIDE:
                raise ValueError(f"at most {SEED_STRIDE} seeds per cell; got {count}")
            cells += [(impl, shape, first + i, FALSE_FAIL_RATE, FALSE_PASS_RATE) for i in range(count)]
    return cells


def _base(check):
    return check.split("[", 1)[0]


def run_battery(kwargs, seed, false_fail_rate, false_pass_rate):
    """``verify_dropout(**kwargs)`` under :data:`battery_lock`; ``(result, warning texts)``."""
    with battery_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = verify_dropout(**kwargs, seed=seed, false_fail_rate=false_fail_rate,
                                false_pass_rate=false_pass_rate)
    texts = sorted({f"{w.category.__name__}: {w.message} ({w.filename.rsplit('/', 1)[-1]}:{w.lineno})"
                    for w in caught})
    return result, tuple(texts)


def null_cell(cell):
    """One battery pass of a correct implementation: a record per statistical check result."""
    impl, shape, seed, ffr, fpr = cell
    kwargs = CORRECT[impl][1](make_input(shape, seed), seed)
    result, caught = run_battery(kwargs, seed, ffr, fpr)
    records = []
    for c in result.checks:
        name = _base(c.check)
        if name not in STATISTICAL:
            continue
        d = c.decision
        rec = dict(check=name, impl=impl, shape=shape, seed=seed, keep_prob=c.keep_prob, status=c.status,
                   nominal=result.per_check_false_fail_rate, warnings=" | ".join(caught))
        if d is not None:
            rec.update(pvalue=d.pvalue, estimate=d.estimate, expected=d.expected, ci_low=d.ci_low,
                       ci_high=d.ci_high, ci_level=d.confidence_level, decision_rate=d.false_fail_rate,
                       mde=d.min_detectable_effect, effect_units=d.effect_units, n=d.n)
        else:  # a failed check without a decision raised (a skipped one said why)
            rec["message"] = c.message[:300]
        records.append(rec)
    return records


def verdict_count():
    """K: the verdicts of one calibration (two per statistical check, one per power design)."""
    from stats_dropout.studies.calibration_bugs import POWER_DESIGNS as designs

    return 2 * len(STATISTICAL) + len(designs)


def verdict_level(k=None):
    """Two-sided Clopper–Pearson level whose lower bound is one-sided at ``1 − (1 − F)/K``.

    ``F`` = :data:`VERDICT_FAMILY_LEVEL`, ``K`` = :func:`verdict_count` (Bonferroni over the
    page): ``1 − 2(1 − F)/K``, 0.9977 for K = 44.
    """
    k = verdict_count() if k is None else k
    return 1 - 2 * (1 - VERDICT_FAMILY_LEVEL) / k


def clopper_pearson(k, n, level=CI_LEVEL):
    """Exact interval for a binomial proportion ``k/n`` (``(nan, nan)`` when n = 0)."""
    if n == 0:
        return math.nan, math.nan
    ci = sps.binomtest(int(k), int(n)).proportion_ci(level, method="exact")
    return float(ci.low), float(ci.high)


def _ran(records):
    frame = pd.DataFrame.from_records(records)
    return frame, frame[frame.status != "skipped"].copy()


def false_fail_table(records):
    """One row per statistical check: measured false-fail rate and interval coverage.

    Columns: check, decisions (results that were not skipped), batteries, impls, shapes,
    rejections (raised: of them, failures without a decision, i.e. the check raised), measured,
    ci_low, ci_high (Clopper–Pearson 95 %), nominal (mean per-check share
    the decisions ran at), verdict_ci_low (the Clopper–Pearson lower bound at :func:`verdict_level`,
    the page's Bonferroni share), verdict ("ok" when verdict_ci_low ≤ nominal, else "FAIL"), excluded (fraction
    of intervals [ci_low, ci_high] of the decisions that exclude ``expected``), excluded_ci_high,
    stated_exclusion (mean false-fail rate of the decisions: the simultaneous non-coverage of the
    reported interval, Decision.coverage), coverage ("ok" when the exclusion's verdict_level lower bound ≤
    stated, else "FAIL").
    """
    _, ran = _ran(records)
    rows = []
    for name in [c for c in STATISTICAL if c in set(ran.check)]:
        g = ran[ran.check == name]
        n, k = len(g), int((g.status == "failed").sum())
        low, high = clopper_pearson(k, n)
        vlow = clopper_pearson(k, n, verdict_level())[0]
        nominal = float(g.nominal.mean())
        excl = int(((g.expected < g.ci_low) | (g.expected > g.ci_high)).sum())
        elow, ehigh = clopper_pearson(excl, n)
        evlow = clopper_pearson(excl, n, verdict_level())[0]
        # The printed interval of a decision over m elements is the worst element's, built at
        # 1 − α/m: its coverage is the simultaneous 1 − α (Decision.coverage), not 1 − α/m.
        stated = float(g.decision_rate.mean())
        raised = int(((g.status == "failed") & g.pvalue.isna()).sum())
        batteries = len(g[["impl", "shape", "seed"]].drop_duplicates())
        rows.append(dict(check=name, decisions=n, batteries=batteries, impls=g["impl"].nunique(),
                         shapes=g["shape"].nunique(), rejections=k, raised=raised, measured=k / n,
                         ci_low=low, ci_high=high, verdict_ci_low=vlow, nominal=nominal,
                         verdict="ok" if vlow <= nominal else "FAIL", excluded=excl / n, excluded_ci_low=elow,
                         excluded_ci_high=ehigh, excluded_verdict_ci_low=evlow, stated_exclusion=stated,
                         coverage="ok" if evlow <= stated else "FAIL"))
    return pd.DataFrame(rows)


def false_fail_cells(records):
    """One row per (check, implementation, shape): decisions, rejections, measured, nominal, its
    Clopper–Pearson interval and "FAIL" where the interval lies entirely above nominal."""
    _, ran = _ran(records)
    rows = []
    for (name, impl, shape), g in ran.groupby(["check", "impl", "shape"], sort=False):
        n, k = len(g), int((g.status == "failed").sum())
        low, high = clopper_pearson(k, n)
        nominal = float(g.nominal.mean())
        rows.append(dict(check=name, impl=impl, shape=shape, decisions=n, rejections=k, measured=k / n,
                         ci_low=low, ci_high=high, nominal=nominal, verdict="ok" if low <= nominal else "FAIL"))
    order = {c: i for i, c in enumerate(STATISTICAL)}
    frame = pd.DataFrame(rows)
    return frame.sort_values(["check", "impl", "shape"], key=lambda s: s.map(order) if s.name == "check" else s,
                             kind="stable").reset_index(drop=True)


def null_study(min_decisions=2000, *, seed=0, plan=None, **options):
    """Run the null cells; returns the list of records (:func:`null_cell`), in cell order.

    ``options`` (executor, scheduler, processes, workers, progress) go to
    :func:`~stats_dropout._internal.executors.map_cells`; they cannot change a record.
    """
    cells = null_cells(min_decisions, seed=seed, plan=plan)
    return [r for records in map_cells(null_cell, cells, **options) for r in records]


# --- power -------------------------------------------------------------------------------
#: Seed of the pilot run that reads each design's stated effect.
PILOT_SEED = 0


def _run_check(row, effect, seed, ffr, fpr):
    impl, check, p = buggy_implementation(row, effect)
    with battery_lock:
        checks = dict(iter_checks(impl, seed=seed, false_fail_rate=ffr, false_pass_rate=fpr))
        return checks[f"{check}[keep_prob={p:g}]"](impl)


def _signed(row, d):
    """The effect with its direction: per-group checks go down (p − e) unless only 'too high' is caught."""
    check, _, _, p, kind, _ = POWER_DESIGNS[row]
    e = d.min_detectable_effect
    if kind in ("position", "channel", "unit"):
        up_only = "too low: not at these draws" in d.property
        return e if up_only or p - e < 0 else -e
    return e


def power_pilot(row, *, seed=0):
    """``(signed effect, Decision)`` of the correct implementation of ``row``'s design."""
    # Output moments: the pilot must report the output-mean decision (the check reports the one of
    # its two with the smaller p-value); any check: a pilot that raised has no decision.
    for k in range(20):
        d = _run_check(row, 0.0, PILOT_SEED + seed + k, FALSE_FAIL_RATE, FALSE_PASS_RATE).decision
        if d is not None and (POWER_DESIGNS[row][0] != "check_output_moments" or d.property == "output mean"):
            return _signed(row, d), d
    raise RuntimeError(f"no pilot of {row} in 20 seeds reported the decision it needs")


def power_cells(seeds=400, *, seed=0, designs=None, effects=None):
    """Cells ``(row, effect, battery_seed, false_fail_rate, false_pass_rate)``; ``effects`` from
    :func:`power_pilot` (computed here when not given)."""
    rows = list(POWER_DESIGNS) if designs is None else list(designs)
    effects = {r: power_pilot(r, seed=seed)[0] for r in rows} if effects is None else effects
    base = 50_000_000 + seed
    return [(r, effects[r], base + 100_000 * list(POWER_DESIGNS).index(r) + i, FALSE_FAIL_RATE, FALSE_PASS_RATE)
            for r in rows for i in range(seeds)]


def power_cell(cell):
    """One run of a bug: ``dict(row, seed, status, mde, estimate)`` of its target check."""
    row, effect, seed, ffr, fpr = cell
    res = _run_check(row, effect, seed, ffr, fpr)
    d = res.decision
    return dict(row=row, seed=seed, effect=effect, status=res.status, mde=d.min_detectable_effect if d else np.nan,
                estimate=d.estimate if d else np.nan, units=d.effect_units if d else "",
                message="" if d else res.message[:300])


def power_study(seeds=400, *, seed=0, designs=None, **options):
    """Records of every power run (:func:`power_cell`), with each design's pilot effect.

    ``options`` as in :func:`null_study` (the pilots run without a progress bar).
    """
    rows = list(POWER_DESIGNS) if designs is None else list(designs)
    quiet = {**options, "progress": False}
    pilots = dict(zip(rows, map_cells(_pilot_cell, [(r, seed) for r in rows], **quiet)))
    cells = power_cells(seeds, seed=seed, designs=rows, effects={r: pilots[r]["effect"] for r in rows})
    out = map_cells(power_cell, cells, **options)
    for rec in out:
        rec["pilot_mde"] = pilots[rec["row"]]["mde"]
        rec["stated"] = pilots[rec["row"]]["stated"]
    return out


def _pilot_cell(cell):
    row, seed = cell
    effect, d = power_pilot(row, seed=seed)
    return dict(effect=effect, mde=d.min_detectable_effect, stated=d.false_pass_rate)


def power_table(records):
    """One row per design: check, bug, design, effect (signed, as built), stated mde (pilot; mean in
    the bug runs), units, seeds, skipped runs, raised (failed without a decision: the check raised,
    counted as caught), false passes, measured, ci_low, ci_high (Clopper–Pearson 95 %), stated
    false-pass rate (the pilot's), verdict_ci_low (lower bound at :func:`verdict_level`), verdict ("ok"
    when verdict_ci_low ≤ stated, else "FAIL")."""
    frame = pd.DataFrame.from_records(records)
    rows = []
    for row in [r for r in POWER_DESIGNS if r in set(frame.row)]:
        g = frame[frame.row == row]
        check, contract, shape, p, kind, words = POWER_DESIGNS[row]
        ran = g[g.status != "skipped"]
        n, k = len(ran), int((ran.status == "passed").sum())
        low, high = clopper_pearson(k, n)
        vlow = clopper_pearson(k, n, verdict_level())[0] if n else math.nan
        stated = float(g.stated.iloc[0])
        raised = int(((ran.status == "failed") & (ran.message != "")).sum())
        rows.append(dict(check=check, bug=words, design=f"{contract}, {shape}, p={p:g}",
                         effect=float(g.effect.iloc[0]), stated_mde=float(g.pilot_mde.iloc[0]),
                         mde_in_runs=float(ran.mde.mean()) if n else math.nan, units=ran.units.max() if n else "",
                         seeds=len(g), skipped=len(g) - n, raised=raised, false_passes=k,
                         measured=k / n if n else math.nan, ci_low=low, ci_high=high, verdict_ci_low=vlow,
                         stated=stated, verdict="ok" if n and vlow <= stated else "FAIL"))
    return pd.DataFrame(rows)


def calibrate(null_decisions=2000, power_seeds=400, *, seed=0, plan=None, designs=None, **options):
    """The calibration: ``(false_fail, power)`` tables (:func:`false_fail_table`,
:func:`power_table`).

    Parameters
    ----------
    null_decisions : int
        Least number of decisions per statistical check under correct implementations (the cell
        seeds of :data:`NULL_PLAN` scale with it).
    power_seeds : int
        Seeds per buggy implementation.
    seed : int
        Offset of every battery seed.
    plan, designs : optional
        A subset of :data:`NULL_PLAN` and rows of :data:`POWER_DESIGNS`.
    **options
        ``executor``, ``scheduler``, ``processes``, ``workers``, ``progress``: passed to
        :func:`~stats_dropout._internal.executors.map_cells` (they cannot change the tables).
    """
    records = null_study(null_decisions, seed=seed, plan=plan, **options)
    power = power_study(power_seeds, seed=seed, designs=designs, **options)
    return false_fail_table(records), power_table(power)
