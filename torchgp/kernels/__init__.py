"""Covariance functions (GPyTorch names). Subclass :class:`Kernel` and write ``forward(x1, x2)``."""

from torchgp.kernels.arc import ArcKernel
from torchgp.kernels.composition import AdditiveKernel, ProductKernel
from torchgp.kernels.constant import ConstantKernel
from torchgp.kernels.cylindrical import CylindricalKernel
from torchgp.kernels.derivative import Matern52KernelGrad, PolynomialKernelGrad, RBFKernelGrad, RBFKernelGradGrad
from torchgp.kernels.distributional import DistributionalInputKernel, GaussianSymmetrizedKLKernel
from torchgp.kernels.dot_product import LinearKernel, PolynomialKernel
from torchgp.kernels.hamming import HammingIMQKernel
from torchgp.kernels.index import IndexKernel
from torchgp.kernels.inducing_point import InducingPointKernel
from torchgp.kernels.kernel import Kernel
from torchgp.kernels.multitask import LCMKernel, MultitaskKernel
from torchgp.kernels.newton_girard import NewtonGirardAdditiveKernel
from torchgp.kernels.piecewise_polynomial import PiecewisePolynomialKernel
from torchgp.kernels.rff import RFFKernel
from torchgp.kernels.scale import ScaleKernel
from torchgp.kernels.spectral_delta import SpectralDeltaKernel
from torchgp.kernels.stationary import (
    CosineKernel,
    MaternKernel,
    PeriodicKernel,
    RBFKernel,
    RQKernel,
    SpectralMixtureKernel,
    StationaryKernel,
)

__all__ = [
    "Kernel",
    "RBFKernel",
    "MaternKernel",
    "RQKernel",
    "PeriodicKernel",
    "CosineKernel",
    "SpectralMixtureKernel",
    "StationaryKernel",
    "LinearKernel",
    "PolynomialKernel",
    "ScaleKernel",
    "AdditiveKernel",
    "ProductKernel",
    "IndexKernel",
    "ArcKernel",
    "ConstantKernel",
    "CylindricalKernel",
    "DistributionalInputKernel",
    "GaussianSymmetrizedKLKernel",
    "HammingIMQKernel",
    "InducingPointKernel",
    "NewtonGirardAdditiveKernel",
    "PiecewisePolynomialKernel",
    "RFFKernel",
    "SpectralDeltaKernel",
]
__all__ += ["MultitaskKernel", "LCMKernel"]
__all__ += ["RBFKernelGrad", "RBFKernelGradGrad", "Matern52KernelGrad", "PolynomialKernelGrad"]

from torchgp.kernels.grid import GridKernel  # noqa: E402
from torchgp.kernels.grid_interpolation import GridInterpolationKernel  # noqa: E402

__all__ += ["GridKernel", "GridInterpolationKernel"]

from torchgp.kernels import keops  # noqa: E402, F401  (the subpackage, as gpytorch.kernels.keops)
from torchgp.kernels.keops import KeOpsKernel  # noqa: E402

__all__ += ["KeOpsKernel"]

from torchgp.kernels.structure import AdditiveStructureKernel, ProductStructureKernel  # noqa: E402

__all__ += ["AdditiveStructureKernel", "ProductStructureKernel"]

from torchgp.kernels.multi_device import MultiDeviceKernel  # noqa: E402

__all__ += ["MultiDeviceKernel"]
