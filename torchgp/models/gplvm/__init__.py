"""Gaussian-process latent variable models (GPyTorch's ``gpytorch.models.gplvm``)."""

from torchgp.models.gplvm.bayesian_gplvm import BayesianGPLVM
from torchgp.models.gplvm.latent_variable import (
    LatentVariable,  # noqa: F401  (importable here as in GPyTorch, not in its __all__)
    MAPLatentVariable,
    PointLatentVariable,
    VariationalLatentVariable,
)

__all__ = ["BayesianGPLVM", "PointLatentVariable", "MAPLatentVariable", "VariationalLatentVariable"]
