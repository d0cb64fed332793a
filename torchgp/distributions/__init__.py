"""Distributions over function values (GPyTorch names)."""

from torchgp.distributions import kl  # noqa: F401  (registers kl_divergence for torchgp MVNs)
from torchgp.distributions.multivariate_normal import MultivariateNormal

__all__ = ["MultivariateNormal"]
