r"""Beta likelihood for targets in (0, 1): mean ``sigmoid(f)``, precision ``scale``.

:math:`y \sim \mathrm{Beta}(\alpha, \beta),\ \alpha = s\,\mathrm{sigmoid}(f),\ \beta = s - \alpha`
(Ferrari & Cribari-Neto 2004; GPyTorch's parametrisation).
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp.constraints import Positive
from torchgp.errors import InputError
from torchgp.likelihoods.likelihood import Likelihood


class BetaLikelihood(Likelihood):
    """Beta observations with learned precision ``scale`` ``(*batch, 1)``.

    Args:
        batch_shape: batch of independent likelihoods.
        scale_prior: optional prior on ``scale``.
        scale_constraint: default ``Positive()``.

    Shapes:
        ``likelihood(f (*samples, *batch, n))`` → Beta ``(*samples, *batch, n)``;
        ``expected_log_prob(y (*batch, n), q(f))`` → ``(*batch, n)`` by Gauss–Hermite quadrature.

    Raises:
        InputError: targets outside the open interval (0, 1).
    """

    def __init__(self, batch_shape=torch.Size([]), scale_prior=None, scale_constraint=None):
        super().__init__(batch_shape=batch_shape)
        c = Positive() if scale_constraint is None else scale_constraint
        self.register_constrained("scale", c.transform(torch.ones(*self.batch_shape, 1)), c, scale_prior)

    def forward(self, function_samples: torch.Tensor, *args, **kwargs) -> torch.distributions.Beta:
        alpha = torch.sigmoid(function_samples) * self.scale
        return torch.distributions.Beta(alpha, self.scale - alpha, validate_args=False)

    def expected_log_prob(self, observations, function_dist, *args, **kwargs):
        if settings.debug.on() and (torch.any(observations <= 0) or torch.any(observations >= 1)):
            raise InputError(
                "BetaLikelihood needs targets strictly inside (0, 1); clip them, e.g. y.clamp(1e-4, 1 - 1e-4)."
            )
        return super().expected_log_prob(observations, function_dist, *args, **kwargs)
