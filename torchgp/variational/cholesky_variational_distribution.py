r"""``q(u) = N(m, L Lᵀ)`` with a full lower-triangular ``L`` (Hensman et al. 2013, 2015)."""

from __future__ import annotations

import torch
from torch import nn

from torchgp.variational._variational_distribution import _VariationalDistribution


class CholeskyVariationalDistribution(_VariationalDistribution):
    r"""Full-covariance Gaussian over the inducing values, ``S = L Lᵀ``.

    Parameters (GPyTorch names): ``variational_mean`` ``(*batch, m)`` and ``chol_variational_covar``
    ``(*batch, m, m)`` (its strictly upper triangle is ignored).

    Args:
        num_inducing_points: ``m``.
        batch_shape: batch of independent distributions.
        mean_init_std: noise added to the mean at initialisation.

    Example:
        >>> from torchgp.variational import CholeskyVariationalDistribution
        >>> q = CholeskyVariationalDistribution(4)
        >>> q().covariance_matrix.shape
        torch.Size([4, 4])
    """

    def __init__(
        self, num_inducing_points: int, batch_shape: torch.Size = torch.Size([]), mean_init_std: float = 1e-3, **kwargs
    ):
        super().__init__(num_inducing_points, batch_shape, mean_init_std)
        m = self.num_inducing_points
        self.register_parameter("variational_mean", nn.Parameter(torch.zeros(*self.batch_shape, m)))
        eye = torch.eye(m).expand(*self.batch_shape, m, m).clone()
        self.register_parameter("chol_variational_covar", nn.Parameter(eye))

    def mean_and_scale_tril(self):
        L = self.chol_variational_covar.tril()
        # a factor with a negative diagonal gives the same S; keep diag > 0 for log|L| (sign flip of columns)
        sign = torch.sign(L.diagonal(dim1=-2, dim2=-1))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return self.variational_mean, L * sign.unsqueeze(-2)

    def initialize_variational_distribution(self, prior_dist):
        with torch.no_grad():
            self.variational_mean.copy_(self._noisy_mean(prior_dist).expand_as(self.variational_mean))
            self.chol_variational_covar.copy_(prior_dist.scale_tril.detach().expand_as(self.chol_variational_covar))
