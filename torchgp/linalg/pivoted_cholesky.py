r"""Rank-k pivoted Cholesky of a kernel matrix from its diagonal and k rows, and the preconditioner
``P = L_k L_kᵀ + D`` built from it.

The factorisation (Harbrecht, Peters & Schneider 2012, Alg. 1; Gardner et al. 2018, §4.1;
:mod:`torchgp.linalg.pivoted_factor`, re-exported here) greedily picks the row with the largest residual diagonal;
memory is ``O(n k)`` and only ``k`` rows of ``K`` are ever evaluated, so it works on a
:class:`~torchgp.linalg.operators.KernelOperator` at any n.

The preconditioner of ``K + diag(σ²)`` is ``P = L_k L_kᵀ + diag(σ²)`` (for a matrix without noise,
``D = diag(K - L_k L_kᵀ)``). Adding the residual diagonal also when there is noise (FITC-like) was
measured to nearly double the CG iterations (n = 3000 RBF, σ² = 0.01: 77 vs 42), so it is not done.
``P`` is applied with the Woodbury identity (``C = I_k + L_kᵀ D⁻¹ L_k = R Rᵀ``):

.. math::
    P^{-1} = D^{-1} - D^{-1} L_k C^{-1} L_k^\top D^{-1} = D^{-1} - W W^\top,\quad W = D^{-1} L_k R^{-\top},
    \qquad \log|P| = \textstyle\sum_i \log D_i + 2\sum_j \log R_{jj}

(matrix determinant lemma), all in ``O(n k²)``. Solves apply ``D⁻¹ − D⁻¹L C⁻¹LᵀD⁻¹`` from ``L`` and ``R``
(two ``n × k`` GEMMs and two ``k × k`` triangular solves per call, as many GEMMs as with ``W``), so ``W`` is formed
only where it is asked for.

Sharded over the processes of a :class:`~torchgp.distributed.ShardedKernel` (the kernel carries a
``tile_shard``), rank ``r`` of ``p`` owns the rows ``[lo_r, hi_r)`` of ``L_k`` and ``W``
(:func:`sharded_pivoted_cholesky`, :class:`ShardedPivotedCholeskyPreconditioner`): memory
``O(n k / p)`` per rank, the same pivots and the same ``P``, see :mod:`torchgp.linalg.sharded_preconditioner`.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.linalg import _log
from torchgp.linalg.blockwise import tile_shard
from torchgp.linalg.operators import Operator
from torchgp.linalg.pivoted_factor import (  # noqa: F401  (operator_rows, pivoted_cholesky re-exported)
    _REL_FLOOR,
    core_solve,
    operator_rows,
    pivoted_cholesky,
    scaled_gram,
)
from torchgp.linalg.sharded_preconditioner import (
    ShardedPivotedCholeskyPreconditioner,
    gather_rows,
    row_range,
    sharded_pivoted_cholesky,
)

__all__ = ["operator_rows", "pivoted_cholesky", "PivotedCholeskyPreconditioner", "build_preconditioner"]


class PivotedCholeskyPreconditioner:
    """``P = L Lᵀ + diag(D)`` applied by Woodbury (see the module docstring).

    Args:
        L: ``(*batch, n, k)`` (k may be 0).
        D: ``(*batch, n)``, positive.
        own_factor: ``L`` is this object's to overwrite: after :meth:`forget_factor`, ``W`` is formed in its memory
            (one ``n × k`` factor held instead of two).
    """

    def __init__(self, L: torch.Tensor, D: torch.Tensor, own_factor: bool = False):
        self.L, self.D = L, D
        self.D_inv = D.reciprocal()
        self._batch = broadcast_shapes(L.shape[:-2], D.shape[:-1])
        self.R = torch.linalg.cholesky(self._capacitance(L))
        # Solves use L and R; W is formed only when asked for (W, inv_diagonal), and once forget_factor() has dropped
        # L, in L's own storage when this object may overwrite it (own_factor: a fresh factor, Lᵀ contiguous).
        self._W = None
        self._own = own_factor and L.shape[:-2] == self._batch and L.mT.is_contiguous()
        self._L_kept = None

    def _capacitance(self, L: torch.Tensor) -> torch.Tensor:
        """``C = I + LᵀD⁻¹L``, ``(*batch, k, k)``, by blocks of 8192 rows (:func:`~torchgp.linalg.pivoted_factor.scaled_gram`)."""
        C = scaled_gram(L, self.D_inv.sqrt(), self._batch, rows=8192)
        C.diagonal(dim1=-2, dim2=-1).add_(1.0)  # I + LᵀD⁻¹L ⪰ I: always factorisable
        return C

    def _scaled_blocks(self, L: torch.Tensor, rows: int = 8192):
        """``(slice, D⁻¹L[slice])`` over blocks of ``rows`` rows."""
        for i in range(0, L.shape[-2], rows):
            s = slice(i, min(i + rows, L.shape[-2]))
            yield s, L[..., s, :] * self.D_inv[..., s].unsqueeze(-1)

    @property
    def W(self) -> torch.Tensor:
        """The Woodbury factor ``D⁻¹ L R⁻ᵀ``, ``(*batch, n, k)``, by blocks of rows ``W_b = D_b⁻¹ L_b R⁻ᵀ``."""
        if self._W is None:
            L = self._factor()
            in_place = self.L is None and self._own
            # Wᵀ (*batch, k, n): the rows of W as its columns (each block of them written once its D⁻¹L is read)
            Wt = L.mT if in_place else torch.empty(*self._batch, *L.shape[-1:-3:-1], dtype=L.dtype, device=L.device)
            for rows, LD in self._scaled_blocks(L):
                Wt[..., rows] = torch.linalg.solve_triangular(self.R, LD.mT, upper=False)
            self._W, self._L_kept = Wt.mT, None
        return self._W

    @property
    def rank(self) -> int:
        """Rank ``k`` of the low-rank part."""
        return self.R.shape[-1]

    def forget_factor(self) -> None:
        """Drop the public ``L`` (:meth:`sample` is then refused); solves keep using the factor until ``W`` is
        formed, which then takes the factor's memory when it is this object's own."""
        if self._W is None:
            self._L_kept = self.L
        self.L = None

    def leading_factor(self, k: int, out: torch.Tensor | None = None, release: bool = False) -> torch.Tensor:
        """The first ``k`` columns of ``W`` (all rows), ``(*batch, n, min(k, rank))``: the Woodbury factor of
        the rank-``k`` leading part ``L_{:k} L_{:k}ᵀ + D`` (``R`` is lower triangular, so
        ``W_{:k} = D⁻¹ L_{:k} R_{:k,:k}⁻ᵀ``, formed from the factor when ``W`` is not).

        With ``out`` (that shape; a column slice of a larger buffer will do) they are written into it and it is
        returned; else they are a view of ``W`` or a new tensor. ``release``: this is the preconditioner's last
        use, its factor is dropped once the columns are formed (as the sharded preconditioner's, which frees it
        before gathering them); a returned view of ``W`` keeps only its own storage alive.
        """
        if self._W is not None:
            W = self._W[..., :k]
            W = W if out is None else out.copy_(W)
        else:
            L = self._factor()
            k = min(k, L.shape[-1])
            Rk = self.R[..., :k, :k]
            if out is None:
                out = torch.empty(*self._batch, L.shape[-2], k, dtype=L.dtype, device=L.device)
            for rows, LD in self._scaled_blocks(L[..., :k]):
                out[..., rows, :] = torch.linalg.solve_triangular(Rk, LD.mT, upper=False).mT
            W = out
            del L
        if release:
            self.L = self._L_kept = self._W = None
            self._released = True
        return W

    def _factor(self) -> torch.Tensor:
        if getattr(self, "_released", False):
            raise RuntimeError(
                "PivotedCholeskyPreconditioner: its factor was released by leading_factor(release=True), its last "
                "use; build a new preconditioner to solve again."
            )
        return self.L if self.L is not None else self._L_kept

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        """``P⁻¹ V`` for ``V`` of shape ``(*batch, n, t)``, in ``V``'s dtype (the O(n k t) products in P's).

        From ``W`` once it is formed, else from the factor, ``D⁻¹V − D⁻¹L C⁻¹ LᵀD⁻¹V`` with ``C = R Rᵀ``: the same
        two ``n × k × t`` GEMMs plus two ``k × k`` triangular solves, and no ``W`` to build (``n k²`` flops).
        """
        dtype = self.R.dtype
        Vp = V if V.dtype == dtype else V.to(dtype)
        # Every n × k × t product is formed with the narrow t-column operand on the left, (Vᵀ W)ᵀ and (Yᵀ Wᵀ)ᵀ:
        # the same numbers, and MKL's GEMM is much faster in that orientation for a few columns (n = 20,000,
        # k = 1789, float32, one thread: t = 11 0.23 → 0.042 s, t = 33 0.106 → 0.081 s, t = 65 0.150 → 0.130 s).
        if self._W is not None:
            W = self._W
            low = ((Vp.mT @ W) @ W.mT).mT
            DV = self.D_inv.unsqueeze(-1) * Vp
        else:
            L = self._factor()
            DV = self.D_inv.unsqueeze(-1) * Vp
            if L.shape[-1] == 0:
                return DV if V.dtype == dtype else self.D_inv.to(V.dtype).unsqueeze(-1) * V
            Y = core_solve(self.R, (DV.mT @ L).mT)  # C⁻¹ LᵀD⁻¹V, (*batch, k, t)
            low = self.D_inv.unsqueeze(-1) * (Y.mT @ L.mT).mT
        if V.dtype == dtype:
            return DV - low
        return self.D_inv.to(V.dtype).unsqueeze(-1) * V - low.to(V.dtype)

    def logdet(self) -> torch.Tensor:
        """``log|P|``, ``(*batch)`` (matrix determinant lemma)."""
        return self.D.log().sum(-1) + 2 * self.R.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def inv_diagonal(self) -> torch.Tensor:
        """``diag(P⁻¹)``, ``(*batch, n)``."""
        return self.D_inv - self.W.square().sum(-1)

    def sample(self, t: int, generator: torch.Generator) -> torch.Tensor:
        """``t`` probes ``z = L ε₁ + D^{1/2} ε₂`` with Rademacher ε, so ``E[z zᵀ] = P``: ``(*batch, n, t)``."""
        from torchgp.linalg.lanczos import rademacher

        if self.L is None:
            raise RuntimeError(
                "sample() needs the factor L, which forget_factor() dropped; build a new preconditioner."
            )
        n, k = self.L.shape[-2], self.L.shape[-1]
        batch = self.D.shape[:-1]
        eps2 = rademacher((*batch, n, t), generator, self.D.dtype, self.D.device)
        z = self.D.sqrt().unsqueeze(-1) * eps2
        if k > 0:
            eps1 = rademacher((*batch, k, t), generator, self.D.dtype, self.D.device)
            z = z + self.L @ eps1
        return z


def build_preconditioner(
    base: Operator, noise: torch.Tensor | None, rank: int, dtype=None, pivots: torch.Tensor | None = None
) -> PivotedCholeskyPreconditioner | ShardedPivotedCholeskyPreconditioner:
    """The preconditioner of ``base + diag(noise)``: rank-``rank`` pivoted Cholesky plus the residual diagonal.

    Args:
        base: square kernel (or dense) operator, ``(*batch, n, n)``.
        noise: ``(*batch, n)`` (broadcastable) diagonal, or None.
        rank: maximum rank of the low-rank part (0: diagonal preconditioner ``D = diag(K + σ²I)``); the
            factorisation stops earlier once its residual trace ``tr(K - L Lᵀ)`` is below 10⁻³ times the smallest
            noise, or below ``settings.preconditioner_tolerance`` times the largest diagonal entry of ``K``
            (GPyTorch's rule: its pivoted Cholesky stops once ``‖diag(K - L Lᵀ)‖₁ / max_i K_ii`` is at most the
            tolerance, default 1e-3).
        dtype: dtype of the preconditioner (default ``base.dtype``).
        pivots: ``(*batch, k)`` pivots to reuse (the ``pivots`` attribute of an earlier preconditioner of the
            same data) instead of searching; ``rank`` is then ignored.

    Returns:
        A :class:`PivotedCholeskyPreconditioner`; under a sharded kernel a
        :class:`~torchgp.linalg.sharded_preconditioner.ShardedPivotedCholeskyPreconditioner` (each process
        its row block of the factor).
    """
    dtype = base.dtype if dtype is None else dtype
    shard = tile_shard(base)
    batch, n = base.batch_shape, base.shape[-1]
    with torch.no_grad():
        if noise is not None:
            batch = broadcast_shapes(batch, noise.shape[:-1])
        kdiag = base.diagonal().detach().to(dtype).expand(*batch, n)
        # Adaptive rank: with noise σ², P⁻¹(K + σ²I) has its spectrum in [1, 1 + λ_max(E)/σ²], E = K - L Lᵀ,
        # and λ_max(E) ≤ tr E, so once tr E ≤ 10⁻³ min σ² (κ ≤ 1.001) more rank cannot save CG iterations.
        stop = None if noise is None else 1e-3 * noise.detach().to(dtype).expand(*batch, n).amin(-1)
        # GPyTorch's stopping rule (linear_operator's PivotedCholesky): residual trace ≤ tol · max_i K_ii.
        gpytorch_stop = float(settings.preconditioner_tolerance.value()) * kdiag.amax(-1)
        stop = gpytorch_stop if stop is None else torch.maximum(stop, gpytorch_stop)
        _log.debug("pivoted Cholesky: rank up to %d of a %d x %d kernel matrix, batch %s", rank, n, n, tuple(batch))
        if shard is not None:  # this process's rows [lo, hi) of L (sharded_preconditioner)
            lo, hi = row_range(n, shard.rank, shard.world_size)
            if rank > 0 or pivots is not None:
                L, piv = sharded_pivoted_cholesky(
                    base, rank, shard, _REL_FLOOR[base.dtype], abs_tol=stop, pivots=pivots
                )
                L = L.to(dtype)
            else:
                L, piv = kdiag.new_zeros(*batch, hi - lo, 0), None
            L = L.expand(*batch, hi - lo, L.shape[-1])
        else:
            if rank > 0 or pivots is not None:
                L, piv = pivoted_cholesky(base, rank, abs_tol=stop, pivots=pivots, return_pivots=True)
                L = L.to(dtype)
            else:
                L, piv = kdiag.new_zeros(*batch, n, 0), None
            L = L.expand(*batch, n, L.shape[-1])
        if noise is not None:
            D = noise.detach().to(dtype).expand(*batch, n).clone()
        elif shard is not None:  # the part of diag K that L misses, assembled from every process's rows
            sq = L.square().sum(-1, keepdim=True)
            D = (kdiag - gather_rows(shard, sq, n, lo, "preconditioner diagonal")[..., 0]).clamp_min(0)
        else:  # no noise to put on the diagonal: use the part of diag K that L misses
            D = (kdiag - L.square().sum(-1)).clamp_min(0)
        # A floor keeps D⁻¹ finite for a noiseless full-rank factor; P only needs to be SPD.
        floor = kdiag.abs().mean(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny) * _REL_FLOOR.get(dtype, 1e-4)
        D = torch.maximum(D, floor)
    if shard is not None:
        P = ShardedPivotedCholeskyPreconditioner(L, D, shard)
    else:  # L is this call's own factor (from pivoted_cholesky): W may take its memory once the probes are drawn
        P = PivotedCholeskyPreconditioner(L, D, own_factor=rank > 0 or pivots is not None)
    P.pivots = piv  # the rows of K the factor was built from, (*batch, k) int64, or None
    return P
