"""Covariance functions (GPyTorch names). Subclass :class:`Kernel` and write ``forward(x1, x2)``."""

from torchgp.kernels.composition import AdditiveKernel, ProductKernel
from torchgp.kernels.dot_product import LinearKernel, PolynomialKernel
from torchgp.kernels.index import IndexKernel
from torchgp.kernels.kernel import Kernel
from torchgp.kernels.scale import ScaleKernel
from torchgp.kernels.stationary import (
    CosineKernel,
    MaternKernel,
    PeriodicKernel,
    RBFKernel,
    RQKernel,
    SpectralMixtureKernel,
)

__all__ = [
    "Kernel",
    "RBFKernel",
    "MaternKernel",
    "RQKernel",
    "PeriodicKernel",
    "CosineKernel",
    "SpectralMixtureKernel",
    "LinearKernel",
    "PolynomialKernel",
    "ScaleKernel",
    "AdditiveKernel",
    "ProductKernel",
    "IndexKernel",
]
