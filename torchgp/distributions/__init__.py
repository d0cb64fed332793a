"""Distributions over function values (GPyTorch names)."""

from torchgp.distributions.multivariate_normal import MultivariateNormal

__all__ = ["MultivariateNormal"]
