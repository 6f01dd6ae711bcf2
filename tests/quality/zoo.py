"""Deliberately wrong (and several correct) dropout implementations: the battery's power test.

Each bug is one a learner or a library author actually makes (the forum thread behind
docs/CLAIMS.md and the issue list them); each is written the way such code is written. The
table at the bottom says which check must catch it, at which keep probabilities (a keep/drop
swap is identical in law to correct code at 0.5), and a fragment of the message.
"""

import numpy as np


def _valid(keep_prob):
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")


# --- correct implementations, different styles -----------------------------------------------
def correct_global_rng(x, keep_prob):
    _valid(keep_prob)
    mask = np.random.rand(*x.shape) < keep_prob
    return x * mask / keep_prob


_rng = np.random.default_rng(12345)


def correct_own_generator(x, keep_prob):
    _valid(keep_prob)
    keep = _rng.random(x.shape) < keep_prob
    return np.where(keep, x / keep_prob, 0).astype(x.dtype)


def correct_binomial(x, keep_prob):
    _valid(keep_prob)
    return x * np.random.binomial(1, keep_prob, size=x.shape) / keep_prob


def correct_standard(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.rand(*x.shape) < keep_prob)


def standard_eval(x, keep_prob):
    return x * keep_prob


def correct_gaussian(x, keep_prob):
    _valid(keep_prob)
    return x * np.random.normal(1.0, np.sqrt((1 - keep_prob) / keep_prob), size=x.shape)


def correct_channel(x, keep_prob):
    _valid(keep_prob)
    mask = np.random.rand(x.shape[0], x.shape[1], *([1] * (x.ndim - 2))) < keep_prob
    return x * mask / keep_prob


def identity(x, *args):
    return x.copy()


# --- bugs ------------------------------------------------------------------------------------
def randn_mask(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.randn(*x.shape) < keep_prob) / keep_prob


def reversed_comparison(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.rand(*x.shape) > keep_prob) / keep_prob


def divides_by_drop_prob(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.rand(*x.shape) < keep_prob) / (1 - keep_prob) if keep_prob < 1 else x.copy()


def missing_rescale(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.rand(*x.shape) < keep_prob)


def double_rescale(x, keep_prob):
    _valid(keep_prob)
    y = x * (np.random.rand(*x.shape) < keep_prob) / keep_prob
    return y / keep_prob


def multiplies_by_keep_prob(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.rand(*x.shape) < keep_prob) * keep_prob


def rate_used_as_keep(x, keep_prob):
    """Takes keep_prob but hands it on as a framework's drop *rate* (google-research/electra#61:
    ``dropout(x, rate=keep_prob)``): keeps with probability 1 − keep_prob, scaled by its inverse."""
    _valid(keep_prob)
    rate = keep_prob
    if rate == 1:
        return np.zeros_like(x)
    keep = 1 - rate
    return x * (np.random.rand(*x.shape) < keep) / keep


def returns_mask(x, keep_prob):
    _valid(keep_prob)
    return (np.random.rand(*x.shape) < keep_prob).astype(x.dtype)


def reseeds_rng(x, keep_prob):
    _valid(keep_prob)
    np.random.seed(1)  # as in the course's graded template
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def modifies_input(x, keep_prob):
    _valid(keep_prob)
    x *= np.random.rand(*x.shape) < keep_prob
    x /= keep_prob
    return x


def fixed_count_per_row(x, keep_prob):
    _valid(keep_prob)
    n = x.shape[-1]
    keep = np.zeros(x.shape, dtype=bool)
    k = int(round(keep_prob * n))
    for row in range(x.shape[0]):
        keep[row, np.random.permutation(n)[:k]] = True
    return x * keep / keep_prob


def one_mask_per_batch(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.rand(1, *x.shape[1:]) < keep_prob) / keep_prob


def one_mask_per_row(x, keep_prob):
    _valid(keep_prob)
    return x * (np.random.rand(x.shape[0], 1) < keep_prob) / keep_prob


def returns_float64(x, keep_prob):
    _valid(keep_prob)
    return x.astype(np.float64) * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def flattens_output(x, keep_prob):
    _valid(keep_prob)
    return (x * (np.random.rand(*x.shape) < keep_prob) / keep_prob).ravel()


def divides_by_mask(x, keep_prob):
    _valid(keep_prob)
    mask = (np.random.rand(*x.shape) < keep_prob).astype(x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        return x / mask * keep_prob / keep_prob**2 * keep_prob


def raises_on_batch(x, keep_prob):
    _valid(keep_prob)
    if x.ndim > 1:
        raise IndexError("too many indices for array")  # written for 1-D inputs only
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def drops_only_positive(x, keep_prob):
    _valid(keep_prob)
    keep = (np.random.rand(*x.shape) < keep_prob) | (x < 0)
    return np.where(keep, x / keep_prob, 0)


def first_column_never_dropped(x, keep_prob):
    _valid(keep_prob)
    keep = np.random.rand(*x.shape) < keep_prob
    keep[:, 0] = True
    return x * keep / keep_prob


def no_validation(x, keep_prob):
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def eval_keeps_scaling(x, keep_prob):
    return x * keep_prob


def eval_divides(x, keep_prob):
    return x / keep_prob


def eval_applies_dropout(x, keep_prob):
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def gaussian_wrong_std(x, keep_prob):
    _valid(keep_prob)
    return x * np.random.normal(1.0, (1 - keep_prob) / keep_prob, size=x.shape)


def alpha_zeroes_dropped(x, keep_prob):
    _valid(keep_prob)
    from stats_dropout import theory

    a, b = theory.alpha_affine(keep_prob)
    keep = np.random.rand(*x.shape) < keep_prob
    return np.where(keep, a * x + b, 0.0)


def correct_alpha(x, keep_prob):
    _valid(keep_prob)
    from stats_dropout import theory

    a, b = theory.alpha_affine(keep_prob)
    keep = np.random.rand(*x.shape) < keep_prob
    return np.where(keep, a * x + b, a * theory.ALPHA_PRIME + b)


def channel_shared_wrong_axis(x, keep_prob):
    """Meant to be channel dropout (one mask per sample and channel) but shares along channels."""
    _valid(keep_prob)
    mask = np.random.rand(x.shape[0], 1, *x.shape[2:]) < keep_prob
    return x * mask / keep_prob


def backward_forward(x, upstream, keep_prob):
    """Correct forward and backward: the gradient uses the forward's mask."""
    mask = np.random.rand(*x.shape) < keep_prob
    return x * mask / keep_prob, upstream * mask / keep_prob


def backward_ignores_mask(x, upstream, keep_prob):
    """Caches the pre-dropout activation and forgets the mask in backward."""
    mask = np.random.rand(*x.shape) < keep_prob
    return x * mask / keep_prob, upstream / keep_prob


def backward_fresh_mask(x, upstream, keep_prob):
    """Draws a new mask in backward instead of reusing the forward's."""
    mask = np.random.rand(*x.shape) < keep_prob
    again = np.random.rand(*x.shape) < keep_prob
    return x * mask / keep_prob, upstream * again / keep_prob
