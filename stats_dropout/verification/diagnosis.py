"""Which bug is it? Match measured keep rates, scales, mask sharing and eval outputs against known signatures.

A failed battery should name the most likely cause. At keep probability ``p`` the common bugs
leave fingerprints (DESIGN.md "Diagnosis"):

=========================  =============================================================
keep rate ≈ Φ(p)           mask drawn with ``np.random.randn`` instead of ``rand``
keep rate ≈ 1 − p          comparison reversed (``>`` for ``<``) or keep/drop confused
keep rate ≈ 1 − Φ(p)       both of the above
keep rate = 1 or 0         no mask applied, or a mask that is always true / false (a 16-bit
                           keep probability overflowing ``p·2¹⁶``: jax#28039)
scale ≈ 1                  the ``1/keep_prob`` rescale is missing
scale ≈ 1/p²               divided by ``keep_prob`` twice
scale ≈ p                  multiplied by ``keep_prob`` instead of dividing
scale ≈ 1/(1 − p)          divided by the drop probability (kaldi#2814)
rate ≈ 1 − p, scale ≈ 1/(1 − p)   ``keep_prob`` used as the drop probability (electra#61)
outputs only 0 and 1       the mask was returned instead of the masked input
identical masks per call   the random state does not advance: named by ``rng_source``
                           (:func:`identical_masks_cause`)
mask constant along axes   shared along axes the contract says are independent, or not
                           shared along declared ones (:func:`sharing_cause`)
eval ≈ p·x (inverted)      test-time scaling left in an inverted implementation
eval drops units           dropout still active at test time
=========================  =============================================================

A candidate is reported only when the measurement's confidence interval contains it (rates),
or it matches exactly (scales, sharing); an unknown pattern gets the raw evidence and no guess.
"""

from __future__ import annotations

from scipy import stats

__all__ = ["rate_candidates", "scale_candidates", "identical_masks_cause", "sharing_cause", "diagnose"]


def rate_candidates(p):
    """Keep rates that known bugs produce at keep probability ``p``: ``{name: (rate, cause)}``."""
    phi = float(stats.norm.cdf(p))
    return {
        "correct": (p, "keep rate equals keep_prob"),
        "randn": (phi, f"keep rate ≈ Φ(keep_prob) = {phi:.4f}: the mask was drawn with "
                       "np.random.randn (normal) instead of np.random.rand (uniform)"),
        "reversed": (1 - p, f"keep rate ≈ 1 − keep_prob = {1 - p:.4f}: the comparison is reversed "
                            "(rand > keep_prob) or keep and drop probabilities are confused"),
        "randn_reversed": (1 - phi, f"keep rate ≈ 1 − Φ(keep_prob) = {1 - phi:.4f}: randn instead of "
                                    "rand and a reversed comparison"),
        "nothing_dropped": (1.0, "nothing is dropped (keep rate 1): no mask is applied, or the mask "
                                 "is always true"),
        "everything_dropped": (0.0, "every unit is dropped (keep rate 0): the mask is always false"),
    }


#: Said after "nothing is dropped" when the keep probability is held in a 16-bit float.
LOW_PRECISION_NOTHING_DROPPED = (
    "the keep probability is a 16-bit float: a Bernoulli sampler that compares random bits with "
    "p·2¹⁶ overflows float16 (65536 > 65504) to inf, so every unit is kept (jax.random.bernoulli "
    "with a float16 p, jax#28039) — pass p as float32")


def scale_candidates(p, contract="inverted"):
    """Kept-unit scales that known bugs produce: ``{name: (scale, cause)}``."""
    if contract == "standard":
        return {
            "correct": (1.0, "kept units equal x"),
            "inverted_rescale": (1 / p, f"kept units scaled by 1/keep_prob = {1 / p:.4f}: an inverted "
                                        "rescale in a standard (eval-scaled) implementation"),
        }
    return {
        "correct": (1 / p, "kept units scaled by 1/keep_prob"),
        "missing": (1.0, "kept units are not rescaled: did you forget to divide by keep_prob?"),
        "twice": (1 / p**2, f"kept units scaled by 1/keep_prob² = {1 / p**2:.4f}: divided by keep_prob twice"),
        "multiplied": (p, f"kept units scaled by keep_prob = {p:.4f}: multiplied by keep_prob instead of "
                          "dividing"),
        "multiplied_twice": (p**2, f"kept units scaled by keep_prob² = {p**2:.4f}: multiplied by keep_prob "
                                   "twice"),
        "drop_prob": (1 / (1 - p) if p < 1 else float("inf"),
                      f"kept units scaled by 1/(1 − keep_prob) = {1 / (1 - p) if p < 1 else float('inf'):.4f}: "
                      "divided by the drop probability instead of the keep probability"),
    }


#: What makes every call draw the same mask, by where the implementation's randomness comes from
#: (``Implementation.rng_source``). ``None`` and ``"numpy"``: the learner's reseeded global RNG.
IDENTICAL_MASK_CAUSES = {
    "numpy": ("the function reseeds the random number generator (e.g. np.random.seed(...) inside "
              "it), so masks are identical across calls — remove the reseed from the forward pass"),
    "torch": ("the torch generator is reseeded on every call (torch.manual_seed(...) in forward, or a "
              "torch.Generator re-created or re-seeded per call), so it replays one mask — seed once, "
              "outside the training loop"),
    "jax-key": ("the same JAX PRNG key reaches the draw on every call: a key reused instead of split "
                "(or one created inside the function, e.g. jax.random.key(0), ignoring the key passed in), "
                "and a jax.random function given one key returns one mask — split it each step "
                "(key, sub = jax.random.split(key)) and draw with the fresh subkey"),
    "keras-seed": ("the keras SeedGenerator's state does not advance between calls: its update is "
                   "discarded (a stateless call, or a jitted function that does not return the new seed "
                   "state, keras#18426), so every call starts from the same seed — carry the updated "
                   "seed state out of each call"),
    "flax-rngs": ("the flax 'dropout' RNG stream is the same on every call: one key is passed as "
                  "rngs={'dropout': key} to every apply (or an nnx.Rngs is re-created per call) — split "
                  "or fold in the step number for each call"),
    "tf-global": ("TF's global seed is reset on every call (tf.random.set_seed(...) inside the step), or "
                  "each call re-creates its random op with the same op seed, so the (global, op) seed pair "
                  "and with it the mask repeat — set the seed once, outside the training loop"),
    "tf-stateless": ("a constant seed is passed to a TF stateless random op (tf.random.stateless_uniform "
                     "or tf.nn.experimental.stateless_dropout with the same seed on every call): stateless "
                     "ops are a pure function of their seed — derive a new seed per step "
                     "(tf.random.experimental.stateless_split or a tf.random.Generator)"),
}

#: A jitted function whose masks never change: the seed became a constant of the trace.
JIT_FROZEN_CAUSE = (
    "the function is compiled with jax.jit and its seed or key was captured when it was traced: the "
    "random state is advanced in Python at trace time only, so the compiled function replays one "
    "mask on every call (keras#18426) — pass the key or seed state in as an argument of the jitted "
    "function and return the advanced state")


def identical_masks_cause(rng_source=None, jitted=False, calls=None, repeated=0):
    """Why every call drops the same units, named by the implementation's source of randomness.

    Parameters
    ----------
    rng_source : str, optional
        ``Implementation.rng_source``; ``None`` (unknown, a plain function) is read as numpy's
        global RNG, the learner's case.
    jitted : bool
        ``train`` is a ``jax.jit``-compiled function: a frozen trace is the likelier cause.
    calls : int, optional
        Number of calls that produced identical masks (quoted in the message).
    repeated : int
        When only some successive pairs were identical: how many (raw evidence, no mechanism).

    Returns
    -------
    str
        One sentence. An ``rng_source`` with no known mechanism gets the raw evidence only.
    """
    seen = f" (all {calls} successive calls produced identical masks)" if calls else ""
    if repeated:
        return (f"{repeated} of {calls - 1} pairs of successive calls drew identical masks: the random "
                "state repeats between some calls" + (f" (rng_source={rng_source!r})" if rng_source else ""))
    head = f"every call drops the same units{seen}: "
    if jitted:
        return head + JIT_FROZEN_CAUSE
    source = "numpy" if rng_source is None else str(rng_source)
    if source in IDENTICAL_MASK_CAUSES:
        return head + IDENTICAL_MASK_CAUSES[source]
    return (head + f"the random state of the implementation (rng_source={source!r}) does not "
            "advance between calls")


def _axes(axes):
    return "(" + ", ".join(str(a) for a in axes) + ("," if len(axes) == 1 else "") + ")"


def sharing_cause(ndim, declared, measured):
    """Why the mask is shared along other axes than the contract says, from the measured sharing.

    Parameters
    ----------
    ndim : int
        Rank of the probe.
    declared : tuple of int
        Axes the contract shares one mask along (non-negative), ``()`` for independent masks.
    measured : tuple of int
        Axes along which every measured mask was constant.

    Returns
    -------
    str or None
        One sentence, or None when the measured sharing equals the declared one.
    """
    declared, measured = tuple(sorted(declared)), tuple(sorted(measured))
    if declared == measured:
        return None
    extra = tuple(a for a in measured if a not in declared)
    missing = tuple(a for a in declared if a not in measured)
    batched = tuple(range(2, ndim))   # (N, C, ...) channel dropout: one mask per sample and channel
    unbatched = tuple(range(1, ndim))  # (C, ...) unbatched channel dropout: one mask per channel
    if ndim >= 3 and declared == unbatched and measured == batched:
        return (f"the mask varies along axis 1, which shared_axes={_axes(declared)} shares, and is shared "
                f"along {_axes(measured)} only: the unbatched (C, H, W) input is read as a batch "
                "(N, C, L), so axis 1 is taken for the channels and axis 0 for the batch — channels are "
                "not dropped whole (torch Dropout2d on (C, H, W) input, pytorch#69801)")
    if ndim >= 3 and declared == batched and measured == unbatched:
        return (f"the mask is shared along axis 1 (the channels) as well as {_axes(declared)}: each sample "
                "is kept or dropped whole — the batched (N, C, L) input is read as one unbatched sample "
                "(C, H, W) whose channels are the batch (torch Dropout2d on 3-D input since 1.11, "
                "pytorch#77081; use Dropout1d for (N, C, L))")
    if declared and measured and not set(declared) & set(measured):
        return (f"the mask is shared along {_axes(measured)} instead of {_axes(declared)}: the noise shape "
                "has its 1s on the wrong axes (e.g. a channels-last layout read as channels-first, or "
                "the channel axis given as the shared one) — one mask per sample and channel needs a "
                f"noise shape with 1 on {_axes(declared)} only")
    parts = []
    for a in extra:
        if a == 0:
            parts.append("every example in the batch gets the same mask (one mask for the whole batch "
                         "along axis 0): each example needs its own mask — declare shared_axes=(0,) if "
                         "one mask per batch is intended")
        elif ndim >= 3 and not declared:
            parts.append(f"the same mask is applied at every index of axis {a} (e.g. every time step "
                         "of a sequence), which the contract says is independent: a mask drawn once and "
                         "broadcast, or one seeded op replayed per step (tensorflow#2789: a seeded "
                         "DropoutWrapper synchronises masks over time) — draw a fresh mask per step, or "
                         f"declare shared_axes=({a},) if variational dropout is intended")
        else:
            parts.append(f"the mask is constant along axis {a}, which the contract says is independent: "
                         "units must be dropped independently (a mask shared along an axis must be "
                         "declared with shared_axes)")
    if missing:
        parts.append(f"the mask varies along axis {', '.join(map(str, missing))}, which "
                     f"shared_axes={_axes(declared)} shares (measured sharing {_axes(measured)})")
    return "; ".join(parts) if parts else None


def _contains(low, high, value, slack=0.0):
    return low - slack <= value <= high + slack


def _eval_causes(p, contract, eval_ratio, eval_dropped):
    found = []
    if eval_dropped and p < 1:
        found.append(f"eval zeroes {eval_dropped:.1%} of the units: dropout is still active at test time — "
                     "the eval path draws a mask (e.g. F.dropout(x, p) in forward without "
                     "training=self.training ignores module.eval(), pytorch#26338 / pytorch#141557)")
    if eval_ratio is None or contract == "standard" or p >= 1:
        return found
    if abs(eval_ratio - p) <= 1e-6:
        found.append(f"eval output ≈ keep_prob·x ({p:g}·x): test-time scaling left in an inverted "
                     "implementation — the eval path of inverted dropout is the identity")
    elif abs(eval_ratio - 1 / p) <= 1e-6:
        found.append("eval output ≈ x/keep_prob: the eval path divides by keep_prob — at test time "
                     "inverted dropout is the identity (no mask, no 1/keep_prob)")
    return found


def diagnose(*, keep_prob, contract, rate=None, rate_ci=None, scale=None, only_zero_one=False,
             identical_calls=False, eval_ratio=None, rng_source=None, jitted=False, calls=None,
             low_precision=False, sharing=None, eval_dropped=None, repeated_calls=0):
    """Most likely causes of a failure, each with its evidence (a tuple of sentences).

    Parameters
    ----------
    keep_prob : float
    contract : str
    rate : float, optional
        Measured keep rate, with ``rate_ci = (low, high)``.
    rate_ci : tuple of float, optional
    scale : float, optional
        Measured kept-unit scale (exact per unit, so compared with a relative tolerance).
    only_zero_one : bool
        Every output value was 0 or 1.
    identical_calls : bool
        Consecutive calls produced identical masks.
    eval_ratio : float, optional
        Measured eval output / input, when constant over units.
    rng_source, jitted, calls
        Where the randomness comes from (:func:`identical_masks_cause`).
    repeated_calls : int
        Pairs of successive calls with identical masks, when not all pairs were.
    low_precision : bool
        The keep probability is held in a 16-bit float.
    sharing : tuple, optional
        ``(ndim, declared axes, measured axes)`` (:func:`sharing_cause`).
    eval_dropped : float, optional
        Fraction of non-zero inputs the eval path set to zero.

    Returns
    -------
    tuple of str
    """
    p = keep_prob
    found = []
    if identical_calls:
        found.append(identical_masks_cause(rng_source, jitted, calls))
    elif repeated_calls and calls:
        found.append(identical_masks_cause(rng_source, jitted, calls, repeated=repeated_calls))
    if sharing is not None and (cause := sharing_cause(*sharing)):
        found.append(cause)
    if only_zero_one:
        found.append("the output contains only 0s and 1s: the function returns the mask instead of "
                     "the masked input (return x * mask / keep_prob)")
    rate_match = None
    if rate is not None and rate_ci is not None and p < 1:
        low, high = rate_ci
        matches = [k for k, (v, _) in rate_candidates(p).items() if _contains(low, high, v, 1e-12)]
        if "correct" not in matches and matches:
            rate_match = matches[0]
    scale_match = None
    if scale is not None and contract in ("inverted", "standard"):
        cands = scale_candidates(p, contract)
        matches = [k for k, (v, _) in cands.items() if abs(scale - v) <= 1e-6 * max(abs(v), 1)]
        if "correct" not in matches and matches:
            scale_match = matches[0]
    if rate_match in ("nothing_dropped", "everything_dropped"):
        found.append(rate_candidates(p)[rate_match][1])
        if rate_match == "nothing_dropped" and low_precision:
            found.append(LOW_PRECISION_NOTHING_DROPPED)
        if scale_match and rate_match == "nothing_dropped":
            found.append(scale_candidates(p, contract)[scale_match][1])
    elif rate_match == "reversed" and scale_match == "drop_prob":
        found.append(f"keep rate ≈ 1 − keep_prob = {1 - p:.4f} and kept units scaled by 1/(1 − keep_prob): "
                     "the argument is used as the drop probability — a parameter documented as one "
                     "probability but used as the other (e.g. a keep probability passed as a framework's "
                     "rate, google-research/electra#61)")
    else:
        if rate_match:
            found.append(rate_candidates(p)[rate_match][1])
        if scale_match:
            found.append(scale_candidates(p, contract)[scale_match][1])
    found += _eval_causes(p, contract, eval_ratio, eval_dropped)
    return tuple(found)
