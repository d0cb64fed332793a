r"""Dot-product kernels: linear and polynomial (R&W 2006, §4.2.2).

Shapes: ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)`` (``(*batch, n)`` with ``diag``).
"""

from __future__ import annotations

import torch

from torchgp.constraints import Positive
from torchgp.errors import InputError
from torchgp.kernels.kernel import Kernel


class LinearKernel(Kernel):
    r"""Linear kernel (Bayesian linear regression through the origin).

    .. math:: k(x, x') = v\, x^\top x'

    Args:
        variance_prior, variance_constraint: prior/constraint on v (default ``Positive()``).
    """

    def __init__(self, num_dimensions=None, offset_prior=None, variance_prior=None, variance_constraint=None, **kwargs):
        super().__init__(**kwargs)
        constraint = Positive() if variance_constraint is None else variance_constraint
        init = constraint.transform(torch.zeros(*self.batch_shape, 1, 1))
        self.register_constrained("variance", init, constraint, variance_prior)

    def forward(self, x1, x2, diag=False, **params):
        v = self.variance
        if diag:
            return v[..., 0] * (x1 * x2).sum(-1)
        return v * (x1 @ x2.mT)


class PolynomialKernel(Kernel):
    r"""Polynomial kernel.

    .. math:: k(x, x') = (x^\top x' + c)^p

    Args:
        power: integer degree p ≥ 1.
        offset_prior, offset_constraint: prior/constraint on c (default ``Positive()``).
    """

    def __init__(self, power: int, offset_prior=None, offset_constraint=None, **kwargs):
        if int(power) != power or power < 1:
            raise InputError(f"PolynomialKernel: power must be an integer >= 1; got {power!r}.")
        super().__init__(**kwargs)
        self.power = int(power)
        constraint = Positive() if offset_constraint is None else offset_constraint
        init = constraint.transform(torch.zeros(*self.batch_shape, 1))
        self.register_constrained("offset", init, constraint, offset_prior)

    def forward(self, x1, x2, diag=False, **params):
        c = self.offset  # (*batch, 1)
        if diag:
            return ((x1 * x2).sum(-1) + c).pow(self.power)
        return (x1 @ x2.mT + c.unsqueeze(-1)).pow(self.power)
