r"""Kernels that are cosines of the lag ``τ = x - x'``: the cosine kernel and the spectral mixture.

Shapes: ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → ``(*batch, n, m)``, or ``(*batch, n)`` with ``diag=True``.
"""

from __future__ import annotations

import math

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.constraints import Positive
from torchgp.kernels.distance import sq_dist
from torchgp.kernels.kernel import Kernel

__all__ = ["CosineKernel", "SpectralMixtureKernel"]


class CosineKernel(Kernel):
    r"""Cosine kernel.

    .. math:: k(x, x') = \cos\!\big(\pi \lVert x - x' \rVert / p\big)
    """

    is_stationary = True

    def __init__(self, period_length_prior=None, period_length_constraint=None, **kwargs):
        super().__init__(**kwargs)
        constraint = Positive() if period_length_constraint is None else period_length_constraint
        init = constraint.transform(torch.zeros(*self.batch_shape, 1, 1))
        self.register_constrained("period_length", init, constraint, period_length_prior)

    def forward(self, x1, x2, diag=False, **params):
        if diag and x1 is x2:  # cos(0) = 1, (*batch, n)
            shape = broadcast_shapes(x1.shape[:-1], (*self.batch_shape, 1))
            return torch.ones(shape, dtype=x1.dtype, device=x1.device)
        p = self.period_length
        a = x1 / p
        b = a if x2 is x1 else x2 / p
        r2 = (a - b).pow(2).sum(-1) if diag else sq_dist(a, b)  # (*batch, n) or (*batch, n, m)
        return torch.cos(math.pi * r2.clamp_min(1e-30).sqrt())


class SpectralMixtureKernel(Kernel):
    r"""Spectral mixture kernel (Wilson & Adams 2013, eq. 12), Q components.

    .. math::
        k(\tau) = \sum_q w_q \exp\!\big(-2\pi^2 \textstyle\sum_j \tau_j^2 \sigma_{qj}^2\big)
        \cos\!\big(2\pi \textstyle\sum_j \tau_j \mu_{qj}\big),\quad \tau = x - x'

    ``mixture_scales`` are σ (inverse lengthscales), ``mixture_means`` μ (frequencies).

    Args:
        num_mixtures: Q.
        ard_num_dims: input dimension d (default 1).
    """

    is_stationary = True

    def __init__(
        self,
        num_mixtures: int,
        ard_num_dims: int | None = 1,
        batch_shape=torch.Size([]),
        mixture_scales_prior=None,
        mixture_scales_constraint=None,
        mixture_means_prior=None,
        mixture_means_constraint=None,
        mixture_weights_prior=None,
        mixture_weights_constraint=None,
        **kwargs,
    ):
        if not isinstance(num_mixtures, int) or num_mixtures < 1:
            raise ValueError(f"SpectralMixtureKernel: num_mixtures must be a positive int; got {num_mixtures!r}.")
        super().__init__(ard_num_dims=ard_num_dims, batch_shape=batch_shape, **kwargs)
        self.num_mixtures = num_mixtures
        d = 1 if ard_num_dims is None else ard_num_dims
        b = self.batch_shape
        for name, shape, prior, constraint in (
            ("mixture_weights", (*b, num_mixtures), mixture_weights_prior, mixture_weights_constraint),
            ("mixture_means", (*b, num_mixtures, 1, d), mixture_means_prior, mixture_means_constraint),
            ("mixture_scales", (*b, num_mixtures, 1, d), mixture_scales_prior, mixture_scales_constraint),
        ):
            constraint = Positive() if constraint is None else constraint
            self.register_constrained(name, constraint.transform(torch.zeros(shape)), constraint, prior)

    def initialize_from_data(self, train_x: torch.Tensor, train_y: torch.Tensor, **kwargs) -> None:
        """Draw scales from the data's range and means below its Nyquist frequency.

        Scales: σ = 1 / ``|N(0, range²)|``; means: μ ~ U(0, ½ / smallest gap); weights: std(y)/Q.

        Args:
            train_x: ``(n, d)`` or ``(n,)``; train_y: ``(n,)``.
        """
        with torch.no_grad():
            x = train_x.unsqueeze(-1) if train_x.dim() == 1 else train_x
            if self.active_dims is not None:
                x = x[..., self.active_dims]
            xs = x.sort(dim=-2).values
            span = (xs[..., -1, :] - xs[..., 0, :]).reshape(-1, x.shape[-1]).max(0).values
            gaps = xs[..., 1:, :] - xs[..., :-1, :]
            gaps = torch.where(gaps > 0, gaps, torch.full_like(gaps, math.inf)).reshape(-1, x.shape[-1]).min(0).values
            gaps = torch.where(torch.isfinite(gaps), gaps, span.clamp_min(1.0))
            shape = self.raw_mixture_scales.shape
            self.mixture_scales = (torch.randn(shape) * span).abs().clamp_min(1e-6).reciprocal()
            self.mixture_means = (torch.rand(shape) * 0.5 / gaps).clamp_min(1e-6)
            self.mixture_weights = (
                (train_y.std() / self.num_mixtures).clamp_min(1e-6).expand(self.raw_mixture_weights.shape)
            )

    def initialize_from_data_empspect(self, train_x, train_y):
        """Alias of :meth:`initialize_from_data` (GPyTorch name)."""
        self.initialize_from_data(train_x, train_y)

    def forward(self, x1, x2, diag=False, **params):
        x1q, x2q = x1.unsqueeze(-3), x2.unsqueeze(-3)  # (*batch, 1, n, d): broadcast over q
        scales, means = self.mixture_scales, self.mixture_means  # (*b, Q, 1, d)
        w = self.mixture_weights  # (*b, Q)
        if diag and x1 is x2:
            return w.sum(-1, keepdim=True).expand(*broadcast_shapes(x1.shape[:-1], (*self.batch_shape, 1)))
        if diag:
            tau = x1q - x2q  # (*b, Q, n, d)
            envelope = torch.exp(-2 * math.pi**2 * (tau * scales).pow(2).sum(-1))
            phase = 2 * math.pi * (tau * means).sum(-1)
            return (w[..., None] * envelope * torch.cos(phase)).sum(-2)
        a = x1q * (2 * math.pi * scales)
        b = x2q * (2 * math.pi * scales)
        envelope = torch.exp(-0.5 * sq_dist(a, b))  # exp(-2π² Σ τ² σ²): (*b, Q, n, m)
        phase = 2 * math.pi * ((x1q * means).sum(-1).unsqueeze(-1) - (x2q * means).sum(-1).unsqueeze(-2))
        return (w[..., None, None] * envelope * torch.cos(phase)).sum(-3)
