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
``kronecker``  ``⊗A_i``; ``⊗A_i + σ²I``; ``⊗A_i + diag(⊗d_i)``      per-factor Cholesky; per-factor eigendecomposition
                                                                      (``O(Σ n_i³)`` plus ``O(N Σ n_i)`` products)
``iterative``  the rest (large n)                                     preconditioned CG and stochastic Lanczos quadrature
                                                                      (:mod:`torchgp.linalg.iterative`)
=============  =====================================================  ==================================================

A :class:`Factor` holds one factorised ``A`` (computed lazily, once): ``solve(rhs)``, ``inv_quad_logdet(rhs)``
and ``logdet()``, each differentiable with respect to the tensors behind ``A`` and to ``rhs``; the
Woodbury and Kronecker kinds differentiate through their small factors with autograd.

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

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.operators import (
    AddedDiagOperator,
    BlockDiagOperator,
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
    if isinstance(op, KroneckerProductAddedDiag) and op.diag_factors is not None:
        return "kronecker"
    if isinstance(op, BlockDiagOperator):
        return choose_solver(op.base) if choose_solver(op.base) != "iterative" else "iterative"
    return "cholesky" if n <= settings.max_cholesky_size.value() else "iterative"


def factorize(op) -> Factor:
    """The factorisation of ``op`` (tensor or operator ``(*batch, n, n)``, symmetric positive definite) that
    :func:`choose_solver` picks; nothing is computed until a method of the factor is called."""
    op = as_operator(op)
    # Interpolated (SKI), Toeplitz and Kronecker-Toeplitz operators are solved through their own fast products.
    from torchgp.linalg.structured_solve import structured_factor

    structured = structured_factor(op)
    if structured is not None:
        return structured
    kind = choose_solver(op)
    if isinstance(op, BlockDiagOperator) and kind != "iterative":
        return BlockDiagFactor(op)
    if kind == "cholesky":
        return DiagFactor(op) if isinstance(op, DiagOperator) else CholeskyFactor(op)
    if kind == "woodbury":
        return WoodburyFactor(op)
    if kind == "kronecker":
        return KroneckerFactor(op) if isinstance(op, KroneckerProductOperator) else KroneckerAddedDiagFactor(op)
    return IterativeFactor(op)


class Factor:
    """A factorised symmetric positive definite ``A`` ``(*batch, n, n)``.

    Attributes:
        kind: ``"cholesky"``, ``"woodbury"``, ``"kronecker"`` or ``"iterative"``.
        cholesky: lower ``L`` with ``A = L Lᵀ`` ``(*batch, n, n)`` when ``kind == "cholesky"``, else None.
    """

    kind: str = ""

    def __init__(self, op: Operator):
        self.op = op
        self.shape = op.shape

    @property
    def cholesky(self) -> torch.Tensor | None:
        return None

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ rhs``: ``(*batch, n, k) → (*batch, n, k)``, differentiable."""
        raise NotImplementedError

    def logdet(self) -> torch.Tensor:
        """``log|A|``, ``(*batch)``."""
        raise NotImplementedError

    def inv_quad_logdet(self, rhs: torch.Tensor | None = None, logdet: bool = True, reduce: bool = True):
        """``(Σ_k r_kᵀA⁻¹r_k (*batch), log|A| (*batch) or None)`` for ``rhs (*batch, n, k)``.

        With ``reduce=False`` the quadratic forms are kept per column, ``(*batch, k)``; with ``rhs`` None
        the first output is zeros.
        """
        if rhs is None:
            quad = torch.zeros(self.shape[:-2], dtype=self.op.dtype, device=self.op.device)
        else:
            quad = (rhs * self.solve(rhs)).sum(-2)
            quad = quad.sum(-1) if reduce else quad
        return quad, (self.logdet() if logdet else None)


def _noise_apart(op: Operator):
    """``(dense K, σ² (*batch, n) or None)`` for ``K + diag σ²`` (noise kept apart), else ``(dense, None)``."""
    if isinstance(op, AddedDiagOperator) and not isinstance(op.base, AddedDiagOperator):
        return op.base.to_dense(), op.diag.expand(op.shape[:-1])
    return op.to_dense(), None


class CholeskyFactor(Factor):
    """``A = L Lᵀ`` by :func:`~torchgp.linalg.cholesky.psd_safe_cholesky` (in ``settings.solve_dtype`` if set).

    ``inv_quad_logdet`` runs :class:`~torchgp.linalg.inv_quad_logdet.CholeskyInvQuadLogdet`, whose backward is
    the closed form ``g_l A⁻¹ − g_q ααᵀ`` (R&W 2006, eq. 5.9).
    """

    kind = "cholesky"

    def __init__(self, op):
        super().__init__(op)
        self._L = None

    @property
    def cholesky(self) -> torch.Tensor:
        if self._L is None:
            A = self.op.to_dense()
            dtype = settings.solve_dtype.value()
            self._L = psd_safe_cholesky(A if dtype is None else A.to(dtype))
        return self._L

    def solve(self, rhs):
        L = self.cholesky
        return torch.cholesky_solve(rhs.to(L.dtype), L).to(rhs.dtype)  # R&W Alg. 2.1 line 3

    def logdet(self):
        return self.inv_quad_logdet(None, logdet=True)[1]

    def inv_quad_logdet(self, rhs=None, logdet=True, reduce=True):
        from torchgp.linalg.inv_quad_logdet import CholeskyInvQuadLogdet

        if not reduce and rhs is not None:
            return super().inv_quad_logdet(rhs, logdet, reduce)
        op, n = self.op, self.shape[-1]
        out_dtype = op.dtype
        rhs_m = torch.zeros(*op.batch_shape, n, 1, dtype=op.dtype, device=op.device) if rhs is None else rhs
        K, noise = _noise_apart(op)
        solve_dtype = settings.solve_dtype.value()
        if solve_dtype is not None and solve_dtype != K.dtype:
            K, rhs_m = K.to(solve_dtype), rhs_m.to(solve_dtype)
            noise = None if noise is None else noise.to(solve_dtype)
        batch = broadcast_shapes(K.shape[:-2], rhs_m.shape[:-2], () if noise is None else noise.shape[:-1])
        K, rhs_m = K.expand(*batch, n, n), rhs_m.expand(*batch, *rhs_m.shape[-2:])
        if noise is not None:
            noise = noise.expand(*batch, n)
        quad, ld = CholeskyInvQuadLogdet.apply(K, noise, rhs_m)
        return quad.to(out_dtype), (ld.to(out_dtype) if logdet else None)


class DiagFactor(Factor):
    """``A = diag(d)``: ``A⁻¹ b = b / d``, ``log|A| = Σ log d``."""

    kind = "cholesky"

    @property
    def cholesky(self):
        return torch.diag_embed(self.op.diagonal().sqrt())

    def solve(self, rhs):
        return rhs / self.op.diagonal().unsqueeze(-1)

    def logdet(self):
        return self.op.diagonal().log().sum(-1)


class WoodburyFactor(Factor):
    r"""``A = D + R Rᵀ`` with ``D = diag(d)``, ``R (*batch, n, r)``, through the ``r × r`` capacitance
    ``C = I + Rᵀ D⁻¹ R = L_C L_Cᵀ``:

    .. math::
        A^{-1} = D^{-1} - D^{-1} R\, C^{-1} R^\top D^{-1} \quad\text{(R\&W 2006, eq. A.9)},\qquad
        \log|A| = \log|C| + \textstyle\sum_i \log d_i \quad\text{(eq. A.10)}.

    Cost ``O(n r²)``; gradients by autograd through the ``r × r`` factor.
    """

    kind = "woodbury"

    def __init__(self, op):
        super().__init__(op)
        self.R = op.base.R
        self.d = op.diag.expand(op.shape[:-1])
        self._LC = None

    @property
    def capacitance_cholesky(self) -> torch.Tensor:
        if self._LC is None:
            DinvR = self.R / self.d.unsqueeze(-1)
            C = self.R.mT @ DinvR
            C = C + torch.eye(C.shape[-1], dtype=C.dtype, device=C.device)
            self._LC = psd_safe_cholesky(C)
        return self._LC

    def solve(self, rhs):
        Dinv_b = rhs / self.d.unsqueeze(-1)
        inner = torch.cholesky_solve(self.R.mT @ Dinv_b, self.capacitance_cholesky)
        return Dinv_b - (self.R @ inner) / self.d.unsqueeze(-1)

    def logdet(self):
        LC = self.capacitance_cholesky
        return 2 * LC.diagonal(dim1=-2, dim2=-1).log().sum(-1) + self.d.log().sum(-1)


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


class KroneckerAddedDiagFactor(Factor):
    r"""``A = ⊗ K_i + diag(⊗ d_i)`` (``σ² I`` is ``d_1 = σ² 1``, the others ones) by per-factor eigendecompositions.

    With ``S_i = diag(√d_i)`` and ``S_i⁻¹ K_i S_i⁻¹ = Q_i Λ_i Q_iᵀ``,

    .. math::
        A = S\,Q\,(\Lambda + I)\,Q^\top S,\quad S = \otimes S_i,\ Q = \otimes Q_i,\ \Lambda = \otimes\Lambda_i,
        \qquad \log|A| = \textstyle\sum \log(\Lambda + 1) + \sum \log(\otimes d_i).

    A diagonal factor needs no eigendecomposition (``Q_i = I``). Cost ``O(Σ n_i³ + N Σ n_i)``.
    """

    kind = "kronecker"

    def __init__(self, op):
        super().__init__(op)
        kron = op.base
        self.sizes = [f.shape[-1] for f in kron.factors]
        self._parts = None

    def _eig(self):
        if self._parts is None:
            kron, evals, evecs, scales = self.op.base, [], [], []
            for f, d in zip(kron.factors, self.op.diag_factors):
                s = None if d is None else d.sqrt()
                if isinstance(f, DiagOperator):
                    lam = f.diagonal() if d is None else f.diagonal() / d
                    Q = None
                else:
                    M = f.to_dense()
                    if s is not None:
                        M = M / (s.unsqueeze(-1) * s.unsqueeze(-2))
                    lam, Q = torch.linalg.eigh(M)
                evals.append(lam)
                evecs.append(Q)
                scales.append(torch.ones(f.shape[-1], dtype=f.dtype, device=f.device) if s is None else s)
            batch = self.op.batch_shape
            self._parts = (kron_vectors(evals, batch), evecs, kron_vectors(scales, batch))
        return self._parts

    def solve(self, rhs):
        lam, Qs, s = self._eig()
        batch = self.op.batch_shape
        apply_t = [(lambda V, Q=Q: V if Q is None else Q.mT @ V) for Q in Qs]
        apply = [(lambda V, Q=Q: V if Q is None else Q @ V) for Q in Qs]
        w = rhs / s.unsqueeze(-1)
        w = kron_apply(apply_t, self.sizes, self.sizes, w, batch)
        w = w / (lam + 1).unsqueeze(-1)
        w = kron_apply(apply, self.sizes, self.sizes, w, batch)
        return w / s.unsqueeze(-1)

    def logdet(self):
        lam, _, s = self._eig()
        return (lam + 1).log().sum(-1) + 2 * s.log().sum(-1)


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
        quad, ld = iterative_inv_quad_logdet(self.system, rhs_m, logdet=logdet)
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
