r"""The one solver choice: which factorisation solves ``A x = b`` and gives ``log|A|`` for each operator.

The marginal likelihood (:func:`torchgp.linalg.inv_quad_logdet`), the exact posterior, LOVE and
fantasies all call :func:`factorize` (or :func:`choose_solver` to know what it will do):

=============  =====================================================  ==================================================
kind           operators                                              method
=============  =====================================================  ==================================================
``cholesky``   dense, kernel, sums, products with n ≤                 ``A = L Lᵀ`` (jitter escalation); the MLL's backward
               ``settings.max_cholesky_size``; diagonal; blocks       is the closed form ``A⁻¹ − ααᵀ`` (one
                                                                      ``cholesky_inverse``); block-diagonal: per block
``woodbury``   ``R Rᵀ + diag(d)``, ``R (*batch, n, r)``, ``r < n``    Woodbury identity and the matrix determinant lemma
                                                                      (R&W 2006, eq. A.9, A.10): ``O(n r²)``
``kronecker``  ``⊗A_i``; ``⊗A_i + σ²I``; ``⊗A_i + diag(⊗d_i)``;     per-factor Cholesky; otherwise two per-factor
               ``K_1 ⊗ K_2 + S_1 ⊗ S_2`` (``S_i`` diagonal or dense)  eigendecompositions with closed-form backward passes
                                                                      (:mod:`torchgp.linalg.kronecker_solve`)
``iterative``  the rest (large n)                                     preconditioned CG and stochastic Lanczos quadrature
                                                                      (:mod:`torchgp.linalg.iterative`)
=============  =====================================================  ==================================================

A :class:`Factor` holds one factorised ``A`` (computed lazily, once): ``solve(rhs)``, ``inv_quad_logdet(rhs)``
and ``logdet()``, each differentiable with respect to the tensors behind ``A`` and to ``rhs``; the
Woodbury kind differentiates through its small factor with autograd; the Kronecker sum has closed-form backward
passes (no gradient through an eigendecomposition).

Example:
    >>> import torch
    >>> from torchgp.linalg.operators import LowRankRootOperator
    >>> A = LowRankRootOperator(torch.randn(100, 3, dtype=torch.float64)).add_diagonal(torch.ones(100, dtype=torch.float64))
    >>> f = factorize(A)
    >>> f.kind
    'woodbury'
    >>> b = torch.randn(100, 2, dtype=torch.float64)
    >>> torch.allclose(A.to_dense() @ f.solve(b), b)
    True
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.linalg import _log
from torchgp.linalg.factors import CholeskyFactor, DiagFactor, Factor, WoodburyFactor
from torchgp.linalg.kronecker_parts import KroneckerSum, is_kronecker_sum, kronecker_sum
from torchgp.linalg.kronecker_solve import KroneckerEig, kronecker_inv_quad_logdet, kronecker_solve
from torchgp.linalg.operators import (
    AddedDiagOperator,
    BlockDiagOperator,
    BlockInterleavedOperator,
    DenseOperator,
    DiagOperator,
    KernelOperator,
    KroneckerProductAddedDiag,
    KroneckerProductOperator,
    LowRankRootOperator,
    Operator,
    as_operator,
)
from torchgp.linalg.operators.kronecker import kron_apply, kron_vectors

__all__ = ["choose_solver", "factorize", "Factor"]


def choose_solver(op) -> str:
    """``"cholesky"``, ``"woodbury"``, ``"kronecker"`` or ``"iterative"`` for a square operator or tensor ``(*batch, n, n)``."""
    op = as_operator(op)
    n = op.shape[-1]
    if isinstance(op, DiagOperator):
        return "cholesky"
    if isinstance(op, AddedDiagOperator) and isinstance(op.base, LowRankRootOperator) and op.base.R.shape[-1] < n:
        return "woodbury"
    if isinstance(op, KroneckerProductOperator) and all(f.shape[-1] == f.shape[-2] for f in op.factors):
        return "kronecker"
    if _is_kronecker_sum(op):
        return "kronecker"
    if isinstance(op, BlockDiagOperator):
        return choose_solver(op.base) if choose_solver(op.base) != "iterative" else "iterative"
    if isinstance(op, BlockInterleavedOperator):  # a permuted block-diagonal matrix: as its blocks
        return choose_solver(op.base)
    return "cholesky" if n <= settings.max_cholesky_size.value() else "iterative"


def factorize(op) -> Factor:
    """The factorisation of ``op`` (tensor or operator ``(*batch, n, n)``, symmetric positive definite) that
    :func:`choose_solver` picks; nothing is computed until a method of the factor is called."""
    op = as_operator(op)
    # Interpolated (SKI), Toeplitz and Kronecker-Toeplitz operators are solved through their own fast products.
    from torchgp.linalg.structured_solve import structured_factor

    structured = structured_factor(op)
    if structured is not None:
        kind = getattr(structured, "kind", type(structured).__name__)
        _log.debug("solver: %s (structured) for %s of shape %s", kind, type(op).__name__, tuple(op.shape))
        return structured
    kind = choose_solver(op)
    _log.debug("solver: %s for %s of shape %s", kind, type(op).__name__, tuple(op.shape))
    if isinstance(op, BlockDiagOperator) and kind != "iterative":
        return BlockDiagFactor(op)
    if isinstance(op, BlockInterleavedOperator) and kind != "iterative":
        return BlockInterleavedFactor(op)
    if kind == "cholesky":
        return DiagFactor(op) if isinstance(op, DiagOperator) else CholeskyFactor(op)
    if kind == "woodbury":
        return WoodburyFactor(op)
    if kind == "kronecker":
        return KroneckerFactor(op) if isinstance(op, KroneckerProductOperator) else KroneckerSumFactor(op)
    return IterativeFactor(op)


class KroneckerFactor(Factor):
    r"""``A = A_1 ⊗ … ⊗ A_p``: ``A⁻¹ = ⊗ A_i⁻¹`` and ``log|A| = Σ_i (N / n_i) log|A_i|`` (``N = Π n_i``),
    each factor solved by its own :func:`factorize`."""

    kind = "kronecker"

    def __init__(self, op):
        super().__init__(op)
        self.factors = [factorize(f) for f in op.factors]
        self.sizes = [f.shape[-1] for f in op.factors]

    def solve(self, rhs):
        return kron_apply([f.solve for f in self.factors], self.sizes, self.sizes, rhs, self.op.batch_shape)

    def logdet(self):
        N = self.shape[-1]
        parts = [f.logdet() * (N // n) for f, n in zip(self.factors, self.sizes)]
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out.expand(self.op.batch_shape)


class KroneckerSumFactor(Factor):
    r"""``A = K_1 ⊗ K_2 + S_1 ⊗ S_2`` (``⊗ K_i + σ² I``, ``⊗ K_i + diag(⊗ d_i)``, or a sum of two Kronecker
    products one with a diagonal factor) by :mod:`torchgp.linalg.kronecker_solve`: per-factor eigendecompositions,
    ``O(p³ + q³ + pq(p + q))``, and closed-form backward passes (R&W 2006, eq. 5.9 contracted through the
    structure), so repeated eigenvalues of either factor leave the gradients finite.

    More than two factors are grouped into two (the split with the smaller larger side; each side dense).
    """

    kind = "kronecker"

    def __init__(self, op):
        super().__init__(op)
        self.parts = _two_factor_parts(op)
        self._eig = None

    @property
    def eig(self):
        if self._eig is None:
            self._eig = KroneckerEig(self.parts)
        return self._eig

    def solve(self, rhs):
        return kronecker_solve(self.parts, rhs, self.eig)

    def logdet(self):
        return self.inv_quad_logdet(None, logdet=True)[1]

    def inv_quad_logdet(self, rhs=None, logdet=True, reduce=True):
        if not reduce and rhs is not None:
            return super().inv_quad_logdet(rhs, logdet, reduce)
        quad, ld = kronecker_inv_quad_logdet(self.parts, rhs, logdet)
        batch = self.op.batch_shape
        quad = quad.expand(broadcast_shapes(batch, quad.shape))
        return quad, (None if ld is None else ld.expand(broadcast_shapes(batch, ld.shape)))


def _is_kronecker_sum(op) -> bool:
    if isinstance(op, KroneckerProductAddedDiag) and op.diag_factors is not None:
        return all(f.shape[-1] == f.shape[-2] for f in op.base.factors) and len(op.base.factors) >= 2
    return is_kronecker_sum(op)


def _two_factor_parts(op):
    """:class:`~torchgp.linalg.kronecker_solve.KroneckerSum` of ``op``; ``p > 2`` factors grouped into two."""
    if not (isinstance(op, KroneckerProductAddedDiag) and len(op.base.factors) > 2):
        return kronecker_sum(op)
    factors, diags = op.base.factors, op.diag_factors
    sizes = [f.shape[-1] for f in factors]
    split = min(range(1, len(sizes)), key=lambda s: max(math.prod(sizes[:s]), math.prod(sizes[s:])))
    groups = []
    for fs, ds in ((factors[:split], diags[:split]), (factors[split:], diags[split:])):
        K = fs[0].to_dense() if len(fs) == 1 else KroneckerProductOperator(*fs).to_dense()
        if all(d is None for d in ds):
            d = None
        else:
            ones = [
                torch.ones(f.shape[-1], dtype=op.dtype, device=op.device) if d is None else d for f, d in zip(fs, ds)
            ]
            d = kron_vectors(ones)
        groups.append((K, d))
    (K1, d1), (K2, d2) = groups
    return KroneckerSum(K1, K2, d1, d2)


class BlockDiagFactor(Factor):
    """Block-diagonal ``A`` with blocks ``(*batch, b, n, n)``: each block factorised (as a batch) by :func:`factorize`."""

    def __init__(self, op: BlockDiagOperator):
        super().__init__(op)
        self.inner = factorize(op.base)
        self.kind = self.inner.kind
        self.b, self.n = op.num_blocks, op.base.shape[-1]

    @property
    def cholesky(self):
        L = self.inner.cholesky
        if L is None:
            return None
        return BlockDiagOperator(DenseOperator(L)).to_dense()

    def _split(self, rhs):
        batch = broadcast_shapes(self.op.batch_shape, rhs.shape[:-2])
        return rhs.expand(*batch, *rhs.shape[-2:]).reshape(*batch, self.b, self.n, rhs.shape[-1])

    def solve(self, rhs):
        X = self.inner.solve(self._split(rhs))
        return X.reshape(*X.shape[:-3], self.b * self.n, X.shape[-1])

    def logdet(self):
        return self.inner.logdet().sum(-1)

    def inv_quad_logdet(self, rhs=None, logdet=True, reduce=True):
        quad, ld = self.inner.inv_quad_logdet(None if rhs is None else self._split(rhs), logdet, reduce)
        quad = quad.sum(-1) if reduce or rhs is None else quad.sum(-2)
        return quad, (None if ld is None else ld.sum(-1))


class BlockInterleavedFactor(BlockDiagFactor):
    """Block-interleaved ``A = P diag(K_a) Pᵀ`` (:class:`~torchgp.linalg.operators.BlockInterleavedOperator`, blocks
    ``(*batch, t, n, n)``): the blocks factorised as :class:`BlockDiagFactor` does, right-hand sides regrouped from
    interleaved rows ``i t + a`` to ``(t, n)`` and back; ``log|A| = Σ_a log|K_a|`` (a permutation has ``|P| = ±1``)."""

    @property
    def cholesky(self):
        L = self.inner.cholesky
        if L is None:
            return None
        return BlockInterleavedOperator(DenseOperator(L)).to_dense()  # lower triangular in interleaved order

    def _split(self, rhs):
        batch = broadcast_shapes(self.op.batch_shape, rhs.shape[:-2])
        rhs = rhs.expand(*batch, *rhs.shape[-2:])
        return rhs.reshape(*batch, self.n, self.b, rhs.shape[-1]).transpose(-3, -2)

    def solve(self, rhs):
        X = self.inner.solve(self._split(rhs))  # (*batch, t, n, k)
        return X.transpose(-3, -2).reshape(*X.shape[:-3], self.b * self.n, X.shape[-1])


class IterativeFactor(Factor):
    """Preconditioned CG and stochastic Lanczos quadrature (:mod:`torchgp.linalg.iterative`).

    ``KernelOperator`` and ``DenseOperator`` (either plus a diagonal) are used as they are, the kernel never
    held whole; any other operator is made dense first (within ``settings.max_dense_memory``).
    """

    kind = "iterative"

    def __init__(self, op):
        super().__init__(op)
        self.system = _iterative_operator(op)

    def solve(self, rhs):
        from torchgp.linalg.iterative import iterative_solve

        return iterative_solve(self.system, rhs)

    def inv_quad_logdet(self, rhs=None, logdet=True, reduce=True):
        from torchgp.linalg.iterative import iterative_inv_quad_logdet

        if not reduce and rhs is not None:
            return super().inv_quad_logdet(rhs, logdet, reduce)
        op, n = self.op, self.shape[-1]
        rhs_m = torch.zeros(*op.batch_shape, n, 1, dtype=op.dtype, device=op.device) if rhs is None else rhs
        value = not settings.skip_logdet_forward.on()  # else the quadrature is skipped, its gradient kept
        quad, ld = iterative_inv_quad_logdet(self.system, rhs_m, logdet=logdet, logdet_value=value)
        return quad.to(op.dtype), (ld.to(op.dtype) if logdet else None)

    def logdet(self):
        return self.inv_quad_logdet(None, logdet=True)[1]


def _iterative_operator(op: Operator) -> Operator:
    """``op`` in a form the iterative path accepts: Kernel/Dense, or either plus a diagonal."""
    simple = (KernelOperator, DenseOperator)
    if isinstance(op, simple):
        return op
    if isinstance(op, AddedDiagOperator):
        base = op.base if isinstance(op.base, simple) else DenseOperator(op.base.to_dense())
        return AddedDiagOperator(base, op.diag)
    return DenseOperator(op.to_dense())
