r"""Gaussian likelihoods: :math:`y = f(x) + \varepsilon,\ \varepsilon \sim N(0, \sigma^2(x))`.

The marginal of a Gaussian ``f ~ N(μ, K)`` is ``N(μ, K + diag σ²)``; the expected log-likelihood
under ``q(f) = N(m, s²)`` has the closed form

.. math:: \mathbb E_q[\log N(y; f, \sigma^2)] = -\tfrac12\Big[\log 2\pi\sigma^2 + \frac{(y - m)^2 + s^2}{\sigma^2}\Big].
"""

from __future__ import annotations

import math

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.likelihoods.likelihood import Likelihood
from torchgp.likelihoods.noise_models import FixedGaussianNoise, HeteroskedasticNoise, HomoskedasticNoise
from torchgp.linalg.operators import AddedDiagOperator


class _GaussianLikelihoodBase(Likelihood):
    """A Gaussian likelihood around any noise model (``noise_covar``)."""

    is_gaussian = True

    def __init__(self, noise_covar, batch_shape=torch.Size(), **kwargs):
        super().__init__(batch_shape=batch_shape)
        self.noise_covar = noise_covar

    def _noise(self, mean: torch.Tensor, *params, **kwargs) -> torch.Tensor:
        return self.noise_covar(*params, shape=mean.shape, **kwargs)

    def forward(self, function_samples: torch.Tensor, *params, **kwargs) -> torch.distributions.Normal:
        noise = self._noise(function_samples, *params, **kwargs)
        return torch.distributions.Normal(function_samples, noise.sqrt())

    def marginal(self, function_dist: MultivariateNormal, *params, **kwargs) -> MultivariateNormal:
        """``N(μ, K + diag σ²)``, ``(*batch, n)``, with the covariance kept lazy."""
        noise = self._noise(function_dist.mean, *params, **kwargs)
        return MultivariateNormal(function_dist.mean, AddedDiagOperator(function_dist.lazy_covariance_matrix, noise))

    def expected_log_prob(self, target: torch.Tensor, input: MultivariateNormal, *params, **kwargs) -> torch.Tensor:
        noise = self._noise(input.mean, *params, **kwargs)
        mean, var = input.mean, input.variance
        return -0.5 * ((target - mean).pow(2) + var) / noise - 0.5 * torch.log(2 * math.pi * noise)

    def log_marginal(self, observations, function_dist, *params, **kwargs):
        noise = self._noise(function_dist.mean, *params, **kwargs)
        return torch.distributions.Normal(function_dist.mean, (function_dist.variance + noise).sqrt()).log_prob(
            observations
        )


class GaussianLikelihood(_GaussianLikelihoodBase):
    """Homoskedastic Gaussian noise with a learned variance ``noise`` (default constraint ``GreaterThan(1e-4)``).

    Args:
        noise_prior: optional prior on σ².
        noise_constraint: constraint on σ².
        batch_shape: batch of independent noise variances.

    Example:
        >>> import torchgp
        >>> lik = torchgp.likelihoods.GaussianLikelihood()
        >>> lik.noise = 0.1
        >>> round(lik.noise.item(), 6)
        0.1
    """

    def __init__(self, noise_prior=None, noise_constraint=None, batch_shape=torch.Size(), **kwargs):
        super().__init__(HomoskedasticNoise(noise_prior, noise_constraint, batch_shape), batch_shape=batch_shape)

    @property
    def noise(self) -> torch.Tensor:
        return self.noise_covar.noise

    @noise.setter
    def noise(self, value):
        self.noise_covar.noise = value

    @property
    def raw_noise(self) -> torch.Tensor:
        return self.noise_covar.raw_noise


class FixedNoiseGaussianLikelihood(_GaussianLikelihoodBase):
    """Known per-point noise variances, optionally plus a learned homoskedastic part.

    Args:
        noise: ``(*batch, n)`` known variances of the training targets.
        learn_additional_noise: also learn a shared noise ``second_noise`` added to them.
        batch_shape: batch shape of the learned extra noise.

    For new points, pass their variances: ``likelihood(model(X*), noise=var*)``.
    """

    def __init__(self, noise: torch.Tensor, learn_additional_noise: bool = False, batch_shape=torch.Size(), **kwargs):
        super().__init__(FixedGaussianNoise(noise), batch_shape=batch_shape)
        self.second_noise_covar = (
            HomoskedasticNoise(batch_shape=batch_shape, **kwargs) if learn_additional_noise else None
        )

    @property
    def noise(self) -> torch.Tensor:
        return self.noise_covar.noise

    @noise.setter
    def noise(self, value):
        self.noise_covar = FixedGaussianNoise(value)

    @property
    def second_noise(self):
        return 0.0 if self.second_noise_covar is None else self.second_noise_covar.noise

    def _noise(self, mean, *params, **kwargs):
        noise = self.noise_covar(*params, shape=mean.shape, **kwargs)
        if self.second_noise_covar is not None:
            noise = noise + self.second_noise_covar(*params, shape=mean.shape)
        return noise


class HeteroskedasticGaussianLikelihood(_GaussianLikelihoodBase):
    """Input-dependent Gaussian noise σ²(x) from a learned noise model (see :class:`HeteroskedasticNoise`).

    Call it with the inputs: ``likelihood(model(X), X)``; the exact MLL passes the training inputs.
    """

    def __init__(self, noise_model: torch.nn.Module, noise_constraint=None, batch_shape=torch.Size()):
        super().__init__(HeteroskedasticNoise(noise_model, noise_constraint=noise_constraint), batch_shape=batch_shape)

    def noise(self, X: torch.Tensor) -> torch.Tensor:
        """σ²(X), ``(*batch, n)``."""
        return self.noise_covar(X)
