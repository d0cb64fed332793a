r"""The pivoted-Cholesky preconditioner with its factor split by rows over the processes of a sharded kernel.

Under :class:`~torchgp.distributed.ShardedKernel` every process runs the same CG on the same vectors,
but the ``n × k`` factor of ``P = L Lᵀ + D`` (:mod:`torchgp.linalg.pivoted_cholesky`) need not be
replicated: process ``r`` of ``p`` holds only the rows ``[lo_r, hi_r)`` of ``D⁻¹L``, ``n k / p`` numbers in
one buffer (the factor's own, scaled in place), and every process holds ``D``, the Cholesky factor ``R`` of the
``k × k`` core and the data.

Factor (:mod:`torchgp.linalg.sharded_pivoted_factor`): each process computes its rows of the greedy pivoted
Cholesky factor, blocks of columns at a time, about two small collectives per block (every process chooses the
block's pivots from the same replicated candidates), so the pivots, and hence ``P``, are those of the unsharded
factorisation (ties go to the lowest index, as ``argmax`` does). The factor's buffer is allocated at the maximum
rank but left untouched beyond the columns written, so the pages of an early stop are never resident. The core
``C = I + Lᵀ D⁻¹ L = I + Σ_r L_rᵀ D_r⁻¹ L_r = R Rᵀ`` is one ``k × k`` sum, formed by blocks of rows.

Apply (Woodbury, ``P⁻¹ V = D⁻¹ V - (D⁻¹L) C⁻¹ (D⁻¹L)ᵀ V``): ``(D⁻¹L)ᵀ V = Σ_r (D_r⁻¹L_r)ᵀ V_r`` is a
``k × t`` sum, after which every process applies ``C⁻¹ = R⁻ᵀ R⁻¹`` to the same ``k × t`` numbers. This is
``D⁻¹ V - W (Wᵀ V)`` with ``W = D⁻¹ L R⁻ᵀ``, without holding ``W`` next to the factor (``n k / p`` numbers fewer;
the two triangular solves cost ``O(k² t)``, against the ``O(n k t / p)`` of the products). A CG whose
vectors are split by rows (:mod:`torchgp.distributed.sharded_cg`) needs only its own rows
(:meth:`ShardedPivotedCholeskyPreconditioner.solve_rows`); a whole ``P⁻¹ V`` assembles the rows of every
process with one gather of ``n × t`` numbers. Columns of ``W`` itself (the backward's control variate,
:meth:`~ShardedPivotedCholeskyPreconditioner.leading_factor`) are formed on demand by blocks of rows.
"""

from __future__ import annotations

import torch

from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.pivoted_factor import core_solve, scaled_gram
from torchgp.linalg.sharded_pivoted_factor import row_range, sharded_pivoted_cholesky

__all__ = ["row_range", "gather_rows", "sharded_pivoted_cholesky", "ShardedPivotedCholeskyPreconditioner"]

# Numbers per row block of the temporaries formed from the factor (8 MB in float32): the core, W's columns and
# diag(P⁻¹) are built from blocks of rows of D⁻¹L so that no second n/p × k array exists next to it.
_BLOCK_NUMBERS = 1 << 21


def _row_slices(rows: int, cols: int):
    """Slices of ``rows`` rows, each block holding about ``_BLOCK_NUMBERS`` numbers of ``cols`` columns."""
    step = max(1, _BLOCK_NUMBERS // max(cols, 1))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def gather_rows(
    shard, local: torch.Tensor, n: int, lo: int, what: str, max_numbers: int | None = None, out=None
) -> torch.Tensor:
    """Every process's row block, stacked: ``local (*batch, hi - lo, c)`` → ``(*batch, n, c)`` on every process.

    One ``all_gather`` of the blocks where the shard offers it (``shard.all_gather_rows``), else one sum over
    the processes of an ``n × c`` buffer that is zero outside each process's rows (twice the traffic). With
    ``max_numbers``, a result of more numbers is gathered by blocks of columns into ``out`` (``(*batch, n, c)``,
    allocated if None; ``local`` may be its own rows ``out[..., lo:hi, :]``), one collective per block: the
    collective's staging copy (gloo stages a whole all_gather output) is then one block, not the whole.
    """
    c = local.shape[-1]
    step = c if max_numbers is None else max(1, max_numbers // max(n, 1))
    if step < c or out is not None:
        out = local.new_empty(*local.shape[:-2], n, c) if out is None else out
        for start in range(0, c, step):
            cols = slice(start, min(start + step, c))
            out[..., cols] = gather_rows(shard, local[..., cols].contiguous(), n, lo, what)
        return out
    if hasattr(shard, "all_gather_rows"):
        return shard.all_gather_rows(local, n, what)
    out = local.new_zeros(*local.shape[:-2], n, c)
    out[..., lo : lo + local.shape[-2], :] = local
    shard.all_reduce([out], what)
    return out


def _scalable_in_place(L: torch.Tensor, shape: torch.Size) -> bool:
    """Whether ``L`` can be scaled row by row in place into a result of shape ``shape`` (its own, not expanded)."""
    return L.shape == shape and not L.requires_grad and all(st != 0 or sz == 1 for st, sz in zip(L.stride(), L.shape))


class ShardedPivotedCholeskyPreconditioner:
    """``P = L Lᵀ + diag(D)`` with the rows of ``D⁻¹L`` held by rows over the processes (the module docstring).

    The same interface as :class:`~torchgp.linalg.pivoted_cholesky.PivotedCholeskyPreconditioner`: every
    method takes and returns whole ``(*batch, n, ·)`` tensors, equal on every process.

    Args:
        L: this process's rows ``(*batch, hi - lo, k)``. Its storage is reused: it is scaled in place into
            ``D⁻¹L`` (the buffer :func:`sharded_pivoted_cholesky` returns serves no one else), unless it is an
            expanded view or needs a larger batch, when a scaled copy is made.
        D: ``(*batch, n)``, positive (whole).
        shard: the kernel's ``tile_shard``.
    """

    def __init__(self, L: torch.Tensor, D: torch.Tensor, shard):
        n = D.shape[-1]
        self.shard, self.n = shard, n
        self.lo, self.hi = row_range(n, shard.rank, shard.world_size)
        self.D = D
        self.D_inv = D.reciprocal()
        k = L.shape[-1]
        d_inv = self.D_inv[..., self.lo : self.hi].unsqueeze(-1)  # (*batch, hi - lo, 1)
        shape = torch.Size((*broadcast_shapes(L.shape[:-2], D.shape[:-1]), *L.shape[-2:]))
        # C = I + Σ_r L_rᵀ D_r⁻¹ L_r (after the sum), by blocks of rows of about _BLOCK_NUMBERS numbers
        C = scaled_gram(L, d_inv[..., 0].sqrt(), shape[:-2], rows=max(1, _BLOCK_NUMBERS // max(k, 1)))
        shard.all_reduce([C], "preconditioner core LᵀD⁻¹L")
        C.diagonal(dim1=-2, dim2=-1).add_(1)
        self.R = torch.linalg.cholesky(C)  # C = R Rᵀ, R lower triangular
        del C
        # D⁻¹L, rows lo:hi: the only n/p × k array held (W = D⁻¹ L R⁻ᵀ is formed from it where needed).
        self.LD = L.mul_(d_inv) if _scalable_in_place(L, shape) else L * d_inv

    @property
    def rank(self) -> int:
        """Rank ``k`` of the low-rank part."""
        return self._released[0] if isinstance(self.LD, _Released) else self.LD.shape[-1]

    @property
    def local_rows(self) -> int:
        """The number of rows of the factor this process holds, ``hi - lo``."""
        return self._released[1] if isinstance(self.LD, _Released) else self.LD.shape[-2]

    def forget_factor(self) -> None:
        """Release what only :meth:`sample` needs: nothing here, as ``L`` is held as ``D⁻¹L``, which the solves use.

        The unsharded preconditioner drops its copy of ``L`` here; this one keeps :meth:`sample` working.
        """

    def _rows(self, V: torch.Tensor) -> torch.Tensor:
        return V[..., self.lo : self.hi, :]

    def _low_rank_rows(self, V_rows: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``(D⁻¹L) C⁻¹ (D⁻¹L)ᵀ V`` from its rows of ``V``, in the factor's dtype; one sum.

        ``(D⁻¹L)ᵀ V = Σ_s (D_s⁻¹L_s)ᵀ V_s`` (``k × t``, summed over the processes), then ``C⁻¹`` by the two
        triangular solves of ``C = R Rᵀ`` (the same numbers on every process), then this process's rows.
        """
        LD = self.LD
        # Both products with the narrow t-column operand on the left, (Vᵀ (D⁻¹L))ᵀ and (Yᵀ (D⁻¹L)ᵀ)ᵀ: the same sums,
        # 2-3× faster in float32 for t ≈ 11 (n/p = 10,000, k = 1789, 1 thread, the factor held column-major:
        # 23 → 11 ms and 32 → 10 ms). With the solves below, solve_rows at n = 20,000 on 2 processes: 99 → 24 ms
        # (float32), 269 → 89 ms (float64) per call.
        Y = (V_rows.to(LD.dtype).mT @ LD).mT  # (*batch, k, t)
        Y = Y.expand(*broadcast_shapes(Y.shape[:-2], V_rows.shape[:-2]), *Y.shape[-2:]).contiguous()
        self.shard.all_reduce([Y], "preconditioner solve WᵀV")
        Y = core_solve(self.R, Y)  # C⁻¹ Y
        return (Y.mT @ LD.mT).mT

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        """``P⁻¹ V`` for ``V (*batch, n, t)``, in ``V``'s dtype; two collectives (a ``k × t`` sum, a gather)."""
        low = self._low_rank_rows(self._rows(V)).to(V.dtype)
        low = gather_rows(self.shard, low, self.n, self.lo, "preconditioner solve rows")
        return low.neg_().addcmul_(self.D_inv.to(V.dtype).unsqueeze(-1), V)  # D⁻¹V - low, in low's buffer

    def solve_rows(self, V_rows: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``P⁻¹ V`` from its rows of ``V``: ``(*batch, hi - lo, t)`` → same; one ``k × t`` sum.

        ``(P⁻¹V)_r = D_r⁻¹ V_r - D_r⁻¹L_r C⁻¹ Σ_s (D_s⁻¹L_s)ᵀ V_s`` (Woodbury), for a CG whose vectors are split
        by rows.
        """
        low = self._low_rank_rows(V_rows).to(V_rows.dtype)
        return self.D_inv[..., self.lo : self.hi].to(V_rows.dtype).unsqueeze(-1) * V_rows - low

    def _w_rows(self, k: int, rows: slice) -> torch.Tensor:
        """Rows ``rows`` (of this process's block) of the first ``k`` columns of ``W = D⁻¹ L R⁻ᵀ``, ``(*batch, ·, k)``.

        ``R`` is lower triangular, so ``R⁻ᵀ`` is upper triangular and those columns need only ``(D⁻¹L)[:, :k]``
        and ``R[:k, :k]``: ``W[:, :k]ᵀ = R[:k, :k]⁻¹ (D⁻¹L)[:, :k]ᵀ``.
        """
        R = self.R[..., :k, :k]
        B = self.LD[..., rows, :k]
        R = R.expand(*broadcast_shapes(R.shape[:-2], B.shape[:-2]), k, k)
        return torch.linalg.solve_triangular(R, B.mT, upper=False).mT

    def leading_factor(self, k: int, out: torch.Tensor | None = None, release: bool = False) -> torch.Tensor:
        """All rows of the first ``k`` columns of ``W``, ``(*batch, n, min(k, rank))`` (assembled: gathers by columns).

        Args:
            k: the number of leading columns wanted.
            out: optional ``(*batch, n, min(k, rank))`` tensor (a column slice of a larger buffer will do) to write
                them into, e.g. the columns a caller would otherwise copy them to; returned.
            release: drop the factor ``D⁻¹L`` once this process's rows are formed, before the gather, so the
                ``n/p × rank`` array and the gathered ``n × k`` one are never held together (the last use of a
                preconditioner; any later solve raises).
        """
        k = min(int(k), self.rank)
        LD = self.LD
        if out is None:
            out = LD.new_empty(*LD.shape[:-2], self.n, k)
        elif out.shape[-2:] != (self.n, k):
            raise ShapeError(f"leading_factor: out must have shape (*batch, {self.n}, {k}); got {tuple(out.shape)}.")
        own = out[..., self.lo : self.hi, :]  # this process's rows are formed in place, then the others gathered
        for rows in _row_slices(self.local_rows, k):
            own[..., rows, :] = self._w_rows(k, rows)
        if release:
            del LD
            self.release()
        return gather_rows(self.shard, own, self.n, self.lo, "preconditioner factor rows", _BLOCK_NUMBERS, out=out)

    def release(self) -> None:
        """Free the ``n/p × rank`` factor; the preconditioner cannot be applied afterwards."""
        self._released = (self.rank, self.local_rows)
        self.LD = _Released()

    def logdet(self) -> torch.Tensor:
        """``log|P| = log|D| + log|C|`` (matrix determinant lemma), ``(*batch)``."""
        return self.D.log().sum(-1) + 2 * self.R.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def inv_diagonal(self) -> torch.Tensor:
        """``diag(P⁻¹) = D⁻¹ - Σ_j W_ij²``, ``(*batch, n)`` (``W`` by blocks of rows)."""
        k = self.rank
        sq = torch.cat(
            [self._w_rows(k, rows).square().sum(-1, keepdim=True) for rows in _row_slices(self.local_rows, k)], -2
        )
        return self.D_inv - gather_rows(self.shard, sq, self.n, self.lo, "preconditioner diagonal")[..., 0]

    def sample(self, t: int, generator: torch.Generator) -> torch.Tensor:
        """``t`` probes ``z = L ε₁ + D^{1/2} ε₂`` (Rademacher ε, the same draws as unsharded): ``(*batch, n, t)``.

        ``L_r ε₁ = D_r (D_r⁻¹L_r) ε₁`` from the rows held.
        """
        from torchgp.linalg.lanczos import rademacher

        k = self.rank
        batch = self.D.shape[:-1]
        eps2 = rademacher((*batch, self.n, t), generator, self.D.dtype, self.D.device)
        z = self.D.sqrt().unsqueeze(-1) * eps2
        if k > 0:
            eps1 = rademacher((*batch, k, t), generator, self.D.dtype, self.D.device)
            Le = self.D[..., self.lo : self.hi].unsqueeze(-1) * (self.LD @ eps1.to(self.LD.dtype))
            z = z + gather_rows(self.shard, Le.to(z.dtype), self.n, self.lo, "preconditioner probes")
        return z


class _Released:
    """Stands in for a released factor: any use says so instead of failing obscurely."""

    def __getattr__(self, name):
        raise RuntimeError(
            "ShardedPivotedCholeskyPreconditioner: its factor was released by leading_factor(release=True), its last "
            "use; build a new preconditioner to solve again."
        )

    def __getitem__(self, index):
        return self.__getattr__("__getitem__")
