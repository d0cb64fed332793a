r"""Poisson counts with the log link: :math:`y \sim \mathrm{Poisson}(e^{f})`.

Under ``q(f) = N(μ, σ²)`` the expected log-likelihood is in closed form (log-normal mean):

.. math:: \mathbb E_q[\log p(y\mid f)] = y\mu - e^{\mu + \sigma^2/2} - \log y!
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp.errors import InputError
from torchgp.likelihoods.likelihood import Likelihood


class PoissonLikelihood(Likelihood):
    """Count regression ``p(y | f) = Poisson(rate = exp f)``; no parameters.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → Poisson ``(*samples, *batch, n)``;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)``.

    Raises:
        InputError: negative or non-integer counts.
    """

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Poisson:
        return torch.distributions.Poisson(function_samples.exp(), validate_args=False)

    @staticmethod
    def _check(y):
        if settings.debug.on() and (torch.any(y < 0) or torch.any(y != torch.round(y))):
            raise InputError(
                "PoissonLikelihood needs non-negative integer counts y; got negative or fractional values."
            )

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        self._check(observations)
        mu, var = function_dist.mean, function_dist.variance
        return observations * mu - torch.exp(mu + 0.5 * var) - torch.lgamma(observations + 1)
