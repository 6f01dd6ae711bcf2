"""The calibration's implementations: inputs, correct implementations, and bugs at stated effects.

:data:`SHAPES` and :func:`make_input` are the inputs, :data:`CORRECT` the correct implementations of
the null study (:mod:`.calibration`); the rest is the power study's.

For every statistical check, :data:`POWER_DESIGNS` names a design (contract, input, keep_prob)
and a bug whose error, in the check's own units, is a number ``effect``. :func:`power_study`
first runs the *correct* implementation of the same class (``effect = 0``: same signature,
contract, probe, so the same draws and the same per-check share) and reads the check's stated
``min_detectable_effect``; it then builds the bug at exactly that effect and runs the check over
``seeds`` seeds. A check passing a bug of its stated effect more often than its stated
false-pass rate (the Clopper–Pearson interval of the measured rate entirely above it) has
overstated its power. Only the target check's own status is counted (through
:func:`~stats_dropout.verification.battery.iter_checks`), whatever other checks would say.

The bugs keep the marginal keep rate ``p`` unless the keep rate is the error:

========================  ==================================================================
bug                       construction (effect ``e``)
========================  ==================================================================
keep_rate                 every unit kept with probability ``p − e``
position / channel / unit one position (column 0) / channel 0 / unit 0 kept at ``p ∓ e``
input                     the two large-``|x|`` sign groups kept at ``p + e/2`` and ``p − e/2``
scale                     kept values ``(1 + e) x / p`` (relative mean error ``e``)
calls_over                a per-call rate ``p ± τ`` (random sign): Var K = (1 + e) N p (1 − p)
calls_under               with probability ``e`` a call keeps exactly ``round(N p)`` units
rows_over / rows_under    the same per row of the batch
markov_units / _rows      along the last axis / the batch axis: copy the neighbour's mask entry
                          with probability ``e``, else a fresh draw (neighbour correlation ``e``)
markov_calls              copy the previous call's mask entry with probability ``e``
noise_mixture             Gaussian noise ``1 + σ Z``, Z Rademacher with probability ``w``, else
                          N(0, 1): mean and variance exact, sup-distance ``w (Φ(1) − 1/2) = e``
noise_scale / noise_unit  noise ``(1 + e)(1 + σ Z)`` / unit 0's noise mean ``1 + e``
noise_variance            noise ``1 + σ √(1 + e) Z``: variance ratio ``1 + e``
alpha_rate                alpha dropout keeping at ``p − ε`` (affine of ``p``): output mean
                          off by ``e`` (``ε = e / (a · mean(x − α'))``)
========================  ==================================================================
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from stats_dropout.reference import theory
from stats_dropout.reference.schemes import get_scheme
from stats_dropout.verification.implementation import Implementation

__all__ = ["SHAPES", "make_input", "CORRECT", "numpy_inverted", "numpy_float32", "identity", "BuggyDropout",
           "BuggyGaussian", "BuggyAlpha", "POWER_DESIGNS", "PROBE_SEED", "buggy_implementation"]

#: name -> (shape, description) of the study's inputs.
SHAPES = {
    "tiny": ((4, 8), "N(0, 1), 4 × 8 (draws capped at the battery's maximum)"),
    "2d": ((64, 128), "N(0, 1), 64 × 128"),
    "4d": ((8, 4, 8, 8), "N(0, 1), 8 × 4 × 8 × 8 (channels on axis 1)"),
    "zeros": ((8, 4, 8, 8), "N(0, 1) with half the entries (at random) exactly 0, 8 × 4 × 8 × 8"),
    "lognormal": ((16, 64), "|x| = exp(3 Z), Z ~ N(0, 1), random signs, 16 × 64"),
}

_INPUT_STREAM, _IMPL_STREAM = 71, 72


def make_input(shape, seed):
    """The input of shape ``shape`` (a :data:`SHAPES` name) for ``seed``: float64, seeded."""
    dims = SHAPES[shape][0]
    rng = np.random.default_rng([seed, _INPUT_STREAM, list(SHAPES).index(shape)])
    x = rng.standard_normal(dims)
    if shape == "zeros":
        flat = x.reshape(-1)
        flat[rng.permutation(flat.size)[: flat.size // 2]] = 0.0
    elif shape == "lognormal":
        x = np.exp(3.0 * x) * rng.choice(np.array([-1.0, 1.0]), size=dims)
    return x


# --- correct implementations --------------------------------------------------------------
def numpy_inverted(x, keep_prob):
    """Inverted dropout as course code writes it, with keep_prob validated."""
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def numpy_float32(x):
    """Inverted dropout at keep_prob 0.6 computed in float32 (mask, scale and output)."""
    p = np.float32(0.6)
    return x * (np.random.rand(*x.shape) < p).astype(np.float32) / p


def identity(x):
    return x.copy()


def _scheme(name, p, contract):
    def build(x, seed):
        bound = get_scheme(name).bind(p, rng=np.random.default_rng([seed, _IMPL_STREAM]))
        return dict(train=bound, eval=bound.eval, keep_prob=p, contract=contract, example_input=x)

    return build


def _numpy(x, seed):
    return dict(train=numpy_inverted, eval=identity, keep_prob=0.8, example_input=x)


def _float32(x, seed):
    return dict(train=numpy_float32, eval=identity, keep_prob=0.6, example_input=x.astype(np.float32))


def _torch(x, seed):
    import torch

    return dict(train=torch.nn.Dropout(0.5), example_input=x.astype(np.float32))


#: name -> (description, builder(x, seed) -> verify_dropout keyword arguments).
CORRECT = {
    "numpy": ("x * (np.random.rand(*x.shape) < p) / p, f(x, keep_prob) with validation: tested at 0.8 and 0.3",
              _numpy),
    "float32": ("the same in float32, f(x) at keep_prob 0.6", _float32),
    "reference": ("get_scheme('inverted').bind(0.7), its own Generator", _scheme("inverted", 0.7, "inverted")),
    "standard": ("get_scheme('standard').bind(0.9): kept x, eval p·x (contract 'standard')",
                 _scheme("standard", 0.9, "standard")),
    "torch": ("torch.nn.Dropout(0.5) through the torch adapter (float32)", _torch),
    "gaussian": ("get_scheme('gaussian').bind(0.8): x · N(1, (1 − p)/p) (contract 'gaussian')",
                 _scheme("gaussian", 0.8, "gaussian")),
    "alpha": ("get_scheme('alpha').bind(0.9): alpha dropout (contract 'moments')", _scheme("alpha", 0.9, "moments")),
}


#: Seed of the fixed probe every power design uses.
PROBE_SEED = 12
#: Sup-distance of a Rademacher variable from N(0, 1): at t = −1 (and just below +1).
RADEMACHER_KS = float(sps.norm.cdf(1.0) - 0.5)


class BuggyDropout:
    """Inverted dropout ``f(x)`` at keep_prob ``p`` with one bug of size ``effect`` (0: correct)."""

    def __init__(self, kind, p, effect, x):
        self.kind, self.p, self.e = kind, float(p), float(effect)
        self.big = np.abs(x) > np.median(np.abs(x))  # the battery's input groups: sign × |x| vs median
        self.sign = np.sign(x)
        self.previous = None

    def _rate(self, shape):
        p, e, kind = self.p, self.e, self.kind
        rate = np.full(shape, p)
        if kind == "keep_rate":
            rate[...] = p - e
        elif kind == "position":
            rate[(slice(None),) + (0,) * (len(shape) - 1)] = p + e
        elif kind == "channel":
            rate[:, 0] = p + e
        elif kind == "unit":
            rate[(0,) * len(shape)] = p + e
        elif kind == "input":
            rate[self.big & (self.sign > 0)] = p + e / 2
            rate[self.big & (self.sign < 0)] = p - e / 2
        elif kind == "calls_over":
            tau = math.sqrt(e * p * (1 - p) / max(int(np.prod(shape)) - 1, 1))
            rate[...] = p + tau * (1 if np.random.rand() < 0.5 else -1)
        elif kind == "rows_over":
            tau = math.sqrt(e * p * (1 - p) / max(int(np.prod(shape[1:])) - 1, 1))
            signs = np.where(np.random.rand(shape[0]) < 0.5, 1.0, -1.0)
            rate = rate + (tau * signs).reshape((-1,) + (1,) * (len(shape) - 1))
        return rate

    @staticmethod
    def _fixed_count(size, p):
        m = np.zeros(size, dtype=bool)
        m[np.random.permutation(size)[: round(size * p)]] = True
        return m

    def mask(self, shape):
        p, e, kind = self.p, self.e, self.kind
        m = np.random.rand(*shape) < self._rate(shape)
        if kind == "calls_under" and np.random.rand() < e:
            m = self._fixed_count(m.size, p).reshape(shape)
        elif kind == "rows_under":
            rows = m.reshape(shape[0], -1)
            for r in np.flatnonzero(np.random.rand(shape[0]) < e):
                rows[r] = self._fixed_count(rows.shape[1], p)
        elif kind in ("markov_units", "markov_rows"):
            axis = len(shape) - 1 if kind == "markov_units" else 0
            m = np.moveaxis(m, axis, 0).copy()
            copy = np.random.rand(*m.shape) < e
            for j in range(1, m.shape[0]):
                m[j] = np.where(copy[j], m[j - 1], m[j])
            m = np.moveaxis(m, 0, axis)
        elif kind == "markov_calls":
            if self.previous is not None:
                m = np.where(np.random.rand(*shape) < e, self.previous, m)
            self.previous = m
        return m

    def __call__(self, x):
        scale = (1 + self.e) if self.kind == "scale" else 1.0
        return x * self.mask(x.shape) * (scale / self.p)


class BuggyGaussian:
    """Gaussian dropout ``x (1 + σ Z)``, σ² = (1 − p)/p, with one bug of size ``effect``."""

    def __init__(self, kind, p, effect, x):
        self.kind, self.p, self.e = kind, float(p), float(effect)

    def __call__(self, x):
        sd = math.sqrt((1 - self.p) / self.p)
        z = np.random.standard_normal(x.shape)
        if self.kind == "noise_mixture":
            rademacher = np.where(np.random.rand(*x.shape) < 0.5, 1.0, -1.0)
            z = np.where(np.random.rand(*x.shape) < self.e / RADEMACHER_KS, rademacher, z)
        elif self.kind == "noise_variance":
            z = z * math.sqrt(1 + self.e)
        noise = 1 + sd * z
        if self.kind == "noise_scale":
            noise = noise * (1 + self.e)
        elif self.kind == "noise_unit":
            noise[(0,) * x.ndim] += self.e
        return x * noise


class BuggyAlpha:
    """Alpha dropout (affine of keep_prob ``p``) whose mask keeps at ``p − ε``: output mean off by ``effect``."""

    def __init__(self, kind, p, effect, x):
        self.p = float(p)
        self.a, self.b = (float(v) for v in theory.alpha_affine(p))
        self.rate = self.p - float(effect) / (self.a * float(np.mean(x - theory.ALPHA_PRIME)))

    def __call__(self, x):
        m = np.random.rand(*x.shape) < self.rate
        return self.a * np.where(m, x, theory.ALPHA_PRIME) + self.b


_CLASSES = {"inverted": BuggyDropout, "gaussian": BuggyGaussian, "moments": BuggyAlpha}

#: row -> (check, contract, shape, keep_prob, bug kind, the error in words).
POWER_DESIGNS = {
    "keep_rate": ("check_keep_rate", "inverted", "2d", 0.8, "keep_rate", "every unit kept at p − e"),
    "position": ("check_keep_rate_per_position", "inverted", "2d", 0.8, "position", "column 0 kept at p ∓ e"),
    "channel": ("check_keep_rate_per_channel", "inverted", "4d", 0.8, "channel", "channel 0 kept at p ∓ e"),
    "input": ("check_keep_rate_vs_input", "inverted", "2d", 0.8, "input", "large |x|: x>0 at p + e/2, x<0 at p − e/2"),
    "mean": ("check_mean", "inverted", "2d", 0.8, "scale", "kept values (1 + e) x / p"),
    "unit": ("check_mean_per_unit", "inverted", "2d", 0.8, "unit", "unit 0 kept at p ∓ e"),
    "variance_over": ("check_variance", "inverted", "2d", 0.8, "calls_over", "per-call rate p ± τ: ratio 1 + e"),
    "variance_under": ("check_variance", "inverted", "2d", 0.8, "calls_under", "fixed count w.p. e: ratio 1 − e"),
    "rows_over": ("check_row_dispersion", "inverted", "2d", 0.8, "rows_over", "per-row rate p ± τ: ratio 1 + e"),
    "rows_under": ("check_row_dispersion", "inverted", "2d", 0.8, "rows_under", "row fixed count w.p. e: ratio 1 − e"),
    "units": ("check_independence_units", "inverted", "2d", 0.8, "markov_units", "copy left neighbour w.p. e"),
    "rows": ("check_independence_rows", "inverted", "2d", 0.8, "markov_rows", "copy previous row w.p. e"),
    "calls": ("check_independence_calls", "inverted", "2d", 0.8, "markov_calls", "copy previous call w.p. e"),
    "noise": ("check_noise_distribution", "gaussian", "2d", 0.8, "noise_mixture", "Rademacher noise w.p. e/0.341"),
    "gaussian_mean": ("check_mean", "gaussian", "2d", 0.8, "noise_scale", "noise (1 + e)(1 + σZ)"),
    "gaussian_unit": ("check_mean_per_unit", "gaussian", "2d", 0.8, "noise_unit", "unit 0 noise mean 1 + e"),
    "gaussian_variance": ("check_variance", "gaussian", "2d", 0.8, "noise_variance", "noise sd σ√(1 + e)"),
    "moments": ("check_output_moments", "moments", "2d", 0.9, "alpha_rate", "alpha mask at p − ε: mean off by e"),
}


def buggy_implementation(row, effect):
    """``(Implementation, check, keep_prob)`` of design ``row`` with its bug at ``effect`` (0: correct)."""
    check, contract, shape, p, kind, _ = POWER_DESIGNS[row]
    x = make_input(shape, PROBE_SEED)
    train = _CLASSES[contract](kind, p, effect, x)
    eval_ = None if contract == "moments" else identity
    return Implementation(train, eval_, keep_prob=p, contract=contract, example_input=x), check, p
