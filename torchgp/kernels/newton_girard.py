r"""``NewtonGirardAdditiveKernel``: all interaction orders of a 1-D base kernel (Duvenaud et al. 2011)."""

from __future__ import annotations

import torch

from torchgp.constraints import Positive
from torchgp.kernels.kernel import Kernel


class NewtonGirardAdditiveKernel(Kernel):
    r"""Additive kernel of orders 1..R over d input dimensions (Duvenaud, Nickisch & Rasmussen 2011, eq. 5).

    With :math:`k_i = k_{base}(x_i, x'_i)` the base kernel on column i,

    .. math::
        k(x, x') = \sum_{r=1}^{R} \sigma_r\, e_r(k_1, \dots, k_d),\qquad
        e_r = \frac1r \sum_{j=1}^{r} (-1)^{j-1} e_{r-j}\, s_j,\quad s_j = \sum_{i=1}^d k_i^j,\quad e_0 = 1,

    the elementary symmetric polynomials by the Newton-Girard identities (O(d R²) per entry
    instead of the :math:`\binom{d}{r}` products of order r).

    Args:
        base_kernel: a one-dimensional kernel, applied to each column (``last_dim_is_batch``).
        num_dims: d.
        max_degree: R (default d; capped at d).
        active_dims: columns to use.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``; ``outputscale`` is
        ``(*batch, R)``, initialised to 1/R.
    """

    _children_see_inputs = False  # the base kernel sees one column at a time

    def __init__(self, base_kernel: Kernel, num_dims: int, max_degree: int | None = None, active_dims=None, **kwargs):
        if not isinstance(base_kernel, Kernel):
            raise TypeError(f"NewtonGirardAdditiveKernel needs a torchgp Kernel; got {type(base_kernel).__name__}.")
        super().__init__(active_dims=active_dims, **kwargs)
        self.base_kernel = base_kernel
        self.num_dims = int(num_dims)
        self.max_degree = self.num_dims if max_degree is None else min(int(max_degree), self.num_dims)
        constraint = Positive()
        self.register_constrained(
            "outputscale", torch.full((*self.batch_shape, self.max_degree), 1.0 / self.max_degree), constraint
        )
        self.outputscale_constraint = constraint  # GPyTorch's second name for it (state_dict keys match)

    def _combine(self, k: torch.Tensor, tail: int) -> torch.Tensor:
        """``k (*batch, d, *t)`` per-column kernels, ``t = (n, m)`` or ``(n,)`` (``tail = len(t)``) → ``(*batch, *t)``."""
        s = [None] + [k.pow(j).sum(-tail - 1) for j in range(1, self.max_degree + 1)]  # power sums s_j
        e = [torch.ones_like(s[1])]
        for r in range(1, self.max_degree + 1):
            e.append(sum((-1) ** (j - 1) * e[r - j] * s[j] for j in range(1, r + 1)) / r)
        sigma = self.outputscale.movedim(-1, 0)  # (R, *batch)
        sigma = sigma.reshape(*sigma.shape, *([1] * tail))
        return sum(sigma[r - 1] * e[r] for r in range(1, self.max_degree + 1))

    def forward(self, x1, x2, **params):
        return self._combine(self.base_kernel.evaluate_block(x1, x2, last_dim_is_batch=True, **params), 2)

    def forward_diag(self, x1, x2, **params):
        return self._combine(self.base_kernel.evaluate_block(x1, x2, diag=True, last_dim_is_batch=True, **params), 1)
