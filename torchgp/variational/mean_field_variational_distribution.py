r"""``q(u) = N(m, diag s²)``: independent inducing values (fewer parameters, cruder posterior)."""

from __future__ import annotations

import torch
from torch import nn

from torchgp.variational._variational_distribution import _VariationalDistribution


class MeanFieldVariationalDistribution(_VariationalDistribution):
    """Diagonal-covariance Gaussian; parameters ``variational_mean`` and ``_variational_stddev`` ``(*batch, m)``.

    Args:
        num_inducing_points: ``m``.
        batch_shape: batch of independent distributions.
        mean_init_std: noise added to the mean at initialisation.
    """

    def __init__(
        self, num_inducing_points: int, batch_shape: torch.Size = torch.Size([]), mean_init_std: float = 1e-3, **kwargs
    ):
        super().__init__(num_inducing_points, batch_shape, mean_init_std)
        m = self.num_inducing_points
        self.register_parameter("variational_mean", nn.Parameter(torch.zeros(*self.batch_shape, m)))
        self.register_parameter("_variational_stddev", nn.Parameter(torch.ones(*self.batch_shape, m)))

    def mean_and_scale_tril(self):
        std = self._variational_stddev.abs().clamp_min(1e-10)
        return self.variational_mean, torch.diag_embed(std)

    def initialize_variational_distribution(self, prior_dist):
        with torch.no_grad():
            self.variational_mean.copy_(self._noisy_mean(prior_dist).expand_as(self.variational_mean))
            self._variational_stddev.copy_(prior_dist.stddev.detach().expand_as(self._variational_stddev))
