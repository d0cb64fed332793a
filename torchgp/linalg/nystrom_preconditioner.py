r"""A randomized Nyström preconditioner from matrix products only, for ``beta_features.default_preconditioner``.

GPyTorch's flag gives an operator without a preconditioner of its own a randomized low-rank one for its solves
(a range finder ``Q = qr(A Ω)`` and the SVD of ``A Q``). Here it is the randomized Nyström preconditioner of
Frangella, Tropp & Udell (2023, "Randomized Nyström preconditioning", Alg. 2.1 and eq. (5.3)), which is
symmetric positive definite for any rank: with ``Ω`` an orthonormal ``(n, k)`` test matrix and ``Y = K Ω``,

.. math::
    \hat K = U \hat\Lambda U^\top \approx K,\qquad
    P^{-1} = (\hat\lambda_k + \mu)\, U (\hat\Lambda + \mu I)^{-1} U^\top + (I - U U^\top)

for ``K + μI`` (``μ`` the smallest noise), where ``Y_ν = Y + νΩ`` (a shift ``ν`` at round-off, for stability),
``C = chol(Ωᵀ Y_ν)``, ``U Σ Vᵀ = Y_ν C^{-⊤}`` and ``Λ̂ = max(Σ² − ν, 0)``. It costs one product of ``K`` with
``k`` columns plus ``O(n k²)``, and applying it ``O(n k)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchgp.linalg.lanczos import probe_generator

__all__ = ["NystromPreconditioner"]


class NystromPreconditioner:
    """Randomized Nyström preconditioner of ``K + diag(d)``.

    Args:
        matmul: ``V ↦ K V`` for ``V (*batch, n, k)`` (``K`` without the noise diagonal; PSD).
        batch: batch shape; n: size; rank: ``k ≤ n``.
        noise: ``(*batch, n)`` diagonal (its smallest entry is the shift ``μ``), or None (``μ`` at round-off).
        dtype, device: of the factors.
    """

    def __init__(self, matmul: Callable[[torch.Tensor], torch.Tensor], batch, n: int, rank: int, noise, dtype, device):
        k = max(1, min(int(rank), n))
        gen = probe_generator()
        omega = torch.randn(*batch, n, k, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
        omega = torch.linalg.qr(omega).Q
        Y = matmul(omega).to(dtype)
        nu = torch.finfo(dtype).eps * Y.norm(dim=(-2, -1), keepdim=True)  # FTU Alg. 2.1 line 3
        Y_nu = Y + nu * omega
        C = torch.linalg.cholesky(omega.mT @ Y_nu)
        B = torch.linalg.solve_triangular(C, Y_nu.mT, upper=False).mT  # Y_ν C⁻ᵀ
        U, S, _ = torch.linalg.svd(B, full_matrices=False)
        lam = (S.square() - nu[..., 0]).clamp_min(0)  # (*batch, k), descending
        if noise is None:
            mu = lam[..., :1].clamp_min(torch.finfo(dtype).tiny) * torch.finfo(dtype).eps ** 0.5
        else:
            mu = noise.detach().to(dtype).expand(*batch, n).amin(-1, keepdim=True)
        self.U, self.lam, self.mu = U, lam, mu
        self.scale = (lam[..., -1:] + mu) / (lam + mu)  # (λ̂_k + μ) / (λ̂_j + μ), (*batch, k)
        self.pivots = None

    @property
    def rank(self) -> int:
        """Rank ``k`` of the Nyström approximation."""
        return self.U.shape[-1]

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        """``P⁻¹ V`` (FTU 2023, eq. (5.3)) for ``V (*batch, n, t)``, in ``V``'s dtype."""
        U = self.U.to(V.dtype)
        UtV = U.mT @ V
        return V + U @ ((self.scale.to(V.dtype).unsqueeze(-1) - 1) * UtV)
