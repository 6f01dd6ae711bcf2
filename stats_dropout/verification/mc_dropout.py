"""MC-dropout inference (Gal & Ghahramani 2016): a model that stays random in eval mode on purpose.

Contract of a model (or of some of its sites) declared MC dropout (``verify_model(...,
mc_dropout=...)``, or a module attribute ``mc_dropout = True``):

(a) eval mode *is* random: two eval forwards (torch seeded differently) differ; otherwise the
    declaration is wrong ("mc_dropout declared but eval is deterministic").
(b) the average of T eval passes converges at the rate 1/T: the passes are independent and
    identically distributed, so ``T · Var(mean of T passes) / Var(one pass) = 1`` for every T.
    Checked for each T in ``ks[1:]`` (default 4 and 16) on disjoint groups of T consecutive
    passes (one-way ANOVA: between-group mean square over within-group mean square, both
    estimating Var(one pass) under the contract); a z test on the log ratio whose standard
    error accounts for the measured kurtosis. This is the premise of the report's
    ``mc_averaging`` (the average of k passes against weight scaling, measured for k = 1 … 1000).
(c) the MC mean equals the train-mode mean (MC dropout at eval draws the masks train mode
    draws): the eval passes, paired with passes in which the dropout sites (and callers of
    functional dropout) are in train mode and the rest of the model in eval mode, projected on
    the weight-scaled output; a Student t test on the paired differences (like the battery's
    check_mean, pooled by a projection). A missing rescale in the eval-time path fails it.
(d) reported, not decided: the inference gap ``E[MC] − weight-scaled`` where the weight-scaled
    output is the model's eval forward with dropout truly off (a deep copy with every site
    replaced by ``nn.Identity`` and torch.nn.functional's dropout functions the identity). Zero
    for a network linear in the masks; through nonlinearities it is THEORY.md §4's gap.

Pooled statistic: one scalar per pass, ``r = ⟨a, y⟩ / ⟨a, a⟩`` with ``a`` the weight-scaled
output (all ones when it is zero), so ``r = 1`` at the weight-scaled output and a relative scale
error of the MC mean moves ``E r`` by the same relative amount. The false-fail budget is split
(Bonferroni) over the ``len(ks) − 1`` convergence decisions and the mean decision; every sample
size is computed from stated effects: ``relative_effect`` (the MC mean's relative error, default
0.05) and ``variance_effect`` (the relative error of the variance ratio, default 1: a T-pass
mean twice as spread as 1/T says), with a pilot of 64 passes for the spread.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time

import numpy as np
from scipy import stats as sps

from stats_dropout.inference.design import min_draws_for_mean_error, z_quantile_sum
from stats_dropout.inference.results import Decision, TrainMoments
from stats_dropout.inference.stats import decide_mean_equal
from stats_dropout.verification.adapters.pytorch import import_torch
from stats_dropout.verification.model_eval import same, tensors
from stats_dropout.verification.model_sites import FUNCTIONAL_CONTRACTS, ROOT, call_model

__all__ = ["verify_mc_dropout", "MCDropoutResult", "declared_paths", "covers", "MC_EVAL_CHECK", "MC_CONVERGENCE_CHECK",
           "MC_MEAN_CHECK", "MC_ATTRIBUTE"]

MC_EVAL_CHECK = "mc_eval_random"
MC_CONVERGENCE_CHECK = "mc_average_converges"
MC_MEAN_CHECK = "mc_mean_equals_train_mean"
#: A module with this attribute set to True is declared MC dropout (random in eval mode by design).
MC_ATTRIBUTE = "mc_dropout"
PILOT = 64


def declared_paths(model, mc_dropout):
    """The declared MC-dropout paths: ``(ROOT,)`` for True, the list's paths (a functional site
    ``"caller:F.dropout"`` counts as its caller), plus every module with ``mc_dropout = True``
    unless ``mc_dropout`` is False. Raises ValueError for a listed path that is no module."""
    if mc_dropout is False:
        return ()
    if mc_dropout is True:
        return (ROOT,)
    named = dict(model.named_modules())
    out = []
    if mc_dropout is not None:
        if isinstance(mc_dropout, str) or not hasattr(mc_dropout, "__iter__"):
            raise TypeError(f"`mc_dropout` must be a bool, None or a list of module paths; got {mc_dropout!r}")
        for path in mc_dropout:
            base = str(path).split(":F.")[0]
            if base != ROOT and base not in named:
                raise ValueError(f"`mc_dropout` names {path!r}, which is no module of the model")
            out.append(base)
    out += [path or ROOT for path, m in named.items() if getattr(m, MC_ATTRIBUTE, False) is True]
    return tuple(dict.fromkeys(out))


def covers(declared, path):
    """``path`` (a module or ``"caller:F.fn"``) is a declared MC site or lies inside one."""
    base = path.split(":F.")[0]
    return any(d == ROOT or base == d or base.startswith(d + ".") for d in declared)


@dataclasses.dataclass(frozen=True)
class MCDropoutResult:
    """The MC-dropout checks of a model (see the module docstring).

    ``convergence``: one Decision per T (estimate ``T·Var(mean of T)/Var(one)``, expected 1);
    ``mean``: the Decision on ``E r_eval − E r_train`` (expected 0); ``gap``: the inference gap,
    reported only (keys ``projected``, ``projected_ci`` (95 %), ``max_abs``, ``max_abs_ci``
    (95 %, simultaneous over outputs: Bonferroni), ``relative_norm``, ``n_outputs``).
    """

    declared: tuple
    eval_random: bool | None
    convergence: tuple = ()
    mean: Decision | None = None
    gap: dict = dataclasses.field(default_factory=dict)
    passes: int = 0
    train_passes: int = 0
    seed: int = 0
    false_fail_rate: float = 0.0
    warnings: tuple = ()
    seconds: float = 0.0

    @property
    def failing_checks(self):
        out = []
        if self.eval_random is False:
            out.append(MC_EVAL_CHECK)
        if any(d.rejected for d in self.convergence):
            out.append(MC_CONVERGENCE_CHECK)
        if self.mean is not None and self.mean.rejected:
            out.append(MC_MEAN_CHECK)
        return tuple(out)

    @property
    def passed(self):
        return self.eval_random is not False and not self.failing_checks

    def __str__(self):
        where = "whole model" if self.declared == (ROOT,) else ", ".join(self.declared)
        if self.eval_random is None:
            return f"MC dropout ({where}): not checked (an eval forward did not return)"
        if not self.eval_random:
            return (f"MC dropout ({where}): FAILED: mc_dropout declared but eval is deterministic "
                    f"(two eval-mode forwards, torch seeded {self.seed} and {self.seed + 1}, agree)")
        conv = "; ".join(f"T={d.details['T']}: ratio {d.estimate:.3f} [{d.ci_low:.3f}, {d.ci_high:.3f}]"
                         + (" REJECTED" if d.rejected else "") for d in self.convergence)
        ok = not any(d.rejected for d in self.convergence)
        lines = [f"MC dropout ({where}): eval random by design; average of T passes "
                 f"{'converges' if ok else 'does NOT converge'} as 1/T ({conv}; T·Var(mean of T)/Var(one), "
                 f"expected 1) — {self.passes} eval passes, seed {self.seed}, false-fail rate "
                 f"{self.false_fail_rate:g} over {len(self.convergence) + 1} decisions"]
        if self.mean is not None:
            m = self.mean
            lines.append(f"  MC mean vs train-mode mean ({self.train_passes} paired passes, projected on the "
                         f"weight-scaled output): difference {m.estimate:.3g} [{m.ci_low:.3g}, {m.ci_high:.3g}], "
                         f"p = {m.pvalue:.3g}, smallest detectable relative error {m.min_detectable_effect:.3g}"
                         + (" — REJECTED (eval-time dropout draws another law than train mode: a rescale "
                            "missing?)" if m.rejected else ""))
        if self.gap:
            g = self.gap
            lines.append(f"  inference gap E[MC] − weight-scaled (reported, not decided): projected "
                         f"{g['projected']:.3g} [{g['projected_ci'][0]:.3g}, {g['projected_ci'][1]:.3g}] (95 %); "
                         f"largest per output {g['max_abs']:.3g} [{g['max_abs_ci'][0]:.3g}, "
                         f"{g['max_abs_ci'][1]:.3g}] (95 % simultaneous over {g['n_outputs']} outputs); "
                         f"relative norm {g['relative_norm']:.3g}")
        lines += [f"  Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _flat(torch, output):
    parts = [t.detach().to(torch.float64).reshape(-1).cpu() for t in tensors(torch, output)
             if t.is_floating_point()]
    return torch.cat(parts).numpy() if parts else np.zeros(0)


@contextlib.contextmanager
def _dropout_off(torch):
    """torch.nn.functional's dropout functions replaced by the identity (the eval path of each)."""
    F = torch.nn.functional
    originals = {name: getattr(F, name) for name in FUNCTIONAL_CONTRACTS if hasattr(F, name)}

    def identity(input, *args, **kwargs):
        return input

    for name in originals:
        setattr(F, name, identity)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(F, name, original)


def _weight_scaled(torch, model, batch, site_paths, seed):
    """Eval forward of a deep copy with every site replaced by nn.Identity and functional dropout off;
    and whether a second forward (torch seeded ``seed + 1``) agrees."""
    twin = copy.deepcopy(model)
    for path in sorted(p for p in site_paths if p != ROOT and ":F." not in p):
        parent, _, name = path.rpartition(".")
        try:
            setattr(twin.get_submodule(parent) if parent else twin, name, torch.nn.Identity())
        except (AttributeError, TypeError):
            pass
    twin.eval()
    with _dropout_off(torch):
        torch.manual_seed(seed % 2**63)
        first = _flat(torch, call_model(twin, batch))
        torch.manual_seed((seed + 1) % 2**63)
        return first, bool(np.array_equal(first, _flat(torch, call_model(twin, batch)), equal_nan=True))


def _ratio_decision(r, k, alpha, beta):
    """T·Var(mean of T)/Var(one) from disjoint groups of ``k`` passes: log-ratio z test."""
    g = r.size // k
    groups = r[:g * k].reshape(g, k)
    means = groups.mean(axis=1)
    between = k * means.var(ddof=1)
    within = float(groups.var(axis=1, ddof=1).mean())
    centred = r - r.mean()
    kurt = max(float(np.mean(centred ** 4) / max(np.mean(centred ** 2) ** 2, 1e-300)), 3.0)  # floored: conservative
    kurt_k = 3.0 + (kurt - 3.0) / k
    se = math.sqrt((kurt_k - 1) / (g - 1) + (kurt - 1) / (g * (k - 1)))
    if within <= 0:
        est, z = (1.0, 0.0) if between <= 0 else (math.inf, math.inf)
    else:
        est = between / within
        z = math.log(est) / se if est > 0 else -math.inf
    p = float(min(1.0, 2 * sps.norm.sf(abs(z))))
    half = sps.norm.isf(alpha / 2) * se
    low, high = (est * math.exp(-half), est * math.exp(half)) if math.isfinite(est) and est > 0 else (est, est)
    mde = math.exp(z_quantile_sum(alpha, beta) * se) - 1
    return Decision(property=f"average of T={k} eval passes has 1/T of one pass's variance",
                    method="log variance ratio (one-way ANOVA between/within groups), z with kurtosis-corrected se",
                    estimate=float(est), expected=1.0, ci_low=float(low), ci_high=float(high), pvalue=p,
                    false_fail_rate=alpha, false_pass_rate=beta, min_detectable_effect=float(mde), n=int(g),
                    rejected=bool(p < alpha), effect_units="relative",
                    details={"T": k, "groups": g, "kurtosis": kurt})


def _groups_needed(k, alpha, beta, variance_effect):
    """Groups of k for the log-ratio test to see a relative variance error ``variance_effect`` (normal kurtosis)."""
    q = z_quantile_sum(alpha, beta) / math.log1p(variance_effect)
    g = 3
    while q * math.sqrt(2 / (g - 1) + 2 / (g * (k - 1))) > 1:
        g = int(g * 1.2) + 1
    return g


def verify_mc_dropout(model, batch, *, declared=(ROOT,), site_paths=(), train_paths=None, seed=0,
                      false_fail_rate=1e-6, false_pass_rate=1e-3, relative_effect=0.05, variance_effect=1.0,
                      ks=(1, 4, 16), max_passes=50_000):
    """Check the MC-dropout contract of ``model`` on ``batch`` (module docstring: (a)–(d)).

    Parameters
    ----------
    declared : tuple of str
        The declared MC paths (for the messages).
    site_paths : iterable of str
        Every dropout site (module paths; ``"caller:F.fn"`` for functional ones): replaced by
        ``nn.Identity`` in the weight-scaled copy.
    train_paths : iterable of str, optional
        Modules put in train mode for the train-mode reference passes (default ``site_paths``
        and the callers of functional sites); the rest of the model stays in eval mode.
    seed : int
        The two eval forwards of (a) use seeds ``seed`` and ``seed + 1``; the pilot, the eval
        passes and the train passes run from ``seed + 2``, ``seed + 3``, ``seed + 4`` (the train
        pilot from ``seed + 5``; torch's global RNG, restored afterwards).
    false_fail_rate : float
        Split over the ``len(ks) − 1`` convergence decisions and the mean decision.
    relative_effect, variance_effect : float
        The relative errors the draws are sized to detect with probability 1 − false_pass_rate.
    max_passes : int
        Cap on the eval passes (a warning says when it binds).
    """
    torch = import_torch()
    started = time.perf_counter()
    ks = tuple(sorted(set(int(k) for k in ks) | {1}))
    n_dec = len(ks)  # len(ks) - 1 ratios + the mean
    alpha = false_fail_rate / n_dec
    beta = false_pass_rate
    site_paths = tuple(site_paths)
    if train_paths is None:
        train_paths = tuple(p.split(":F.")[0] for p in site_paths)
    named = dict(model.named_modules())
    train_modules = [model if p == ROOT else named[p] for p in dict.fromkeys(train_paths) if p == ROOT or p in named]
    modes = [(m, m.training) for m in model.modules()]
    warnings = []

    def passes(n, s, train):
        torch.manual_seed(s % 2**63)
        model.eval()
        for m in train_modules:
            m.train()
        return [_flat(torch, call_model(model, batch)) for _ in range(n)] if n else []

    def one_eval(s):
        torch.manual_seed(s % 2**63)
        model.eval()
        return call_model(model, batch)

    result = dict(declared=tuple(declared), seed=seed, false_fail_rate=false_fail_rate)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            eval_random = not same(torch, one_eval(seed), one_eval(seed + 1))
            if not eval_random:
                return MCDropoutResult(eval_random=False, seconds=time.perf_counter() - started, **result)
            ws, ws_deterministic = _weight_scaled(torch, model, batch, site_paths, seed)
            if not ws_deterministic:
                warnings.append("the weight-scaled copy (sites replaced by Identity, functional dropout off) is still "
                                "random: a stochastic module is no site (list it in sites= or mc_dropout=); the gap "
                                "is measured against one of its draws")
            if not train_modules:
                warnings.append("no dropout site to put in train mode: the train-mode reference passes are eval "
                                "passes, so the MC-mean check compares eval with itself (list the sites)")
            a = ws if np.any(ws != 0) else np.ones_like(ws)
            aa = float(a @ a)
            pilot_e = np.array(passes(PILOT, seed + 2, False)) @ a / aa
            pilot_t = np.array(passes(PILOT, seed + 5, True)) @ a / aa
            sd = math.sqrt(pilot_e.var(ddof=1) + pilot_t.var(ddof=1))
            scale = max(abs(float(pilot_t.mean())), 1e-12)
            n_mean = min_draws_for_mean_error(relative_effect * scale, sd, false_fail_rate=alpha,
                                              false_pass_rate=beta) if sd > 0 else 2
            n_conv = max(k * _groups_needed(k, alpha, beta, variance_effect) for k in ks[1:]) if len(ks) > 1 else 0
            n_eval = max(n_mean, n_conv)
            if n_eval > max_passes:
                warnings.append(f"{n_eval} eval passes needed for the stated effects; capped at {max_passes}")
                n_eval = max_passes
            n_mean = min(n_mean, n_eval)
            # eval passes: projections and running per-output moments (for the gap)
            torch.manual_seed((seed + 3) % 2**63)
            model.eval()
            r_eval = np.empty(n_eval)
            total = np.zeros_like(ws)
            total_sq = np.zeros_like(ws)
            for i in range(n_eval):
                y = _flat(torch, call_model(model, batch))
                r_eval[i] = y @ a / aa
                total += y
                total_sq += y * y
            r_train = np.array(passes(n_mean, seed + 4, True)) @ a / aa
    finally:
        for m, training in modes:
            m.training = training
    convergence = tuple(_ratio_decision(r_eval, k, alpha, beta) for k in ks[1:] if r_eval.size // k >= 3)
    d = r_eval[:n_mean] - r_train
    moments = TrainMoments(np.array(d.mean()), np.array(d.var(ddof=1)), n_mean, seed)
    mean = decide_mean_equal(moments, 0.0, false_fail_rate=alpha, false_pass_rate=beta,
                             property="MC mean equals the train-mode mean (projection on the weight-scaled output)",
                             scale=np.array(abs(float(r_train.mean())) or 1.0))
    mc_mean = total / n_eval
    sd_out = np.sqrt(np.maximum(total_sq / n_eval - mc_mean ** 2, 0.0) * n_eval / max(n_eval - 1, 1))
    gap = mc_mean - ws
    worst = int(np.argmax(np.abs(gap))) if gap.size else 0
    t95 = sps.t.isf(0.025, n_eval - 1)
    tsim = sps.t.isf(0.025 / max(gap.size, 1), n_eval - 1)
    proj_se = r_eval.std(ddof=1) / math.sqrt(n_eval)
    gap_info = {
        "projected": float(r_eval.mean() - 1.0) if np.any(ws != 0) else float(r_eval.mean() - ws @ a / aa),
        "max_abs": float(abs(gap[worst])) if gap.size else 0.0,
        "n_outputs": int(gap.size),
        "relative_norm": float(np.linalg.norm(gap) / np.linalg.norm(ws)) if np.any(ws != 0) else float("nan"),
        "worst_index": worst,
    }
    gap_info["projected_ci"] = (gap_info["projected"] - t95 * proj_se, gap_info["projected"] + t95 * proj_se)
    half = tsim * sd_out[worst] / math.sqrt(n_eval) if gap.size else 0.0
    signed = float(gap[worst]) if gap.size else 0.0
    lo, hi = signed - half, signed + half
    gap_info["max_abs_ci"] = (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
    return MCDropoutResult(eval_random=True, convergence=convergence, mean=mean, gap=gap_info, passes=n_eval,
                           train_passes=n_mean, warnings=tuple(warnings), seconds=time.perf_counter() - started,
                           **result)
