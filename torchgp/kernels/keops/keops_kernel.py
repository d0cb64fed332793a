r"""``KeOpsKernel``: GPyTorch's base of kernels whose matrices are never held whole, without KeOps.

GPyTorch's KeOps kernels hand the kernel matrix to pykeops (a compiled map-reduce over the ``n × m``
entries) above ``settings.max_cholesky_size``. torchgp's kernels already never hold that matrix on the
iterative path: ``kernel(X)`` is a lazy :class:`~torchgp.linalg.KernelOperator` multiplied tile by tile
(``settings.kernel_block_size``), with the gradients of the marginal likelihood taken as blockwise bilinear
forms (:mod:`torchgp.linalg.blockwise`; Gardner et al. 2018, §4; Wang et al. 2019, §3). So the kernels of
:mod:`torchgp.kernels.keops` are the ordinary ones under GPyTorch's names: no compiler, no pykeops, memory
``O(n · block)`` inside the exact marginal likelihood, and the same numbers as the dense kernels.
"""

from __future__ import annotations

from torchgp import settings
from torchgp.kernels.kernel import Kernel
from torchgp.linalg.operators import DenseOperator

__all__ = ["KeOpsKernel"]


class KeOpsKernel(Kernel):
    """Base class of the kernels of :mod:`torchgp.kernels.keops` (abstract, as :class:`~torchgp.kernels.Kernel`).

    A subclass writes its maths in ``forward(x1, x2)`` as any kernel does. GPyTorch's pykeops hooks
    ``_keops_forward`` / ``_nonkeops_forward`` are not needed: both would compute the same matrix, which torchgp
    evaluates in tiles on demand.

    Under ``settings.use_keops(False)`` the matrix is evaluated whole instead, as GPyTorch's KeOps kernels fall
    back to their plain computation (see :class:`torchgp.settings.use_keops`).

    Shapes:
        ``kernel(x1 (*batch, n, d), x2 (*batch, m, d))`` → a lazy ``(*batch, n, m)``
        :class:`~torchgp.linalg.KernelOperator` (a :class:`~torchgp.linalg.DenseOperator` with ``use_keops``
        off).
    """

    def _lazy(self, x1, x2, **params):
        op = super()._lazy(x1, x2, **params)
        if settings.use_keops.on():
            return op
        return DenseOperator(op.to_dense())  # the plain computation: the whole matrix, guarded by max_dense_memory
