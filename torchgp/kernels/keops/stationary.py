r"""``RBFKernel``, ``MaternKernel`` and ``PeriodicKernel`` under :mod:`gpytorch.kernels.keops`' names.

Each is the stationary kernel of :mod:`torchgp.kernels.stationary` (the same maths, parameters and
``state_dict`` keys) marked as a :class:`~torchgp.kernels.keops.KeOpsKernel`: its matrix is a lazy, tiled
:class:`~torchgp.linalg.KernelOperator` that the iterative marginal likelihood multiplies and differentiates
block by block, never whole (see :mod:`torchgp.kernels.keops.keops_kernel`).
"""

from __future__ import annotations

from torchgp.kernels import stationary as _stationary
from torchgp.kernels.keops.keops_kernel import KeOpsKernel

__all__ = ["RBFKernel", "MaternKernel", "PeriodicKernel"]


class RBFKernel(_stationary.RBFKernel, KeOpsKernel):
    r"""RBF kernel :math:`k(x, x') = \exp(-\tfrac12 \lVert (x - x')/\ell \rVert^2)` (R&W 2006, eq. 4.9), tiled.

    Args: as :class:`torchgp.kernels.RBFKernel`.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → lazy ``(*batch, n, m)``.
    """


class MaternKernel(_stationary.MaternKernel, KeOpsKernel):
    r"""Matérn kernel with ``nu`` ∈ {1/2, 3/2, 5/2} (R&W 2006, eq. 4.14), tiled.

    Args: as :class:`torchgp.kernels.MaternKernel` (``nu=2.5`` by default).

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → lazy ``(*batch, n, m)``.
    """


class PeriodicKernel(_stationary.PeriodicKernel, KeOpsKernel):
    r"""Periodic kernel :math:`\exp(-2 \sum_j \sin^2(\pi (x_j - x'_j) / p_j) / \ell_j)` (MacKay 1998), tiled.

    Args: as :class:`torchgp.kernels.PeriodicKernel`.

    Shapes:
        ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)`` → lazy ``(*batch, n, m)``.
    """
