r"""The greedy pivoted Cholesky factor with its rows split over the processes of a sharded kernel, in blocks.

Harbrecht, Peters & Schneider (2012), Alg. 1, rows distributed: process ``r`` of ``p`` holds the rows
``[lo_r, hi_r)`` of ``L`` and of the residual diagonal ``d``. At step ``m`` the pivot is the global
``i = argmax_j d_j`` (ties to the lowest index, as ``argmax``), and each process updates its own rows,

.. math:: l_m[\text{lo}:\text{hi}] = \big(K[i,\, \text{lo}:\text{hi}] - \textstyle\sum_{j<m} l_j[i]\, l_j[\text{lo}:\text{hi}]\big) / \sqrt{d_i},

so the pivots, and hence the factor, are those of the unsharded factorisation. As there
(:func:`torchgp.linalg.pivoted_factor.pivoted_cholesky`), the correction is formed in blocks: at the start of a
block (``m₀`` columns done) the ``c`` largest residuals over all processes (one gather of ``p c`` values and
indices) are the candidates; each process evaluates their kernel rows on its own columns and corrects them by
the first ``m₀`` columns in one GEMM ``(c × m₀)(m₀ × n/p)``, the coefficients ``L[cand, :m₀]`` summed from their
owners (one ``c × m₀`` sum). Each step of the block then needs one small sum (every process's largest residual,
its index, ``Σ d`` and the candidate's coefficients in the block's own columns, ``m − m₀ ≤ 64`` of them) and
subtracts only the block's columns. A pivot outside the candidates ends the block. Column by column, each step
would be a GEMV over all ``m`` columns and a sum of ``p (m + 3)`` numbers.
"""

from __future__ import annotations

import torch

from torchgp.linalg.operators import Operator
from torchgp.linalg.pivoted_factor import _BLOCK, _CANDIDATES, operator_row_block

__all__ = ["sharded_pivoted_cholesky", "row_range"]


def row_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` owned by process ``rank`` of ``world_size``: contiguous, sizes differing by ≤ 1."""
    return rank * n // world_size, (rank + 1) * n // world_size


def _candidates(d: torch.Tensor, lo: int, shard, p: int) -> torch.Tensor:
    """Global indices of the next pivot and of the ``c`` largest residuals over all processes, ``(*batch, c + 1)``.

    Each process proposes its first largest residual (``argmax``: the lowest index of a tie) and its ``c``
    largest, with their global indices; one sum of the ``p × (c + 1) × 3`` numbers (value, index, filled), each
    slot written by one process. The next pivot is the largest value's lowest index, as the steps choose it, so
    a block always takes at least one column. ``d (*batch, hi - lo)``.
    """
    batch, local = d.shape[:-1], d.shape[-1]
    slots = _CANDIDATES + 1
    buf = torch.zeros(*batch, p, slots, 3, dtype=torch.float64, device=d.device)
    if local:
        c = min(_CANDIDATES, local)
        top_v, top_i = d.topk(c, dim=-1)
        mx, arg = d.max(-1)
        mine = buf[..., shard.rank, :, :]
        mine[..., 0, 0], mine[..., 0, 1] = mx.to(torch.float64), (arg + lo).to(torch.float64)
        mine[..., 1 : c + 1, 0], mine[..., 1 : c + 1, 1] = top_v.to(torch.float64), (top_i + lo).to(torch.float64)
        mine[..., : c + 1, 2] = 1.0
    shard.all_reduce([buf], "candidate pivots of the preconditioner")
    buf = buf.flatten(-3, -2)  # (*batch, p·slots, 3)
    vals = torch.where(buf[..., 2] > 0, buf[..., 0], -float("inf"))
    ids = buf[..., 1]
    best = vals.amax(-1, keepdim=True)
    first = torch.where(vals == best, ids, float("inf")).amin(-1, keepdim=True)
    top = ids.gather(-1, vals.topk(min(_CANDIDATES, vals.shape[-1]), dim=-1).indices)
    return torch.cat([first, top], -1).round().long()


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
        dtype = d.dtype
        # Row m of the buffer (column m of L) is written at step m before any read of it: uninitialised, so an
        # early stop leaves the pages of the unused columns untouched (never resident).
        rows = torch.empty(*batch, rank, hi - lo, dtype=dtype, device=d.device)
        own = torch.arange(lo, hi, device=d.device)
        used = torch.zeros(*batch, rank, dtype=torch.long, device=d.device)
        if pivots is not None:
            pivots = pivots.expand(*batch, rank)
        m, done = 0, False
        while m < rank and not done:
            m0 = m
            cand = _candidates(d, lo, shard, p) if pivots is None else pivots[..., m0 : m0 + _BLOCK]
            c = cand.shape[-1]
            # K[cand, lo:hi] - L[cand, :m₀] L[lo:hi, :m₀]ᵀ: the coefficients summed from the rows' owners
            cand_rows = operator_row_block(base, cand, lo, hi).to(dtype)
            if m0 > 0:
                mine = (cand >= lo) & (cand < hi)
                local = (cand - lo).clamp(0, max(hi - lo - 1, 0))
                coef = torch.zeros(*batch, m0, c, dtype=dtype, device=d.device)  # one owner per entry: exact sums
                if hi > lo:
                    got = rows[..., :m0, :].gather(-1, local[..., None, :].expand(*batch, m0, c))
                    coef = torch.where(mine[..., None, :], got, coef)
                shard.all_reduce([coef], "candidate rows of the preconditioner factor")
                cand_rows -= coef.mT @ rows[..., :m0, :]
            while m < rank and m - m0 < _BLOCK:
                # This process's proposal: [largest residual, its global index, Σ max(d, 0), L[index, m₀:m]].
                b = m - m0
                if hi > lo and pivots is not None:  # the given pivot, proposed by the process that owns it
                    fixed = pivots[..., m]
                    local_arg = (fixed - lo).clamp(0, hi - lo - 1)
                    local_max = torch.where(
                        (fixed >= lo) & (fixed < hi), d.gather(-1, local_arg[..., None])[..., 0], -float("inf")
                    )
                elif hi > lo:
                    local_max, local_arg = d.max(-1)
                else:  # more processes than rows: propose nothing
                    local_max = d.new_full(batch, -float("inf"))
                    local_arg = torch.zeros(batch, dtype=torch.long, device=d.device)
                prop = torch.zeros(*batch, p, b + 3, dtype=torch.float64, device=d.device)
                prop[..., me, 0] = local_max.to(torch.float64)
                prop[..., me, 1] = (local_arg + lo).to(torch.float64)
                prop[..., me, 2] = d.clamp_min(0).sum(-1).to(torch.float64)
                if b and hi > lo:
                    blk_coef = rows[..., m0:m, :].gather(-1, local_arg[..., None, None].expand(*batch, b, 1))
                    prop[..., me, 3:] = blk_coef[..., 0].to(torch.float64)
                shard.all_reduce([prop], "pivot search of the preconditioner")
                best = prop[..., 0].argmax(-1)  # first maximum: the lowest rank, hence the lowest index
                pick = prop.gather(-2, best[..., None, None].expand(*batch, 1, b + 3))[..., 0, :]
                d_piv, err = pick[..., 0].to(dtype), prop[..., 2].sum(-1)
                stop = bool((d_piv <= floor).all()) or (abs_tol is not None and bool((err <= abs_tol).all()))
                if stop and pivots is None:
                    done = True
                    break
                piv = pick[..., 1].round().long()
                hit = cand == piv[..., None]
                if not bool(hit.any(-1).all()):
                    break  # a pivot outside the candidates: refresh them (every process sees the same)
                pos = hit.long().argmax(-1)
                used[..., m] = piv
                row = cand_rows.gather(-2, pos[..., None, None].expand(*batch, 1, hi - lo)).squeeze(-2)
                if b:  # the block's own columns: row -= Σ_{m₀≤j<m} l_j[piv] l_j[lo:hi]
                    row = row - (rows[..., m0:m, :].mT @ pick[..., 3:, None].to(dtype)).squeeze(-1)
                ok = d_piv > floor
                l_m = torch.where(ok[..., None], row / d_piv.clamp_min(torch.finfo(dtype).tiny).sqrt()[..., None], 0.0)
                rows[..., m, :] = l_m
                d = d - l_m.square()
                d = torch.where(own == piv[..., None], 0.0, d)
                m += 1
        return rows[..., :m, :].mT, used[..., :m]
