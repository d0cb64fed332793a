r"""The factorisations of the one solver choice (:mod:`torchgp.linalg.solvers`) that need no other factor.

:class:`Factor` (the interface), :class:`CholeskyFactor` (dense ``A = L Lᵀ``, the MLL's closed-form backward),
:class:`DiagFactor` and :class:`WoodburyFactor` (``R Rᵀ + diag(d)``). The composite factors (Kronecker, block
diagonal, iterative) live in :mod:`torchgp.linalg.solvers`, next to :func:`~torchgp.linalg.solvers.factorize`.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.linalg.cholesky import cholesky_solve, psd_safe_cholesky
from torchgp.linalg.operators import AddedDiagOperator, Operator

__all__ = ["Factor", "CholeskyFactor", "DiagFactor", "WoodburyFactor"]


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
        diag, shape = op.diag, op.shape[:-1]
        return op.base.to_dense(), (diag if diag.shape == shape else diag.expand(shape))
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
        return cholesky_solve(rhs.to(L.dtype), L).to(rhs.dtype)  # R&W Alg. 2.1 line 3

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
        # expand only what lacks the batch shape: each expand is one more autograd node per evaluation
        if K.shape[:-2] != batch:
            K = K.expand(*batch, n, n)
        if rhs_m.shape[:-2] != batch:
            rhs_m = rhs_m.expand(*batch, *rhs_m.shape[-2:])
        if noise is not None and noise.shape[:-1] != batch:
            noise = noise.expand(*batch, n)
        quad, ld = CholeskyInvQuadLogdet.apply(K, noise, rhs_m)
        if quad.dtype != out_dtype:
            quad, ld = quad.to(out_dtype), ld.to(out_dtype)
        return quad, (ld if logdet else None)

    def gaussian_log_prob(self, value, mean, w: float, c: float) -> torch.Tensor | None:
        """``w (rᵀA⁻¹r + log|A|) + c`` ``(*batch)`` for ``r = value − mean`` (each ``(*batch, n)``), as one node
        (:class:`~torchgp.linalg.inv_quad_logdet.CholeskyGaussianLogProb`); None where the general route must run
        (a ``settings.solve_dtype`` other than the matrix's, or inputs of another dtype)."""
        from torchgp.linalg.inv_quad_logdet import CholeskyGaussianLogProb

        op, n = self.op, self.shape[-1]
        solve_dtype = settings.solve_dtype.value()
        if (solve_dtype is not None and solve_dtype != op.dtype) or value.dtype != op.dtype or mean.dtype != op.dtype:
            return None
        K, noise = _noise_apart(op)
        batch = broadcast_shapes(
            K.shape[:-2], value.shape[:-1], mean.shape[:-1], () if noise is None else noise.shape[:-1]
        )
        # expand only what lacks the batch shape: each expand is one more autograd node per evaluation
        if K.shape[:-2] != batch:
            K = K.expand(*batch, n, n)
        if noise is not None and noise.shape[:-1] != batch:
            noise = noise.expand(*batch, n)
        return CholeskyGaussianLogProb.apply(K, noise, value, mean, w, c)


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
