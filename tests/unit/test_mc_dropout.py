"""MC-dropout inference (issue #11 §4): a model random in eval mode on purpose is verified, not failed.

Subjects: tests/fixtures/models_torch.py (MCDropout ignores ``self.training``; the planted bugs
MCNoRescaleDropout, DeclaredMCDropout, StickyMCDropout). Every run is seeded (seed printed in the
messages). The MC checks run at the default false-fail rate (1e-6, split over 3 decisions) but are
sized for larger effects than the defaults (a relative MC-mean error of 0.2, a variance ratio off
by a factor 3) so the file runs in a few seconds; torch runs single-threaded here (the models are tiny).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch")

from stats_dropout.verification.mc_dropout import (  # noqa: E402
    MC_CONVERGENCE_CHECK,
    MC_EVAL_CHECK,
    MC_MEAN_CHECK,
    verify_mc_dropout,
)
from stats_dropout.verification.models import EVAL_CHECK, verify_model  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
FAST = dict(mc_relative_effect=0.2, mc_variance_effect=2.0)


@pytest.fixture(scope="module")
def mt():
    key = "_stats_dropout_fixture_models_torch"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, FIXTURES / "models_torch.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_mc_dropout_model_passes_when_declared(mt):
    model, batch = mt.mc_dropout_net()
    r = verify_model(model, batch, seed=0, mc_dropout=True, **FAST)
    mc = r.mc_dropout
    assert r.passed and mc.passed and mc.eval_random, str(r)
    assert r.eval_deterministic is False and r.eval_findings == ()  # random, as declared
    assert [p for p, _ in r.mc_findings] == ["blocks.0.dropout", "head"]
    assert [row.verdict for row in r.rows] == ["passed", "passed"]  # batteries: train mode vs weight-scaled eval
    assert all("MC dropout" in row.note for row in r.rows)
    assert [d.details["T"] for d in mc.convergence] == [4, 16]
    assert mc.false_fail_rate == 1e-6 and mc.mean.false_fail_rate == pytest.approx(1e-6 / 3)
    assert r.total_false_fail_rate == pytest.approx(3e-6)  # two batteries and the MC checks
    text = str(r)
    assert "PASSED" in text and "MC dropout (whole model): eval random by design; average of T passes converges" in text
    assert "seed 0" in text and "inference gap" in text


def test_mc_dropout_model_fails_undeclared(mt):
    model, batch = mt.mc_dropout_net()
    r = verify_model(model, batch, seed=0, sites=[])  # eval check only
    assert not r.passed and r.eval_deterministic is False and r.mc_dropout is None
    assert [(x.path, x.verdict, x.failing_checks) for x in r.rows] == [
        ("blocks.0.dropout", "failed", (EVAL_CHECK,)), ("head", "failed", (EVAL_CHECK,))]
    assert "RANDOM" in str(r)
    # mc_dropout=False ignores attributes; a list covers only its paths: the other site still fails
    part = verify_model(model, batch, seed=0, sites=[], mc_dropout=["head"], **FAST)
    assert not part.passed and [p for p, _ in part.eval_findings] == ["blocks.0.dropout"]
    assert [p for p, _ in part.mc_findings] == ["head"] and part.mc_dropout.passed, str(part)


def test_linear_path_gap_is_zero_within_its_ci(mt):
    """head MCDropout then Linear: E[MC] is the weight-scaled output exactly; the measured gap's CI holds 0."""
    model, batch = mt.mc_dropout_linear()
    r = verify_model(model, batch, seed=1, sites=[], mc_dropout=["head"], **FAST)
    gap = r.mc_dropout.gap
    assert r.passed, str(r)
    assert gap["projected_ci"][0] <= 0 <= gap["projected_ci"][1], str(r.mc_dropout)
    assert gap["max_abs_ci"][0] == 0.0, str(r.mc_dropout)


def test_declared_but_deterministic_is_flagged(mt):
    model, batch = mt.mc_declared_deterministic()  # head has mc_dropout = True, is a plain nn.Dropout
    r = verify_model(model, batch, seed=3, sites=[])
    assert not r.passed and r.mc_dropout.failing_checks == (MC_EVAL_CHECK,)
    assert r.mc_dropout.declared == ("head",)
    assert "mc_dropout declared but eval is deterministic" in str(r) and "seeded 3 and 4" in str(r)
    plain = verify_model(model, batch, seed=3, sites=[], mc_dropout=False)  # attribute ignored
    assert plain.passed and plain.mc_dropout is None


def test_missing_rescale_in_mc_path_fails_the_mean_check(mt):
    model, batch = mt.mc_no_rescale()
    r = verify_model(model, batch, seed=0, sites=[], mc_dropout=["head"], **FAST)
    mc = r.mc_dropout
    assert not r.passed and mc.failing_checks == (MC_MEAN_CHECK,), f"seed 0: {mc}"
    assert mc.mean.estimate == pytest.approx(-0.5, abs=0.1)  # E[MC] = p·E[train] at p = 0.5 (projected, linear head)
    assert "REJECTED" in str(mc) and "rescale" in str(mc)


def test_passes_not_independent_fail_convergence(mt):
    model, batch = mt.mc_sticky()  # one mask for 4 consecutive calls: Var(mean of 16) ≈ 4/16, not 1/16
    r = verify_model(model, batch, seed=0, sites=[], mc_dropout=["head"], **FAST)
    mc = r.mc_dropout
    assert not r.passed and MC_CONVERGENCE_CHECK in mc.failing_checks, f"seed 0: {mc}"
    t16 = next(d for d in mc.convergence if d.details["T"] == 16)
    assert t16.rejected and 2.5 < t16.estimate < 6, f"seed 0: {mc}"
    assert "does NOT converge" in str(mc)


def test_direct_call_restores_modes_and_rng(mt):
    model, batch = mt.mc_dropout_linear()
    model.train()
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    r = verify_mc_dropout(model, batch, site_paths=["head"], seed=2, relative_effect=0.3, variance_effect=3.0)
    assert r.passed and r.seed == 2, str(r)
    assert model.training and model.head.training and torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="no module of the model"):
        verify_model(model, batch, sites=[], mc_dropout=["nope"])
    with pytest.raises(TypeError, match="`mc_dropout`"):
        verify_model(model, batch, sites=[], mc_dropout="head")


def test_cli_mc_dropout_flag(capsys):
    import argparse

    from stats_dropout.cli.verify_model import add_arguments, mc_dropout_arg, run

    def cli(*argv):
        return run(add_arguments(argparse.ArgumentParser()).parse_args(list(argv)))

    assert (mc_dropout_arg(None), mc_dropout_arg([]), mc_dropout_arg(["head"])) == (None, True, ["head"])
    target = f"{FIXTURES / 'models_torch.py'}:mc_dropout_linear"
    assert cli(target) == 1  # undeclared: random in eval is the F.dropout-left-on bug
    assert "RANDOM" in capsys.readouterr().out
    assert cli(target, "--mc-dropout") == 0
    assert "MC dropout (whole model): eval random by design" in capsys.readouterr().out
