"""verify_model: every dropout site of a torch model, on its real activation; planted bugs found at their site.

Subjects: small torch models (tests/fixtures/models_torch.py) and tiny Hugging Face models with random
weights built from configs, never downloaded (tests/fixtures/models_transformers.py: BERT with eager
attention, a BERT with three planted bugs, ConvNext with stochastic depth). Every run is seeded; the
batteries run at their default error rates (1e-6 false-fail per site).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from stats_dropout.cli.errors import UsageError  # noqa: E402
from stats_dropout.cli.verify_model import add_arguments, run  # noqa: E402
from stats_dropout.verification.model_sites import find_sites  # noqa: E402
from stats_dropout.verification.models import EVAL_CHECK, ModelVerificationResult, verify_model  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


def load(name):
    key = f"_stats_dropout_fixture_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, FIXTURES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="module")
def mt():
    return load("models_torch")


@pytest.fixture(scope="module")
def mtr():
    pytest.importorskip("transformers")
    return load("models_transformers")


def row(result, path):
    (found,) = [r for r in result.rows if r.path == path]
    return found


# --- the rule -----------------------------------------------------------------------------------


def test_find_sites_rule(mt):
    model, _ = mt.tiny_net()
    sites = find_sites(model)
    assert [(s.path, s.kind, s.keep_prob) for s in sites] == [
        ("blocks.0.dropout", "dropout", 0.8), ("blocks.0.drop_path", "drop_path", 0.75), ("head", "dropout", 0.5)]
    assert sites[1].overrides == {"shared_axes": "non_batch"}  # one mask per sample

    class MyDropout(torch.nn.Module):  # named like dropout, but no rate attribute: not a site
        def forward(self, x):
            return x

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = MyDropout()
            self.b = mt.RateAsKeepDropout(0.2)  # named like dropout with p: custom, keep = 1 − p
            self.c = torch.nn.Dropout2d(0.25)

    found = {s.path: (s.kind, s.keep_prob) for s in find_sites(Wrapper())}
    assert found == {"b": ("custom", 0.8), "c": ("channel", 0.75)}
    with pytest.raises(ValueError, match=r"'blocks\.0\.dropot'.*did you mean 'blocks\.0\.dropout'"):
        find_sites(model, ["blocks.0.dropot"])


# --- a correct torch model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_result(mt):
    model, batch = mt.tiny_net()
    return verify_model(model, batch, seed=0)


def test_tiny_net_every_site_passes(tiny_result):
    r = tiny_result
    assert isinstance(r, ModelVerificationResult) and r.passed and r.eval_deterministic
    frame = r.to_frame()
    assert list(frame.columns[:5]) == ["path", "kind", "keep_prob", "verdict", "failing_checks"]
    assert frame[["path", "kind", "keep_prob", "verdict"]].values.tolist() == [
        ["blocks.0.dropout", "dropout", 0.8, "passed"], ["blocks.0.drop_path", "drop_path", 0.75, "passed"],
        ["head", "dropout", 0.5, "passed"]]
    assert set(frame["dtype"]) == {"float64 (captured float32)"}
    twice = row(r, "blocks.0.dropout")
    assert twice.calls == 2 and "first call" in twice.note
    assert r.sites["blocks.0.drop_path"].to_frame().set_index("check").filter(like="sharing", axis=0)["status"].eq(
        "passed").all()
    text = str(r)
    assert "PASSED" in text and "blocks.0.drop_path" in text and "Eval mode: deterministic" in text


def test_false_fail_rate_is_per_site_and_adds_up(tiny_result, mt):
    """The documented composition: each battery at the default 1e-6; the total is bounded by their sum."""
    assert all(v.false_fail_rate == 1e-6 for v in tiny_result.sites.values())
    assert tiny_result.total_false_fail_rate == pytest.approx(3e-6)
    assert "1e-06 per site, at most 3e-06 in total over 3 batteries" in str(tiny_result)
    # a rate passed is per site too: test_cli_exit_codes runs --false-fail-rate 1e-4


def test_a_site_gets_the_same_draws_alone(tiny_result, mt):
    model, batch = mt.tiny_net()
    alone = verify_model(model, batch, sites=["head"], seed=0, check_eval=False)
    assert alone.sites["head"].to_frame().equals(tiny_result.sites["head"].to_frame())


def test_modes_rng_and_functional_restored(mt):
    model, batch = mt.one_dropout()
    model.train()
    model.out.eval()
    original = torch.nn.functional.dropout
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    verify_model(model, batch, sites=[])
    assert model.training and model.head.training and not model.out.training
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.nn.functional.dropout is original


# --- planted bugs (torch) -----------------------------------------------------------------------


def test_functional_dropout_left_on_in_eval_is_found(mt):
    model, batch = mt.functional_bug()
    r = verify_model(model, batch, seed=0, sites=["blocks.0.dropout"])  # the eval check runs on the whole model
    assert not r.passed and r.eval_deterministic is False
    assert r.failed_sites == ("blocks.0.dropout",)
    bad = row(r, "blocks.0.dropout")
    assert bad.kind == "custom" and bad.keep_prob == pytest.approx(0.7)
    assert {"check_eval_deterministic", EVAL_CHECK} <= set(bad.failing_checks)
    assert [p for p, _ in r.eval_findings] == ["blocks.0.dropout"]
    assert "training=True" in r.eval_findings[0][1]


def test_drop_path_with_one_mask_per_unit_is_found(mt):
    model, batch = mt.drop_path_bug()
    r = verify_model(model, batch, seed=0)
    assert r.failed_sites == ("blocks.0.drop_path",) and r.eval_deterministic
    assert "check_sharing_pattern" in row(r, "blocks.0.drop_path").failing_checks


def test_random_module_that_is_no_site_gets_a_row(mt):
    model, batch = mt.noisy_activation()
    r = verify_model(model, batch, sites=[])
    assert not r.passed and r.eval_deterministic is False
    assert [(x.path, x.kind, x.verdict, x.failing_checks) for x in r.rows] == [
        ("blocks.0.linear.1", "eval-random", "failed", (EVAL_CHECK,))]
    assert any("no dropout site" in w for w in r.warnings)


def test_unsupported_site_is_reported_not_failed(mt):
    model, batch = mt.one_dropout()
    r = verify_model(model, batch, sites=["embed"])  # a Linear: no keep_prob to read
    (only,) = r.rows
    assert (only.kind, only.verdict) == ("user", "unsupported") and "unsupported kind" in only.note
    assert r.passed and r.sites == {}


def test_argument_errors(mt):
    model, batch = mt.one_dropout()
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        verify_model(lambda x: x, batch)
    with pytest.raises(TypeError, match="`sites`"):
        verify_model(model, batch, sites="head")
    with pytest.raises(ValueError, match="`dtype`"):
        verify_model(model, batch, dtype="int32")
    half = verify_model(model, batch, dtype="float16", check_eval=False)  # the dtype the probe is tested in
    assert half.passed and half.rows[0].dtype == "float16 (captured float32)"
    with pytest.raises(ValueError, match="false_fail_rate"):
        verify_model(model, batch, false_fail_rate=2.0)


# --- the command line ---------------------------------------------------------------------------


def cli(*argv):
    return run(add_arguments(argparse.ArgumentParser()).parse_args(list(argv)))


def test_cli_exit_codes(capsys, tmp_path):
    path = FIXTURES / "models_torch.py"
    assert cli(f"{path}:one_dropout", "--csv", str(tmp_path / "sites.csv"), "--false-fail-rate", "1e-4") == 0
    out = capsys.readouterr().out
    assert "head" in out and "false-fail rate 0.0001 per site, at most 0.0001 in total over 1 batteries" in out
    assert (tmp_path / "sites.csv").read_text().startswith("path,kind")
    assert cli(f"{path}:functional_bug", "--sites", "blocks.0.dropout") == 1
    assert "FAILED blocks.0.dropout" in capsys.readouterr().out
    for factory, message in [("not_a_factory", "must return"), ("raising_factory", "raised RuntimeError"),
                             ("missing", "no attribute")]:
        with pytest.raises(UsageError, match=message):
            cli(f"{path}:{factory}")
    with pytest.raises(UsageError, match="no module of the model"):
        cli(f"{path}:one_dropout", "--sites", "nope")


def test_cli_main_has_verify_model():
    from stats_dropout import cli as package

    parser = package._parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "verify-model" in choices
    assert package.main(["verify-model", f"{FIXTURES / 'models_torch.py'}:not_a_factory"]) == 2


# --- transformers --------------------------------------------------------------------------------


BERT_SITES = ["embeddings.dropout"] + [
    f"encoder.layer.{i}.{name}" for i in range(2)
    for name in ("attention.self.dropout", "attention.output.dropout", "output.dropout")]


def test_bert_every_site_listed_and_passed(mtr):
    model, batch = mtr.tiny_bert()
    r = verify_model(model, batch, seed=0)
    frame = r.to_frame()
    assert frame["path"].tolist() == BERT_SITES
    expected = [0.8 if p.endswith("self.dropout") else 0.9 for p in BERT_SITES]  # attention p 0.2, hidden 0.1
    assert frame["keep_prob"].tolist() == pytest.approx(expected)
    assert set(frame["kind"]) == {"dropout"} and set(frame["verdict"]) == {"passed"}
    assert frame.loc[1, "input_shape"] == "8x2x16x16"  # attention probabilities (batch, heads, query, key)
    assert r.passed and r.eval_deterministic and not r.eval_findings and not r.warnings


def test_bugged_bert_each_bug_at_its_site(mtr):
    model, batch = mtr.bugged_bert()
    r = verify_model(model, batch, seed=0)
    a, b, c = ("encoder.layer.0.attention.output:F.dropout", "encoder.layer.0.output.dropout",
               "encoder.layer.0.attention.self.dropout")
    assert not r.passed and set(r.failed_sites) == {a, b, c}
    assert row(r, "embeddings.dropout").verdict == "passed"
    assert row(r, "encoder.layer.0.attention.output.dropout").verdict == "not called"  # bypassed by (a)
    # (a) F.dropout(x, p) in BertSelfOutput.forward: random in eval mode, found at the calling module
    assert row(r, a).kind == "functional" and {"check_eval_deterministic", EVAL_CHECK} <= set(row(r, a).failing_checks)
    assert [p for p, _ in r.eval_findings] == ["encoder.layer.0.attention.output"]
    # (b) the rescale forgotten
    assert "check_kept_scale" in row(r, b).failing_checks
    assert any("not rescaled" in d for d in r.sites[b].diagnosis)
    # (c) the rate read as keep: keeps 20 % where 80 % is meant
    assert row(r, c).keep_prob == pytest.approx(0.8) and "check_keep_rate" in row(r, c).failing_checks
    assert any("1 − keep_prob" in d for d in r.sites[c].diagnosis)


def test_convnext_drop_path_sites(mtr):
    model, batch = mtr.tiny_convnext()
    r = verify_model(model, batch, seed=0)
    frame = r.to_frame()
    assert frame["path"].tolist() == ["encoder.stages.1.layers.0.drop_path", "encoder.stages.1.layers.1.drop_path"]
    assert set(frame["kind"]) == {"drop_path"}
    assert frame["keep_prob"].tolist() == pytest.approx([0.9, 0.8], abs=1e-6)  # rates from a float32 linspace
    assert r.passed, str(r)
