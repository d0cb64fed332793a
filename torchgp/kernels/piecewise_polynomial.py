r"""``PiecewisePolynomialKernel``: compactly supported polynomials in the scaled distance (R&W 2006, eq. 4.21)."""

from __future__ import annotations

import math

import torch

from torchgp.kernels.distance import dist
from torchgp.kernels.kernel import Kernel


def _pp_profile(r: torch.Tensor, j: int, q: int) -> torch.Tensor:
    r"""R&W eq. 4.21: :math:`k_{pp,q}(r) = (1 - r)_+^{j+q} f_q(r)` for an elementwise distance tensor ``r``."""
    if q == 0:
        poly = torch.ones_like(r)
    elif q == 1:
        poly = (j + 1) * r + 1
    elif q == 2:
        poly = 1 + (j + 2) * r + ((j**2 + 4 * j + 3) / 3.0) * r.square()
    else:
        poly = (
            1
            + (j + 3) * r
            + ((6 * j**2 + 36 * j + 45) / 15.0) * r.square()
            + ((j**3 + 9 * j**2 + 23 * j + 15) / 15.0) * r.pow(3)
        )
    return (1 - r).clamp_min(0).pow(j + q) * poly


class PiecewisePolynomialKernel(Kernel):
    r"""Piecewise polynomial kernel with compact support, positive definite in :math:`\mathbb R^D` (R&W eq. 4.21).

    .. math::
        k_{pp,q}(r) = (1 - r)_+^{j+q} f_q(r),\quad j = \lfloor D/2 \rfloor + q + 1,\quad
        r = \lVert (x - x')/\ell \rVert,

    with :math:`f_0 = 1`, :math:`f_1 = (j+1) r + 1`, :math:`f_2 = 1 + (j+2) r + \tfrac{j^2+4j+3}{3} r^2`,
    :math:`f_3 = 1 + (j+3) r + \tfrac{6j^2+36j+45}{15} r^2 + \tfrac{j^3+9j^2+23j+15}{15} r^3`.
    The kernel is zero for :math:`r \ge 1` and ``2q`` times differentiable.

    Args:
        q: smoothness, one of 0, 1, 2, 3 (default 2).
        ard_num_dims, batch_shape, active_dims, lengthscale_prior, lengthscale_constraint: as :class:`Kernel`.

    Shapes:
        ``x1 (*batch, n, D)``, ``x2 (*batch, m, D)`` → ``(*batch, n, m)``.
    """

    has_lengthscale = True
    is_stationary = True

    def __init__(self, q: int = 2, **kwargs):
        super().__init__(**kwargs)
        if q not in (0, 1, 2, 3):
            raise ValueError(f"PiecewisePolynomialKernel: q must be 0, 1, 2 or 3; got {q!r}.")
        self.q = q

    def _j(self, x: torch.Tensor) -> int:
        return math.floor(x.shape[-1] / 2.0) + self.q + 1

    def forward(self, x1, x2, **params):
        a = self.scaled(x1)
        b = a if x2 is x1 else self.scaled(x2)
        return _pp_profile(dist(a, b), self._j(x1), self.q)  # dist: zero gradient at r = 0

    def forward_diag(self, x1, x2, **params):
        r = ((x1 - x2) / self.lengthscale).pow(2).sum(-1).clamp_min(1e-30).sqrt()
        return _pp_profile(r, self._j(x1), self.q)
