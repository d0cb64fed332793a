r"""``SpectralDeltaKernel``: a spectral density of learnable point masses (sparse spectrum GP)."""

from __future__ import annotations

import math

import torch

from torchgp.constraints import Positive
from torchgp.errors import InputError, ShapeError
from torchgp.kernels.kernel import Kernel


class SpectralDeltaKernel(Kernel):
    r"""Sparse-spectrum kernel (Lázaro-Gredilla et al. 2010): S learned frequencies :math:`z_s`.

    By Bochner's theorem a spectral density of S equal point masses gives

    .. math::
        k(x, x') = \frac1S \sum_{s=1}^S \cos\!\big(2\pi z_s^\top (x - x')/\ell\big) = \phi(x)^\top \phi(x'),\quad
        \phi(x) = \tfrac{1}{\sqrt S}\big[\cos(2\pi Z x/\ell),\ \sin(2\pi Z x/\ell)\big],

    a matrix of rank at most 2S.

    Args:
        num_dims: input dimension d (after ``active_dims``).
        num_deltas: S (default 128).
        Z_constraint: constraint on the frequencies (default ``Positive()``).
        batch_shape: batch of independent kernels.
        ard_num_dims, active_dims, lengthscale_prior, lengthscale_constraint: as :class:`Kernel`.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``; ``Z`` is ``(*batch, S, d)``.
    """

    has_lengthscale = True
    is_stationary = True

    def __init__(self, num_dims: int, num_deltas: int = 128, Z_constraint=None, batch_shape=torch.Size([]), **kwargs):
        batch_shape = torch.Size([]) if batch_shape is None else torch.Size(batch_shape)
        super().__init__(batch_shape=batch_shape, **kwargs)
        self.num_dims = int(num_dims)
        # raw frequencies start uniform in [0, 1), as GPyTorch's do
        self.register_parameter("raw_Z", torch.nn.Parameter(torch.rand(*batch_shape, num_deltas, self.num_dims)))
        self.register_constraint("raw_Z", Positive() if Z_constraint is None else Z_constraint)

    def initialize_from_data(self, train_x: torch.Tensor, train_y: torch.Tensor, **kwargs) -> None:
        r"""Draw the frequencies from the empirical spectrum of ``train_y`` by inverse-CDF sampling.

        The periodogram :math:`P(f) = |\hat y(f)|^2 / n` on the frequencies :math:`f = 0, 1/n, .., 1/2`
        (cycles per observation, the inputs taken as equally spaced) is integrated by the trapezoid
        rule into a CDF, and each point mass gets :math:`F^{-1}(u)`, :math:`u \sim U(0, 1)`, by linear
        interpolation (the same frequency for every input dimension).

        Args:
            train_x: ``(n, d)`` (unused beyond the common signature); train_y: ``(n,)``.
        """
        y = train_y.detach().reshape(-1).to("cpu", torch.float64)
        n = y.numel()
        power = torch.fft.rfft(y).abs().pow(2) / n  # (n // 2 + 1,)
        freq = torch.fft.rfftfreq(n, dtype=torch.float64)
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(power, freq)])
        if not cdf[-1] > 0:
            raise InputError("SpectralDeltaKernel.initialize_from_data: train_y has no power at any frequency.")
        cdf = cdf / cdf[-1]
        u = torch.rand(self.raw_Z.shape[-2], 1, dtype=torch.float64)
        i = torch.searchsorted(cdf, u).clamp(1, cdf.numel() - 1)
        lo, hi = cdf[i - 1], cdf[i]
        f = freq[i - 1] + (u - lo) * (freq[i] - freq[i - 1]) / (hi - lo).clamp_min(1e-300)
        self.Z = f.clamp_min(1e-6).expand(self.raw_Z.shape).to(self.raw_Z)

    def initialize_from_data_simple(self, train_x: torch.Tensor, train_y: torch.Tensor, **kwargs) -> None:
        """Frequencies uniform below half the inverse of the smallest gap between sorted inputs.

        Args:
            train_x: ``(n, d)`` or ``(n,)``; train_y: ``(n,)`` (unused, kept for the common signature).
        """
        x = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
        with torch.no_grad():
            xs = x.reshape(-1, x.shape[-1]).sort(dim=0).values
            gaps = xs[1:] - xs[:-1]
            gaps = torch.where(gaps > 0, gaps, torch.full_like(gaps, math.inf)).min(0).values
            gaps = torch.where(torch.isfinite(gaps), gaps, torch.ones_like(gaps))
            self.Z = (torch.rand_like(self.Z) * 0.5 / gaps.to(self.Z)).clamp_min(1e-6)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi(x)`: ``(*batch, n, d)`` → ``(*batch, n, 2S)``."""
        if x.shape[-1] != self.num_dims:
            raise ShapeError(
                f"SpectralDeltaKernel(num_dims={self.num_dims}) got inputs with {x.shape[-1]} columns; build it with "
                f"num_dims={x.shape[-1]} or select columns with active_dims."
            )
        Z = self.Z
        phase = 2 * math.pi * (self.scaled(x) @ Z.mT)
        return torch.cat([phase.cos(), phase.sin()], dim=-1) / math.sqrt(Z.shape[-2])

    def forward(self, x1, x2, **params):
        f1 = self.features(x1)
        f2 = f1 if x2 is x1 else self.features(x2)
        return f1 @ f2.mT

    def forward_diag(self, x1, x2, **params):
        return (self.features(x1) * self.features(x2)).sum(-1)
