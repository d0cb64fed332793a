"""Distributions over function values (GPyTorch names).

``Distribution`` is :class:`torch.distributions.Distribution` (every torchgp distribution is one)
and ``base_distributions`` is :mod:`torch.distributions`, as GPyTorch has them without Pyro.
"""

from torch import distributions as base_distributions
from torch.distributions import Distribution

from torchgp.distributions import kl  # noqa: F401  (registers kl_divergence for torchgp MVNs)
from torchgp.distributions.delta import Delta
from torchgp.distributions.multitask_multivariate_normal import MultitaskMultivariateNormal
from torchgp.distributions.multivariate_normal import MultivariateNormal

__all__ = ["MultivariateNormal"]
__all__ += ["Delta", "Distribution", "base_distributions"]
__all__ += ["MultitaskMultivariateNormal"]
