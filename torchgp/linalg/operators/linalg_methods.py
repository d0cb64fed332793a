r"""GPyTorch's linear-algebra methods on every operator, all through the one solver choice.

``solve``, ``inv_quad_logdet``, ``inv_quad``, ``logdet`` use :func:`torchgp.linalg.solvers.factorize`;
``cholesky``, ``root_decomposition``, ``root_inv_decomposition`` and ``sqrt_inv_matmul`` factorise the
dense matrix (within ``settings.max_dense_memory``). Shapes: the operator ``(*batch, n, n)``, right-hand
sides ``(*batch, n, k)`` or ``(n,)``, left-hand sides ``(*batch, p, n)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torchgp.linalg.operators.base import Operator


class LinearAlgebraMethods:
    """Stateless mixin of :class:`~torchgp.linalg.operators.Operator`: solves, log-determinants and roots."""

    def _solver(self):
        from torchgp.linalg.solvers import factorize

        return factorize(self)

    def solve(self, rhs: torch.Tensor, lhs: torch.Tensor | None = None) -> torch.Tensor:
        """``A⁻¹ rhs`` (``rhs (*batch, n, k)`` or ``(n,)``), or ``lhs A⁻¹ rhs`` with ``lhs (*batch, p, n)``."""
        vector = rhs.dim() == 1
        out = self._solver().solve(rhs.unsqueeze(-1) if vector else rhs)
        if lhs is not None:
            out = lhs @ out
        return out.squeeze(-1) if vector and lhs is None else out

    def inv_matmul(self, right_tensor: torch.Tensor, left_tensor: torch.Tensor | None = None) -> torch.Tensor:
        """Deprecated alias of :meth:`solve`."""
        return self.solve(right_tensor, left_tensor)

    def inv_quad_logdet(self, inv_quad_rhs=None, logdet: bool = False, reduce_inv_quad: bool = True):
        """``(rᵀA⁻¹r, log|A|)``: ``inv_quad (*batch)`` (``(*batch, k)`` if not reduced) or None, ``logdet (*batch)`` or None."""
        from torchgp.linalg.inv_quad_logdet import inv_quad_logdet

        if inv_quad_rhs is None and not logdet:
            return None, None
        quad, ld = inv_quad_logdet(self, inv_quad_rhs, logdet=logdet, reduce_inv_quad=reduce_inv_quad)
        return (None if inv_quad_rhs is None else quad), ld

    def inv_quad(self, inv_quad_rhs: torch.Tensor, reduce_inv_quad: bool = True) -> torch.Tensor:
        """``rᵀA⁻¹r``, ``(*batch)`` (``(*batch, k)`` if not reduced)."""
        return self.inv_quad_logdet(inv_quad_rhs, logdet=False, reduce_inv_quad=reduce_inv_quad)[0]

    def logdet(self) -> torch.Tensor:
        """``log|A|``, ``(*batch)``."""
        return self._solver().logdet()

    def cholesky(self, upper: bool = False) -> Operator:
        """Lower (or upper) Cholesky factor as an operator, ``(*batch, n, n)``."""
        from torchgp.linalg.cholesky import psd_safe_cholesky
        from torchgp.linalg.operators.basic import DenseOperator

        L = psd_safe_cholesky(self.to_dense())
        return DenseOperator(L.mT if upper else L)

    def root_decomposition(self, method: str | None = None) -> Operator:
        """``A = R Rᵀ`` as a :class:`~torchgp.linalg.operators.LowRankRootOperator` (``.root`` is ``R``, ``(*batch, n, r)``).

        ``method="symeig"``/``"diagonalization"`` gives ``R = Q Λ^{1/2}`` (``A = QΛQᵀ``); every other method
        (``None``, ``"cholesky"``, ``"lanczos"``, ``"pivoted_cholesky"``) gives the exact Cholesky root ``R = L``,
        of which GPyTorch's Lanczos and pivoted-Cholesky roots are approximations. A low-rank operator returns itself.
        """
        from torchgp.linalg.operators.structured import LowRankRootOperator

        if method not in (None, "cholesky", "symeig", "diagonalization", "lanczos", "pivoted_cholesky"):
            raise ValueError(f"root_decomposition: unknown method {method!r}.")
        if method in ("symeig", "diagonalization"):
            evals, evecs = torch.linalg.eigh(self.to_dense())
            return LowRankRootOperator(evecs * evals.clamp_min(0).sqrt().unsqueeze(-2))
        return LowRankRootOperator(self.cholesky().to_dense())

    def root_inv_decomposition(self, initial_vectors=None, test_vectors=None, method: str | None = None) -> Operator:
        """``A⁻¹ = R Rᵀ`` with ``R = L⁻ᵀ`` (``A = L Lᵀ``), as a :class:`LowRankRootOperator`."""
        from torchgp.linalg.operators.structured import LowRankRootOperator

        L = self.cholesky().to_dense()
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand(L.shape)
        return LowRankRootOperator(torch.linalg.solve_triangular(L.mT, eye, upper=True))

    def sqrt_inv_matmul(self, rhs: torch.Tensor, lhs: torch.Tensor | None = None):
        r"""``A^{-1/2} rhs``; with ``lhs``, ``(lhs A^{-1/2} rhs, (lhs A⁻¹ lhsᵀ) diagonal)`` as in GPyTorch.

        ``A^{-1/2}`` is the symmetric inverse square root ``Q Λ^{-1/2} Qᵀ`` (``A = QΛQᵀ``).
        """
        vector = rhs.dim() == 1
        rhs = rhs.unsqueeze(-1) if vector else rhs
        evals, evecs = torch.linalg.eigh(self.to_dense())
        inv_sqrt = (evecs * evals.rsqrt().unsqueeze(-2)) @ evecs.mT
        if lhs is None:
            out = inv_sqrt @ rhs
            return out.squeeze(-1) if vector else out
        lhs_s = lhs @ inv_sqrt
        out = lhs_s @ rhs
        return (out.squeeze(-1) if vector else out), lhs_s.square().sum(-1)
