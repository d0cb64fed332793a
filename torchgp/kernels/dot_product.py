r"""Dot-product kernels: linear and polynomial (R&W 2006, §4.2.2).

Shapes: ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)`` (``(*batch, n)`` with ``diag``).
"""

from __future__ import annotations

import warnings

import torch

from torchgp.constraints import Positive
from torchgp.errors import InputError
from torchgp.kernels.kernel import Kernel


class LinearKernel(Kernel):
    r"""Linear kernel (Bayesian linear regression through the origin; R&W 2006 eq. 4.21 with Σ_p = diag(v)).

    .. math:: k(x, x') = x^\top \operatorname{diag}(v)\, x' = \sum_k v_k\, x_k x'_k

    Args:
        ard_num_dims: one variance per input dimension if set, else one shared ``v``.
        variance_prior: prior on ``v``.
        variance_constraint: constraint on ``v`` (default ``Positive()``).
        **kwargs: ``batch_shape``, ``active_dims`` (see :class:`~torchgp.kernels.Kernel`).

    Shapes:
        ``variance (*batch, 1, ard_num_dims or 1)``; ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` →
        ``(*batch, n, m)`` (``(*batch, n)`` with ``diag``).

    Example:
        >>> import torch
        >>> k = LinearKernel(ard_num_dims=2).double()
        >>> k.variance = torch.tensor([[0.5, 2.0]])
        >>> float(k(torch.tensor([[1.0, 1.0]], dtype=torch.float64)).to_dense())
        2.5
    """

    def __init__(self, ard_num_dims=None, variance_prior=None, variance_constraint=None, **kwargs):
        for old in ("num_dimensions", "offset_prior"):
            if old in kwargs:  # GPyTorch < 1.12 took them and ignored them
                kwargs.pop(old)
                warnings.warn(
                    f"LinearKernel({old}=...) is deprecated and has no effect (as in GPyTorch); remove it. "
                    "For one variance per input dimension pass ard_num_dims=d.",
                    DeprecationWarning,
                    stacklevel=2,
                )
        super().__init__(ard_num_dims=ard_num_dims, **kwargs)
        constraint = Positive() if variance_constraint is None else variance_constraint
        init = constraint.transform(torch.zeros(*self.batch_shape, 1, 1 if ard_num_dims is None else ard_num_dims))
        self.register_constrained("variance", init, constraint, variance_prior)

    def forward(self, x1, x2, diag=False, **params):
        v = self.variance  # (*batch, 1, d or 1)
        if diag:
            return (x1 * v * x2).sum(-1)
        return (x1 * v) @ x2.mT


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
