"""GPyTorch's ``gpytorch.lazy`` names: the lazy kernel matrix and the older operator names.

``LazyEvaluatedKernelTensor`` is :class:`~torchgp.linalg.operators.KernelOperator` (``k(x1, x2)``,
``(*batch, n, m)``, evaluated only when asked), under the name GPyTorch code tests for
(``isinstance(covar, gpytorch.lazy.LazyEvaluatedKernelTensor)``).
"""

from torchgp.linalg.operators import (
    AddedDiagOperator,
    BlockDiagOperator,
    ConstantMulOperator,
    DenseOperator,
    DiagOperator,
    KernelOperator,
    KroneckerProductOperator,
    LowRankRootOperator,
    Operator,
    ProductOperator,
    SumOperator,
)


class _KernelOperatorKind(type):
    """``isinstance(k(x), LazyEvaluatedKernelTensor)`` holds for every kernel matrix a kernel returns."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, KernelOperator)


class LazyEvaluatedKernelTensor(KernelOperator, metaclass=_KernelOperatorKind):
    """``k(x1, x2)`` ``(*batch, n, m)``, evaluated only when asked, built with GPyTorch's argument order.

    Args:
        x1: ``(*batch, n, d)``; x2: ``(*batch, m, d)``.
        kernel: the :class:`~torchgp.kernels.Kernel`.
        last_dim_is_batch: one kernel matrix per input dimension (GPyTorch's deprecated option).
        params: further keyword arguments for the kernel's forward.
    """

    def __init__(self, x1, x2, kernel, last_dim_is_batch: bool = False, **params):
        super().__init__(kernel, x1, x2, last_dim_is_batch=last_dim_is_batch, **params)


LazyTensor = Operator
NonLazyTensor = DenseOperator
DiagLazyTensor = DiagOperator
AddedDiagLazyTensor = AddedDiagOperator
RootLazyTensor = LowRankRootOperator
SumLazyTensor = SumOperator
MulLazyTensor = ProductOperator
ConstantMulLazyTensor = ConstantMulOperator
KroneckerProductLazyTensor = KroneckerProductOperator
BlockDiagLazyTensor = BlockDiagOperator

__all__ = [
    "LazyEvaluatedKernelTensor",
    "LazyTensor",
    "NonLazyTensor",
    "DiagLazyTensor",
    "AddedDiagLazyTensor",
    "RootLazyTensor",
    "SumLazyTensor",
    "MulLazyTensor",
    "ConstantMulLazyTensor",
    "KroneckerProductLazyTensor",
    "BlockDiagLazyTensor",
]
