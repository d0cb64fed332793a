r"""LOVE (Pleiss et al. 2018): a rank-``k`` root of the inverse training covariance, by Lanczos.

``k`` steps of Lanczos on ``K̂ = K + σ²I`` (full reorthogonalisation) give an orthonormal basis
``Q`` (n × k) of the Krylov space and ``T = Qᵀ K̂ Q`` (k × k). On that space

.. math:: \hat K^{-1} \approx Q T^{-1} Q^\top = R R^\top,\qquad R = Q L_T^{-\top},\ T = L_T L_T^\top
    \qquad\text{(Pleiss et al. 2018, eq. 7)}

so a predictive variance ``k** − k*ᵀ K̂⁻¹ k*`` costs ``‖Rᵀ k*‖²``: O(n·k) per test point instead
of the O(n²) triangular solve. Krylov spaces capture the large eigenvalues of ``K̂`` first, which
carry the variance reduction (the small ones sit at the noise level), so ``k = 100`` is accurate
for smooth kernels at any n.

The same Lanczos gives a low-rank root of a predictive covariance ``Σ ≈ (Q T^{1/2})(Q T^{1/2})ᵀ`` for
``settings.fast_pred_samples``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchgp.linalg.cholesky import psd_safe_cholesky

__all__ = ["lanczos", "love_inverse_root", "lanczos_root"]

_START_SEED = 20180727  # fixed seed of the Lanczos start vectors: predictions are deterministic


def _start_vectors(batch, n, dtype, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_START_SEED)
    return torch.randn(*batch, n, 1, generator=gen, dtype=dtype).to(device)


def lanczos(matmul: Callable[[torch.Tensor], torch.Tensor], batch, n: int, k: int, dtype, device=None):
    r"""``k`` Lanczos steps on a symmetric PSD ``A`` with full reorthogonalisation.

    Each new direction is ``A q_j`` orthogonalised (twice, Gram–Schmidt) against all earlier
    ones; an exhausted Krylov space (a direction of norm ≈ 0) restarts from a fresh random
    vector orthogonal to ``Q``, so ``Q`` stays orthonormal. ``T = Qᵀ (A Q)`` is formed from the
    stored products, exactly symmetric (Saad 2003, §6.6, Alg. 6.15 without the three-term
    shortcut).

    Args:
        matmul: ``V ↦ A V`` for ``V (*batch, n, 1)``.
        batch: batch shape of ``A``; n: its size; k: number of steps (clamped to n).
        dtype, device: of the vectors.

    Returns:
        ``Q (*batch, n, k)`` and ``T (*batch, k, k)``.
    """
    k = min(k, n)
    q = _start_vectors(batch, n, dtype, device)
    q = q / q.norm(dim=-2, keepdim=True)
    Qs, AQs = [], []
    gen = torch.Generator().manual_seed(_START_SEED + 1)
    for j in range(k):
        Qs.append(q)
        AQs.append(matmul(q))
        if j == k - 1:
            break
        Q = torch.cat(Qs, -1)
        w = AQs[-1]
        for _ in range(2):  # "twice is enough" (Parlett 1998, §6.9)
            w = w - Q @ (Q.mT @ w)
        norm = w.norm(dim=-2, keepdim=True)
        scale = AQs[-1].norm(dim=-2, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        dead = norm <= 1e-10 * scale
        if bool(dead.any()):
            fresh = torch.randn(*batch, n, 1, generator=gen, dtype=dtype).to(device)
            for _ in range(2):
                fresh = fresh - Q @ (Q.mT @ fresh)
            w = torch.where(dead, fresh, w)
            norm = w.norm(dim=-2, keepdim=True)
        q = w / norm
    Q, AQ = torch.cat(Qs, -1), torch.cat(AQs, -1)
    T = Q.mT @ AQ
    return Q, 0.5 * (T + T.mT)


def love_inverse_root(matmul, batch, n: int, k: int, dtype, device=None) -> torch.Tensor:
    """``R (*batch, n, k)`` with ``A⁻¹ ≈ R Rᵀ`` on the rank-``k`` Krylov space of ``A`` (eq. 7 above)."""
    Q, T = lanczos(matmul, batch, n, k, dtype, device)
    L_T = psd_safe_cholesky(T)
    # R = Q L_T⁻ᵀ, i.e. Rᵀ = L_T⁻¹ Qᵀ
    return torch.linalg.solve_triangular(L_T, Q.mT, upper=False).mT


def lanczos_root(matmul, batch, n: int, k: int, dtype, device=None) -> torch.Tensor:
    """``S (*batch, n, k)`` with ``A ≈ S Sᵀ`` (``S = Q V Λ^{1/2}``, ``T = V Λ Vᵀ``), for drawing samples of ``N(0, A)``."""
    Q, T = lanczos(matmul, batch, n, k, dtype, device)
    evals, evecs = torch.linalg.eigh(T)  # T may be singular (a covariance of rank < k): no Cholesky
    return Q @ (evecs * evals.clamp_min(0).sqrt().unsqueeze(-2))
