"""Gauss–Hermite quadrature under GPyTorch's module path ``gpytorch.utils.quadrature``."""

from torchgp.likelihoods.quadrature import GaussHermiteQuadrature1D

__all__ = ["GaussHermiteQuadrature1D"]
