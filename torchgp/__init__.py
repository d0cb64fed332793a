"""torchgp: Gaussian processes on PyTorch, trained by automatic differentiation.

The public namespaces mirror GPyTorch's, so ``import torchgp as gpytorch`` runs typical GPyTorch code.
"""

from torchgp import (
    bo,
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
from torchgp.check import check_gradients, check_kernel
from torchgp.io import load, save
from torchgp.module import Module
from torchgp.optim.fit import fit

__version__ = "0.1.0"

__all__ = [
    "Module",
    "fit",
    "save",
    "load",
    "check_kernel",
    "check_gradients",
    "bo",
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
