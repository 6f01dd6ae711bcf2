"""The null model of an op linear in its dropout mask, and its checks (docs/THEORY.md §8).

An op ``out = offset + Σ_k L_k m_k / p`` with ``m_k ~ Bernoulli(p)`` iid is described by its
loadings ``L``. Its output axes split into *group* axes (each index owns its mask entries,
independent of every other group's) and *unit* axes (units of one group share its entries):
internally ``L`` has the shape ``(G, U, K)`` — groups, units, entries. Writing
``z_k = m_k / p − 1`` (mean 0, variance ``σ² = (1 − p)/p``, fourth moment ``μ₄``), the residual
of group g is ``e_g = out_g − ref_g = L_g z_g``. Every statistic is a linear or quadratic form
in z, so its null mean and variance are exact although the units of a group are dependent (no
t test over draws): the mean on the GLS estimate of a scale error, the variance ratio on
``Σ e²``, the independence statistics on the ridge estimate of the mask
``w_g = L_gᵀ(L_gL_gᵀ + τ)⁻¹ e_g = Π_g z_g``, whose flat spectrum keeps a few strong directions
from dominating. Traces are computed in the eigenbasis of ``L_gL_gᵀ`` (r = min(U, K) values).

One draw gives one value of each statistic; :class:`LinearModel` holds, per statistic, the
standard deviation of one value under the null (``sd``) and a rounding dead band (``band``: the
largest bias that rounding each output by ``ulp_tol(dtype, MOMENT_ULPS)`` of its summed terms
could cause).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from stats_dropout._internal.numerics import MOMENT_ULPS, ulp_tol
from stats_dropout.inference.montecarlo import RunningMoments
from stats_dropout.inference.stats import decide_mean_equal
from stats_dropout.verification.checks.common import exact_decision, failed, passed, skipped
from stats_dropout.verification.diagnosis import identical_masks_cause

__all__ = ["LinearModel", "decide_statistic", "fixed_units_result", "reference_result", "diagnose_linear"]


def _frob2(x):
    """``Σ x²`` (squared Frobenius norms of a stack of matrices, summed)."""
    return float(np.sum(x * x))


#: Ridge of the independence statistics' mask estimate, relative to a group's mean eigenvalue
#: of LLᵀ: directions far weaker than that (where rounding could dominate) are damped.
RIDGE = 1e-3


def _spectrum(lo):
    """Eigenvalues ``λ`` (G, r) and eigenvectors ``Q`` (G, U, r) of ``L Lᵀ`` per group, r = min(U, K)."""
    u, k = lo.shape[1:]
    if u <= k:
        lam, q = np.linalg.eigh(np.einsum("guk,gvk->guv", lo, lo))
    else:  # L = Q₁R₁: the nonzero spectrum of LLᵀ is that of R₁R₁ᵀ (K × K)
        q1, r1 = np.linalg.qr(lo)
        lam, v = np.linalg.eigh(np.einsum("grk,gsk->grs", r1, r1))
        q = q1 @ v
    return np.maximum(lam, 0.0), q


def _pair_slices(ndim, axis):
    lo = [slice(None)] * ndim
    hi = [slice(None)] * ndim
    lo[axis], hi[axis] = slice(0, -1), slice(1, None)
    return tuple(lo), tuple(hi)


class LinearModel:
    """Loadings in ``(groups, units, entries)`` form and the null moment of every statistic.

    Parameters
    ----------
    loadings : ndarray
        ``(*out_shape, *entry_shape)``.
    offset, reference : ndarray
        Broadcastable to / of ``out_shape``.
    keep_prob : float
    group_axes : tuple of int
        Output axes indexing independent mask groups.
    independent_axes : dict
        ``name -> axis of loadings``: a group axis (adjacent groups must not share masks) or an
        entry axis (adjacent entries of a group must not share one mask).
    dtype : dtype
        The op's output dtype (rounding dead bands).

    Attributes
    ----------
    stats : dict
        ``name -> (sd, band, expected)`` for ``"mean"``, ``"variance"``, ``"calls"`` and every
        independent axis; ``sd`` is one draw's null standard deviation.
    """

    def __init__(self, loadings, offset, reference, keep_prob, group_axes, independent_axes, dtype):
        ref = np.asarray(reference, dtype=np.float64)
        out_ndim = ref.ndim
        self.out_shape = ref.shape
        self.order = tuple(group_axes) + tuple(a for a in range(out_ndim) if a not in group_axes)
        lo = np.asarray(loadings, dtype=np.float64).transpose(self.order + tuple(range(out_ndim, np.ndim(loadings))))
        self.group_shape = tuple(ref.shape[a] for a in group_axes)
        self.entry_shape = tuple(np.shape(loadings)[out_ndim:])
        g, k = math.prod(self.group_shape), math.prod(self.entry_shape)
        self.L = lo.reshape(g, -1, k)
        self.ref = self.to_groups(ref)
        off = self.to_groups(np.broadcast_to(np.asarray(offset, dtype=np.float64), ref.shape))
        p = self.keep_prob = float(keep_prob)
        s2 = self.sigma2 = (1 - p) / p
        mu4 = (1 - p) ** 4 / p**3 + (1 - p)
        excess = mu4 - 3 * s2 * s2
        absl = np.abs(self.L).sum(axis=-1)
        self.mu = self.L.sum(axis=-1)
        self.var = s2 * (self.L**2).sum(axis=-1)
        eps = ulp_tol(dtype, MOMENT_ULPS)
        #: Per unit: how far rounding may move an output (|terms| / p summed) and the reference.
        self.eps = eps * (absl / p + np.abs(off)) + 1e-300
        self.ref_tol = eps * (absl + np.abs(off)) + ulp_tol(np.float64, MOMENT_ULPS) * np.abs(self.ref)
        self.model_ref = off + self.mu
        self.fixed = self.var <= 0 if p < 1 else np.ones(self.var.shape, dtype=bool)
        self.stats = {}
        self.independent_axes = dict(independent_axes)
        if p == 1 or not np.any(self.var > 0):
            return
        lam, q = _spectrum(self.L)
        tau = RIDGE * lam.sum(axis=1) / lam.shape[1] + 1e-300
        # mean: the (ridge) GLS estimate of a scale error β in E[e] = β·mu, a = (LLᵀ + τ)⁻¹ mu.
        self.a = np.einsum("gur,gr->gu", q, np.einsum("gur,gu->gr", q, self.mu) / (lam + tau[:, None]))
        self.denom = float(np.sum(self.a * self.mu))
        if self.denom > 0:
            la = np.einsum("guk,gu->gk", self.L, self.a)
            self.stats["mean"] = (math.sqrt(s2 * _frob2(la)) / self.denom,
                                  float(np.sum(np.abs(self.a) * self.eps)) / self.denom, 1.0)
        akk = (self.L**2).sum(axis=1)  # diag of A = LᵀL
        self.total_var = float(self.var.sum())
        var_q = excess * float(np.sum(akk**2)) + 2 * s2 * s2 * float(np.sum(lam**2))
        self.stats["variance"] = (math.sqrt(max(var_q, 0.0)) / self.total_var,
                                  float(np.sum(self.eps**2)) / self.total_var, 1.0)
        # Independence statistics use the ridge estimate of the mask, w = Lᵀ(LLᵀ + τ)⁻¹ e = Π z with
        # Π = F̃ᵀF̃ (eigenvalues π = λ/(λ + τ) < 1): flat weights, so no direction dominates.
        self.q, self.scale = q, 1 / np.sqrt(lam + tau[:, None])
        ft = self.ft = self.scale[:, :, None] * np.einsum("gur,guk->grk", q, self.L)
        self.c = np.einsum("grk,gr->gk", ft, np.einsum("gur,gu->gr", q, self.mu) * self.scale)  # E[w] per unit β
        pi = lam / (lam + tau[:, None])
        wd = np.sqrt(np.sum(self.eps**2, axis=1) / (4 * tau))  # bound on |w| from rounding, per group
        n_calls = s2 * float(np.sum(pi**2))
        self.norm = {"calls": n_calls}
        self.stats["calls"] = (s2 * math.sqrt(float(np.sum(pi**4))) / n_calls, float(np.sum(wd**2)) / n_calls, 0.0)
        self.offsets, self.pairs, self._slopes = {}, {}, {}
        for name, axis in self.independent_axes.items():
            if axis < out_ndim:  # a group axis: neighbouring groups, statistic Σ w_g · w_h
                ga = list(group_axes).index(axis)
                shape = self.group_shape
                fs, ps, ws = (v.reshape(shape + v.shape[1:]) for v in (ft, pi, wd))
                lo_, hi_ = _pair_slices(len(shape), ga)
                c = np.einsum("...rk,...sk->...rs", fs[lo_], fs[hi_])
                norm = s2 * _frob2(c)
                var_t = s2 * s2 * float(np.sum(c * c * ps[lo_][..., :, None] * ps[hi_][..., None, :]))
                band = float(np.sum(ws[lo_] * ws[hi_]))
                self.pairs[name], self.offsets[name] = (True, ga), 0.0
            else:  # an entry axis: neighbouring entries of a group, z'Π(S − κ)Πz
                ea = axis - out_ndim
                fe = ft.reshape(ft.shape[:2] + self.entry_shape)
                lo_, hi_ = _pair_slices(fe.ndim, 2 + ea)
                flo, fhi = (v.reshape(ft.shape[0], ft.shape[1], -1) for v in (fe[lo_], fe[hi_]))
                w = np.einsum("grk,gsk->grs", flo, fhi)
                w = (w + np.swapaxes(w, 1, 2)) / 2  # F̃ S F̃ᵀ
                # κ makes the null mean 0 whatever the true mask variance (a keep/drop swap with a
                # matching rescale changes σ², not the sharing).
                kappa = float(np.einsum("grr,gr->", w, pi)) / float(np.sum(pi**2))
                v = w - kappa * pi[:, :, None] * np.eye(pi.shape[1])
                bkk = np.einsum("grk,grs,gsk->gk", ft, v, ft)
                norm = 2 * s2 * float(np.sum(v * w))
                var_t = excess * float(np.sum(bkk**2)) + 2 * s2 * s2 * float(
                    np.sum(v * v * pi[:, :, None] * pi[:, None, :]))
                band = (1 + abs(kappa)) * float(np.sum(wd**2))
                self.pairs[name], self.offsets[name] = (False, ea), kappa
            if norm > 0:
                self.norm[name] = norm
                self.stats[name] = (math.sqrt(max(var_t, 0.0)) / norm, band / norm, 0.0)

    def to_groups(self, y):
        """An output array ``out_shape`` -> ``(G, U)`` float64."""
        return np.asarray(y, dtype=np.float64).transpose(self.order).reshape(self.L.shape[:2])

    def _shaped(self, name, x):
        """``x`` (G, K) viewed with the pair axis of statistic ``name`` explicit, and that axis."""
        across_groups, index = self.pairs[name]
        if across_groups:
            return x.reshape(self.group_shape + x.shape[1:]), index
        return x.reshape(x.shape[:1] + self.entry_shape), 1 + index

    def _pairs(self, name, x):
        """``Σ x_k x_k'`` over the neighbour pairs (k, k') of statistic ``name``, minus ``κ x·x``."""
        xs, axis = self._shaped(name, x)
        lo, hi = _pair_slices(xs.ndim, axis)
        return float(np.sum(xs[lo] * xs[hi])) - self.offsets[name] * float(np.sum(x * x))

    def _slope_weights(self, name):
        """``Σ_pairs (w_k c_k' + c_k w_k') − 2κ w·c = w · (N(c) − 2κc)``, N the neighbour sum."""
        cs, axis = self._shaped(name, self.c)
        lo, hi = _pair_slices(cs.ndim, axis)
        nb = np.zeros_like(cs)
        nb[lo] += cs[hi]
        nb[hi] += cs[lo]
        return (nb - 2 * self.offsets[name] * cs).reshape(self.c.shape)

    def statistics(self, e, previous):
        """One draw's statistics from its residual ``e`` (G, U) and the previous draw's state.

        Returns ``(values, slopes, state)``. Each value is a null-mean statistic of the residual;
        if the mean is off by a scale error β (``E[e] = β·mu``) the value of the residual with that
        error removed is ``value − β·slope + β²·`` :attr:`curvature` (both already normalised), so
        a biased mean does not masquerade as dependence (:func:`adjusted`). ``"calls"`` is absent
        for the first draw.
        """
        out, slope = {}, {}
        if "mean" in self.stats:
            out["mean"] = 1.0 + float(np.sum(self.a * e)) / self.denom
        if "variance" in self.stats:
            out["variance"] = float(np.sum(e * e)) / self.total_var
            slope["variance"] = 2 * float(np.sum(e * self.mu)) / self.total_var
        if "calls" not in self.stats:
            return out, slope, None
        w = np.einsum("grk,gr->gk", self.ft, np.einsum("gur,gu->gr", self.q, e) * self.scale)
        wc = float(np.sum(w * self.c))
        if previous is not None:
            out["calls"] = float(np.sum(w * previous[0])) / self.norm["calls"]
            slope["calls"] = (wc + previous[1]) / self.norm["calls"]
        for name in self.pairs:
            if name in self.stats:
                if name not in self._slopes:
                    self._slopes[name] = self._slope_weights(name)
                out[name] = self._pairs(name, w) / self.norm[name]
                slope[name] = float(np.sum(w * self._slopes[name])) / self.norm[name]
        return out, slope, (w, wc)

    def curvature(self, name):
        """The constant β² term of statistic ``name`` (see :meth:`statistics`)."""
        if name == "variance":
            return float(np.sum(self.mu**2)) / self.total_var
        if name == "calls":
            return float(np.sum(self.c**2)) / self.norm["calls"]
        return self._pairs(name, self.c) / self.norm[name] if name in self.pairs else 0.0

    def adjusted(self, values, slopes):
        """Per-draw values of every statistic with the pooled scale error removed (``mean`` as is).

        ``β̂`` is the mean statistic's average minus 1 (0 without one): under a correct op it is
        within a few standard errors of 0 and changes nothing that matters; under a missing rescale
        it is ``keep − 1`` and the independence statistics then see the residual around the biased
        mean, not the bias.
        """
        beta = float(np.mean(values["mean"])) - 1.0 if values.get("mean") else 0.0
        out = {}
        for name, v in values.items():
            v = np.asarray(v, dtype=np.float64)
            if name in slopes and beta:
                v = v - beta * np.asarray(slopes[name]) + beta * beta * self.curvature(name)
            out[name] = v
        return out, beta


#: The exact checks' tolerance, in a result's words.
EXACT_METHOD = f"exact comparison ({MOMENT_ULPS} ulps of each output's summed terms)"
#: What each statistic estimates, in a result's words.
PROPERTIES = {
    "mean": "train-time mean / no-dropout output (GLS estimate of a scale error of the mask-dependent part)",
    "variance": "Σ (out − reference)² / Σ Var_contract (variance ratio)",
    "calls": "mask correlation between successive calls (ridge estimate of the mask)",
}


def decide_statistic(model, name, values, alpha, beta):
    """The decision of statistic ``name`` from its per-draw ``values``: a z test whose standard
    error is the larger of the exact null one and the sample one (``decide_mean_equal``)."""
    sd, band, expected = model.stats[name]
    mom = RunningMoments.from_samples(np.asarray(values, dtype=np.float64)[:, None]).to_result(None)
    prop = PROPERTIES.get(name, f"mask correlation of neighbours along axis {name!r} (ridge estimate of the mask)")
    relative = expected != 0
    return decide_mean_equal(mom, expected, false_fail_rate=alpha, false_pass_rate=beta, property=prop,
                             scale=1.0 if relative else None, rtol=band if relative else 0.0,
                             atol=0.0 if relative else band, null_sd=sd)


def reference_result(name, model, p):
    """Exact: ``offset + Σ_k L_k`` reproduces the no-dropout output within rounding."""
    diff = np.abs(model.model_ref - model.ref)
    ratio = diff / model.ref_tol
    worst = int(np.argmax(ratio))
    bad = bool(ratio.ravel()[worst] > 1)
    d = dataclasses.replace(exact_decision(
        "offset + Σ loadings reproduces the no-dropout output", model.model_ref.ravel()[worst],
        model.ref.ravel()[worst], diff.size, bad, mde=float(np.max(model.ref_tol))), method=EXACT_METHOD)
    if not bad:
        return passed(name, p, d)
    return failed(name, p, f"the loadings do not reproduce the no-dropout output: at unit {worst} offset + Σ L = "
                           f"{d.estimate:.9g} but the reference is {d.expected:.9g} (tolerance "
                           f"{model.ref_tol.ravel()[worst]:.3g}); the description of the op (its loadings, offset or "
                           "no-dropout path) is wrong, so no statistical check can be trusted.", d)


def fixed_units_result(name, model, p, worst_excess, n_draws):
    """Exact: units that no mask entry reaches (all of them at keep_prob = 1) equal the reference."""
    n = int(np.count_nonzero(model.fixed))
    if n == 0:
        return skipped(name, p, "every unit depends on the mask")
    bad = worst_excess > 0
    d = dataclasses.replace(exact_decision("units with no mask dependence equal the reference", worst_excess, 0.0,
                                           n * n_draws, bad), method=EXACT_METHOD)
    if not bad:
        return passed(name, p, d)
    return failed(name, p, f"{n} unit(s) have no mask dependence (zero loadings{', keep_prob = 1' if p == 1 else ''}) "
                           f"and must equal the no-dropout output, but differ by up to {worst_excess:.3g} beyond "
                           "the rounding tolerance: the op adds noise or bias that is not its dropout mask.", d)


def diagnose_linear(model, decisions, rng_source=None, draws=None):
    """Known bugs matched against the measured ratios (only for rejected decisions).

    Repeated masks across calls come first and alone: every other statistic is then one draw
    seen many times, so its failure says nothing of its own.
    """
    p = model.keep_prob
    d = decisions.get("calls")
    if d is not None and d.rejected and d.estimate > 0.5:
        return [identical_masks_cause(rng_source, False, draws)]
    out = []
    d = decisions.get("mean")
    if d is not None and d.rejected:
        cands = ((p, "the 1/keep_prob rescale is missing (out = (D∘P)V instead of (D∘P/keep)V)"),
                 (1 / p, "divided by keep_prob twice"),
                 ((1 - p) / p, "keep_prob used as the drop probability (mask kept with probability 1 − keep_prob)"),
                 (p / (1 - p) if p < 1 else math.inf, "divided by the drop probability 1 − keep_prob instead of "
                                                      "keep_prob"),
                 (1 - p, "keep and drop confused and no rescale"))
        width = max(d.ci_high - d.ci_low, 1e-9)
        found = [cause for ratio, cause in cands if abs(d.estimate - ratio) <= max(width, 0.02 * ratio)]
        if found:
            out.append(f"mean ratio {d.estimate:.4f}: " + ", or ".join(found))
    d = decisions.get("variance")
    mean_ok = decisions.get("mean") is None or not decisions["mean"].rejected
    if d is not None and d.rejected and mean_ok:
        swap = (p / (1 - p)) ** 2 if p < 1 else math.inf
        if abs(swap - 1) > 0.2 and abs(d.estimate - swap) <= 0.1 * swap:
            out.append(f"variance ratio {d.estimate:.4g} ≈ (keep/(1 − keep))² = {swap:.4g}: the mask keeps with "
                       "probability 1 − keep_prob and is rescaled by 1/(1 − keep_prob)")
        elif d.estimate < 0.05:
            out.append(f"variance ratio {d.estimate:.3g}: (almost) no noise, dropout is not active in train mode")
    for name, d in decisions.items():
        if name not in ("mean", "variance", "calls") and d.rejected and d.estimate > 0.5:
            out.append(f"mask correlation {d.estimate:.3f} between neighbours along {name!r}: one mask is shared "
                       f"along {name!r} where the contract says the entries are independent")
    return out
