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

For KISS-GP (``K = W K_UU Wᵀ``, ``k* = W K_UU w*``) the root is carried to the grid (Pleiss et al. 2018, §4):

.. math:: k_*^\top \hat K^{-1} k_* \approx \|G^\top w_*\|^2,\qquad G = K_{UU} W^\top Q L_T^{-\top}\ (m \times k),

and the mean ``μ* + k*ᵀα = μ* + w*ᵀ (K_UU Wᵀ α)``, so after the cache (:class:`SKIPredictionCache`) a test
point costs ``O(4^d k)`` from its ``4^d`` interpolation weights, whatever ``n``.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.interpolated import InterpolatedOperator, interp_matmul
from torchgp.linalg.lanczos import jitter_tridiagonal
from torchgp.linalg.lanczos_root import lanczos
from torchgp.linalg.operators import Operator, SumOperator

__all__ = [
    "lanczos",
    "love_inverse_root",
    "lanczos_root",
    "SKIPredictionCache",
    "interpolated_parts",
    "stacked_weights",
]


def love_inverse_root(matmul, batch, n: int, k: int, dtype, device=None) -> torch.Tensor:
    """``R (*batch, n, k)`` with ``A⁻¹ ≈ R Rᵀ`` on the rank-``k`` Krylov space of ``A`` (eq. 7 above)."""
    Q, T = lanczos(matmul, batch, n, k, dtype, device)
    L_T = psd_safe_cholesky(T)
    # R = Q L_T⁻ᵀ, i.e. Rᵀ = L_T⁻¹ Qᵀ
    return torch.linalg.solve_triangular(L_T, Q.mT, upper=False).mT


def lanczos_root(matmul, batch, n: int, k: int, dtype, device=None) -> torch.Tensor:
    """``S (*batch, n, k)`` with ``A ≈ S Sᵀ`` (``S = Q V Λ^{1/2}``, ``T = V Λ Vᵀ``), for drawing samples of ``N(0, A)``."""
    Q, T = lanczos(matmul, batch, n, k, dtype, device)
    # T may be singular (a covariance of rank < k): no Cholesky; settings.tridiagonal_jitter as in GPyTorch
    evals, evecs = torch.linalg.eigh(jitter_tridiagonal(T))
    return Q @ (evecs * evals.clamp_min(0).sqrt().unsqueeze(-2))


def interpolated_parts(op) -> list[InterpolatedOperator] | None:
    """The symmetric interpolated terms of ``op``: ``[op]`` for one ``W K_UU Wᵀ``, the terms of a sum of them
    (additive KISS-GP, :class:`~torchgp.kernels.AdditiveStructureKernel`), else None."""
    parts = op.operators if isinstance(op, SumOperator) else [op]
    if all(isinstance(p, InterpolatedOperator) and p.symmetric for p in parts):
        return list(parts)
    return None


def stacked_weights(parts, rows: slice = slice(None)):
    """Interpolation weights of a sum ``Σ_p W_p K_p W_pᵀ`` as one ``W = [W_1 … W_P]`` onto the stacked grids.

    ``Σ_p W_p K_p W_pᵀ = W blockdiag(K_1, …, K_P) Wᵀ``: the indices of part ``p`` are shifted by ``Σ_{q<p} m_q``.
    Returns ``indices, values (*batch, rows, Σ_p k_p)`` of the rows ``rows``.
    """
    batch = broadcast_shapes(*(p.left_indices.shape[:-2] for p in parts))
    idx, val, offset = [], [], 0
    for p in parts:
        i, v = p.left_indices[..., rows, :], p.left_values[..., rows, :]
        idx.append((i + offset).expand(*batch, *i.shape[-2:]))
        val.append(v.expand(*batch, *v.shape[-2:]))
        offset += p.base.shape[-1]
    return (idx[0], val[0]) if len(parts) == 1 else (torch.cat(idx, -1), torch.cat(val, -1))


def _stack_grid(blocks: list) -> torch.Tensor:
    """Grid-side blocks ``(*batch_p, m_p, c)`` stacked to ``(*batch, Σ m_p, c)``."""
    if len(blocks) == 1:
        return blocks[0]
    batch = broadcast_shapes(*(b.shape[:-2] for b in blocks))
    return torch.cat([b.expand(*batch, *b.shape[-2:]) for b in blocks], -2)


class SKIPredictionCache:
    r"""KISS-GP predictions from grid caches: ``O(4^d)`` per test mean, ``O(4^d k)`` per LOVE variance.

    Args:
        train_covar: the training kernel ``W K_UU Wᵀ`` as a symmetric
            :class:`~torchgp.linalg.interpolated.InterpolatedOperator` ``(*batch, n, n)`` (noise excluded), or a
            sum of them (additive KISS-GP), treated as one interpolation onto the stacked grids
            (:func:`stacked_weights`).
        noisy_matmul: ``V ↦ (K + σ²I) V`` for ``V (*batch, n, 1)`` (the training covariance with noise).
        alpha: ``(K + σ²I)⁻¹ (y − μ(X))``, ``(*batch, n, 1)``.
        k: Lanczos steps (rank of the variance cache); None leaves the variance cache out.

    Attributes:
        mean_cache: ``K_UU Wᵀ α``, ``(*batch, m, 1)`` (``m = Σ_p m_p`` for a sum).
        covar_cache: ``G (*batch, m, k)`` with ``K_UU Wᵀ (K + σ²I)⁻¹ W K_UU ≈ G Gᵀ`` (None without ``k``).

    The ``n × k`` Lanczos basis lives only while the cache is built; what is kept is ``O(m k)``.
    """

    def __init__(self, train_covar, noisy_matmul, alpha: torch.Tensor, k: int | None = None):
        parts = interpolated_parts(train_covar) if isinstance(train_covar, Operator) else None
        if parts is None:
            raise TypeError(
                "SKIPredictionCache needs the symmetric interpolated training covariance W K_UU Wᵀ "
                f"(an InterpolatedOperator, or a sum of them); got {type(train_covar).__name__}."
            )
        self.parts = parts
        self.mean_cache = _stack_grid([p.base.matmul(p.right_interp_t_matmul(alpha)) for p in parts])  # K_UU Wᵀ α
        self.covar_cache = None
        if k is not None:
            batch, n = train_covar.batch_shape, train_covar.shape[-1]
            Q, T = lanczos(noisy_matmul, batch, n, k, alpha.dtype, alpha.device)
            WtQ = [p.right_interp_t_matmul(Q) for p in parts]  # (*batch, m_p, k)
            del Q
            L_T = psd_safe_cholesky(T)
            KWtQ = _stack_grid([p.base.matmul(w) for p, w in zip(parts, WtQ)])  # K_UU Wᵀ Q
            self.covar_cache = torch.linalg.solve_triangular(L_T, KWtQ.mT, upper=False).mT  # K_UU Wᵀ Q L_T⁻ᵀ

    def mean(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``k*ᵀ α = w*ᵀ (K_UU Wᵀ α)`` for test weights ``indices, values (*batch, t, 4^d)`` → ``(*batch, t)``."""
        return interp_matmul(indices, values, self.mean_cache).squeeze(-1)

    def variance_reduction(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``k*ᵀ (K + σ²I)⁻¹ k* ≈ ‖Gᵀ w*‖²`` for test weights ``(*batch, t, 4^d)`` → ``(*batch, t)``."""
        if self.covar_cache is None:
            raise ValueError("SKIPredictionCache was built without k: no variance cache.")
        return interp_matmul(indices, values, self.covar_cache).square().sum(-1)
