r"""Stationary kernels: functions of ``x - x'`` (R&W 2006, ch. 4).

All take ``ard_num_dims``, ``batch_shape``, ``active_dims``, ``lengthscale_prior`` and
``lengthscale_constraint``. Shapes: ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` →
``(*batch, n, m)``, or ``(*batch, n)`` with ``diag=True`` (equal to 1 for the unit-variance
kernels below).
"""

from __future__ import annotations

import math

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.constraints import Positive
from torchgp.kernels.distance import sq_dist
from torchgp.kernels.kernel import Kernel


def _ones_diag(x1: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
    shape = broadcast_shapes(x1.shape[:-1], (*batch_shape, 1))
    return torch.ones(shape, dtype=x1.dtype, device=x1.device)


def _sq_dist(a: torch.Tensor, b: torch.Tensor, diag: bool, clamp: bool = True) -> torch.Tensor:
    """Squared distances: pairwise ``(*batch, n, m)``, or row by row ``(*batch, n)`` when ``diag``."""
    return (a - b).pow(2).sum(-1) if diag else sq_dist(a, b, clamp=clamp)


class RBFKernel(Kernel):
    r"""Squared-exponential kernel (R&W eq. 4.9).

    .. math:: k(x, x') = \exp\!\big(-\tfrac12 \lVert (x - x')/\ell \rVert^2\big)
    """

    has_lengthscale = True
    is_stationary = True

    def forward(self, x1, x2, diag=False, **params):
        if diag and x1 is x2:
            return _ones_diag(x1, self.batch_shape)
        a = self.scaled(x1)
        b = a if x2 is x1 else self.scaled(x2)
        # in place on a fresh tensor (two n × m buffers fewer); round-off negatives are harmless in exp
        return _sq_dist(a, b, diag, clamp=False).mul_(-0.5).exp_()


class MaternKernel(Kernel):
    r"""Matérn kernel with smoothness ν ∈ {1/2, 3/2, 5/2} (R&W eqs. 4.14, 4.17).

    .. math::
        k_{1/2} = e^{-r},\quad k_{3/2} = (1 + \sqrt3 r) e^{-\sqrt3 r},\quad
        k_{5/2} = (1 + \sqrt5 r + \tfrac53 r^2) e^{-\sqrt5 r},\quad r = \lVert (x - x')/\ell \rVert

    Args:
        nu: smoothness, one of 0.5, 1.5, 2.5 (default 2.5).
    """

    has_lengthscale = True
    is_stationary = True

    def __init__(self, nu: float = 2.5, **kwargs):
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"MaternKernel: nu must be 0.5, 1.5 or 2.5; got {nu}.")
        super().__init__(**kwargs)
        self.nu = nu

    def forward(self, x1, x2, diag=False, **params):
        if diag and x1 is x2:
            return _ones_diag(x1, self.batch_shape)
        a = self.scaled(x1)
        b = a if x2 is x1 else self.scaled(x2)
        r2 = _sq_dist(a, b, diag)
        if self.nu == 0.5:
            return torch.exp(-r2.clamp_min(1e-30).sqrt())
        s = math.sqrt(2 * self.nu)
        sr = s * r2.clamp_min(1e-30).sqrt()
        poly = 1 + sr if self.nu == 1.5 else 1 + sr + (5.0 / 3.0) * r2
        return poly * torch.exp(-sr)


class RQKernel(Kernel):
    r"""Rational quadratic kernel (R&W eq. 4.19).

    .. math:: k(x, x') = \Big(1 + \frac{\lVert (x - x')/\ell \rVert^2}{2\alpha}\Big)^{-\alpha}

    Args:
        alpha_constraint: constraint on α (default ``Positive()``).
        alpha_prior: optional prior on α.
    """

    has_lengthscale = True
    is_stationary = True

    def __init__(self, alpha_constraint=None, alpha_prior=None, **kwargs):
        super().__init__(**kwargs)
        constraint = Positive() if alpha_constraint is None else alpha_constraint
        self.register_constrained(
            "alpha", constraint.transform(torch.zeros(*self.batch_shape, 1)), constraint, alpha_prior
        )

    def forward(self, x1, x2, diag=False, **params):
        if diag and x1 is x2:
            return _ones_diag(x1, self.batch_shape)
        a = self.scaled(x1)
        b = a if x2 is x1 else self.scaled(x2)
        alpha = self.alpha if diag else self.alpha.unsqueeze(-1)  # (*batch, 1) or (*batch, 1, 1)
        return (1 + _sq_dist(a, b, diag) / (2 * alpha)).pow(-alpha)


class PeriodicKernel(Kernel):
    r"""Periodic kernel (MacKay 1998), per-dimension period ``p`` and lengthscale ``ℓ``.

    .. math:: k(x, x') = \exp\!\Big(-2 \sum_j \sin^2\!\big(\pi (x_j - x'_j)/p_j\big) / \ell_j\Big)

    (GPyTorch's convention: ℓ is not squared.)

    Args:
        period_length_prior, period_length_constraint: prior/constraint on p (default ``Positive()``).
    """

    has_lengthscale = True
    is_stationary = True

    def __init__(self, period_length_prior=None, period_length_constraint=None, **kwargs):
        super().__init__(**kwargs)
        constraint = Positive() if period_length_constraint is None else period_length_constraint
        d = 1 if self.ard_num_dims is None else self.ard_num_dims
        init = constraint.transform(torch.zeros(*self.batch_shape, 1, d))
        self.register_constrained("period_length", init, constraint, period_length_prior)

    def forward(self, x1, x2, diag=False, **params):
        if diag and x1 is x2:
            return _ones_diag(x1, self.batch_shape)
        if diag:
            p, ell = self.period_length, self.lengthscale  # (*batch, 1, d)
            diff = x1 - x2  # (*batch, n, d)
        else:
            p = self.period_length.unsqueeze(-2)  # (*batch, 1, 1, d)
            ell = self.lengthscale.unsqueeze(-2)
            diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # (*batch, n, m, d)
        return torch.exp(-2 * (torch.sin(math.pi * diff / p).pow(2) / ell).sum(-1))


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
        if diag and x1 is x2:
            return _ones_diag(x1, self.batch_shape)
        p = self.period_length
        a = x1 / p
        b = a if x2 is x1 else x2 / p
        return torch.cos(math.pi * _sq_dist(a, b, diag).clamp_min(1e-30).sqrt())


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

        Scales: σ = 1/|N(0, range²)|; means: μ ~ U(0, ½ / smallest gap); weights: std(y)/Q.

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
