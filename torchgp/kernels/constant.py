r"""``ConstantKernel``: the prior variance of an unknown constant, :math:`k(x, x') = c`."""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.constraints import Positive
from torchgp.kernels.kernel import Kernel


class ConstantKernel(Kernel):
    r"""Constant covariance: the prior variance :math:`c` of a constant offset :math:`f_0 \sim N(0, c)`.

    .. math:: k(x, x') = c

    ``k_base + ConstantKernel()`` lets the GP infer a non-zero level (with its uncertainty in the
    posterior covariance); ``k_base * ConstantKernel()`` equals ``ScaleKernel(k_base)``.

    Args:
        batch_shape: batch of independent constants.
        constant_prior: prior on c.
        constant_constraint: constraint on c (default ``Positive()``).
        active_dims: accepted for the common interface (c does not depend on the inputs).

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``; ``constant`` is ``(*batch, 1)``.
    """

    def __init__(self, batch_shape=None, constant_prior=None, constant_constraint=None, active_dims=None):
        super().__init__(batch_shape=torch.Size([]) if batch_shape is None else batch_shape, active_dims=active_dims)
        constraint = Positive() if constant_constraint is None else constant_constraint
        init = constraint.transform(torch.zeros(*self.batch_shape, 1))
        self.register_constrained("constant", init, constraint, constant_prior)

    def _expand(self, x1, x2, tail) -> torch.Tensor:
        batch = broadcast_shapes(x1.shape[:-2], x2.shape[:-2], self.batch_shape)
        c = self.constant.to(dtype=x1.dtype, device=x1.device)  # (*batch, 1)
        return c.reshape(*c.shape, *([1] * (len(tail) - 1))).expand(*batch, *tail)

    def forward(self, x1, x2, **params):
        return self._expand(x1, x2, (x1.shape[-2], x2.shape[-2]))

    def forward_diag(self, x1, x2, **params):
        return self._expand(x1, x2, (x1.shape[-2],))
