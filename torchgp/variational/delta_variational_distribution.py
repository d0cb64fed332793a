r"""``q(u) = δ(u - m)``: a point estimate of the inducing values (MAP training).

Its "KL" to the prior is ``-log p(m)`` (the entropy of a point mass is dropped), so the ELBO
becomes the log joint at ``u = m``.
"""

from __future__ import annotations

import torch
from torch import nn

from torchgp.variational._variational_distribution import _VariationalDistribution


class DeltaVariationalDistribution(_VariationalDistribution):
    """Point mass at ``variational_mean`` ``(*batch, m)``.

    Args:
        num_inducing_points: ``m``.
        batch_shape: batch of independent distributions.
        mean_init_std: noise added to the mean at initialisation.
    """

    is_delta = True

    def __init__(
        self, num_inducing_points: int, batch_shape: torch.Size = torch.Size([]), mean_init_std: float = 1e-3, **kwargs
    ):
        super().__init__(num_inducing_points, batch_shape, mean_init_std)
        self.register_parameter(
            "variational_mean", nn.Parameter(torch.zeros(*self.batch_shape, self.num_inducing_points))
        )

    def mean_and_scale_tril(self):
        mean = self.variational_mean
        return mean, torch.zeros(*mean.shape, mean.shape[-1], dtype=mean.dtype, device=mean.device)

    def forward(self):
        from torchgp.distributions import MultivariateNormal

        mean, L = self.mean_and_scale_tril()
        q = MultivariateNormal(mean, L)
        q._chol = L
        return q

    def initialize_variational_distribution(self, prior_dist):
        with torch.no_grad():
            self.variational_mean.copy_(self._noisy_mean(prior_dist).expand_as(self.variational_mean))
