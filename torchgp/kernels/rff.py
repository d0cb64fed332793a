r"""``RFFKernel``: random Fourier features for the RBF kernel (Rahimi & Recht 2007)."""

from __future__ import annotations

import math

import torch

from torchgp.errors import ShapeError
from torchgp.kernels.kernel import Kernel
from torchgp.linalg import operators


class RFFKernel(Kernel):
    r"""Monte Carlo approximation of the RBF kernel with D random frequencies (Rahimi & Recht 2007).

    By Bochner's theorem the RBF kernel is the Fourier transform of :math:`N(0, \ell^{-2} I)`; with
    :math:`\omega_1..\omega_D \sim N(0, I)` drawn once (the buffer ``randn_weights``),

    .. math::
        k(x, x') \approx z(x)^\top z(x') = \frac1D \sum_{i=1}^D \cos\!\big(\omega_i^\top (x - x')/\ell\big),\quad
        z(x) = \tfrac1{\sqrt D}\big[\cos(\Omega^\top x/\ell),\ \sin(\Omega^\top x/\ell)\big]

    (sine-and-cosine features, the lower-variance estimator of Sutherland & Schneider 2015). The
    matrix is the low-rank root :math:`Z Z^\top` of rank at most 2D; call :meth:`resample` for new
    frequencies.

    Args:
        num_samples: D.
        num_dims: input dimension d; if None, inferred at the first call.
        ard_num_dims, batch_shape, active_dims, lengthscale_prior, lengthscale_constraint: as :class:`Kernel`.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``; ``randn_weights`` is
        ``(*batch, d, D)``.
    """

    has_lengthscale = True
    is_stationary = True

    def __init__(self, num_samples: int, num_dims: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_samples = int(num_samples)
        if num_dims is not None:
            self._init_weights(num_dims, self.num_samples)

    def _init_weights(self, num_dims=None, num_samples=None, randn_weights: torch.Tensor | None = None) -> None:
        """Register the ``(*batch, d, D)`` standard normal frequencies (drawn unless given)."""
        if randn_weights is None:
            raw = self.raw_lengthscale
            shape = (*self.batch_shape, num_dims, self.num_samples if num_samples is None else num_samples)
            randn_weights = torch.randn(shape, dtype=raw.dtype, device=raw.device)
        self.register_buffer("randn_weights", randn_weights)

    def resample(self, generator: torch.Generator | None = None) -> None:
        """Draw new frequencies :math:`\\omega_i \\sim N(0, I)` in place (same shape, dtype, device)."""
        if getattr(self, "randn_weights", None) is None:
            raise ShapeError("RFFKernel.resample: no frequencies yet; pass num_dims or call the kernel once first.")
        w = self.randn_weights
        self.randn_weights = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device)

    def _featurize(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """:math:`z(x)`: ``(*batch, n, d)`` → ``(*batch, n, 2D)``."""
        if getattr(self, "randn_weights", None) is None:
            self._init_weights(x.shape[-1], self.num_samples)
            self.randn_weights = self.randn_weights.to(x)
        W = self.randn_weights
        if W.shape[-2] != x.shape[-1]:
            raise ShapeError(
                f"RFFKernel has frequencies for d = {W.shape[-2]} inputs but got {x.shape[-1]} columns; build it with "
                f"num_dims={x.shape[-1]} or select columns with active_dims."
            )
        proj = self.scaled(x) @ W  # Ωᵀx/ℓ
        z = torch.cat([proj.cos(), proj.sin()], dim=-1)
        return z / math.sqrt(self.num_samples) if normalize else z

    def _lazy(self, x1, x2, last_dim_is_batch: bool = False, **params):
        root_op = getattr(operators, "LowRankRootOperator", None)
        if root_op is None or x1 is not x2 or last_dim_is_batch or params:
            return super()._lazy(x1, x2, last_dim_is_batch=last_dim_is_batch, **params)
        x = x1 if self.active_dims is None else x1.index_select(-1, self.active_dims)
        return root_op(self._featurize(x))

    def forward(self, x1, x2, **params):
        z1 = self._featurize(x1)
        z2 = z1 if x2 is x1 else self._featurize(x2)
        return z1 @ z2.mT

    def forward_diag(self, x1, x2, **params):
        return (self._featurize(x1) * self._featurize(x2)).sum(-1)
