"""Shared pieces of the claims ledger: verdict names, statistical conventions, result types
and the measurement helpers every claim uses."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from stats_dropout._internal.numerics import MOMENT_ULPS, ulp_tol
from stats_dropout.inference.montecarlo import estimate_statistic_moments
from stats_dropout.inference.stats import decide_equivalence, projection_ratio, t_interval, tost_sample_size
from stats_dropout.reference.schemes import get_scheme

HOLDS = "holds"
EXPECTATION_ONLY = "holds in expectation only"
APPROXIMATELY = "holds approximately"
FALSE = "false"
VERDICTS = (HOLDS, EXPECTATION_ONLY, APPROXIMATELY, FALSE)

#: Confidence level of every interval in the ledger.
LEVEL = 0.99
#: TOST level: probability of declaring "equal within ε" when the difference is ε.
TOST_ALPHA = 0.01
#: Probability that TOST declares a truly equal quantity equivalent (sizes the runs).
POWER = 0.999
#: Floating-point dead band for exact identities (relative).
EXACT_RTOL = ulp_tol(np.float64, MOMENT_ULPS)

#: The forum thread the claims come from, as far as the saved copy identifies it: its title, the
#: people in it, what it quotes. The copy names neither the forum nor a date.
THREAD = {
    "title": "Inverted Dropout",
    "forum": ("the discussion forum of Prof Ng's deep-learning course (learners and the volunteer "
              "mentor @paulinpaloalto); the saved text does not name the forum"),
    "year": ("not stated in the saved text; it quotes Srivastava et al. (JMLR, 2014), so it is "
             "later than 2014"),
    "copy": "seed/000_caeb4e1c4e83c7e2.txt",
}
THREAD_CITATION = (f"“{THREAD['title']}”, a thread on {THREAD['forum']}. Year: {THREAD['year']}. "
                   f"Saved copy: {THREAD['copy']}.")

#: The thread's 3×4 matrix: ``np.random.seed(42); np.random.randn(3, 4)``, and its two norms.
THREAD_NORM_A = 2.672810732482017
THREAD_NORM_B = 3.3410134156025215


# --- result types ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    """What :func:`decide_cNN <decide_c01>` returns.

    Attributes
    ----------
    verdict : str
        One of :data:`VERDICTS`.
    figure_name : str
        What the deciding figure is, in words.
    figure, ci_low, ci_high : float
        The deciding figure and its confidence interval (equal bounds for exact figures).
    explanation : str
        One plain sentence (or two) a learner can read, with the numbers.
    """

    verdict: str
    figure_name: str
    figure: float
    ci_low: float
    ci_high: float
    explanation: str


@dataclasses.dataclass(frozen=True)
class ClaimSettings:
    """Settings of one ledger run: ``seed``, ``max_draws`` (cap per Monte-Carlo run, None =
    computed sizes only), ``keep_prob`` (the thread's 0.8 unless a claim needs another) and
    ``tables``: :mod:`stats_dropout.studies.experiments` results to reuse instead of recomputing."""

    seed: int = 0
    max_draws: int | None = None
    keep_prob: float = 0.8
    #: Experiment tables already computed by the caller (the report), by function name.
    tables: dict | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """One row of the ledger: the claim, its verdict, the evidence and the settings."""

    id: str
    claim: str
    verdict: str
    figure_name: str
    figure: float
    ci_low: float
    ci_high: float
    explanation: str
    measurement: str
    seed: int
    draws: int
    keep_prob: float
    confidence_level: float
    measurement_data: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def to_record(self):
        record = dataclasses.asdict(self)
        record.pop("measurement_data")
        return record


LEDGER_COLUMNS = ["id", "claim", "verdict", "figure_name", "figure", "ci_low", "ci_high",
                  "explanation", "measurement", "seed", "draws", "keep_prob", "confidence_level"]


# --- shared measurement helpers ---------------------------------------------------------------
def t_interval_floats(mean, se, n, level=LEVEL):
    """``mean ± t_{(1+level)/2, max(n−1, 1)} · se`` as floats
    (:func:`stats_dropout.inference.stats.t_interval`); zero width when ``se`` is not positive."""
    if not se > 0:
        return float(mean), float(mean)
    low, high = t_interval(float(mean), se, max(n - 1, 1), level)
    return float(low), float(high)


def tost_draws(sd, margin, settings, *, floor=2000):
    """Draws for TOST at ``margin`` to pass a correct quantity with probability :data:`POWER`:
    ``n = ((z_{1−α} + z_{(1+POWER)/2}) σ / ε)²`` (:func:`stats_dropout.inference.stats.tost_sample_size`),
    at least ``floor``, capped by ``max_draws``."""
    return _capped(tost_sample_size(sd, margin, alpha=TOST_ALPHA, power=POWER, min_draws=floor), settings)


#: Draws of the pilot run that measures a statistic's spread before its sample size is set.
PILOT_DRAWS = 500


def pilot_sd(train, x, statistic, seed):
    """Per-column standard deviation of one draw of ``statistic``, from :data:`PILOT_DRAWS` draws.

    Sample sizes are computed from it (never guessed): :func:`tost_draws` for a TOST margin,
    :func:`draws_for_half_width` for an interval of a given width. The pilot has a seed of its
    own so the main estimate's draws are not reused.
    """
    m = estimate_statistic_moments(train, x, statistic, draws=PILOT_DRAWS, seed=seed + 7_919)
    return np.sqrt(np.atleast_1d(m.var))


def draws_for_half_width(sd, half_width, settings):
    """Draws so the :data:`LEVEL` interval of every column is at most ``half_width`` wide each side:
    ``n = max_j ⌈(z_{(1+LEVEL)/2} σ_j / h_j)²⌉`` (at least :data:`PILOT_DRAWS`), capped by ``max_draws``."""
    z = stats.norm.ppf((1 + LEVEL) / 2)
    h = np.broadcast_to(np.asarray(half_width, dtype=float), np.shape(sd))
    n = int(np.max(np.ceil((z * np.asarray(sd) / h) ** 2)))
    return _capped(max(n, PILOT_DRAWS), settings)


def _capped(n, settings):
    return n if settings.max_draws is None else max(2, min(n, settings.max_draws))


def scalar_moments(train, x, statistic, draws, seed):
    """Moments of a vector of per-draw statistics: ``(mean, se, n)`` arrays."""
    m = estimate_statistic_moments(train, x, statistic, draws=draws, seed=seed)
    return np.atleast_1d(m.mean), np.atleast_1d(m.std_error), m.n_draws


def measure_relative_bias(scheme_name, keep_prob, x, target, seed, settings, margin):
    """Relative bias β in ``E[train(x)] = (1 + β) target`` by the projection ratio, with TOST."""
    scheme = get_scheme(scheme_name)
    target = np.asarray(target, dtype=np.float64)
    sd = scheme.projection_ratio_sd(target, x, keep_prob)
    draws = tost_draws(sd, margin, settings)
    mean, se, n = scalar_moments(scheme.bind(keep_prob), x, projection_ratio(x, target), draws, seed)
    bias, bias_se = float(mean[0] - 1), float(se[0])
    low, high = t_interval_floats(bias, bias_se, n)
    tost = decide_equivalence(bias, bias_se, margin, df=n - 1, alpha=TOST_ALPHA)
    return {"bias": bias, "se": bias_se, "ci_low": low, "ci_high": high, "n": n,
            "margin": margin, "equivalent": bool(tost.equivalent), "tost_pvalue": tost.pvalue,
            "rejected": bool(low > 0 or high < 0)}


def interval_excludes(low, high, value):
    return bool(low > value or high < value)


def experiment_table_for(settings, name):
    """The :mod:`stats_dropout.studies.experiments` table ``name`` at the ledger's seed: reused from
    ``settings.tables`` when the caller computed it, else computed (and stored there)."""
    if settings.tables is not None and name in settings.tables:
        return settings.tables[name]
    from stats_dropout.studies import experiments

    frame = getattr(experiments, name)(seed=settings.seed)
    if settings.tables is not None:
        settings.tables[name] = frame
    return frame
