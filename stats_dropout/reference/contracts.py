"""What each contract promises, value by value (DESIGN.md "contract"; THEORY.md §1, §5).

``inverted``  kept units ``x/p``, dropped 0, eval identity, ``E[train] = x``.
``standard``  kept units ``x``, dropped 0, eval ``p·x``, ``E[train] = p·x`` (Srivastava).
``gaussian``  ``y = x·r``, ``r ~ N(1, (1−p)/p)``, eval identity.
``moments``   alpha dropout: kept ``a·x + b``, dropped ``a·α' + b``, eval identity; output mean
              0 and variance 1 for N(0, 1) inputs.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from stats_dropout._internal.numerics import EXACT_ULPS, ulp_tol
from stats_dropout._internal.validation import is_real_float_dtype
from stats_dropout.reference import theory
from stats_dropout.reference.schemes import DropoutScheme, get_scheme

CONTRACTS = ("inverted", "standard", "gaussian", "moments")

#: Float dtypes an implementation may round its scale in, highest precision first (ml_dtypes'
#: bfloat16 only when ml_dtypes is installed; see :func:`lower_float_dtypes`).
_SCALE_DTYPES = ("float64", "float32", "float16", "bfloat16")


def _eps(dtype):
    return ulp_tol(dtype, 1)


def lower_float_dtypes(dtype, compute_dtype=None):
    """The dtypes a kept unit's scale may be rounded in: ``dtype`` and every lower-precision one.

    The output dtype, ``compute_dtype`` (``Implementation.compute_dtype``) and the standard float
    dtypes of lower precision than the output (float32; float16 and bfloat16 only where a 16-bit
    output or compute dtype is in play): a framework may hold its noise in any of them (torch
    rounds ``1/keep_prob`` to bfloat16 for a bfloat16 tensor; float32 noise on a float64 input).
    Rounding is a discrete set of values, never a band, so accepting them does not admit a wrong
    scale such as ``1.01/keep_prob``.
    """
    out = [np.dtype(dtype)]
    if compute_dtype is not None and is_real_float_dtype(compute_dtype):
        out.append(np.dtype(compute_dtype))
    # A 16-bit scale is a legitimate rounding only where 16-bit arithmetic is in play (a 16-bit
    # output or a declared 16-bit compute dtype); for float32/float64 outputs only float32 noise
    # is accepted undeclared (float32 noise on float64 input), so a float64 function that rounds
    # its scale to float16 is still caught (a 0.05 % scale error, not a rounding of its dtype).
    floor = min(_eps(d) for d in out) if out[1:] else _eps(dtype)
    sixteen_bit = max(_eps(d) for d in out) >= _eps(np.float16) or floor >= _eps(np.float16)
    for name in _SCALE_DTYPES:
        try:
            d = np.dtype(name)
        except TypeError:  # bfloat16 is ml_dtypes': only if it is loaded (a bfloat16 user has it;
            ml = sys.modules.get("ml_dtypes")  # importing it costs a second otherwise)
            if ml is None:
                continue
            d = np.dtype(getattr(ml, name))
        if _eps(d) > _eps(dtype) and d not in out and (sixteen_bit or _eps(d) < _eps(np.float16)):
            out.append(d)
    return tuple(out)


def subnormal_spacing(dtype):
    """Spacing of ``dtype``'s subnormal numbers (its smallest subnormal): below the smallest
    normal number rounding is absolute, up to half of it, not relative (float16: 6e-8)."""
    try:
        info = np.finfo(dtype)
    except (TypeError, ValueError):  # ml_dtypes types carry their own finfo
        import ml_dtypes

        info = ml_dtypes.finfo(dtype)
    return float(info.smallest_subnormal)


def _rounded(value, dtype):
    return float(np.asarray(value, dtype=np.float64).astype(dtype).astype(np.float64))


@dataclasses.dataclass(frozen=True)
class KeptForm:
    """One way a correct implementation may compute a kept unit: ``slope·x + offset``.

    ``label`` says how it was rounded (``"1/keep_prob"``, ``"1/keep_prob rounded to bfloat16"``);
    ``bias`` is the relative error of the slope, ``slope/exact − 1`` (``s·keep_prob − 1``).
    """

    label: str
    slope: float
    offset: float
    bias: float

_SCHEME_OF = {"inverted": "inverted", "standard": "standard", "gaussian": "gaussian", "moments": "alpha"}


@dataclasses.dataclass(frozen=True)
class ContractModel:
    """Expected values under a contract, with the mask-sharing axes the implementation claims."""

    name: str
    scheme: DropoutScheme

    @classmethod
    def of(cls, name, shared_axes=()):
        base = get_scheme(_SCHEME_OF[name])
        return cls(name, dataclasses.replace(base, shared_axes=shared_axes))

    @property
    def shared_axes(self):
        return self.scheme.shared_axes

    @property
    def noise(self):
        return self.scheme.noise

    @property
    def homogeneous(self):
        """Whether the contract commutes with scaling, ``train(c·x) ≅ c·train(x)``: every contract
        but alpha dropout's (its dropped value ``a·α' + b`` does not scale)."""
        return self.noise != "alpha"

    @property
    def has_masks(self):
        """Bernoulli-type contracts: every output is either a kept or a dropped value."""
        return self.noise in ("bernoulli", "alpha")

    def mean(self, x, p):
        return self.scheme.train_mean(x, p)

    def var(self, x, p):
        return self.scheme.train_var(x, p)

    def eval_value(self, x, p):
        return p * x if self.name == "standard" else x

    def dropped_value(self, x, p):
        if self.noise == "alpha":
            return np.full(np.shape(x), theory.alpha_dropped_value(p))
        return np.zeros(np.shape(x))

    def kept_value(self, x, p):
        if self.noise == "alpha":
            a, b = theory.alpha_affine(p)
            return a * x + b
        return x / p if self.name == "inverted" else x * 1.0

    def kept_magnitude(self, x, p):
        """Size of the terms that make up a kept value, for floating-point tolerances.

        Alpha dropout's kept value ``a·x + b`` can be near 0 while ``a·x`` and ``b`` are not;
        implementations that evaluate it in another order (torch) differ by a few ulp of those
        terms, not of their sum.
        """
        if self.noise == "alpha":
            a, b = theory.alpha_affine(p)
            return np.abs(a * x) + abs(b)
        return np.abs(self.kept_value(x, p))

    def kept_forms(self, p, dtypes):
        """The kept values a correct implementation may return: exact, or rounded in ``dtypes``.

        Inverted: ``x·s`` with ``s`` one of ``1/p``, ``fl(1/p)``, ``1/fl(p)``, ``fl(1/fl(p))`` in
        each dtype (multiply by the rounded reciprocal; divide by the rounded keep_prob; divide a
        rounded 1 by it). Standard: ``x``. Alpha: ``a·x + b`` with ``a``, ``b`` exact or rounded.
        Exactly one rounding into the output dtype then remains (:meth:`kept_tolerance`).
        """
        if self.noise == "alpha":
            a, b = (float(v) for v in theory.alpha_affine(p))
            forms = [KeptForm("a·x + b", a, b, 0.0)]
            for d in dtypes:
                ad, bd = _rounded(a, d), _rounded(b, d)
                forms.append(KeptForm(f"a·x + b with a, b rounded to {d}", ad, bd, ad / a - 1))
            return _unique(forms)
        if self.name != "inverted":
            return (KeptForm("x", 1.0, 0.0, 0.0),)
        exact = 1.0 / p
        forms = [KeptForm("1/keep_prob", exact, 0.0, 0.0)]
        for d in dtypes:
            pd = _rounded(p, d)
            for label, s in ((f"1/keep_prob rounded to {d}", _rounded(exact, d)),
                             (f"1/keep_prob with keep_prob rounded to {d}", 1.0 / pd),
                             (f"1/keep_prob computed in {d}", _rounded(1.0 / pd, d))):
                forms.append(KeptForm(label, s, 0.0, s * p - 1.0))
        return _unique(forms)

    def kept_tolerance(self, x, p, dtype, forms=None):
        """Absolute tolerance of a kept unit against one of :meth:`kept_forms`.

        Bernoulli: after a rounded scale of :meth:`kept_forms` one rounding into the output dtype
        remains (≤ half an ulp ≤ ``eps/2 · |v|``); allowed: one ulp (``eps · |v|``, room for a
        second rounding, e.g. a float32 product cast to bfloat16) plus ``EXACT_ULPS`` ulps of
        float64 (keep_prob converted as ``1 − (1 − p)``, the float64 comparison itself). It stays
        below any real scale error: ``1.01/keep_prob`` is 1 % off, one bfloat16 ulp is 0.78 %
        and a bfloat16 rounding moves a value by at most 0.39 %.
        Alpha: ``a·x + b`` takes several roundings of terms that may cancel: ``EXACT_ULPS`` ulps
        of the output dtype of the terms' size ``|a·x| + |b|`` (:meth:`kept_magnitude`).
        """
        if self.noise == "alpha":
            return ulp_tol(dtype, EXACT_ULPS) * self.kept_magnitude(x, p) + subnormal_spacing(dtype)
        rel = ulp_tol(dtype, 1) + ulp_tol(np.float64, EXACT_ULPS)
        slope = max(abs(f.slope) for f in (self.kept_forms(p, ()) if forms is None else forms))
        # |v| ≤ largest slope · |x|; a subnormal output is rounded to a multiple of the smallest
        # subnormal (absolute error ≤ half of it; allowed: one spacing).
        return rel * slope * np.abs(np.asarray(x, dtype=np.float64)) + subnormal_spacing(dtype)

    def dropped_tolerance(self, x, p, dtype):
        """Absolute tolerance of a dropped unit: ``EXACT_ULPS`` ulps of the dropped value's terms.

        Bernoulli's dropped value is 0 (a kept unit is at least ``|x|``, so the band ``8 ulp · |x|``
        never swallows one); alpha's ``a·α' + b`` is computed from two terms of size
        ``|a α'|`` and ``|b|`` (torch builds it as ``(noise − 1)·α a + α a (1 − q)``).
        """
        if self.noise == "alpha":
            a, b = theory.alpha_affine(p)
            return np.full(np.shape(x), ulp_tol(dtype, EXACT_ULPS) * (abs(a * theory.ALPHA_PRIME) + abs(b)))
        return ulp_tol(dtype, EXACT_ULPS) * np.abs(x)

    def observable(self, x, p, dtype, forms=None):
        """Units whose kept and dropped values can be told apart in ``dtype``.

        A unit is observable when every form of its kept value is farther from the dropped value
        than the two tolerances together: then a correct kept output (within
        :meth:`kept_tolerance` of its form) is never within :meth:`dropped_tolerance` of the
        dropped value. Bernoulli: ``x ≠ 0``. Alpha: ``x`` not within rounding of ``α'``, where
        ``a·x + b = a·α' + b`` — such a unit looks dropped whatever the mask (DESIGN "units where
        kept and dropped values coincide are unobservable").
        """
        x = np.asarray(x, dtype=np.float64)
        if self.noise != "alpha":
            return x != 0
        forms = self.kept_forms(p, ()) if forms is None else forms
        d = self.dropped_value(x, p)
        gap = np.min([np.abs(f.slope * x + f.offset - d) for f in forms], axis=0)
        return gap > self.kept_tolerance(x, p, dtype, forms) + self.dropped_tolerance(x, p, dtype)

    def expected_scale(self, p):
        """Kept value per unit of input: ``1/p``, ``1`` or alpha's ``a``."""
        if self.noise == "alpha":
            return float(theory.alpha_affine(p)[0])
        return 1.0 / p if self.name == "inverted" else 1.0

    def scale_of(self, y, x, p):
        """Measured kept-unit scale (comparable with :meth:`expected_scale`)."""
        if self.noise == "alpha":
            _, b = theory.alpha_affine(p)
            return (y - b) / x
        return y / x


def _unique(forms):
    seen, out = set(), []
    for f in forms:
        if (f.slope, f.offset) not in seen:
            seen.add((f.slope, f.offset))
            out.append(f)
    return tuple(out)
