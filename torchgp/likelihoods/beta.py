r"""Beta likelihood for targets in (0, 1): mode ``sigmoid(f)``, precision ``scale``.

:math:`y \sim \mathrm{Beta}(\alpha, \beta),\ \alpha = s\,\sigma(f) + 1,\ \beta = s\,(1 - \sigma(f)) + 1`
(GPyTorch's parametrisation: the mode ``(α - 1)/(α + β - 2)`` is ``σ(f)``, and ``α, β ≥ 1`` keep the
density bounded).
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp.constraints import Positive
from torchgp.errors import InputError
from torchgp.likelihoods.likelihood import _OneDimensionalLikelihood


class BetaLikelihood(_OneDimensionalLikelihood):
    """Beta observations with learned precision ``scale`` ``(*batch, 1)``.

    Args:
        batch_shape: batch of independent likelihoods.
        scale_prior: optional prior on ``scale``.
        scale_constraint: default ``Positive()``.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → Beta ``(*samples, *batch, n)``;
        ``likelihood(q(f) (*batch, n))`` → Beta ``(S, *batch, n)`` at ``S = settings.num_likelihood_samples`` draws;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)`` by Gauss–Hermite quadrature.

    Raises:
        InputError: targets outside the open interval (0, 1).
    """

    def __init__(self, batch_shape=torch.Size([]), scale_prior=None, scale_constraint=None):
        super().__init__(batch_shape=batch_shape)
        c = Positive() if scale_constraint is None else scale_constraint
        self.register_constrained("scale", c.transform(torch.ones(*self.batch_shape, 1)), c, scale_prior)

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Beta:
        mixture = torch.sigmoid(function_samples)
        alpha = mixture * self.scale + 1
        beta = self.scale - alpha + 2  # = s (1 - σ(f)) + 1
        return torch.distributions.Beta(alpha, beta, validate_args=False)

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        if settings.debug.on() and (torch.any(observations <= 0) or torch.any(observations >= 1)):
            raise InputError(
                "BetaLikelihood needs targets strictly inside (0, 1); clip them, e.g. y.clamp(1e-4, 1 - 1e-4)."
            )
        return super().expected_log_prob(observations, function_dist, *args, **kwargs)
