"""torchgp: Gaussian processes on PyTorch, trained by automatic differentiation.

The public namespaces mirror GPyTorch's, so ``import torchgp as gpytorch`` runs typical GPyTorch code.
"""

from torchgp import (
    constraints,
    distributions,
    errors,
    kernels,
    likelihoods,
    linalg,
    means,
    mlls,
    models,
    optim,
    priors,
    settings,
    variational,
)
from torchgp.module import Module

__version__ = "0.1.0"

__all__ = [
    "Module",
    "constraints",
    "distributions",
    "errors",
    "kernels",
    "likelihoods",
    "linalg",
    "means",
    "mlls",
    "models",
    "optim",
    "variational",
    "priors",
    "settings",
]
