r"""The pivoted-Cholesky preconditioner with its factor split by rows over the processes of a sharded kernel.

Under :class:`~torchgp.distributed.ShardedKernel` every process runs the same CG on the same vectors,
but the ``n × k`` factor of ``P = L Lᵀ + D`` (:mod:`torchgp.linalg.pivoted_cholesky`) need not be
replicated: process ``r`` of ``p`` holds only the rows ``[lo_r, hi_r)`` of ``L`` and of the Woodbury factor
``W = D⁻¹ L R⁻ᵀ``, ``O(n k / p)`` numbers, and every process holds ``D``, ``R`` (``k × k``) and the data.

Factor (Harbrecht, Peters & Schneider 2012, Alg. 1, rows distributed): at step ``m`` the pivot is the
global ``i = argmax_j d_j`` of the residual diagonal. Each process proposes its own largest residual, its
index and its row ``L[i_r, :m]``; one ``all_reduce`` of these ``p (m + 3)`` numbers gives every process
the pivot, ``d_i``, the stopping test ``Σ d`` and the pivot's row of ``L``, and then each updates its
own rows,

.. math:: l_m[\text{lo}:\text{hi}] = \big(K[\text{lo}:\text{hi},\, i] - L[\text{lo}:\text{hi}, :m]\, L[i, :m]^\top\big) / \sqrt{d_i},

so the pivots, and hence ``P``, are those of the unsharded factorisation (ties go to the lowest index,
as ``argmax`` does). The core ``C = I + Lᵀ D⁻¹ L = Σ_r L_rᵀ D_r⁻¹ L_r + I`` is one ``k × k`` sum.

Apply (Woodbury, ``P⁻¹ V = D⁻¹ V - W (Wᵀ V)``): ``Wᵀ V = Σ_r W_rᵀ V_r`` is a ``k × t`` sum. A CG whose
vectors are split by rows (:mod:`torchgp.distributed.sharded_cg`) needs only its own rows
``D_r⁻¹ V_r - W_r (Wᵀ V)`` (:meth:`ShardedPivotedCholeskyPreconditioner.solve_rows`); a whole ``P⁻¹ V``
assembles the rows of every process with one gather of ``n × t`` numbers.
"""

from __future__ import annotations

import torch

from torchgp.linalg.operators import DenseOperator, KernelOperator, Operator

__all__ = ["row_range", "gather_rows", "sharded_pivoted_cholesky", "ShardedPivotedCholeskyPreconditioner"]


def row_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` owned by process ``rank`` of ``world_size``: contiguous, sizes differing by ≤ 1."""
    return rank * n // world_size, (rank + 1) * n // world_size


def gather_rows(shard, local: torch.Tensor, n: int, lo: int, what: str) -> torch.Tensor:
    """Every process's row block, stacked: ``local (*batch, hi - lo, c)`` → ``(*batch, n, c)`` on every process.

    One ``all_gather`` of the blocks where the shard offers it (``shard.all_gather_rows``), else one sum over
    the processes of an ``n × c`` buffer that is zero outside each process's rows (twice the traffic).
    """
    if hasattr(shard, "all_gather_rows"):
        return shard.all_gather_rows(local, n, what)
    out = local.new_zeros(*local.shape[:-2], n, local.shape[-1])
    out[..., lo : lo + local.shape[-2], :] = local
    shard.all_reduce([out], what)
    return out


def _row_block(base: Operator, idx: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``K[idx[b], lo:hi]`` for each batch member, ``(*batch, hi - lo)`` (no graph)."""
    batch = base.batch_shape
    n = base.shape[-1]
    with torch.no_grad():
        if isinstance(base, KernelOperator):
            x1 = base.x1.expand(*batch, *base.x1.shape[-2:])
            x1_rows = x1.gather(-2, idx[..., None, None].expand(*batch, 1, x1.shape[-1]))
            rows = base.kernel.evaluate_block(x1_rows, base.x2[..., lo:hi, :], **base.params)
            return rows.expand(*batch, 1, hi - lo).squeeze(-2)
        if isinstance(base, DenseOperator):
            A = base.tensor.expand(*batch, n, n)
            return A.gather(-2, idx[..., None, None].expand(*batch, 1, n)).squeeze(-2)[..., lo:hi]
    raise TypeError(f"the sharded pivoted Cholesky needs a KernelOperator or DenseOperator; got {type(base).__name__}.")


def sharded_pivoted_cholesky(
    base: Operator,
    rank: int,
    shard,
    rel_floor: float,
    abs_tol: torch.Tensor | float | None = None,
    pivots: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's rows of the greedy pivoted Cholesky factor (the module docstring; same stops as unsharded).

    Args:
        base: square ``KernelOperator`` (or ``DenseOperator``), ``(*batch, n, n)``, positive semi-definite.
        rank: maximum rank ``k``.
        shard: the kernel's ``tile_shard`` (``rank``, ``world_size``, ``all_reduce``).
        rel_floor: residual diagonals below ``max(eps n, rel_floor) · max diag K`` count as zero.
        abs_tol: stop once the residual trace is at most this (float or ``(*batch)``), or None.
        pivots: ``(*batch, k')`` pivots to take in order instead of searching (``rank`` and the stops ignored).

    Returns:
        ``L[lo:hi]`` of shape ``(*batch, hi - lo, k')``, ``k' ≤ rank`` (the same ``k'`` on every process), and
        the pivots ``(*batch, k')``.
    """
    batch, n = base.batch_shape, base.shape[-1]
    rank = min(int(rank), n) if pivots is None else pivots.shape[-1]
    lo, hi = row_range(n, shard.rank, shard.world_size)
    p, me = shard.world_size, shard.rank
    with torch.no_grad():
        d_full = base.diagonal().detach().expand(*batch, n)
        floor = max(torch.finfo(d_full.dtype).eps * n, rel_floor) * d_full.abs().amax(-1)
        d = d_full[..., lo:hi].clone()
        rows = torch.zeros(*batch, rank, hi - lo, dtype=d.dtype, device=d.device)
        own = torch.arange(lo, hi, device=d.device)
        used = torch.zeros(*batch, rank, dtype=torch.long, device=d.device)
        m = 0
        for m in range(rank + 1):
            if m == rank:
                break
            # This process's candidate: [largest residual, its global index, Σ max(d, 0), L[index, :m]].
            if hi > lo and pivots is not None:  # the given pivot, proposed by the process that owns it
                fixed = pivots[..., m].expand(batch)
                local_arg = (fixed - lo).clamp(0, hi - lo - 1)
                mine = (fixed >= lo) & (fixed < hi)
                local_max = torch.where(mine, d.gather(-1, local_arg[..., None])[..., 0], -float("inf"))
                coef_local = rows[..., :m, :].gather(-1, local_arg[..., None, None].expand(*batch, m, 1))[..., 0]
            elif hi > lo:
                local_max, local_arg = d.max(-1)
                coef_local = rows[..., :m, :].gather(-1, local_arg[..., None, None].expand(*batch, m, 1))[..., 0]
            else:  # more processes than rows: propose nothing
                local_max = d.new_full(batch, -float("inf"))
                local_arg = torch.zeros(batch, dtype=torch.long, device=d.device)
                coef_local = d.new_zeros(*batch, m)
            cand = torch.zeros(*batch, p, m + 3, dtype=torch.float64, device=d.device)
            cand[..., me, 0] = local_max.to(torch.float64)
            cand[..., me, 1] = (local_arg + lo).to(torch.float64)
            cand[..., me, 2] = d.clamp_min(0).sum(-1).to(torch.float64)
            cand[..., me, 3:] = coef_local.to(torch.float64)
            shard.all_reduce([cand], "pivot search of the preconditioner")
            best = cand[..., 0].argmax(-1)  # first maximum: the lowest rank, hence the lowest index
            pick = cand.gather(-2, best[..., None, None].expand(*batch, 1, m + 3))[..., 0, :]
            d_piv, err = pick[..., 0].to(d.dtype), cand[..., 2].sum(-1)
            stop = bool((d_piv <= floor).all()) or (abs_tol is not None and bool((err <= abs_tol).all()))
            if stop and pivots is None:
                break
            piv = pick[..., 1].round().long()
            used[..., m] = piv
            row = _row_block(base, piv, lo, hi).to(d.dtype)
            if m > 0:  # row -= L[lo:hi, :m] L[piv, :m]ᵀ, one GEMV
                row = row - (rows[..., :m, :].mT @ pick[..., 3:, None].to(d.dtype)).squeeze(-1)
            ok = d_piv > floor
            l_m = torch.where(ok[..., None], row / d_piv.clamp_min(torch.finfo(d.dtype).tiny).sqrt()[..., None], 0.0)
            rows[..., m, :] = l_m
            d = d - l_m.square()
            d = torch.where(own == piv[..., None], 0.0, d)
        return rows[..., :m, :].mT, used[..., :m]


class ShardedPivotedCholeskyPreconditioner:
    """``P = L Lᵀ + diag(D)`` with ``L`` and ``W`` held by rows over the processes (the module docstring).

    The same interface as :class:`~torchgp.linalg.pivoted_cholesky.PivotedCholeskyPreconditioner`: every
    method takes and returns whole ``(*batch, n, ·)`` tensors, equal on every process.

    Args:
        L: this process's rows ``(*batch, hi - lo, k)``.
        D: ``(*batch, n)``, positive (whole).
        shard: the kernel's ``tile_shard``.
    """

    def __init__(self, L: torch.Tensor, D: torch.Tensor, shard):
        n = D.shape[-1]
        self.shard, self.n = shard, n
        self.lo, self.hi = row_range(n, shard.rank, shard.world_size)
        self.L, self.D = L, D
        self.D_inv = D.reciprocal()
        k = L.shape[-1]
        LD = L * self.D_inv[..., self.lo : self.hi].unsqueeze(-1)  # D_r⁻¹ L_r
        C = L.mT @ LD  # Σ_r L_rᵀ D_r⁻¹ L_r after the sum
        shard.all_reduce([C], "preconditioner core LᵀD⁻¹L")
        C = C + torch.eye(k, dtype=L.dtype, device=L.device)
        self.R = torch.linalg.cholesky(C)
        self.W = torch.linalg.solve_triangular(self.R, LD.mT, upper=False).mT  # rows lo:hi of D⁻¹ L R⁻ᵀ

    @property
    def rank(self) -> int:
        """Rank ``k`` of the low-rank part."""
        return self.W.shape[-1]

    def forget_factor(self) -> None:
        """Drop ``L`` (only :meth:`sample` needs it; the other methods use ``W``, ``R`` and ``D``)."""
        self.L = None

    def _rows(self, V: torch.Tensor) -> torch.Tensor:
        return V[..., self.lo : self.hi, :]

    def leading_factor(self, k: int) -> torch.Tensor:
        """All rows of the first ``k`` columns of ``W``, ``(*batch, n, min(k, rank))`` (assembled: one sum)."""
        return gather_rows(self.shard, self.W[..., :k].contiguous(), self.n, self.lo, "preconditioner factor rows")

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        """``P⁻¹ V`` for ``V (*batch, n, t)``, in ``V``'s dtype; two sums over the processes."""
        W = self.W
        Y = W.mT @ self._rows(V).to(W.dtype)  # W_rᵀ V_r, (*batch, k, t)
        Y = Y.expand(*torch.broadcast_shapes(Y.shape[:-2], V.shape[:-2]), *Y.shape[-2:]).contiguous()
        self.shard.all_reduce([Y], "preconditioner solve WᵀV")
        low = gather_rows(self.shard, (W @ Y).to(V.dtype), self.n, self.lo, "preconditioner solve rows")
        return self.D_inv.to(V.dtype).unsqueeze(-1) * V - low

    def solve_rows(self, V_rows: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``P⁻¹ V`` from its rows of ``V``: ``(*batch, hi - lo, t)`` → same; one ``k × t`` sum.

        ``(P⁻¹V)_r = D_r⁻¹ V_r - W_r Σ_s W_sᵀ V_s`` (Woodbury), for a CG whose vectors are split by rows.
        """
        W = self.W
        Y = W.mT @ V_rows.to(W.dtype)  # W_rᵀ V_r, (*batch, k, t)
        Y = Y.expand(*torch.broadcast_shapes(Y.shape[:-2], V_rows.shape[:-2]), *Y.shape[-2:]).contiguous()
        self.shard.all_reduce([Y], "preconditioner solve WᵀV")
        return self.D_inv[..., self.lo : self.hi].to(V_rows.dtype).unsqueeze(-1) * V_rows - (W @ Y).to(V_rows.dtype)

    def logdet(self) -> torch.Tensor:
        """``log|P|``, ``(*batch)`` (matrix determinant lemma)."""
        return self.D.log().sum(-1) + 2 * self.R.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def inv_diagonal(self) -> torch.Tensor:
        """``diag(P⁻¹)``, ``(*batch, n)``."""
        sq = self.W.square().sum(-1, keepdim=True)
        return self.D_inv - gather_rows(self.shard, sq, self.n, self.lo, "preconditioner diagonal")[..., 0]

    def sample(self, t: int, generator: torch.Generator) -> torch.Tensor:
        """``t`` probes ``z = L ε₁ + D^{1/2} ε₂`` (Rademacher ε, the same draws as unsharded): ``(*batch, n, t)``."""
        from torchgp.linalg.lanczos import rademacher

        if self.L is None:
            raise RuntimeError(
                "sample() needs the factor L, which forget_factor() dropped; build a new preconditioner."
            )
        k = self.L.shape[-1]
        batch = self.D.shape[:-1]
        eps2 = rademacher((*batch, self.n, t), generator, self.D.dtype, self.D.device)
        z = self.D.sqrt().unsqueeze(-1) * eps2
        if k > 0:
            eps1 = rademacher((*batch, k, t), generator, self.D.dtype, self.D.device)
            z = z + gather_rows(self.shard, self.L @ eps1, self.n, self.lo, "preconditioner probes")
        return z
