r"""Poisson counts with the softplus link (GPyTorch 1.15's): :math:`y \sim \mathrm{Poisson}(\lambda),\ \lambda = \log(1 + e^{f})`.

The softplus keeps the rate positive and grows only linearly in ``f`` (no ``e^f`` blow-up for a
large latent value). ``E_q[log p(y | f)]`` has no closed form under this link: it is computed by
Gauss–Hermite quadrature over ``q(f_i) = N(μ_i, σ_i²)``.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp.errors import InputError
from torchgp.likelihoods.likelihood import _OneDimensionalLikelihood


class PoissonLikelihood(_OneDimensionalLikelihood):
    """Count regression ``p(y | f) = Poisson(rate = softplus f)``; no parameters.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → Poisson ``(*samples, *batch, n)``;
        ``likelihood(q(f) (*batch, n))`` → Poisson ``(S, *batch, n)`` at ``S = settings.num_likelihood_samples`` draws;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)``.

    Raises:
        InputError: negative or non-integer counts.

    Example:
        >>> import torch, torchgp
        >>> round(torchgp.likelihoods.PoissonLikelihood()(torch.tensor([0.0])).mean.item(), 6)  # softplus(0) = log 2
        0.693147
    """

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Poisson:
        return torch.distributions.Poisson(torch.nn.functional.softplus(function_samples), validate_args=False)

    @staticmethod
    def _check(y):
        if settings.debug.on() and (torch.any(y < 0) or torch.any(y != torch.round(y))):
            raise InputError(
                "PoissonLikelihood needs non-negative integer counts y; got negative or fractional values."
            )

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        self._check(observations)
        return super().expected_log_prob(observations, function_dist, *args, **kwargs)

    def log_marginal(self, observations, function_dist, *args, **kwargs):
        self._check(observations)
        return super().log_marginal(observations, function_dist, *args, **kwargs)
