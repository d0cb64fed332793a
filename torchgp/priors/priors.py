"""Priors as modules over ``torch.distributions``.

A prior's parameters are buffers, so ``.to(device)``/``.double()`` and ``state_dict`` work; the
distribution itself is built on demand from them. ``log_prob(x)`` has the shape of ``x``
broadcast against the prior's batch shape.
"""

from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn


class Prior(nn.Module):
    """Base prior: subclasses implement :meth:`distribution` from their buffers."""

    def __init__(self, transform=None, **params):
        super().__init__()
        for name, value in params.items():
            # Python numbers take the default dtype; float tensors keep theirs (a float64 loc stays float64)
            floating = torch.is_tensor(value) and value.is_floating_point()
            self.register_buffer(name, torch.as_tensor(value, dtype=None if floating else torch.get_default_dtype()))
        self._transform = transform

    def distribution(self) -> D.Distribution:
        raise NotImplementedError

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._transform is None else self._transform(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density at ``x`` (after the optional transform)."""
        return self.distribution().log_prob(self.transform(x))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.distribution().sample(sample_shape)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.distribution().rsample(sample_shape)

    def expand(self, batch_shape):
        """A copy whose parameters are broadcast to ``batch_shape``."""
        new = type(self).__new__(type(self))
        nn.Module.__init__(new)
        for name, buf in self.named_buffers(recurse=False):
            new.register_buffer(name, buf.expand(batch_shape).clone())
        new._transform = self._transform
        return new

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={b.tolist() if b.numel() < 5 else tuple(b.shape)}" for n, b in self.named_buffers())


class NormalPrior(Prior):
    """N(loc, scale²)."""

    def __init__(self, loc, scale, validate_args=False, transform=None):
        super().__init__(transform, loc=loc, scale=scale)

    def distribution(self):
        return D.Normal(self.loc, self.scale)


class HalfNormalPrior(Prior):
    """|N(0, scale²)| on x > 0."""

    def __init__(self, scale, validate_args=False, transform=None):
        super().__init__(transform, scale=scale)

    def distribution(self):
        return D.HalfNormal(self.scale)


class LogNormalPrior(Prior):
    """log x ~ N(loc, scale²)."""

    def __init__(self, loc, scale, validate_args=False, transform=None):
        super().__init__(transform, loc=loc, scale=scale)

    def distribution(self):
        return D.LogNormal(self.loc, self.scale)


class GammaPrior(Prior):
    """Gamma(concentration, rate): density ∝ x^(α-1) e^(-βx)."""

    def __init__(self, concentration, rate, validate_args=False, transform=None):
        super().__init__(transform, concentration=concentration, rate=rate)

    def distribution(self):
        return D.Gamma(self.concentration, self.rate)


class HalfCauchyPrior(Prior):
    """Half-Cauchy(scale) on x > 0."""

    def __init__(self, scale, validate_args=False, transform=None):
        super().__init__(transform, scale=scale)

    def distribution(self):
        return D.HalfCauchy(self.scale)


class UniformPrior(Prior):
    """Uniform(a, b); log-density -inf outside."""

    def __init__(self, a, b, validate_args=False, transform=None):
        super().__init__(transform, a=a, b=b)

    def distribution(self):
        return D.Uniform(self.a, self.b, validate_args=False)

    def log_prob(self, x):
        x = self.transform(x)
        inside = (x >= self.a) & (x <= self.b)
        return torch.where(inside, -torch.log(self.b - self.a), torch.full_like(x, -math.inf))


class SmoothedBoxPrior(Prior):
    r"""Uniform on [a, b] with Gaussian tails of width ``sigma`` (normalised).

    .. math:: \log p(x) = -\log\big(b - a + \sqrt{2\pi}\,\sigma\big) - \tfrac12 \big(d(x)/\sigma\big)^2,
       \quad d(x) = \max(0, a - x, x - b)
    """

    def __init__(self, a, b, sigma=0.01, validate_args=False, transform=None):
        super().__init__(transform, a=a, b=b, sigma=sigma)

    def log_prob(self, x):
        x = self.transform(x)
        dist = torch.clamp(torch.maximum(self.a - x, x - self.b), min=0)
        log_norm = torch.log(self.b - self.a + math.sqrt(2 * math.pi) * self.sigma)
        return -log_norm - 0.5 * (dist / self.sigma) ** 2

    def distribution(self):
        raise NotImplementedError("SmoothedBoxPrior has log_prob only; sample from UniformPrior(a, b) instead.")

    def sample(self, sample_shape=torch.Size()):
        return D.Uniform(self.a, self.b).sample(sample_shape)


class MultivariateNormalPrior(Prior):
    """N(loc, covariance_matrix) over a vector-valued parameter."""

    def __init__(self, loc, covariance_matrix, validate_args=False, transform=None):
        super().__init__(transform, loc=loc, covariance_matrix=covariance_matrix)

    def distribution(self):
        return D.MultivariateNormal(self.loc, covariance_matrix=self.covariance_matrix)
