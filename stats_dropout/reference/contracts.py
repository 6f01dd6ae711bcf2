"""What each contract promises, value by value (DESIGN.md "contract"; THEORY.md §1, §5).

``inverted``  kept units ``x/p``, dropped 0, eval identity, ``E[train] = x``.
``standard``  kept units ``x``, dropped 0, eval ``p·x``, ``E[train] = p·x`` (Srivastava).
``gaussian``  ``y = x·r``, ``r ~ N(1, (1−p)/p)``, eval identity.
``moments``   alpha dropout: kept ``a·x + b``, dropped ``a·α' + b``, eval identity; output mean
              0 and variance 1 for N(0, 1) inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stats_dropout.reference import theory
from stats_dropout.reference.schemes import DropoutScheme, get_scheme

CONTRACTS = ("inverted", "standard", "gaussian", "moments")
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
