"""The phi z test of the independence checks, measured on iid masks (slow tier).

check_independence_calls pools the pairs (mask of call t, mask of call t + 1) of every unit;
the pairs overlap (call t is in two of them), so whether ``z = r √n`` is N(0, 1) is not obvious.
Its centred products are uncorrelated (E[(m_t − p)(m_{t+1} − p)² (m_{t+2} − p)] = 0), so
Var r ≈ 1/n; this measures the false-fail rate of the exact code path (MaskPairs, the check's
decision) over 4000 seeds at the battery's shapes of the calibration, against α = 0.017 (a
relaxed share, as in docs/CALIBRATION.md), with a Clopper–Pearson 99.9 % interval. The seeds
run in blocks of :data:`BLOCK`, each block its own stream ``default_rng((SEED, block))``, through
``map_cells`` on every core (``STATS_DROPOUT_WORKERS``, ``STATS_DROPOUT_SCHEDULER``).
"""

import numpy as np
import pytest
import scipy.stats as sps

from stats_dropout._internal.executors import executor_options, map_cells
from stats_dropout.verification.accumulators import MaskPairs
from stats_dropout.verification.checks.statistical import _correlation_decision

pytestmark = pytest.mark.slow

ALPHA, REPS = 0.017, 4000
#: Repetitions per cell (enough work per cell to hide the cost of sending it), and the seed.
BLOCK, SEED = 100, 20261202


def block_rejections(cell):
    """Rejections in one block of :data:`BLOCK` repetitions: ``cell = (calls, shape, keep, block)``."""
    calls, shape, keep, block = cell
    rng = np.random.default_rng((SEED, block))
    rejected = 0
    for _ in range(BLOCK):
        pairs = MaskPairs(np.ones(shape, dtype=bool))
        for _ in range(calls):
            pairs.update(rng.random(shape) < keep)
        rejected += bool(_correlation_decision("calls", pairs.call_pairs, ALPHA, 0.1).rejected)
    return rejected


@pytest.mark.parametrize("calls, shape, keep", [(19, (64, 64), 0.8), (43, (16, 8), 0.5), (19, (4, 3, 8, 8), 0.9)])
def test_successive_call_pairs_reject_at_their_level(calls, shape, keep):
    cells = [(calls, shape, keep, block) for block in range(REPS // BLOCK)]
    rejected = sum(map_cells(block_rejections, cells, **executor_options()))
    ci = sps.binomtest(rejected, REPS).proportion_ci(0.999)
    print(f"\n{calls} calls of {shape} at keep {keep}: {rejected}/{REPS} = {rejected / REPS:.4f} "
          f"[{ci.low:.4f}, {ci.high:.4f}] against {ALPHA}")
    assert ci.low <= ALPHA <= ci.high
