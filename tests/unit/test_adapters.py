"""Adapters: torch modules, the course's network and CS231n layers as numpy callables.

Every test is seeded; statistical assertions have tolerances of at least 6 standard errors.
"""

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from stats_dropout import adapters
from stats_dropout.verification.adapters import (
    course_backward,
    cs231n_backward,
    detect_convention,
    from_course,
    from_cs231n,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


course = _load("course_correct")
course_reseeded = _load("course_reseeded")
course_no_rescale = _load("course_no_rescale")
cs_keep = _load("cs231n_keep")
cs_drop = _load("cs231n_drop")
plain = _load("plain_dropout")


def probe(shape=(400, 30), seed=0):
    x = np.random.default_rng(seed).standard_normal(shape)
    x[0, 0] = 0.0  # a zero input must survive the sign split
    return x


def kept_ratio_values(x, y):
    """The distinct values of y / x over nonzero inputs (0 for dropped, the scale for kept)."""
    nz = x != 0
    return np.unique(y[nz] / x[nz])


def assert_inverted_dropout(x, y, keep_prob, *, rtol=0.0):
    """y is 0 or x / keep_prob elementwise, and about keep_prob of the units are kept."""
    assert y.shape == x.shape and y.dtype == x.dtype
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / keep_prob, rtol=rtol, atol=0)
    assert np.all(y[~kept] == 0)
    n = x.size
    # 6 binomial standard errors: fails by chance with probability < 1e-8.
    assert abs(kept.mean() - keep_prob) < 6 * np.sqrt(keep_prob * (1 - keep_prob) / n)


# --- import hygiene ---------------------------------------------------------------------------

def test_importing_the_package_does_not_import_torch():
    code = ("import sys, stats_dropout, stats_dropout.verification.adapters; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- the course's three-layer network ---------------------------------------------------------

@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("keep_prob", [0.8, 0.3])
def test_course_layer_is_inverted_dropout_of_x_for_both_signs(layer, keep_prob):
    x = probe()
    np.random.seed(1234)
    y = from_course(course.forward_propagation_with_dropout, layer=layer)(x, keep_prob)
    assert_inverted_dropout(x, y, keep_prob)  # exact: the sign split adds no rounding
    kept = y != 0
    assert np.any(kept & (x < 0)) and np.any(kept & (x > 0))


def test_course_layers_are_isolated():
    # Layer 1 correct, layer 2 without the rescale: each adapter sees only its own layer.
    x = probe()
    np.random.seed(7)
    y1 = from_course(course_no_rescale.forward_propagation_with_dropout, layer=1)(x, 0.5)
    y2 = from_course(course_no_rescale.forward_propagation_with_dropout, layer=2)(x, 0.5)
    assert kept_ratio_values(x, y1).tolist() == [0.0, 2.0]
    assert kept_ratio_values(x, y2).tolist() == [0.0, 1.0]


def test_course_preserves_float32():
    x = probe().astype(np.float32)
    y = from_course(course.forward_propagation_with_dropout, layer=2)(x, 0.5)
    assert y.dtype == np.float32
    assert kept_ratio_values(x, y).tolist() == [0.0, 2.0]


def test_course_shapes_beyond_2d_and_1d():
    for shape in [(40, 3, 5), (50,)]:
        x = np.random.default_rng(3).standard_normal(shape)
        y = from_course(course.forward_propagation_with_dropout)(x, 0.5)
        assert y.shape == shape
        assert set(kept_ratio_values(x, y).tolist()) <= {0.0, 2.0}


def test_course_uses_the_global_rng_and_never_reseeds():
    x = probe()
    train = from_course(course.forward_propagation_with_dropout)
    np.random.seed(0)
    a, b = train(x, 0.5), train(x, 0.5)
    np.random.seed(0)
    assert np.array_equal(train(x, 0.5), a)
    assert not np.array_equal(a, b)


def test_course_reseeding_forward_stays_visible():
    # The course template calls np.random.seed(1) inside the forward: every call has the same
    # mask. The adapter must pass that through (the battery flags it), not hide it.
    x = probe()
    train = from_course(course_reseeded.forward_propagation_with_dropout, layer=2)
    np.random.seed(0)
    a = train(x, 0.5)
    np.random.seed(99)
    assert np.array_equal(train(x, 0.5), a)


def test_course_errors_pass_through_with_context():
    def broken(X, parameters, keep_prob):
        raise ZeroDivisionError("learner bug")

    with pytest.raises(ZeroDivisionError, match="learner bug") as info:
        from_course(broken)(probe(), 0.5)
    assert any("from_course" in note for note in getattr(info.value, "__notes__", []))

    def no_cache(X, parameters, keep_prob):
        return X

    with pytest.raises(TypeError, match=r"must return \(A3, cache\)"):
        from_course(no_cache)(probe(), 0.5)

    def short_cache(X, parameters, keep_prob):
        return X, (X, X)

    with pytest.raises(TypeError, match="14-tuple"):
        from_course(short_cache)(probe(), 0.5)


def test_course_odd_output_is_not_repaired():
    def nan_and_truncated(X, parameters, keep_prob):
        A3, cache = course.forward_propagation_with_dropout(X, parameters, keep_prob)
        cache = list(cache)
        cache[2] = np.full_like(cache[2], np.nan)  # A1 all NaN
        cache[7] = cache[7][:, :1]                 # A2 with the wrong number of columns
        return A3, tuple(cache)

    x = probe()
    assert np.isnan(from_course(nan_and_truncated, layer=1)(x, 0.5)).all()
    assert from_course(nan_and_truncated, layer=2)(x, 0.5).shape != x.shape


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_course_backward_applies_the_forward_mask(layer, dtype):
    x = probe().astype(dtype)
    upstream = np.random.default_rng(5).standard_normal(x.shape).astype(dtype)
    np.random.seed(11)
    backward = course_backward(course.forward_propagation_with_dropout,
                               course.backward_propagation_with_dropout, layer=layer)
    y, grad = backward(x, upstream, 0.8)
    assert_inverted_dropout(x, y, 0.8)
    mask = (y != 0) | (x == 0) & (grad != 0)
    expected = upstream * mask / dtype(0.8)
    # Layer 2 is exact; layer 1 crosses layer 2's 1/keep_prob (two roundings, see the docstring).
    rtol = 0 if layer == 2 else 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(grad, expected, rtol=rtol, atol=0)
    assert grad.dtype == dtype


def test_course_backward_shows_a_missing_rescale():
    x = probe()
    upstream = np.ones_like(x)
    backward = course_backward(course_no_rescale.forward_propagation_with_dropout,
                               course_no_rescale.backward_propagation_with_dropout, layer=2)
    y, grad = backward(x, upstream, 0.5)
    assert np.unique(grad).tolist() == [0.0, 1.0]  # correct code would give 0 and 2
    assert np.array_equal(grad != 0, (y != 0) | ((x == 0) & (grad != 0)))


def test_course_backward_needs_the_gradient_key():
    def no_dA(X, Y, cache, keep_prob):
        return {"dZ3": Y}

    with pytest.raises(TypeError, match="'dA1'"):
        course_backward(course.forward_propagation_with_dropout, no_dA, layer=1)(probe(), probe(), 0.5)


def test_course_input_validation():
    with pytest.raises(ValueError, match=r"`layer` must be 1 or 2; got 3"):
        from_course(course.forward_propagation_with_dropout, layer=3)
    with pytest.raises(ValueError, match=r"`layer` must be 1 or 2; got True"):
        course_backward(course.forward_propagation_with_dropout,
                        course.backward_propagation_with_dropout, layer=True)
    with pytest.raises(TypeError, match=r"`forward` must be callable; got 3"):
        from_course(3)
    with pytest.raises(TypeError, match=r"`backward` must be callable; got None"):
        course_backward(course.forward_propagation_with_dropout, None)


# --- CS231n-style layers ----------------------------------------------------------------------

def test_cs231n_keep_convention():
    x = probe()
    train, evaluate = from_cs231n(cs_keep.dropout_forward, p_means="keep")
    np.random.seed(2)
    assert_inverted_dropout(x, train(x, 0.3), 0.3, rtol=4 * np.finfo(float).eps)
    assert np.array_equal(evaluate(x, 0.3), x)


def test_cs231n_drop_convention_converts_keep_prob():
    x = probe()
    np.random.seed(3)
    train, evaluate = from_cs231n(cs_drop.dropout_forward, p_means="drop")
    assert_inverted_dropout(x, train(x, 0.8), 0.8, rtol=4 * np.finfo(float).eps)
    # This layer's test mode scales by the keep probability: passed through, not repaired.
    np.testing.assert_allclose(evaluate(x, 0.8), 0.8 * x, rtol=1e-15)
    # Told the wrong convention, the keep rate flips to 1 - keep_prob: the battery will see it.
    wrong, _ = from_cs231n(cs_drop.dropout_forward, p_means="keep")
    assert abs((wrong(x, 0.8) != 0).mean() - 0.2) < 0.02


def test_cs231n_passes_only_p_and_mode_and_the_callers_array():
    seen = []

    def spy(x, dropout_param):
        seen.append((x, dict(dropout_param)))
        x *= 2  # a learner bug: modifies its input
        return x, None

    x = probe()
    original = x.copy()
    train, evaluate = from_cs231n(spy)
    train(x, 0.25)
    evaluate(x, 0.25)
    assert seen[0][0] is x
    assert [p for _, p in seen] == [{"p": 0.25, "mode": "train"}, {"p": 0.25, "mode": "test"}]
    assert np.array_equal(x, 4 * original)  # the mutation reached the caller's array


def test_cs231n_backward():
    x = probe()
    upstream = np.random.default_rng(8).standard_normal(x.shape)
    np.random.seed(4)
    y, dx = cs231n_backward(cs_keep.dropout_forward, cs_keep.dropout_backward)(x, upstream, 0.7)
    kept = y != 0
    np.testing.assert_allclose(dx, upstream * kept / 0.7, rtol=4 * np.finfo(float).eps, atol=0)


def test_cs231n_errors_pass_through_with_context():
    def broken(x, dropout_param):
        raise KeyError("seed")

    with pytest.raises(KeyError) as info:
        from_cs231n(broken)[0](probe(), 0.5)
    assert any("from_cs231n" in note for note in getattr(info.value, "__notes__", []))
    with pytest.raises(TypeError, match=r"must return \(out, cache\)"):
        from_cs231n(lambda x, d: x)[0](probe(), 0.5)


def test_cs231n_input_validation():
    with pytest.raises(ValueError, match=r"`p_means` must be one of 'keep', 'drop'; got 'rate'"):
        from_cs231n(cs_keep.dropout_forward, p_means="rate")
    with pytest.raises(ValueError, match=r"`p_means` must be one of 'keep', 'drop'; got None"):
        cs231n_backward(cs_keep.dropout_forward, cs_keep.dropout_backward, p_means=None)
    with pytest.raises(TypeError, match=r"`forward` must be callable"):
        from_cs231n("dropout_forward")


# --- ready-made Implementations -------------------------------------------------------------

def test_course_and_cs231n_implementations_run_the_backward_check():
    from stats_dropout.verification import battery as checks

    def run(impl, check_id):
        return dict(checks.iter_checks(impl))[check_id](impl)

    impl = adapters.course_implementation(course.forward_propagation_with_dropout,
                                          course.backward_propagation_with_dropout, layer=2, keep_prob=0.5)
    assert impl.validates_keep_prob is False and impl.keep_prob == 0.5
    assert impl.example_input.shape == adapters.COURSE_PROBE_SHAPE
    assert run(impl, "check_backward_mask[keep_prob=0.5]").status == "passed"
    assert "check_invalid_keep_prob[keep_prob=0.5]" not in dict(checks.iter_checks(impl))  # does not validate
    broken = adapters.course_implementation(course_no_rescale.forward_propagation_with_dropout,
                                            course_no_rescale.backward_propagation_with_dropout, layer=2)
    assert run(broken, "check_backward_mask[keep_prob=0.8]").status == "failed"
    cs = adapters.cs231n_implementation(cs_keep.dropout_forward, cs_keep.dropout_backward)
    assert cs.name == "dropout_forward" and cs.eval is not None
    assert run(cs, "check_backward_mask[keep_prob=0.8]").status == "passed"


# --- convention detection ---------------------------------------------------------------------

def test_detect_convention():
    assert detect_convention(course.forward_propagation_with_dropout) == "course"
    assert detect_convention(lambda X, parameters, keep_prob: X) == "course"
    assert detect_convention(cs_keep.dropout_forward) == "cs231n"
    assert detect_convention(lambda x, dropout_param: x) == "cs231n"
    assert detect_convention(plain.dropout) == "plain"
    assert detect_convention(plain.dropout_fixed) == "plain"
    assert detect_convention(np.negative) == "plain"  # no signature: a plain callable


# --- PyTorch ----------------------------------------------------------------------------------

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_torch_spec_table(torch):
    nn = torch.nn
    table = [
        (nn.Dropout(0.25), {"keep_prob": 0.75, "contract": "inverted", "shared_axes": ()}),
        (nn.Dropout1d(0.5), {"keep_prob": 0.5, "contract": "inverted", "shared_axes": "spatial"}),
        (nn.Dropout2d(0.5), {"keep_prob": 0.5, "contract": "inverted", "shared_axes": "spatial"}),
        (nn.Dropout3d(0.0), {"keep_prob": 1.0, "contract": "inverted", "shared_axes": "spatial"}),
        (nn.AlphaDropout(0.1), {"keep_prob": 0.9, "contract": "moments", "shared_axes": ()}),
        (nn.FeatureAlphaDropout(0.2), {"keep_prob": 0.8, "contract": "moments", "shared_axes": "spatial"}),
    ]
    for module, expected in table:
        assert adapters.torch_spec(module) == expected, type(module).__name__


def test_torch_implementation(torch):
    impl = adapters.torch_implementation(torch.nn.Dropout2d(0.5))
    assert (impl.keep_prob, impl.contract, impl.shared_axes, impl.name) == (0.5, "inverted", "spatial",
                                                                           "Dropout2d(p=0.5)")


def test_torch_spec_input_validation(torch):
    with pytest.raises(ValueError, match=r"`module.p` must be in \[0, 1\) .*; got 1.0"):
        adapters.torch_spec(torch.nn.Dropout(1.0))
    with pytest.raises(TypeError, match="got Linear"):
        adapters.torch_spec(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"`module` must be a torch.nn.Module; got 'Dropout'"):
        adapters.torch_spec("Dropout")
    with pytest.raises(TypeError, match=r"`module` must be a torch.nn.Module"):
        adapters.from_torch(np.negative)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_torch_dropout_train_and_eval(torch, dtype):
    module = torch.nn.Dropout(0.2)
    train, evaluate = adapters.from_torch(module)
    x = probe().astype(dtype)
    original = x.copy()
    torch.manual_seed(0)
    y = train(x)
    assert isinstance(y, np.ndarray)
    assert_inverted_dropout(x, y, 0.8, rtol=2 * np.finfo(dtype).eps)
    assert np.array_equal(evaluate(x), x) and evaluate(x).dtype == dtype
    assert np.array_equal(x, original)
    torch.manual_seed(0)
    assert np.array_equal(train(x), y)  # draws from torch's global RNG, which the battery seeds


@pytest.mark.parametrize("make", [
    lambda nn: nn.Dropout(0.2),
    lambda nn: nn.Dropout2d(0.2),
    lambda nn: nn.AlphaDropout(0.2),
    lambda nn: nn.FeatureAlphaDropout(0.2),
], ids=["Dropout", "Dropout2d", "AlphaDropout", "FeatureAlphaDropout"])
def test_torch_modules_pass_the_battery(torch, make):
    import stats_dropout as sd

    module = make(torch.nn)
    result = sd.verify_dropout(*adapters.from_torch(module), **adapters.torch_spec(module))
    assert result.passed, str(result)
    assert module.training  # a fresh module is in train mode, and stays so


def test_torch_mode_is_restored_for_every_submodule(torch):
    nn = torch.nn
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.5)))
    model.train()
    model[2].eval()  # mixed modes: a blanket model.train(flag) would not restore this
    before = [m.training for m in model.modules()]
    train, evaluate = adapters.from_torch(model)
    x = np.ones((4, 3), dtype=np.float32)
    assert train(x).shape == (4, 3)  # parameters require grad: no_grad makes .numpy() work
    assert [m.training for m in model.modules()] == before
    evaluate(x)
    assert [m.training for m in model.modules()] == before

    class Exploding(nn.Module):
        def forward(self, t):
            raise RuntimeError("kaboom")

    boom = Exploding().eval()
    with pytest.raises(RuntimeError, match="kaboom") as info:
        adapters.from_torch(boom)[0](x)
    assert not boom.training
    assert any("train mode" in note for note in getattr(info.value, "__notes__", []))


def test_torch_inplace_mutation_is_visible(torch):
    train, _ = adapters.from_torch(torch.nn.Dropout(0.5, inplace=True))
    x = probe()
    original = x.copy()
    torch.manual_seed(1)
    train(x)
    assert not np.array_equal(x, original)


def test_torch_read_only_input(torch):
    x = probe()
    x.setflags(write=False)
    train, evaluate = adapters.from_torch(torch.nn.Dropout(0.5))
    assert train(x).shape == x.shape and np.array_equal(evaluate(x), x)


CHANNEL_SHAPES = [(64, 64), (16, 8, 5), (8, 6, 3, 4), (4, 5, 2, 3, 2)]


def assert_one_mask_per_sample_and_channel(dropped, shape):
    dropped = dropped.reshape(shape[0], shape[1], -1)
    # One mask entry per (sample, channel), shared over every spatial position ...
    assert np.array_equal(dropped, np.broadcast_to(dropped[..., :1], dropped.shape))
    # ... and not one per channel shared over the batch (torch's unbatched reading of 2-D input).
    per = dropped[..., 0]
    assert np.any(per != per[:1]) and np.any(per != per[:, :1])


@pytest.mark.parametrize("cls", ["Dropout1d", "Dropout2d", "Dropout3d"])
@pytest.mark.parametrize("shape", CHANNEL_SHAPES)
def test_torch_channel_dropout_masks_whole_channels(torch, cls, shape):
    train, evaluate = adapters.from_torch(getattr(torch.nn, cls)(0.5))
    x = np.random.default_rng(2).uniform(1, 2, size=shape)  # nonzero: a dropped unit is a 0
    torch.manual_seed(3)
    y = train(x)
    assert y.shape == shape
    assert set(np.unique(y / x).tolist()) == {0.0, 2.0}
    assert_one_mask_per_sample_and_channel(y == 0, shape)
    assert np.array_equal(evaluate(x), x)


@pytest.mark.parametrize("shape", CHANNEL_SHAPES)
def test_torch_feature_alpha_dropout_masks_whole_channels(torch, shape):
    train, evaluate = adapters.from_torch(torch.nn.FeatureAlphaDropout(0.5))
    x = np.random.default_rng(2).uniform(1, 2, size=shape)
    torch.manual_seed(3)
    y = train(x)
    # Dropped units all take alpha dropout's one saturation value, which no kept unit
    # (an increasing affine map of x in [1, 2]) reaches.
    values, counts = np.unique(y, return_counts=True)
    assert y.shape == shape and counts.max() > 1
    assert_one_mask_per_sample_and_channel(y == values[np.argmax(counts)], shape)
    assert np.array_equal(evaluate(x), x)


# --- property: the sign split is exact for any finite input -----------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(x=arrays(np.float64, array_shapes(min_dims=1, max_dims=3, max_side=6),
                elements=st.floats(-1e300, 1e300, allow_subnormal=True)),
       keep_prob=st.sampled_from([0.1, 0.3, 0.5, 0.8, 1.0]),
       layer=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_course_output_is_exactly_mask_times_x_over_keep_prob(x, keep_prob, layer, seed):
    np.random.seed(seed)
    y = from_course(course.forward_propagation_with_dropout, layer=layer)(x, keep_prob)
    assert y.shape == x.shape
    kept = y != 0
    assert np.array_equal(y[kept], x[kept] / keep_prob)
    if keep_prob == 1.0:
        assert np.array_equal(y, x)
