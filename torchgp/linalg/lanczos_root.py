r"""Lanczos with full reorthogonalisation: an orthonormal Krylov basis ``Q`` and ``T = Qᵀ A Q`` of a symmetric ``A``.

``A ≈ Q T Qᵀ`` on the rank-``k`` Krylov space captures the largest eigenvalues of ``A`` first (Saad 2003, §6.6);
LOVE's predictive-variance root (:mod:`torchgp.models.love`) and SKIP's low-rank factors
(:mod:`torchgp.linalg.skip`) are built on it. Only ``A``'s products are needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["lanczos"]

_START_SEED = 20180727  # fixed seed of the Lanczos start vectors: predictions are deterministic


def _start_vectors(batch, n, dtype, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_START_SEED)
    return torch.randn(*batch, n, 1, generator=gen, dtype=dtype).to(device)


def lanczos(matmul: Callable[[torch.Tensor], torch.Tensor], batch, n: int, k: int, dtype, device=None):
    r"""``k`` Lanczos steps on a symmetric PSD ``A`` with full reorthogonalisation.

    Each new direction is ``A q_j`` orthogonalised (twice, Gram–Schmidt) against all earlier
    ones; an exhausted Krylov space (a direction of norm ≈ 0) restarts from a fresh random
    vector orthogonal to ``Q``, so ``Q`` stays orthonormal. ``T = Qᵀ A Q``: its column ``j`` above the
    diagonal is ``Q_{0:j}ᵀ (A q_j)``, read from each product as it is made (Saad 2003, §6.6, Alg. 6.15
    without the three-term shortcut), so only ``Q`` is held: ``n · k`` numbers, written in place.

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
    Q = torch.empty(*batch, n, k, dtype=dtype, device=device)
    T = torch.zeros(*batch, k, k, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(_START_SEED + 1)
    for j in range(k):
        Q[..., j : j + 1] = q
        Aq = matmul(q).to(dtype)
        Qj = Q[..., : j + 1]
        T[..., : j + 1, j : j + 1] = Qj.mT @ Aq  # T[i, j] = q_iᵀ A q_j, i ≤ j
        if j == k - 1:
            break
        w = Aq
        for _ in range(2):  # "twice is enough" (Parlett 1998, §6.9)
            w = w - Qj @ (Qj.mT @ w)
        norm = w.norm(dim=-2, keepdim=True)
        scale = Aq.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        dead = norm <= 1e-10 * scale
        if bool(dead.any()):
            fresh = torch.randn(*batch, n, 1, generator=gen, dtype=dtype).to(device)
            for _ in range(2):
                fresh = fresh - Qj @ (Qj.mT @ fresh)
            w = torch.where(dead, fresh, w)
            norm = w.norm(dim=-2, keepdim=True)
        q = w / norm
        del Aq, w
    upper = T.triu()
    return Q, upper + upper.triu(1).mT
