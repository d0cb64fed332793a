r"""Numeric core: Cholesky with jitter, the covariance operators, the one solver choice, CG and Lanczos.

* :mod:`~torchgp.linalg.operators`: the operator family behind one interface (shapes ``(*batch, n, m)``):
  :class:`DenseOperator` (a tensor), :class:`KernelOperator` (``k(x1, x2)``, blockwise, never whole),
  :class:`AddedDiagOperator` (``A + diag(d)``), :class:`DiagOperator` / :class:`ConstantDiagOperator`
  (``diag(d)``, ``c I``), :class:`LowRankRootOperator` (``R Rᵀ``, ``R (*batch, n, r)``) and
  :class:`LowRankRootAddedDiag` (``R Rᵀ + diag(d)``), :class:`SumOperator` (``Σ A_i``),
  :class:`ProductOperator` (``A ∘ B``), :class:`ConstantMulOperator` (``c A``),
  :class:`KroneckerProductOperator` (``A_1 ⊗ … ⊗ A_p``, ``(*batch, Π n_i, Π m_i)``) and
  :class:`KroneckerProductAddedDiag` (``⊗A_i + σ²I`` or ``+ D_t ⊗ I``), :class:`BlockDiagOperator`
  (blocks ``(*batch, b, n, n)`` as ``(*batch, b n, b n)``), :class:`BlockInterleavedOperator` (the same blocks in
  interleaved row order ``i t + a``: independent tasks).
* :mod:`~torchgp.linalg.solvers`: :func:`choose_solver` / :func:`factorize` map each operator to one of
  Cholesky (``n ≤ settings.max_cholesky_size``), Woodbury (low rank + diagonal), Kronecker
  (per-factor factorisations) or iterative (CG + stochastic Lanczos quadrature); the returned
  :class:`Factor` solves (``(*batch, n, k) → (*batch, n, k)``) and gives ``log|A|`` (``(*batch)``).
* :func:`inv_quad_logdet` ``(rᵀA⁻¹r, log|A|)`` (``(*batch)`` each) and :func:`solve` (``A⁻¹ B``) call that choice.
* :func:`psd_safe_cholesky`: ``A (*batch, n, n) → L`` with jitter escalation and a diagnosis when it fails.
* :func:`contour_integral_quad`: ``K^{±1/2} B`` by contour integral quadrature over multi-shift MINRES
  (``torchgp.linalg.minres.minres``: ``(K + σ_q I)⁻¹ B`` for all shifts at once).
"""

from torchgp.linalg.cholesky import diagnose_not_psd, psd_safe_cholesky
from torchgp.linalg.inv_quad_logdet import inv_quad_logdet, solve
from torchgp.linalg.minres import contour_integral_quad
from torchgp.linalg.operators import (
    AddedDiagOperator,
    BlockDiagOperator,
    BlockInterleavedOperator,
    ConstantDiagOperator,
    ConstantMulOperator,
    DenseOperator,
    DiagOperator,
    KernelOperator,
    KroneckerProductAddedDiag,
    KroneckerProductOperator,
    LowRankRootAddedDiag,
    LowRankRootOperator,
    Operator,
    ProductOperator,
    SumOperator,
    as_operator,
)
from torchgp.linalg.solvers import Factor, choose_solver, factorize

__all__ = [
    "psd_safe_cholesky",
    "diagnose_not_psd",
    "inv_quad_logdet",
    "solve",
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
    "choose_solver",
    "factorize",
    "Factor",
    "contour_integral_quad",
]
