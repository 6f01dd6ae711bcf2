"""Adapters: every implementation under test becomes numpy callables ``train`` and ``eval``.

The battery speaks one language: ``train(x)`` or ``train(x, keep_prob)`` on numpy arrays with
axis 0 the batch, ``keep_prob`` the probability a unit is *kept*, and (for gradient checks)
``backward(x, upstream, keep_prob) -> (y, grad)``. This module translates three other
languages into it:

PyTorch modules (:func:`from_torch`, :func:`torch_spec`)
    ``nn.Dropout``, ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout``.
    Frameworks' ``rate`` (``module.p``) is converted to ``keep_prob = 1 − p`` here and nowhere
    else. torch is imported only when a torch function is called.
The course's three-layer network (:func:`from_course`, :func:`course_backward`)
    ``forward_propagation_with_dropout(X, parameters, keep_prob) -> (A3, cache)`` with examples
    as columns. The adapter chooses the network's weights so that the dropped-out activation of
    one layer is exactly ``mask * x / keep_prob`` for *any* sign of ``x`` (see Notes of
    :func:`from_course`), and reads it from the cache.
CS231n-style layers (:func:`from_cs231n`, :func:`cs231n_backward`)
    ``dropout_forward(x, dropout_param) -> (out, cache)`` with ``dropout_param["p"]`` either the
    keep or the drop probability, and ``dropout_backward(dout, cache) -> dx``.

Framework layers (:func:`implementation`, :func:`is_layer`)
    torch modules (every ``nn.Dropout*`` and custom modules), flax ``nnx.Dropout`` and
    ``linen.Dropout``, keras 3 ``Dropout``, ``SpatialDropout1D/2D/3D``, ``GaussianDropout``,
    ``AlphaDropout``: one :class:`~stats_dropout.Implementation` each, with keep_prob, contract,
    shared axes, channel axis, probe dtype and the framework's RNG driven by the battery's seed.
    Functions: :func:`from_jax` (``fn(key, x[, keep_prob])``) and :func:`from_tf` (``fn(x)``,
    ``fn(x, seed)``). docs/FRAMEWORKS.md has the matrix of verdicts.

Plain numpy callables ``f(x)`` or ``f(x, keep_prob)`` need no adapter.

What an adapter never does: reseed a random number generator between calls (a user function
that reseeds itself must stay visible to the battery; framework adapters only expose
``Implementation.reseed``, which the battery calls once per seeded block), catch a user's
exception, or repair a user's output (wrong shape, NaN, an input modified in place; the one
conversion is keras' bfloat16 output widened exactly to the float32 probe's dtype). Such
behaviour passes through unchanged so that the battery reports it; exceptions may gain a note
saying which adapter call raised them.
"""

from stats_dropout.verification.adapters.common import COURSE_CACHE_FIELDS, COURSE_PROBE_SHAPE
from stats_dropout.verification.adapters.course import course_backward, from_course
from stats_dropout.verification.adapters.cs231n import cs231n_backward, from_cs231n
from stats_dropout.verification.adapters.dispatch import framework_of, implementation, is_layer
from stats_dropout.verification.adapters.flax_layers import flax_implementation
from stats_dropout.verification.adapters.jax_functions import from_jax
from stats_dropout.verification.adapters.keras_layers import keras_implementation
from stats_dropout.verification.adapters.pytorch import from_torch, keep_prob_from_rate, torch_ranks, torch_spec
from stats_dropout.verification.adapters.ready import (
    course_implementation,
    course_probe,
    cs231n_implementation,
    detect_convention,
    torch_implementation,
    torch_layer_implementation,
)
from stats_dropout.verification.adapters.tf_functions import from_tf

__all__ = [
    "implementation",
    "is_layer",
    "framework_of",
    "from_torch",
    "from_jax",
    "from_tf",
    "torch_ranks",
    "keep_prob_from_rate",
    "torch_layer_implementation",
    "keras_implementation",
    "flax_implementation",
    "torch_spec",
    "from_course",
    "course_backward",
    "from_cs231n",
    "cs231n_backward",
    "detect_convention",
    "torch_implementation",
    "course_implementation",
    "cs231n_implementation",
    "course_probe",
    "COURSE_CACHE_FIELDS",
    "COURSE_PROBE_SHAPE",
]
