r"""Laplace observation noise: :math:`p(y \mid f) = \frac{1}{2b} e^{-|y - f|/b}`, ``b = √noise``."""

from __future__ import annotations

import torch

from torchgp.constraints import GreaterThan
from torchgp.likelihoods.likelihood import _OneDimensionalLikelihood


class LaplaceLikelihood(_OneDimensionalLikelihood):
    """``p(y | f) = Laplace(loc = f, scale = √noise)`` (GPyTorch's parametrisation).

    Args:
        batch_shape: batch of independent likelihoods; ``noise`` has shape ``(*batch, 1)``.
        noise_prior: optional prior on ``noise``.
        noise_constraint: default ``GreaterThan(1e-4)``.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → Laplace ``(*samples, *batch, n)``;
        ``likelihood(q(f) (*batch, n))`` → Laplace ``(S, *batch, n)`` at ``S = settings.num_likelihood_samples`` draws;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)`` in closed form.
    """

    def __init__(self, batch_shape=torch.Size([]), noise_prior=None, noise_constraint=None):
        super().__init__(batch_shape=batch_shape)
        c = GreaterThan(1e-4) if noise_constraint is None else noise_constraint
        self.register_constrained("noise", c.transform(torch.zeros(*self.batch_shape, 1)), c, noise_prior)

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Laplace:
        return torch.distributions.Laplace(function_samples, self.noise.sqrt(), validate_args=False)

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        r"""Closed form: ``E|y - f| = σ√(2/π) e^{-z²/2} + (y - μ)(1 - 2Φ(-z))``, ``z = (y - μ)/σ`` (folded normal)."""
        b = self.noise.sqrt()
        mu, var = function_dist.mean, function_dist.variance
        sd = var.sqrt()
        r = observations - mu
        z = r / sd
        abs_mean = sd * (2 / torch.pi) ** 0.5 * torch.exp(-0.5 * z.pow(2)) + r * (1 - 2 * torch.special.ndtr(-z))
        return -torch.log(2 * b) - abs_mean / b
