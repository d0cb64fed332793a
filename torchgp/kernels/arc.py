r"""``ArcKernel``: a base kernel on a cylindrical embedding of each input (Swersky et al. 2014)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from torchgp.constraints import Interval, Positive
from torchgp.kernels.kernel import Kernel


class ArcKernel(Kernel):
    r"""Arc kernel for conditional (possibly inactive) parameters (Swersky et al. 2014, arXiv:1409.4011).

    Each input column is mapped onto an arc of radius :math:`\omega_i` and angle :math:`\pi\rho_i`,

    .. math::
        g_i(x) = \delta_i(x)\, \omega_i \big[\sin(\pi \rho_i x_i/\ell_i),\ \cos(\pi \rho_i x_i/\ell_i)\big],

    and ``base_kernel`` is evaluated on the embedded points: :math:`k(x, x') = k_{base}(g(x), g(x'))`.
    :math:`\delta_i(x) \in \{0, 1\}` marks the columns that are active (default: all), so inactive
    values all map to the origin.

    Args:
        base_kernel: the Euclidean kernel on the ``2d`` embedded columns; its lengthscale (if any)
            is fixed to 1 (the arc's radius plays that role).
        delta_func: ``x (*batch, n, d) → mask (*batch, n, d)``, default all ones.
        angle_prior: prior on the angle ρ (constrained to [0.1, 0.9]).
        radius_prior: prior on the radius ω (positive).
        ard_num_dims: one angle, radius and lengthscale per column if set.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``; ``angle``, ``radius``
        are ``(*batch, 1, d)`` (``d = 1`` without ``ard_num_dims``).
    """

    has_lengthscale = True
    _children_see_inputs = False  # the base kernel sees the 2d embedded columns

    def __init__(
        self,
        base_kernel: Kernel,
        delta_func: Callable | None = None,
        angle_prior=None,
        radius_prior=None,
        **kwargs,
    ):
        if not isinstance(base_kernel, Kernel):
            raise TypeError(f"ArcKernel needs a torchgp Kernel as base_kernel; got {type(base_kernel).__name__}.")
        super().__init__(**kwargs)
        self.last_dim = 1 if self.ard_num_dims is None else self.ard_num_dims
        self.delta_func = self.default_delta_func if delta_func is None else delta_func
        shape = (*self.batch_shape, 1, self.last_dim)
        angle_c, radius_c = Interval(0.1, 0.9), Positive()
        self.register_constrained("angle", angle_c.transform(torch.zeros(shape)), angle_c, angle_prior)
        self.register_constrained("radius", radius_c.transform(torch.zeros(shape)), radius_c, radius_prior)
        self.base_kernel = base_kernel
        if base_kernel.has_lengthscale:
            base_kernel.lengthscale = 1.0
            base_kernel.raw_lengthscale.requires_grad_(False)

    @staticmethod
    def default_delta_func(x: torch.Tensor) -> torch.Tensor:
        """Every column active: ones shaped like ``x``."""
        return torch.ones_like(x)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`g(x)`: ``(*batch, n, d)`` → ``(*batch, n, 2d)`` (sines, then cosines)."""
        mask = self.delta_func(x)
        phase = math.pi * self.angle * (x / self.lengthscale)
        return torch.cat((self.radius * torch.sin(phase) * mask, self.radius * torch.cos(phase) * mask), dim=-1)

    def _embedded(self, x1, x2):
        e1 = self.embedding(x1)
        return e1, e1 if x2 is x1 else self.embedding(x2)

    def forward(self, x1, x2, **params):
        return self.base_kernel.evaluate_block(*self._embedded(x1, x2), **params)

    def forward_diag(self, x1, x2, **params):
        return self.base_kernel.evaluate_block(*self._embedded(x1, x2), diag=True, **params)
