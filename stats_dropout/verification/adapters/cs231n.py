"""CS231n-style ``dropout_forward(x, dropout_param)`` / ``dropout_backward(dout, cache)`` layers."""

from __future__ import annotations

from stats_dropout._internal.validation import callable_iv, choice_iv
from stats_dropout.verification.adapters.common import add_note, kind_of, name_of, named


def _p_means_iv(p_means):
    return choice_iv(p_means, "p_means", ("keep", "drop"))


def _cs231n_param(keep_prob, p_means, mode):
    # keep_prob is passed through unvalidated: the battery probes odd values on purpose and a
    # user layer's reaction to them is part of what is measured.
    p = keep_prob if p_means == "keep" else 1 - keep_prob
    return {"p": p, "mode": mode}


def _cs231n_forward_call(forward, x, keep_prob, p_means, mode):
    param = _cs231n_param(keep_prob, p_means, mode)
    try:
        out = forward(x, param)
    except Exception as exc:
        raise add_note(exc, f"raised by {name_of(forward)}(x, {param!r}) "
                             "called by stats_dropout.adapters.from_cs231n") from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{name_of(forward, 'forward')} must return (out, cache); got {kind_of(out)}")
    return out


def from_cs231n(forward, *, p_means="keep"):
    """``(train, eval)`` for a CS231n-style ``dropout_forward(x, dropout_param)``.

    Parameters
    ----------
    forward : callable
        ``dropout_forward(x, dropout_param) -> (out, cache)`` with ``dropout_param`` the dict
        ``{"p": ..., "mode": "train" | "test"}``.
    p_means : {"keep", "drop"}
        Whether ``dropout_param["p"]`` is the probability of keeping a unit (default) or of
        dropping it; assignments differ on this, so say which one yours uses.

    Returns
    -------
    train, eval : callable
        ``f(x, keep_prob) -> out`` calling ``forward`` in mode ``"train"`` and ``"test"``. No
        ``"seed"`` key is ever passed: randomness comes from numpy's global RNG.
    """
    callable_iv(forward, "forward")
    p_means = _p_means_iv(p_means)
    base = getattr(forward, "__name__", "dropout_forward")

    def train(x, keep_prob):
        return _cs231n_forward_call(forward, x, keep_prob, p_means, "train")[0]

    def evaluate(x, keep_prob):
        return _cs231n_forward_call(forward, x, keep_prob, p_means, "test")[0]

    return (named(train, f"{base}[train]", "``forward`` in mode 'train'."),
            named(evaluate, f"{base}[test]", "``forward`` in mode 'test'."))


def cs231n_backward(forward, backward, *, p_means="keep"):
    """``backward(x, upstream, keep_prob) -> (y, grad)`` for CS231n-style dropout.

    Parameters
    ----------
    forward : callable
        ``dropout_forward(x, dropout_param) -> (out, cache)``.
    backward : callable
        ``dropout_backward(dout, cache) -> dx``.
    p_means : {"keep", "drop"}
        As in :func:`from_cs231n`.

    Returns
    -------
    backward : callable
        Runs ``forward`` in train mode, then ``backward(upstream, cache)`` on its cache, and
        returns ``(out, dx)``. Correct inverted dropout: ``dx = upstream * mask / keep_prob``.
    """
    callable_iv(forward, "forward")
    callable_iv(backward, "backward")
    p_means = _p_means_iv(p_means)

    def run(x, upstream, keep_prob):
        out, cache = _cs231n_forward_call(forward, x, keep_prob, p_means, "train")
        try:
            dx = backward(upstream, cache)
        except Exception as exc:
            raise add_note(exc, f"raised by {name_of(backward)}(dout, cache) "
                                 "called by stats_dropout.adapters.cs231n_backward") from None
        return out, dx

    return named(run, getattr(backward, "__name__", "dropout_backward"), run.__doc__)
