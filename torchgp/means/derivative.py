r"""Means over function values and derivatives, ``(*batch, n, d + 1)`` (``2d + 1`` for ``…GradGrad``).

Column ``0`` is ``μ(x)``, columns ``1..d`` its gradient ``∂μ/∂x_i`` and, for ``…GradGrad``, columns ``d+1..2d`` the
second derivatives ``∂²μ/∂x_i²``, in the order of :mod:`torchgp.kernels.derivative`.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.means.means import Mean

__all__ = ["ConstantMeanGrad", "ConstantMeanGradGrad", "LinearMeanGrad", "LinearMeanGradGrad"]


class ConstantMeanGrad(Mean):
    """``μ(x) = c``: ``[c, 0, …, 0]`` per point.

    Args:
        prior: optional prior on ``constant``.
        batch_shape: batch of independent constants (``constant (*batch, 1)``).

    Shapes:
        ``x (*batch, n, d)`` → ``(*batch, n, d + 1)``.
    """

    _orders = 1

    def __init__(self, prior=None, batch_shape=torch.Size(), **kwargs):
        super().__init__()
        self.batch_shape = torch.Size(batch_shape)
        self.constant = torch.nn.Parameter(torch.zeros(*self.batch_shape, 1))
        if prior is not None:
            self.register_prior("mean_prior", prior, lambda m: m.constant)

    def forward(self, x):
        batch = broadcast_shapes(self.batch_shape, x.shape[:-2])
        n, d = x.shape[-2:]
        value = self.constant.unsqueeze(-1).expand(*batch, n, 1)
        zeros = torch.zeros(*batch, n, self._orders * d, dtype=value.dtype, device=value.device)
        return torch.cat([value, zeros], -1)


class ConstantMeanGradGrad(ConstantMeanGrad):
    """``μ(x) = c`` with first and second derivatives: ``[c, 0, …, 0]``, ``(*batch, n, 2d + 1)``."""

    _orders = 2


class LinearMeanGrad(Mean):
    r"""``μ(x) = xᵀw + b``: ``[xᵀw + b, w_1, …, w_d]`` per point.

    Args:
        input_size: d.
        batch_shape: batch of independent means (``weights (*batch, d, 1)``, ``bias (*batch, 1)``).
        bias: learn ``b`` (else ``b = 0``).

    Shapes:
        ``x (*batch, n, d)`` → ``(*batch, n, d + 1)``.
    """

    _orders = 1

    def __init__(self, input_size: int, batch_shape=torch.Size(), bias: bool = True):
        super().__init__()
        self.dim = input_size
        self.batch_shape = torch.Size(batch_shape)
        self.weights = torch.nn.Parameter(torch.randn(*self.batch_shape, input_size, 1))
        self.bias = torch.nn.Parameter(torch.randn(*self.batch_shape, 1)) if bias else None

    def forward(self, x):
        value = x @ self.weights  # (*batch, n, 1)
        if self.bias is not None:
            value = value + self.bias.unsqueeze(-1)
        grad = self.weights.mT.expand(*value.shape[:-1], self.dim)  # ∂(xᵀw)/∂x_i = w_i
        parts = [value, grad] + ([torch.zeros_like(grad)] if self._orders == 2 else [])
        return torch.cat(parts, -1)


class LinearMeanGradGrad(LinearMeanGrad):
    """``μ(x) = xᵀw + b`` with first and second derivatives: ``[xᵀw + b, w, 0]``, ``(*batch, n, 2d + 1)``."""

    _orders = 2
