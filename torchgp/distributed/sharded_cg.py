r"""Preconditioned CG with its vectors split by rows over the processes of a :class:`ShardedKernel`.

Process ``r`` of ``p`` holds only the rows ``[lo_r, hi_r)`` of ``X``, ``R``, ``Z``, ``P`` and ``A P``
(:func:`~torchgp.linalg.sharded_preconditioner.row_range`), so the ``O(n t)`` recurrences of CG are
split ``p`` ways. One iteration (Golub & Van Loan 2013, Alg. 11.5.1, every column in lockstep) is

1. ``P`` whole on every process: one ``all_gather`` of the row blocks, in the kernel's dtype (the
   tiles multiply in it anyway);
2. ``(A P)_r``: each process multiplies its tiles (:mod:`torchgp.distributed.sharded_kernel`), one
   ``reduce_scatter`` sums the partial products and hands each process its rows;
3. ``pᵀAp``, then ``rᵀz`` with ``‖r‖²``: sums of ``t`` numbers (``all_reduce``);
4. ``z_r = (P⁻¹ r)_r = D_r⁻¹ r_r - W_r Σ_s W_sᵀ r_s``: one ``k × t`` sum
   (:meth:`~torchgp.linalg.sharded_preconditioner.ShardedPivotedCholeskyPreconditioner.solve_rows`).

Each process sends about ``n t (p - 1) / p`` numbers in each of the two row collectives per iteration
(in float32 for a float32 kernel), against ``2 n t (p - 1) / p`` float64 numbers in each of the two
``n × t`` ``all_reduce`` calls of a replicated CG over a sharded product (the product and the
preconditioner's rows). All scalars come from collectives, so every process takes
the same steps and stops at the same iteration; the solution is gathered once at the end.
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.distributed import process_group
from torchgp.errors import ShapeError
from torchgp.linalg.cg import CGInfo, cg_rows, finish
from torchgp.linalg.kernel_tiles import exp_tile_matmul, exp_tile_rows, feature_tile_side
from torchgp.linalg.operators.kernel import KernelOperator, _tile, _tiles, kernel_matmul_nograd
from torchgp.linalg.sharded_preconditioner import ShardedPivotedCholeskyPreconditioner, row_range

__all__ = ["ShardedMatmul", "sharded_pcg"]


class ShardedMatmul:
    """``V ↦ (K + diag d) V`` for a kernel sharded over processes, whose CG runs split by rows.

    Called on a whole ``V (*batch, n, t)`` it returns the whole product on every process (one
    ``all_reduce``), as any matmul function; :meth:`rows` is the row-split product that
    :func:`sharded_pcg` uses, and :meth:`pcg` is what :func:`torchgp.linalg.cg.pcg` dispatches to.

    Args:
        shard: the kernel's ``tile_shard`` (``owns``, ``rank``, ``world_size``, ``group``).
        base: the kernel operator ``K``, ``(*batch, n, n)``, symmetric.
        diag: ``(*batch, n)`` diagonal ``d`` or None.
        dtype: the solve dtype of the vectors.
    """

    def __init__(self, shard, base: KernelOperator, diag: torch.Tensor | None, dtype: torch.dtype):
        self.shard, self.base, self.dtype = shard, base, dtype
        self.n = base.shape[-1]
        self.lo, self.hi = row_range(self.n, shard.rank, shard.world_size)
        self.diag = None if diag is None else diag.detach().to(dtype).unsqueeze(-1)

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        out = kernel_matmul_nograd(self.base, V)
        return out if self.diag is None else out + self.diag * V

    def _partial(self, V: torch.Tensor) -> torch.Tensor:
        """``Σ`` over this process's tiles of their part of ``K V``, all ``n`` rows, in ``V``'s dtype (no sum yet)."""
        op = self.base
        batch = broadcast_shapes(op.batch_shape, V.shape[:-2])
        rows_form = exp_tile_rows(op, batch) if settings.fast_kernel_tiles.on() else None
        if rows_form is not None:  # an exponential kernel: this process's tiles from feature rows, one buffer
            tiles = [tile for index, tile in enumerate(_tiles(op, feature_tile_side())) if self.shard.owns(index)]
            return exp_tile_matmul(op, rows_form, V, tiles).to(self.dtype)
        out = torch.zeros(*batch, self.n, V.shape[-1], dtype=self.dtype, device=V.device)
        for index, (rows, cols, mirrored) in enumerate(_tiles(op)):
            if not self.shard.owns(index):
                continue
            T = _tile(op, rows, cols)
            out[..., rows, :] += (T @ V[..., cols, :]).to(self.dtype)
            if mirrored:  # K_JI V_I = (V_Iᵀ K_IJ)ᵀ, the same GEMM untransposed
                out[..., cols, :] += (V[..., rows, :].mT @ T).mT.to(self.dtype)
        return out

    def rows(self, P_rows: torch.Tensor) -> torch.Tensor:
        """This process's rows of ``(K + diag d) P`` from its rows of ``P``: ``(*batch, hi - lo, t)`` → same."""
        group, kdtype = self.shard.group, self.base.dtype
        with torch.no_grad():
            P = process_group.all_gather_rows(P_rows.to(kdtype), self.n, "all_gather of the CG directions", group)
            partial = self._partial(P)
            # The partial sums travel in the kernel's dtype: a float32 kernel's tiles are float32 products already.
            AP = process_group.reduce_scatter_rows(
                partial.to(kdtype), self.n, "reduce_scatter of the sharded kernel products K V", group
            ).to(self.dtype)
            if self.diag is not None:
                AP = AP + self.diag[..., self.lo : self.hi, :] * P_rows
        return AP

    def pcg(self, B, precond_fn=None, tol=None, max_iter=None, record=False, x0=None):
        """:func:`sharded_pcg` on this operator (the signature of :func:`torchgp.linalg.cg.pcg` after ``matmul_fn``)."""
        return sharded_pcg(self, B, precond_fn, tol=tol, max_iter=max_iter, record=record, x0=x0)


def _sum(tensors: list[torch.Tensor], what: str, group) -> list[torch.Tensor]:
    return process_group.all_reduce_(tensors, f"all_reduce of the sharded CG {what}", group)


def _precond_rows(matmul: ShardedMatmul, precond_fn):
    """``R_r ↦ (P⁻¹ R)_r``: the row-split Woodbury solve of a sharded preconditioner, else via the whole ``R``."""
    if precond_fn is None:
        return lambda R: R
    owner = getattr(precond_fn, "__self__", None)
    if isinstance(owner, ShardedPivotedCholeskyPreconditioner) and precond_fn.__func__ is type(owner).solve:
        return owner.solve_rows
    lo, hi, n, group = matmul.lo, matmul.hi, matmul.n, matmul.shard.group

    def whole(R):  # any other preconditioner takes and returns whole vectors
        return precond_fn(process_group.all_gather_rows(R, n, "all_gather of the CG residuals", group))[..., lo:hi, :]

    return whole


def sharded_pcg(
    matmul: ShardedMatmul,
    B: torch.Tensor,
    precond_fn=None,
    tol: float | torch.Tensor | None = None,
    max_iter: int | None = None,
    record: bool = False,
    x0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CGInfo]:
    """Solve ``A X = B`` by preconditioned CG with the vectors split by rows (the module docstring).

    The arguments and results are those of :func:`torchgp.linalg.cg.pcg` (same stopping rules: per-column
    tolerance, stagnation after 100 iterations without a 10 % fall); ``B``, ``x0`` and the returned ``X``
    are whole ``(*batch, n, k)`` tensors, the same on every process.

    Raises:
        NotPSDError: a direction with ``pᵀAp ≤ 0``.
        ConvergenceError: not converged and ``settings.cg_nonconvergence`` is ``'raise'``.
    """
    tol = settings.cg_tolerance.value() if tol is None else tol
    if max_iter is None:
        max_iter = int(settings.max_cg_iterations.value())
    group, lo, hi, n = matmul.shard.group, matmul.lo, matmul.hi, matmul.n
    if settings.terminate_cg_by_size.on():  # as the replicated CG: at most n iterations
        max_iter = min(max_iter, n)
    if B.shape[-2] != n:
        raise ShapeError(f"sharded_pcg: B must have {n} rows, (*batch, {n}, k); got {tuple(B.shape)}.")
    if x0 is not None and x0.shape != B.shape:
        raise ShapeError(f"pcg: x0 must have the shape of B, {tuple(B.shape)}; got {tuple(x0.shape)}.")
    precond = _precond_rows(matmul, precond_fn)
    with torch.no_grad():
        X, state = cg_rows(
            matmul.rows,
            B[..., lo:hi, :],
            precond,
            tol,
            max_iter,
            record,
            None if x0 is None else x0[..., lo:hi, :],
            reduce=lambda tensors, what: _sum(tensors, what, group),
        )
        X = process_group.all_gather_rows(X, n, "all_gather of the CG solution", group)
    return X, finish(state, tol, record)
