r"""The greedy pivoted Cholesky factor ``L_k`` of a kernel matrix from its diagonal and ``k`` of its rows, in blocks.

Harbrecht, Peters & Schneider (2012), Alg. 1; Gardner et al. (2018), §4.1. Memory is ``O(n k)`` and only rows of
``K`` are evaluated, so it works on a :class:`~torchgp.linalg.operators.KernelOperator` at any n; the corrections
of the rows by the earlier columns are GEMMs over blocks of candidate pivots (see :func:`pivoted_cholesky`). The
preconditioner built on the factor is in :mod:`torchgp.linalg.pivoted_cholesky`.
"""

from __future__ import annotations

import torch

from torchgp.linalg.operators import DenseOperator, KernelOperator, Operator

# Relative size (to the largest diagonal entry) below which residual diagonals count as zero.
_REL_FLOOR = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}

__all__ = ["candidate_rows", "core_solve", "operator_rows", "operator_row_block", "pivoted_cholesky", "scaled_gram"]


def operator_rows(base: Operator, idx: torch.Tensor) -> torch.Tensor:
    """Row ``idx[b]`` of each batch member of ``base``.

    Args:
        base: ``KernelOperator`` or ``DenseOperator``, ``(*batch, n, m)``.
        idx: ``(*batch,)`` int64 row indices.

    Returns:
        ``(*batch, m)`` (no graph).
    """
    return operator_row_block(base, idx[..., None])[..., 0, :]


def operator_row_block(base: Operator, idx: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
    """Rows ``idx[b, :]`` of each batch member of ``base``, columns ``lo:hi`` only (no graph).

    Args:
        base: ``KernelOperator`` or ``DenseOperator``, ``(*batch, n, m)``.
        idx: ``(*batch, c)`` int64 row indices.
        lo, hi: the columns wanted (default all ``m``); a kernel evaluates only those.

    Returns:
        ``(*batch, c, hi - lo)``.
    """
    batch = base.batch_shape
    n, m = base.shape[-2], base.shape[-1]
    hi = m if hi is None else hi
    c = idx.shape[-1]
    with torch.no_grad():
        if isinstance(base, DenseOperator):
            A = base.tensor.expand(*batch, n, m)[..., lo:hi]
            return A.gather(-2, idx[..., None].expand(*batch, c, hi - lo))
        if isinstance(base, KernelOperator):
            x1 = base.x1.expand(*batch, *base.x1.shape[-2:])
            x1_rows = x1.gather(-2, idx[..., None].expand(*batch, c, x1.shape[-1]))
            x2 = base.x2 if (lo, hi) == (0, m) else base.x2[..., lo:hi, :]
            return base.kernel.evaluate_block(x1_rows, x2, **base.params).expand(*batch, c, hi - lo)
    raise TypeError(
        f"operator_rows needs a KernelOperator or DenseOperator (the pivoted Cholesky factor reads rows of one); "
        f"got {type(base).__name__}."
    )


def candidate_rows(
    base: Operator, rows: torch.Tensor, cand: torch.Tensor, m0: int, pool, dtype, coef=None, lo: int = 0, hi=None
) -> torch.Tensor:
    """``K[cand, lo:hi] - Σ_{j<m₀} l_j[cand] l_j[lo:hi]`` ``(*batch, c, hi - lo)``: the candidates' rows corrected.

    ``rows`` ``(*batch, rank, hi - lo)`` holds the columns ``l_j`` as rows, over the columns ``lo:hi`` of ``K``
    (all ``n`` unsharded; a sharded factor's own block). ``coef = L[cand, :m₀]ᵀ`` ``(*batch, m₀, c)``, gathered
    from ``rows`` when None (which then must hold every column). A candidate of the previous block (``pool =
    (idx (c',), rows (c', hi - lo), m')``, unbatched only) keeps its row, corrected by the columns ``m' ≤ j < m₀``
    alone, ``(c_kept × (m₀ − m'))((m₀ − m') × (hi − lo))``; the others are evaluated and corrected by all ``m₀``
    columns in one GEMM.
    """
    batch, c = rows.shape[:-2], cand.shape[-1]
    hi = base.shape[-1] if hi is None else hi
    if coef is None and m0:
        coef = rows[..., :m0, :].gather(-1, cand[..., None, :].expand(*batch, m0, c))
    if pool is not None:
        old_idx, old_rows, m_old = pool
        match = cand[:, None] == old_idx[None, :]  # (c, c')
        kept = match.any(1)
        out = torch.empty(c, hi - lo, dtype=dtype, device=rows.device)
        k_at = kept.nonzero().squeeze(-1)
        if k_at.numel():
            out[k_at] = old_rows[match.long().argmax(1)[k_at]]
            if m0 > m_old:  # the previous block's columns, for the kept candidates only
                out[k_at] -= coef[m_old:m0, k_at].mT @ rows[m_old:m0]
        fresh = (~kept).nonzero().squeeze(-1)
        if fresh.numel():
            out[fresh] = candidate_rows(
                base, rows, cand[fresh], m0, None, dtype, coef[:, fresh] if m0 else None, lo, hi
            )
        return out
    out = operator_row_block(base, cand, lo, hi).to(dtype)  # K[cand, lo:hi], (*batch, c, hi - lo)
    if m0:  # K[cand, lo:hi] -= Σ_{j<m₀} l_j[cand] l_j[lo:hi]: one GEMM
        out -= coef.mT @ rows[..., :m0, :]
    return out


def scaled_gram(L: torch.Tensor, root: torch.Tensor, batch: torch.Size, rows: int, chunks: int = 8) -> torch.Tensor:
    """``LᵀD⁻¹L = Σ_b A_b A_bᵀ`` with ``A_b = (D_b^{-1/2} L_b)ᵀ`` over blocks of ``rows`` rows, ``(*batch, k, k)``.

    The preconditioner's core ``C = I + LᵀD⁻¹L`` (here without ``I``: a sharded factor sums this over its
    processes first). By blocks of rows, so that no ``n × k`` copy of ``D⁻¹L`` is held besides ``L`` (at n = 10⁵,
    rank 4000 in float32 an ``n × k`` factor is 1.6 GB); and only the block rows of the upper triangle, in ``chunks``
    strips, then mirrored: about 56 % of the GEMM flops (measured 1.61 → 0.87 s at n = 20,000, k = 1789, 1 thread).

    Args:
        L: ``(*batch', n, k)``; root: ``D^{-1/2}``, ``(*batch'', n)``; batch: the two's broadcast batch shape.
        rows: rows per block.
    """
    k = L.shape[-1]
    C = torch.zeros(*batch, k, k, dtype=L.dtype, device=L.device)
    strip = max(1, -(-k // chunks))
    for i in range(0, L.shape[-2], rows):
        s = slice(i, min(i + rows, L.shape[-2]))
        A = (L[..., s, :] * root[..., s].unsqueeze(-1)).mT.contiguous()  # (*batch, k, rows)
        for c0 in range(0, k, strip):
            C[..., c0 : c0 + strip, c0:] += A[..., c0 : c0 + strip, :] @ A[..., c0:, :].mT
    return C.triu() + C.triu(1).mT


def core_solve(R: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``C⁻¹ Y = R⁻ᵀ (R⁻¹ Y)`` for the preconditioner's core ``C = R Rᵀ`` (``R (*batch, k, k)`` lower triangular),
    ``Y (*batch, k, t)``: two triangular solves, the same numbers as ``cholesky_solve`` and faster for the few
    columns of a CG step (k = 1789, one thread, float32 t = 1 / 11: 1.50 → 0.35 / 2.75 → 1.64 ms; about equal
    at t = 33).
    """
    R = R.expand(*Y.shape[:-2], *R.shape[-2:])
    return torch.linalg.solve_triangular(R.mT, torch.linalg.solve_triangular(R, Y, upper=False), upper=True)


# Candidate rows evaluated and corrected together per block of the factorisation (see pivoted_cholesky), and the
# most columns a block takes from them before its candidates are refreshed.
_CANDIDATES, _BLOCK = 128, 64


def pivoted_cholesky(
    base: Operator,
    rank: int,
    error_tol: float | None = None,
    abs_tol: torch.Tensor | float | None = None,
    pivots: torch.Tensor | None = None,
    return_pivots: bool = False,
):
    r"""Greedy rank-``rank`` pivoted Cholesky factor ``L`` with ``L Lᵀ ≈ K``.

    Harbrecht et al. (2012), Alg. 1: at step m pick ``i = argmax d`` (residual diagonal), set
    ``l_m = (K[i, :] - Σ_{j<m} l_j[i] l_j) / √d_i``, ``d -= l_m²``. Stops early once the trace of the
    residual ``Σ d`` falls below ``error_tol · tr K`` or ``abs_tol`` (or below round-off) in every batch member.

    The correction ``Σ_{j<m} l_j[i] l_j`` is formed in blocks, with the same pivots and the same factor as
    column by column (to rounding): at the start of a block (``m₀`` columns done) the rows of the ``c`` largest
    residual diagonals (the likeliest next pivots; the given ``pivots`` when reused) are evaluated and corrected by
    the first ``m₀`` columns in one GEMM ``(c × m₀)(m₀ × n)``; each step of the block then takes its pivot's row
    from them and subtracts only the block's own columns. The block ends after ``_BLOCK`` steps, or at the first
    pivot that is not a candidate. Column by column, the correction is a GEMV over all ``m`` columns per step, a
    pass over ``m n`` numbers bound by memory speed (36.9 s of the rank-1789 factor at n = 10⁵).

    Args:
        base: square ``KernelOperator`` or ``DenseOperator``, ``(*batch, n, n)``, positive semi-definite.
        rank: maximum rank ``k``.
        error_tol: relative trace error at which to stop (default: round-off only).
        abs_tol: absolute trace error at which to stop, a float or ``(*batch)`` (default: none).
        pivots: ``(*batch, k')`` pivot rows to take in this order instead of searching (e.g. the previous
            optimiser step's, so that the factor moves smoothly with the hyperparameters); ``rank`` and the
            stopping tests are then ignored.
        return_pivots: also return the pivots, ``(*batch, k')`` int64.

    Returns:
        ``L`` of shape ``(*batch, n, k')`` with ``k' ≤ rank`` (no graph), and the pivots if asked.
    """
    batch, n = base.batch_shape, base.shape[-1]
    rank = min(int(rank), n) if pivots is None else pivots.shape[-1]
    with torch.no_grad():
        d = base.diagonal().detach().expand(*batch, n).clone()
        trace = d.sum(-1)
        # Residuals below this are round-off: pivots on them would divide cancellation error by a
        # tiny √d and make P ill-conditioned (seen as CG divergence at rank ≈ n).
        floor = max(torch.finfo(d.dtype).eps * n, _REL_FLOOR[d.dtype]) * d.abs().amax(-1)
        rows = torch.zeros(*batch, rank, n, dtype=d.dtype, device=d.device)
        used = torch.zeros(*batch, rank, dtype=torch.long, device=d.device)
        if pivots is not None:
            pivots = pivots.expand(*batch, rank)
        m, done = 0, False
        pool = None  # unbatched: the last block's (candidates, their rows corrected by its first m₀ columns, m₀)
        while m < rank and not done:
            m0 = m
            if pivots is None:  # the next pivot (argmax, first of ties) and the largest residuals after it
                top = d.topk(min(_CANDIDATES, n), dim=-1).indices
                cand = torch.cat([d.argmax(-1, keepdim=True), top], -1)  # (*batch, c + 1)
            else:
                cand = pivots[..., m0 : m0 + _BLOCK]
            cand_rows = candidate_rows(base, rows, cand, m0, pool, d.dtype)
            pool = (cand, cand_rows, m0) if not batch else None
            while m < rank and m - m0 < _BLOCK:
                err = d.clamp_min(0).sum(-1)
                if pivots is None and (
                    bool((d.amax(-1) <= floor).all())
                    or (error_tol is not None and bool((err <= error_tol * trace).all()))
                    or (abs_tol is not None and bool((err <= abs_tol).all()))
                ):
                    done = True
                    break
                piv = d.argmax(-1) if pivots is None else pivots[..., m]  # (*batch)
                hit = cand == piv[..., None]  # (*batch, c)
                if not bool(hit.any(-1).all()):
                    break  # a pivot outside the candidates: refresh them
                pos = hit.long().argmax(-1)  # (*batch)
                used[..., m] = piv
                d_piv = d.gather(-1, piv[..., None]).squeeze(-1)
                row = cand_rows.gather(-2, pos[..., None, None].expand(*batch, 1, n)).squeeze(-2)
                if m > m0:  # the block's own columns: row -= Σ_{m₀≤j<m} l_j[piv] l_j
                    blk = rows[..., m0:m, :]
                    coef = blk.gather(-1, piv[..., None, None].expand(*batch, m - m0, 1))  # (*batch, m - m₀, 1)
                    row = row - (blk.mT @ coef).squeeze(-1)
                ok = d_piv > floor
                l_m = torch.where(
                    ok[..., None], row / d_piv.clamp_min(torch.finfo(d.dtype).tiny).sqrt()[..., None], 0.0
                )
                rows[..., m, :] = l_m
                d = d - l_m.square()
                d.scatter_(-1, piv[..., None], 0.0)
                m += 1
        L = rows[..., :m, :].mT
        return (L, used[..., :m]) if return_pivots else L
