r"""``HorseshoePrior(scale)`` (Carvalho, Polson & Scott 2010): ``x | λ ~ N(0, λ²τ²)``, ``λ ~ C⁺(0, 1)``.

The density has no closed form; it satisfies ``K/2·log(1 + 4τ²/x²) < p(x) < K·log(1 + 2τ²/x²)`` with
``K = 1/√(2π³)`` (Carvalho et al. 2010, Theorem 1), and, as GPyTorch documents, the log-density is
taken as the log of the mean of the two bounds:

.. math:: \log p(x) \approx \log \tfrac12\Big[\tfrac K2 \log\big(1 + 4\tau^2/x^2\big) + K \log\big(1 + 2\tau^2/x^2\big)\Big].
"""

from __future__ import annotations

import math

import torch
from torch import distributions as D

from torchgp.priors.prior import Prior

_K = 1.0 / math.sqrt(2 * math.pi**3)


class HorseshoePrior(Prior):
    """Horseshoe prior with global scale ``τ = scale``.

    Args:
        scale: ``τ > 0``, of the prior's batch shape.
        validate_args: accepted for GPyTorch's signature (the scale is checked positive when True).
        transform: optional map applied before ``log_prob``.

    Shapes:
        ``batch_shape = scale.shape``, ``event_shape = ()``; ``log_prob(x)`` broadcasts ``x`` with ``scale``.
        Mean and variance do not exist (the marginal has Cauchy-like tails): ``nan`` and ``inf``.
    """

    def __init__(self, scale, validate_args=False, transform=None):
        super().__init__(transform, validate_args, scale=scale)
        if validate_args and not bool((self.scale > 0).all()):
            raise ValueError(f"HorseshoePrior: scale must be positive; got {self.scale.tolist()}.")

    def log_prob(self, x):
        A = (self.scale / self.transform(x)) ** 2
        lower = _K / 2 * torch.log1p(4 * A)
        upper = _K * torch.log1p(2 * A)
        return torch.log((lower + upper) / 2)

    def rsample(self, sample_shape=torch.Size()):
        """``λ ~ C⁺(0, 1)`` and ``x = λ τ ε``, ``ε ~ N(0, 1)``, one ``λ`` per draw: ``(*sample_shape, *batch)``."""
        shape = torch.Size(sample_shape) + self.scale.shape
        lam = D.HalfCauchy(torch.ones((), dtype=self.scale.dtype, device=self.scale.device)).rsample(shape)
        return lam * self.scale * torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def batch_shape(self):
        return self.scale.shape

    @property
    def event_shape(self):
        return torch.Size()

    @property
    def support(self):
        return D.constraints.real

    @property
    def arg_constraints(self):
        return {"scale": D.constraints.positive}

    @property
    def has_rsample(self):
        return True

    @property
    def mean(self):
        return torch.full_like(self.scale, math.nan)

    @property
    def mode(self):
        return torch.zeros_like(self.scale)  # the density has a pole at 0

    @property
    def variance(self):
        return torch.full_like(self.scale, math.inf)
