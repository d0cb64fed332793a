r"""Variational distributions ``q(u) = N(m, S)`` over the ``m`` inducing values (Hensman et al. 2013).

Every distribution exposes the same three things to a strategy:

* ``forward()`` → the :class:`~torchgp.distributions.MultivariateNormal` ``q(u)`` ``(*batch, m)``;
* ``mean_and_scale_tril()`` → ``(m (*batch, m), L (*batch, m, m))`` with ``S = L Lᵀ``, so a
  strategy never factorises ``S`` itself when the parametrisation already holds a factor;
* ``initialize_variational_distribution(prior)`` → set ``q`` to the (whitened or not) prior.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError
from torchgp.module import Module


class _VariationalDistribution(Module):
    """Base class.

    Args:
        num_inducing_points: ``m``.
        batch_shape: batch of independent distributions (one per output of a batch GP).
        mean_init_std: standard deviation of the noise added to the mean at initialisation
            (breaks symmetry, as in GPyTorch).
    """

    is_delta = False
    _is_variational_distribution = True  # Module.variational_parameters() / hyperparameters() split on this

    def __init__(self, num_inducing_points: int, batch_shape: torch.Size = torch.Size([]), mean_init_std: float = 1e-3):
        super().__init__()
        if int(num_inducing_points) < 1:
            raise InputError(f"num_inducing_points must be a positive integer; got {num_inducing_points!r}.")
        self.num_inducing_points = int(num_inducing_points)
        self.batch_shape = torch.Size(batch_shape)
        self.mean_init_std = mean_init_std

    def mean_and_scale_tril(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean (*batch, m), L (*batch, m, m))`` with ``S = L Lᵀ``."""
        raise NotImplementedError

    def forward(self) -> MultivariateNormal:
        """``q(u)`` as a MultivariateNormal ``(*batch, m)``."""
        mean, L = self.mean_and_scale_tril()
        q = MultivariateNormal(mean, L @ L.mT)
        q._chol = L  # the factor is known: never re-factorise S
        return q

    def __call__(self) -> MultivariateNormal:
        return self.forward()

    def shape(self) -> torch.Size:
        """``(*batch, m)``."""
        return torch.Size([*self.batch_shape, self.num_inducing_points])

    def initialize_variational_distribution(self, prior_dist: MultivariateNormal) -> None:
        """Set ``q(u)`` to ``prior_dist`` (plus ``mean_init_std`` noise on the mean)."""
        raise NotImplementedError

    def _noisy_mean(self, prior_dist: MultivariateNormal) -> torch.Tensor:
        mean = prior_dist.mean.detach()
        return mean + torch.randn_like(mean) * self.mean_init_std
