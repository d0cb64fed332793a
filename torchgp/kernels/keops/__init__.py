"""GPyTorch's KeOps kernels, backed by torchgp's tiled kernel operator (no pykeops, no compiler).

``torchgp.kernels.keops.RBFKernel`` etc. give the same numbers as ``torchgp.kernels.RBFKernel`` and never hold
the ``n × n`` matrix on the iterative path, inside the exact marginal likelihood included.
"""

from torchgp.kernels.keops.keops_kernel import KeOpsKernel
from torchgp.kernels.keops.stationary import MaternKernel, PeriodicKernel, RBFKernel

__all__ = ["KeOpsKernel", "RBFKernel", "MaternKernel", "PeriodicKernel"]
