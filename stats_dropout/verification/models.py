"""``verify_model``: every dropout site of a torch, flax nnx or keras 3 model, on the activation it really sees.

The sites are found by :func:`~stats_dropout.verification.model_sites.find_sites` (torch dropout
classes, classes named like dropout / drop path with a rate attribute, or the user's list) and
by the functional recorder (``F.dropout`` called in a module's own forward). The model runs once
in train mode on ``example_batch``; each site's first input becomes its ``example_input`` and the
battery (:func:`~stats_dropout.verification.battery.verify_dropout`) runs on the site's module
through the torch adapter. Two eval-mode forwards must agree; when they do not, the module still
random in eval mode is named, unless it is declared MC dropout (``mc_dropout=``): then eval-mode
randomness is the contract and :func:`~stats_dropout.verification.mc_dropout.verify_mc_dropout`
checks it instead (eval random, the average of T passes converging as 1/T to the train-mode mean,
the gap to the weight-scaled output reported).

A flax ``nnx.Module`` or a keras 3 model (any ``keras.layers.Layer``) takes the same route with
the framework's own discovery and capture (:mod:`~stats_dropout.verification.model_sites_flax`,
:mod:`~stats_dropout.verification.model_sites_keras`) and the framework's layer adapter for each
site's battery; the torch-only options (``functional``, ``mc_dropout``) do not apply there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import zlib

import numpy as np

from stats_dropout._internal.timeouts import guarded_call, time_limit, timeout_iv
from stats_dropout._internal.validation import probability_iv, seed_iv
from stats_dropout.inference.verdicts import VerificationResult
from stats_dropout.verification.adapters.dispatch import framework_of
from stats_dropout.verification.adapters.dispatch import implementation as layer_implementation
from stats_dropout.verification.adapters.pytorch import import_torch
from stats_dropout.verification.battery import verify_dropout
from stats_dropout.verification.dropblock import verify_dropblock
from stats_dropout.verification.implementation import Implementation
from stats_dropout.verification.mc_dropout import MCDropoutResult, covers, declared_paths, verify_mc_dropout
from stats_dropout.verification.model_eval import eval_randomness
from stats_dropout.verification.model_sites import FUNCTIONAL_CONTRACTS, ROOT, DropoutSite, capture, find_sites

__all__ = ["verify_model", "ModelVerificationResult", "SiteResult", "site_seed", "EVAL_CHECK"]

#: Name of the model-level check in a row's failing checks.
EVAL_CHECK = "model_eval_deterministic"
VERDICTS = ("passed", "failed", "unsupported", "not called")


@dataclasses.dataclass(frozen=True)
class SiteResult:
    """One row of a :class:`ModelVerificationResult`: a site and its verdict.

    ``verdict`` is ``"passed"``, ``"failed"`` (its battery failed, or it is random in eval mode),
    ``"unsupported"`` (the battery cannot run on it: ``note`` says why; never fails the model) or
    ``"not called"`` (the forward on ``example_batch`` never reached it).
    """

    path: str
    kind: str
    keep_prob: float | None
    verdict: str
    failing_checks: tuple = ()
    calls: int = 0
    input_shape: tuple | None = None
    dtype: str | None = None  # the probe's dtype, and the captured activation's if it differs
    note: str = ""
    result: VerificationResult | None = dataclasses.field(default=None, repr=False)
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelVerificationResult:
    """The outcome of :func:`verify_model`.

    Attributes
    ----------
    rows : tuple of SiteResult
        One per site, in module order (functional sites after them), then one per module that is
        random in eval mode without being a site.
    eval_deterministic : bool or None
        Two eval-mode forwards gave equal outputs (None: not checked).
    eval_findings : tuple of (path, how)
        The modules found random in eval mode, except those declared MC dropout.
    mc_dropout : MCDropoutResult or None
        The MC-dropout checks, when something is declared MC dropout (``verify_model(mc_dropout=)``);
        its ``findings`` are the eval-random modules it covers (expected, not failures).
    false_fail_rate, false_pass_rate : float
        Per site battery (each battery splits its own over its checks).
    """

    model: str
    rows: tuple
    eval_deterministic: bool | None
    eval_findings: tuple
    seed: int
    false_fail_rate: float
    false_pass_rate: float
    warnings: tuple = ()
    seconds: float = 0.0
    mc_dropout: MCDropoutResult | None = None
    mc_findings: tuple = ()
    framework: str = "torch"

    @property
    def passed(self):
        if any(r.verdict == "failed" for r in self.rows):
            return False
        if self.mc_dropout is not None:
            # eval randomness is the contract; every random module found is declared (else a row failed)
            return self.mc_dropout.passed and not self.eval_findings
        return self.eval_deterministic is not False

    @property
    def sites(self):
        """``{path: VerificationResult}`` of every site whose battery ran."""
        return {r.path: r.result for r in self.rows if r.result is not None}

    @property
    def failed_sites(self):
        return tuple(r.path for r in self.rows if r.verdict == "failed")

    @property
    def total_false_fail_rate(self):
        """Bound on the probability that a correct model fails: the per-site rate times the batteries
        run (union bound; the eval check is exact and adds nothing; the MC-dropout checks count as
        one more battery)."""
        return self.false_fail_rate * (len(self.sites) + (self.mc_dropout is not None))

    def to_frame(self):
        """One row per site: path, kind, keep_prob, verdict, failing_checks, calls, input_shape,
        dtype, seconds, note."""
        import pandas as pd

        columns = ["path", "kind", "keep_prob", "verdict", "failing_checks", "calls", "input_shape", "dtype",
                   "seconds", "note"]
        return pd.DataFrame([{
            "path": r.path, "kind": r.kind, "keep_prob": np.nan if r.keep_prob is None else r.keep_prob,
            "verdict": r.verdict, "failing_checks": ", ".join(r.failing_checks), "calls": r.calls,
            "input_shape": "" if r.input_shape is None else "x".join(map(str, r.input_shape)),
            "dtype": r.dtype or "", "seconds": round(r.seconds, 2), "note": r.note,
        } for r in self.rows], columns=columns)

    def __str__(self):
        counts = {v: sum(r.verdict == v for r in self.rows) for v in VERDICTS}
        n = len(self.sites) + (self.mc_dropout is not None)
        head = (f"stats_dropout model verification of {self.model}: {'PASSED' if self.passed else 'FAILED'} "
                f"({len(self.rows)} rows: " + ", ".join(f"{c} {v}" for v, c in counts.items()) + ") — "
                f"seed {self.seed}, false-fail rate {self.false_fail_rate:g} per site, at most "
                f"{self.total_false_fail_rate:.3g} in total over {n} batteries (union bound); false-pass "
                f"rate {self.false_pass_rate:g} per site; {self.seconds:.1f} s")
        if self.mc_dropout is not None:
            lines = [head, str(self.mc_dropout)]
            lines += [f"  declared MC dropout, random in eval mode: {path}: {how}" for path, how in self.mc_findings]
            if self.eval_findings:
                lines.append("Eval mode: also random where not declared MC dropout:")
                lines += [f"  {path}: {how}" for path, how in self.eval_findings]
        elif self.eval_deterministic is None:
            lines = [head, "Eval mode: not checked"]
        elif self.eval_deterministic and not self.eval_findings:
            lines = [head, "Eval mode: deterministic (two eval-mode forwards, torch seeded differently, agree)"
                     if self.framework == "torch" else "Eval mode: deterministic (two eval-mode forwards agree)"]
        else:
            lines = [head, "Eval mode: " + ("deterministic output, but" if self.eval_deterministic
                                            else "RANDOM: two eval-mode forwards differ;")
                     + " still random in eval mode:"]
            lines += [f"  {path}: {how}" for path, how in self.eval_findings]
        frame = self.to_frame().drop(columns=["note", "dtype"])
        lines += ["", frame.to_string(index=False, float_format=lambda v: f"{v:.6g}", na_rep="")]
        for r in self.rows:
            if r.verdict == "failed" and r.result is not None:
                lines.append(f"\nFAILED {r.path} ({r.kind}, keep_prob {r.keep_prob:g}):")
                lines += [f"  Diagnosis: {d}" for d in r.result.diagnosis]
                lines += [f"  {c.check}: {c.message.splitlines()[0] if c.message else ''}"
                          for c in r.result.failed_checks]
            if r.note and r.verdict != "passed":
                lines.append(f"{r.verdict.upper()} {r.path}: {r.note}")
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def site_seed(seed, path):
    """The battery seed of the site at ``path``: derived from ``seed`` and the path (not the site's
    position), so a site gets the same draws whether it runs alone (``sites=[path]``) or with the rest."""
    return int(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(path.encode()),)).generate_state(1)[0])


def _numpy_input(torch, tensor, dtype):
    """The captured activation as the battery's probe: float64 unless ``dtype`` or a low precision says.

    ``torch=None`` (flax, keras): a numpy array kept in its dtype (the framework's compute dtype,
    float32 unless jax runs in x64) unless ``dtype`` says; bfloat16 becomes float32 (exact)."""
    if torch is None:
        x = np.asarray(tensor)
        if str(x.dtype) == "bfloat16":
            x = x.astype(np.float32)
        if x.dtype.kind != "f":
            raise TypeError(f"its input is a {x.dtype} array; the battery needs a floating-point input")
        return x.astype(dtype) if dtype is not None else np.array(x, copy=True)
    if not tensor.is_floating_point():
        raise TypeError(f"its input is a {tensor.dtype} tensor; the battery needs a floating-point input")
    if dtype is not None:
        return tensor.detach().cpu().to(torch.float64).numpy().astype(dtype)
    if tensor.dtype == torch.float16:
        return tensor.detach().cpu().numpy()
    return tensor.detach().cpu().to(torch.float64).numpy()


def _functional_implementation(torch, site, call, active_in_eval):
    """Replays the recorded ``F.<name>(x, p, training, inplace)`` call in train and eval mode."""
    original = getattr(torch.nn.functional, call.function)
    contract, shared = FUNCTIONAL_CONTRACTS[call.function]

    def run(x, training):
        t = torch.from_numpy(x) if x.flags.writeable and all(s >= 0 for s in x.strides) \
            else torch.from_numpy(np.array(x, copy=True))
        with torch.no_grad():
            y = original(t, call.p, training, call.inplace).numpy()
        return x if call.inplace and np.shares_memory(y, x) else y

    def train(x):
        return run(x, call.training)

    def evaluate(x):
        return run(x, active_in_eval)

    train.__name__, evaluate.__name__ = f"{site.path}.train", f"{site.path}.eval"
    return Implementation(train, evaluate, keep_prob=site.keep_prob, contract=contract, shared_axes=shared,
                          inplace=call.inplace, rng_source="torch", name=site.path, **site.overrides)


def _weight_scaled_eval(x):
    """An MC-dropout site's eval path with dropout truly off (the weight-scaled output of inverted dropout)."""
    return x


def _dropblock_battery(torch, site, x, seed, rates):
    """:func:`verify_dropblock` on the module in train mode, torch seeded from the site's seed.

    The probe is ones of the captured shape and dtype (DropBlock's masks do not depend on the
    input); the module's mode and torch's global RNG state are restored.
    """
    module, was_training = site.module, site.module.training
    state = torch.random.get_rng_state()

    def train(probe):
        with torch.no_grad():
            return module(torch.from_numpy(probe)).detach().cpu().to(torch.float64).numpy()

    try:
        module.train()
        torch.manual_seed(site_seed(seed, site.path))
        return verify_dropblock(train, x.shape, site.keep_prob, site.overrides["block_size"],
                                seed=site_seed(seed, site.path), false_fail_rate=rates[0],
                                false_pass_rate=rates[1], dtype=x.dtype)
    finally:
        module.train(was_training)
        torch.random.set_rng_state(state)


def _run_site(torch, site, captured, calls, *, functional_call, active_in_eval, dtype, seed, rates, mc=False):
    """The SiteResult of one site (its battery, or why it cannot run)."""
    started = time.perf_counter()
    fields = dict(path=site.path, kind=site.kind, keep_prob=site.keep_prob, calls=calls)
    if captured is None or captured[0] is None:
        note = ("not reached by the forward on example_batch" if captured is None
                else "called without a tensor argument")
        return SiteResult(verdict="not called" if captured is None else "unsupported", note=note, **fields)
    tensor, extra = captured
    fields.update(input_shape=tuple(tensor.shape), dtype=str(tensor.dtype).replace("torch.", ""))
    captured_dtype = fields["dtype"]
    notes = [f"called {calls} times per forward; the first call's input was tested"] if calls > 1 else []
    try:
        if extra:
            raise TypeError(f"called with {extra} argument(s) besides its input; the battery calls it as f(x)")
        x = _numpy_input(torch, tensor, dtype)
        fields["dtype"] = f"{x.dtype} (captured {captured_dtype})" if str(x.dtype) != captured_dtype else str(x.dtype)
        if site.kind == "dropblock" and functional_call is None:
            if mc:
                notes.append("MC dropout declared: DropBlock is checked in train mode only (its eval-mode "
                             "randomness by the MC checks)")
            result = _dropblock_battery(torch, site, x, seed, rates)
            failing = tuple(c.check for c in result.failed_checks)
            return SiteResult(verdict="passed" if result.passed else "failed", failing_checks=failing,
                              note="; ".join(notes), result=result, seconds=time.perf_counter() - started,
                              **fields)
        if functional_call is not None:
            impl = _functional_implementation(torch, site, functional_call, active_in_eval)
        else:
            overrides = {k: v for k, v in site.overrides.items() if k != "keep_prob"}
            keep_prob = site.overrides.get("keep_prob", None if site.kind in (
                "dropout", "channel", "alpha", "feature_alpha") else site.keep_prob)
            impl = layer_implementation(site.module, keep_prob=keep_prob, example_input=x, name=site.path,
                                        **overrides)
            if mc:  # random in eval by design: the battery's eval checks run on the weight-scaled path
                impl = dataclasses.replace(impl, eval=_weight_scaled_eval)
                notes.append("MC dropout: battery eval path is the weight-scaled one (dropout off); eval-mode "
                             "randomness checked by the MC checks")
        result = verify_dropout(impl, seed=site_seed(seed, site.path), false_fail_rate=rates[0],
                                false_pass_rate=rates[1])
    except (TypeError, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return SiteResult(verdict="unsupported", note="; ".join(notes + [f"unsupported kind: {message}"]),
                          seconds=time.perf_counter() - started, **fields)
    keep_prob = impl.keep_probs()[0]
    fields["keep_prob"] = keep_prob
    failing = tuple(dict.fromkeys(c.check.split("[")[0] for c in result.failed_checks))
    return SiteResult(verdict="passed" if result.passed else "failed", failing_checks=failing,
                      note="; ".join(notes), result=result, seconds=time.perf_counter() - started, **fields)


def _verify_model_iv(model, sites, seed, false_fail_rate, false_pass_rate, dtype):
    torch = import_torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    return (torch, *_common_iv(sites, seed, false_fail_rate, false_pass_rate, dtype))


def _model_framework(model):
    """``"torch"``, ``"flax"`` or ``"keras"``; TypeError naming ``model`` for anything else."""
    framework = framework_of(model)
    if framework == "flax":
        from stats_dropout.verification.model_sites_flax import is_nnx_model

        if not is_nnx_model(model):
            raise TypeError(f"`model` must be a flax nnx.Module (a linen Module holds no state to run); got "
                            f"{type(model).__name__}")
    if framework is None:
        raise TypeError("`model` must be a torch.nn.Module, a flax nnx.Module or a keras model (keras.Model or a "
                        f"layer containing layers), of a framework you have imported; got {type(model).__name__}")
    return framework


def _common_iv(sites, seed, false_fail_rate, false_pass_rate, dtype):
    if sites is not None and (isinstance(sites, str) or not hasattr(sites, "__iter__")):
        raise TypeError(f"`sites` must be a list of module paths or a dict path -> fields; got {sites!r}")
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"`dtype` must be a float dtype or None; got {dtype!r}")
    return (seed_iv(seed), probability_iv(false_fail_rate, "false_fail_rate"),
            probability_iv(false_pass_rate, "false_pass_rate"), dtype)


def verify_model(model, example_batch, *, sites=None, seed=0, false_fail_rate=1e-6, false_pass_rate=1e-3,
                 dtype=None, functional=True, check_eval=True, timeout=None, mc_dropout=None,
                 mc_relative_effect=0.05, mc_variance_effect=1.0):
    """Verify every dropout site of a torch, flax nnx or keras 3 model on the activations it really sees.

    Parameters
    ----------
    model : torch.nn.Module, flax.nnx.Module or keras.layers.Layer
        For flax and keras see *Flax nnx and keras models* below.
    example_batch : tensor, dict of tensors or tuple
        Called as ``model(batch)``, ``model(**batch)`` (transformers) or ``model(*batch)``. Its
        size sets each site's probe: a larger batch gives more power (drop-path sites draw one
        mask per sample). A keras model is called as ``model(batch, training=...)``.
    sites : list of str or dict, optional
        Module paths to verify instead of the ones found by the rule of
        :func:`~stats_dropout.verification.model_sites.find_sites` (torch dropout classes and
        their subclasses; classes named ``*Dropout*``, ``*DropPath*``, ``*StochasticDepth*`` with
        an attribute ``keep_prob``, or ``p`` / ``drop_prob`` / ``drop_rate`` / ``rate`` /
        ``dropout_rate`` read as the drop rate). A dict maps a path to Implementation fields
        (``keep_prob``, ``contract``, ``shared_axes``) for a module the rule cannot read. With a
        list, functional sites are not added either (the eval-mode check still names them).
    seed : int, default 0
        Seeds torch for the capture forward (``seed``), the two eval forwards (``seed``,
        ``seed + 1``) and each site's battery (:func:`site_seed`: from ``seed`` and the path).
    false_fail_rate : float, default 1e-6
        **Per site**: each site's battery gets the battery default (split inside it over its
        checks, as in :func:`verify_dropout`), so a site's result is exactly what
        ``verify_dropout`` gives its module on that input. Over a model the rates add up (union
        bound): a correct model with 12 sites fails with probability at most 12 × 1e-6 =
        1.2e-5, reported as :attr:`ModelVerificationResult.total_false_fail_rate`. For a total
        ``t`` over ``n`` sites pass ``false_fail_rate=t / n``. The eval-mode check is exact.
    false_pass_rate : float, default 1e-3
        Per site, not split (as in the battery).
    dtype : float dtype, optional
        Dtype of the probes. Default float64 (exact arithmetic checks) for float32 and float64
        activations; a float16 activation stays float16, a bfloat16 one becomes float64.
    functional : bool, default True
        Record ``torch.nn.functional`` dropout calls (``dropout``, ``dropout1d/2d/3d``,
        ``alpha_dropout``, ``feature_alpha_dropout``) made directly in a module's forward: each
        becomes a ``"functional"`` site named ``"<caller path>:F.<function>"``, verified by
        replaying the call (its p, training flag and inplace flag as recorded; in eval mode with
        the training flag seen in the eval forward). While recording, these attributes of
        ``torch.nn.functional`` are wrapped (process-wide, for one forward); a function imported
        by name (``from torch.nn.functional import dropout``) is not seen.
    check_eval : bool, default True
        Run two eval-mode forwards and require equal outputs; name the modules still random
        (:func:`~stats_dropout.verification.model_eval.eval_randomness`).
    mc_dropout : bool, list of str or None, default None
        What is random in eval mode **by design** (MC dropout, Gal & Ghahramani 2016): True for
        the whole model, a list of module paths (a functional site ``"caller:F.dropout"`` counts
        as its caller), None (default) for the modules with an attribute ``mc_dropout = True``
        only (none in an ordinary model: the usual eval check), False for nothing (attributes
        ignored). When something is declared, eval-mode randomness inside it is expected, not a
        failure (the modules found random there are ``result.mc_findings``; randomness elsewhere
        still fails), a declared site's battery checks its train mode against the weight-scaled
        eval path (dropout off: the identity), and the eval check becomes
        :func:`~stats_dropout.verification.mc_dropout.verify_mc_dropout` (``result.mc_dropout``):
        eval is random (else "mc_dropout declared but eval is deterministic"), the variance of the
        average of T eval passes is 1/T of one pass's (T = 4, 16), the MC mean equals the
        train-mode mean (sites in train mode, the rest in eval), the gap to the weight-scaled
        output is reported with its CI. Those decisions share ``false_fail_rate`` (split over 3)
        and are counted as one more battery in ``total_false_fail_rate``.
    mc_relative_effect, mc_variance_effect : float
        The relative error of the MC mean (default 0.05) and of the variance ratio (default 1)
        the MC checks are sized to detect with probability ``1 − false_pass_rate``.
    timeout : float, optional
        Seconds each call into the model may take (the train-mode capture forward, the eval
        forwards, every site's battery calls), as in :func:`verify_dropout`; one limit for the
        whole model, so after a hang every later call fails at once. A capture forward that
        hangs raises :class:`~stats_dropout._internal.timeouts.CallTimeout` (nothing can be
        verified without it); a site whose calls hang fails its checks.

    Returns
    -------
    ModelVerificationResult
        ``.passed``, ``.to_frame()`` (path, kind, keep_prob, verdict, failing_checks, ...),
        ``print(result)``, ``.sites`` (``{path: VerificationResult}``). A site the battery cannot
        run on (an integer input, extra arguments, no readable keep_prob) is ``"unsupported"``
        with the reason, and does not fail the model; a site the forward never reached is
        ``"not called"``.

    Notes
    -----
    Hooks see modules called as ``module(x)``, not ``module.forward(x)``. A site applied several
    times per forward is tested on its first call's input. The model's and its modules'
    train/eval modes and torch's global RNG state are restored.

    **Flax nnx and keras models.** The sites: every ``nnx.Dropout`` in the module graph, at its
    attribute path (``"blocks.0.dropout"``); every keras ``Dropout``, ``SpatialDropout1D/2D/3D``,
    ``GaussianDropout``, ``AlphaDropout`` (or subclass) found recursively, at its layer names
    joined with ``.`` (:mod:`~stats_dropout.verification.model_sites_flax`,
    :mod:`~stats_dropout.verification.model_sites_keras`; ``sites=`` takes those paths). The
    capture forward runs in train mode (nnx ``model.train()``; keras ``training=True``) with the
    sites' ``__call__`` / ``call`` wrapped at class level (restored afterwards), the eval check
    is two forwards in eval mode (nnx ``model.eval()``; keras ``training=False``), which also
    names a site called with ``deterministic=False`` / ``training=True`` in eval mode, and each
    site's battery runs through the flax or keras layer adapter on the captured activation,
    kept in its dtype (float32 unless jax runs in x64; ``dtype=`` converts). Your model is not
    changed: an nnx model is cloned (``nnx.clone``) and the clone is run, so its rng streams
    and train/eval flags stay as they were; a keras model's variables (seed-generator states,
    moving statistics) are restored. ``seed`` seeds the batteries only: the capture and eval
    forwards draw from the model's own rngs / seed generators. ``functional`` is ignored (no
    functional dropout is recorded); ``mc_dropout`` must be None or False (MC dropout is
    verified for torch models only: a ValueError otherwise).
    """
    framework = _model_framework(model)
    if framework != "torch":
        return _verify_framework_model(framework, model, example_batch, sites=sites, seed=seed,
                                       false_fail_rate=false_fail_rate, false_pass_rate=false_pass_rate,
                                       dtype=dtype, check_eval=check_eval, timeout=timeout, mc_dropout=mc_dropout)
    torch, seed, alpha, beta, dtype = _verify_model_iv(model, sites, seed, false_fail_rate, false_pass_rate,
                                                       dtype)
    timeout = timeout_iv(timeout)
    # No limit of its own: an enclosing time_limit block (the command line's --timeout) applies.
    with time_limit(timeout) if timeout is not None else contextlib.nullcontext():
        return _verify_model(torch, model, example_batch, sites, seed, alpha, beta, dtype, functional, check_eval,
                             declared_paths(model, mc_dropout), (mc_relative_effect, mc_variance_effect))


def _verify_model(torch, model, example_batch, sites, seed, alpha, beta, dtype, functional, check_eval,
                  declared=(), mc_effects=(0.05, 1.0)):
    started = time.perf_counter()
    found = find_sites(model, sites)
    cap = capture(model, example_batch, found, seed=seed, functional=functional and sites is None)
    eval_det, findings = eval_randomness(model, example_batch, seed=seed) if check_eval else (None, [])
    mc_findings = [(p, how) for p, how in findings if declared and covers(declared, p)]
    findings = [(p, how) for p, how in findings if not (declared and covers(declared, p))]
    active_callers = {path for path, how in findings if "training=True" in how}
    functional_sites = []
    for (caller, name), call in cap.functional.items():
        if call.p <= 0 and not call.training:
            continue  # F.dropout(x, 0.0, False): a no-op by construction
        keep_prob = 1.0 - call.p if call.p < 1 else None
        functional_sites.append((DropoutSite(f"{caller}:F.{name}", "functional", keep_prob,
                                             f"F.{name} called in the forward of {caller}"), call))
    rows = []
    for site in found:
        rows.append(_run_site(torch, site, cap.inputs.get(site.path), cap.calls.get(site.path, 0),
                              functional_call=None, active_in_eval=False, dtype=dtype, seed=seed,
                              rates=(alpha, beta), mc=bool(declared) and covers(declared, site.path)))
    for site, call in functional_sites:
        rows.append(_run_site(torch, site, (call.input, 0), call.calls, functional_call=call,
                              active_in_eval=call.caller in active_callers and not (
                                  declared and covers(declared, site.path)), dtype=dtype, seed=seed,
                              rates=(alpha, beta), mc=bool(declared) and covers(declared, site.path)))
    rows = _mark_eval_findings(rows, findings)
    warnings = []
    if not found and not functional_sites:
        warnings.append("no dropout site found: no torch dropout module, no module named like dropout with a "
                        "rate attribute, no functional dropout call; list them with sites=[...]")
    capped = [r.path for r in rows if r.result is not None
              and any("capped" in w for w in r.result.warnings)]
    if capped:
        warnings.append(f"{len(capped)} site(s) had their draws capped (small activations): their smallest "
                        "detectable errors exceed the battery's defaults (min_detectable_effect in "
                        "result.sites[path].to_frame()); a larger example_batch restores them")
    mc = None
    if declared and check_eval:
        site_paths = [s.path for s in found] + [s.path for s, _ in functional_sites]
        site_paths += [p for p in declared if p != ROOT and p not in site_paths]
        train_paths = [p.split(":F.")[0] for p in site_paths]
        mc = verify_mc_dropout(model, example_batch, declared=declared, site_paths=site_paths,
                               train_paths=train_paths, seed=seed, false_fail_rate=alpha, false_pass_rate=beta,
                               relative_effect=mc_effects[0], variance_effect=mc_effects[1])
    return ModelVerificationResult(type(model).__name__, tuple(rows), eval_det, tuple(findings), seed, alpha, beta,
                                   tuple(warnings), time.perf_counter() - started, mc, tuple(mc_findings))


def _mark_eval_findings(rows, findings):
    """A site found random in eval mode fails; a random module that is no site gets its own row."""
    out = list(rows)
    for path, how in findings:
        hits = [i for i, r in enumerate(out) if r.path == path or r.path.startswith(path + ":F.")]
        for i in hits:
            r = out[i]
            note = "; ".join(filter(None, [r.note, f"eval mode: {how}"]))
            out[i] = dataclasses.replace(r, verdict="failed", failing_checks=tuple(
                dict.fromkeys(r.failing_checks + (EVAL_CHECK,))), note=note)
        if not hits:
            out.append(SiteResult(path, "eval-random", None, "failed", (EVAL_CHECK,), note=how))
    return out


def _verify_framework_model(framework, model, example_batch, *, sites, seed, false_fail_rate, false_pass_rate, dtype,
                            check_eval, timeout, mc_dropout):
    """:func:`verify_model` of a flax nnx or keras model (see its Notes)."""
    seed, alpha, beta, dtype = _common_iv(sites, seed, false_fail_rate, false_pass_rate, dtype)
    if mc_dropout is not None and mc_dropout is not False:
        raise ValueError(f"`mc_dropout` is supported for torch models only; got mc_dropout={mc_dropout!r} for a "
                         f"{'flax nnx' if framework == 'flax' else 'keras'} model (pass None or False)")
    timeout = timeout_iv(timeout)
    with time_limit(timeout) if timeout is not None else contextlib.nullcontext():
        started = time.perf_counter()
        if framework == "flax":
            from stats_dropout.verification import model_sites_flax as frame

            run = frame.prepare(model)  # nnx.clone: the user's rngs and flags are untouched
            restored = contextlib.nullcontext()
            missing = "no nnx.Dropout in the model's graph"
        else:
            from stats_dropout.verification import model_sites_keras as frame

            run = model
            if not getattr(model, "built", True):
                # An unbuilt model creates its variables in its first call: build it (an eval
                # forward, which moves no statistic) so they are saved and restored too.
                guarded_call("the building forward model(batch, training=False)", model, example_batch,
                             training=False)
            restored = frame.restored_variables(model)
            missing = "no keras Dropout, SpatialDropout1D/2D/3D, GaussianDropout or AlphaDropout layer"
        found = frame.find_sites(run, sites)
        with restored:
            cap = frame.capture(run, example_batch, found)
            eval_det, findings = frame.eval_randomness(run, example_batch, found) if check_eval else (None, [])
        rows = [_run_site(None, site, cap.inputs.get(site.path), cap.calls.get(site.path, 0), functional_call=None,
                          active_in_eval=False, dtype=dtype, seed=seed, rates=(alpha, beta))
                for site in found]
        rows = _mark_eval_findings(rows, findings)
        warnings = []
        if not found:
            warnings.append(f"no dropout site found: {missing}; list them with sites=[...]")
        capped = [r.path for r in rows if r.result is not None and any("capped" in w for w in r.result.warnings)]
        if capped:
            warnings.append(f"{len(capped)} site(s) had their draws capped (small activations): their smallest "
                            "detectable errors exceed the battery's defaults (min_detectable_effect in "
                            "result.sites[path].to_frame()); a larger example_batch restores them")
        return ModelVerificationResult(type(model).__name__, tuple(rows), eval_det, tuple(findings), seed, alpha,
                                       beta, tuple(warnings), time.perf_counter() - started, framework=framework)
