r"""Covariance operators: what the solvers need to know about a (possibly huge) matrix.

Every operator has a shape ``(*batch, n, m)``, a dtype and device, and answers ``matmul``/``@``,
``diagonal()``, ``to_dense()`` (refused over ``settings.max_dense_memory``), indexing, transposes and the
rest of :class:`Operator`'s interface. The kinds:

==============================  =====================================================  ==========================
operator                        matrix                                                  solved by
==============================  =====================================================  ==========================
:class:`DenseOperator`          a tensor ``(*batch, n, m)``                             Cholesky / CG
:class:`KernelOperator`         ``k(x1, x2)``, evaluated block by block                 Cholesky / CG (blockwise)
:class:`AddedDiagOperator`      ``A + diag(d)``                                         as ``A`` (noise apart)
:class:`DiagOperator`           ``diag(d)``, ``d (*batch, n)``                          elementwise
:class:`ConstantDiagOperator`   ``c I``                                                 elementwise
:class:`LowRankRootOperator`    ``R Rᵀ``, ``R (*batch, n, r)``                          Cholesky (singular if r<n)
:class:`LowRankRootAddedDiag`   ``R Rᵀ + diag(d)``                                      Woodbury
:class:`SumOperator`            ``Σ A_i``                                               Cholesky / CG
:class:`ProductOperator`        ``A ∘ B`` (element-wise)                                Cholesky / CG
:class:`ConstantMulOperator`    ``c A``                                                 Cholesky / CG
:class:`KroneckerProductOperator` ``A_1 ⊗ … ⊗ A_p``                                    per-factor Cholesky
:class:`KroneckerProductAddedDiag` ``A_1 ⊗ … ⊗ A_p + σ²I`` (or ``+ D_t ⊗ I``)           per-factor eigh
:class:`BlockDiagOperator`      blocks ``(*batch, b, n, n)`` as ``(*batch, bn, bn)``    per-block Cholesky
:class:`BlockInterleavedOperator` blocks ``(*batch, t, n, n)``, rows ``i t + a``        per-block Cholesky
==============================  =====================================================  ==========================

Structure is kept through ``+``, ``*``, ``.mul``, ``.add_diagonal``, ``.add_jitter`` where it pays:
Kronecker + diagonal stays Kronecker-plus-diagonal, low rank + diagonal stays low-rank-plus-diagonal,
diagonal ∘ anything is diagonal, diagonal + diagonal is diagonal; a dense matrix is made only when asked for.
The solver of each kind is chosen in one place, :func:`torchgp.linalg.solvers.choose_solver`.
"""

from __future__ import annotations

import torch

from torchgp.linalg.operators.base import Operator, _fmt_bytes
from torchgp.linalg.operators.basic import (
    AddedDiagOperator,
    ConstantDiagOperator,
    DenseOperator,
    DiagOperator,
)
from torchgp.linalg.operators.block_interleaved import BlockInterleavedOperator
from torchgp.linalg.operators.kernel import KernelOperator
from torchgp.linalg.operators.kronecker import BlockDiagOperator, KroneckerProductAddedDiag, KroneckerProductOperator
from torchgp.linalg.operators.structured import (
    ConstantMulOperator,
    LowRankRootAddedDiag,
    LowRankRootOperator,
    ProductOperator,
    SumOperator,
)


def as_operator(x) -> Operator:
    """Wrap a tensor as :class:`DenseOperator`; return an operator unchanged."""
    if isinstance(x, Operator):
        return x
    if isinstance(x, torch.Tensor):
        return DenseOperator(x)
    raise TypeError(f"Expected a tensor or a torchgp Operator; got {type(x).__name__}.")


__all__ = [
    "Operator",
    "DenseOperator",
    "KernelOperator",
    "AddedDiagOperator",
    "DiagOperator",
    "ConstantDiagOperator",
    "LowRankRootOperator",
    "LowRankRootAddedDiag",
    "SumOperator",
    "ProductOperator",
    "ConstantMulOperator",
    "KroneckerProductOperator",
    "KroneckerProductAddedDiag",
    "BlockDiagOperator",
    "BlockInterleavedOperator",
    "as_operator",
    "_fmt_bytes",
]
