"""DropBlock verified from outputs (stats_dropout.verification.dropblock): a correct module passes,
each planted bug fails its own check (wrong γ, no rescale, units dropped one by one).

Subjects: tests/fixtures/models_torch.py (DropBlock2d, the paper's Algorithm 1 in torch).
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from stats_dropout.reference import structured_theory as st
from stats_dropout.reference.structured import dropblock_mask
from stats_dropout.verification.dropblock import dropblock_draws, opening_is_identity, verify_dropblock

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
SHAPE = (8, 8, 14, 14)


@pytest.fixture(scope="module")
def mt():
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("_dropblock_models_torch", FIXTURES / "models_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module, seed=0, **kw):
    import torch

    torch.manual_seed(seed)
    module.train()
    return verify_dropblock(lambda x: module(torch.from_numpy(x)).numpy(), SHAPE, 0.9, 3, seed=seed, **kw)


def statuses(result):
    return {c.check: c.status for c in result.checks}


def test_reference_masks_are_unions_of_blocks_and_iid_masks_are_not():
    rng = np.random.default_rng(0)
    masks = dropblock_mask(rng, (50, 14, 14), 0.8, 3)
    assert opening_is_identity(~masks, 3).all()
    assert not opening_is_identity(rng.random((50, 14, 14)) < 0.2, 3).any()


@pytest.mark.parametrize("keep, bs, hw", [(0.9, 3, (7, 7)), (0.8, 5, (14, 14)), (0.7, 3, (9, 12)), (0.9, 1, (6, 5))])
def test_kept_count_variance_by_offsets_equals_the_pair_table(keep, bs, hw):
    p = st.keep_probabilities(keep, bs, hw).ravel()
    joint = st.pair_keep_probabilities(keep, bs, hw)
    mean, var = st.kept_sum_moments(keep, bs, hw)
    assert mean == pytest.approx(p.sum(), rel=1e-12) and var == pytest.approx(joint.sum() - p.sum() ** 2, rel=1e-9)


def test_a_call_keeping_exactly_keep_prob_numel_units_is_not_an_inconsistent_rescale(mt):
    # At keep 0.875 on 4×2×8×8 some calls keep exactly 448 of 512 units: numel/ΣM = 1/keep_prob.
    import torch

    module = mt.DropBlock2d(0.125, 3).train()
    for seed in range(3):
        torch.manual_seed(seed)
        r = verify_dropblock(lambda x: module(torch.from_numpy(x)).numpy(), (4, 2, 8, 8), 0.875, 3, seed=seed)
        assert statuses(r)["check_dropblock_rescale"] == "passed", str(r)


def test_draws_are_sized_from_the_exact_null_variance():
    n = dropblock_draws(SHAPE, 0.9, 3)
    assert 10 < n < 200
    assert dropblock_draws(SHAPE, 0.9, 3, relative_effect=0.05) > 3 * n  # ~ 1/δ²
    assert dropblock_draws((1, 1, 14, 14), 0.9, 3) > 30 * n  # 64 maps per call, not one


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_dropblock_passes(mt, seed):
    r = run(mt.DropBlock2d(0.1, 3), seed=seed)
    assert r.passed, str(r)
    keep = r.checks[2].decision
    # Designed for 0.1 at the null sd; reported from max(sample sd, null sd), so a little above by chance.
    assert keep.false_fail_rate == 1e-6 and 0.09 < keep.min_detectable_effect < 0.11


def test_wrong_gamma_fails_the_keep_rate(mt):
    r = run(mt.DropBlock2d(0.1, 3, valid_region=False))
    assert statuses(r) == {"check_dropblock_rescale": "passed", "check_dropblock_blocks": "passed",
                           "check_dropblock_keep_rate": "failed"}
    expected = st.kept_fraction(0.9, 3, (14, 14))
    assert f"expected {expected:.5f}" in r.checks[2].message and "wrong seed rate" in r.checks[2].message


def test_no_rescale_and_unit_dropout_fail_their_checks(mt):
    import torch

    assert statuses(run(mt.DropBlock2d(0.1, 3, rescale=False)))["check_dropblock_rescale"] == "failed"
    assert statuses(run(torch.nn.Dropout(0.1)))["check_dropblock_blocks"] == "failed"


def test_a_raising_implementation_fails_every_check_and_bad_arguments_are_named():
    def broken(x):
        raise SystemExit(3)

    r = verify_dropblock(broken, (2, 7, 7), 0.9, 3, draws=3)
    assert not r.passed and all("raised SystemExit" in c.message for c in r.checks)
    garbage = verify_dropblock(lambda x: "not an array", (2, 7, 7), 0.9, 3, draws=3)
    assert not garbage.passed and all("raised ValueError" in c.message for c in garbage.checks)
    with pytest.raises(ValueError, match="block_size"):
        verify_dropblock(lambda x: x, (2, 7, 7), 0.9, 8)
    with pytest.raises(ValueError, match="shape"):
        verify_dropblock(lambda x: x, (7,), 0.9, 3)
    with pytest.raises(ValueError, match="keep_prob"):
        verify_dropblock(lambda x: x, (2, 7, 7), 1.5, 3)


# --- a DropBlock site inside a model -----------------------------------------------------------
def test_verify_model_finds_the_dropblock_site_and_its_wrong_gamma(mt):
    from stats_dropout.verification.models import verify_model

    model, batch = mt.dropblock_net()
    r = verify_model(model, batch, seed=0)
    rows = [(x.path, x.kind, x.keep_prob, x.verdict, x.input_shape) for x in r.rows]
    assert rows == [("dropblock", "dropblock", pytest.approx(0.9), "passed", (8, 8, 14, 14))], str(r)
    assert r.passed and r.eval_deterministic
    # modes and torch's RNG restored: a model handed over in eval mode stays there
    import torch

    model.eval()
    state = torch.random.get_rng_state()
    assert verify_model(model, batch, seed=0, check_eval=False).passed
    assert not model.training and not model.dropblock.training
    assert torch.equal(torch.random.get_rng_state(), state)

    bad, batch = mt.dropblock_wrong_gamma()
    r = verify_model(bad, batch, seed=0)
    assert not r.passed
    assert [(x.path, x.verdict, x.failing_checks) for x in r.rows] == [
        ("dropblock", "failed", ("check_dropblock_keep_rate",))], str(r)
    assert "wrong seed rate" in str(r)
