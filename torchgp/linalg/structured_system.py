"""The system a structured solve works on: the bilinear forms of a structured operator and their gradients.

``Σ_j u_jᵀ B(θ) v_j`` and ``Σ_i w_i B_ii`` of a structured ``B`` (interpolated ``W K_UU Wᵀ``, Toeplitz,
Kronecker-Toeplitz, low-rank cores), differentiated by autograd through ``B``'s own products, reduced onto the
grid where the interpolation weights are fixed; and :class:`_Holder`, what the structured solve's Functions
need of ``A = B + diag(d)`` (:mod:`torchgp.linalg.structured_solve`).
"""

from __future__ import annotations

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.linalg.interpolated import InterpolatedOperator
from torchgp.linalg.operators import (
    AddedDiagOperator,
    ConstantMulOperator,
    KroneckerProductOperator,
    Operator,
    SumOperator,
)
from torchgp.linalg.pivoted_cholesky import PivotedCholeskyPreconditioner
from torchgp.linalg.toeplitz import ToeplitzOperator

# Largest rank of the pivoted-Cholesky preconditioner (also capped by settings.max_preconditioner_size): each
# pivot costs one product with B (O(n + m log m) for SKI) and O(n k) for the update. The factorisation stops
# earlier once the residual trace is below settings.cg_tolerance times the smallest noise.
_PRECOND_RANK = 64


def structured_pivoted_cholesky(base: Operator, rank: int, abs_tol=None, dtype=None) -> torch.Tensor:
    """Greedy pivoted Cholesky ``L (*batch, n, k)``, ``L Lᵀ ≈ base``, one product ``base @ e_p`` per pivot (no graph).

    Stops before ``rank`` pivots once the residual trace is below ``abs_tol`` (``(*batch)`` or a float).
    """
    dtype = base.dtype if dtype is None else dtype
    n, batch = base.shape[-1], base.batch_shape
    with torch.no_grad():
        d = base.diagonal().detach().to(dtype).expand(*batch, n).clone()
        rank = min(rank, n)
        # the factor grows by doubling (the factorisation usually stops far below ``rank``: 16 of 64 for SKI at
        # n = 10⁶), so it never holds n × rank numbers it does not fill
        L = d.new_zeros(*batch, n, min(rank, 8))
        tol = d.amax(-1, keepdim=True) * (1e-10 if dtype == torch.float64 else 1e-5)
        for k in range(rank):
            p = d.argmax(-1, keepdim=True)  # (*batch, 1)
            dp = d.gather(-1, p)
            done = (dp <= tol).all() if abs_tol is None else ((dp <= tol) | (d.sum(-1, keepdim=True) <= abs_tol)).all()
            if bool(done):
                return L[..., :k] if k == L.shape[-1] else L[..., :k].clone()
            if k == L.shape[-1]:
                L = torch.cat([L, L.new_zeros(*batch, n, min(rank, 2 * k) - k)], -1)
            e = torch.zeros(*batch, n, 1, dtype=base.dtype, device=base.device)
            e.scatter_(-2, p.unsqueeze(-1), 1.0)
            col = base.matmul(e).squeeze(-1).to(dtype)  # (*batch, n)
            Lp = L[..., :k].gather(-2, p.unsqueeze(-1).expand(*batch, 1, k)).squeeze(-2)  # (*batch, k)
            col = col - (L[..., :k] @ Lp.unsqueeze(-1)).squeeze(-1)
            col = torch.where(dp > tol, col / dp.clamp_min(tol).sqrt(), torch.zeros_like(col))
            L[..., k] = col
            d = (d - col.square()).clamp_min(0)
            d.scatter_(-1, p, 0.0)
        return L


# Bytes of one CG right-hand-side block (in the solve dtype): the columns [r, z_1..z_t] are solved in blocks of
# ``_columns_per_block(n)``, so CG's work matrices stay O(n) at any t (float64: one column at n ≥ 1.3 · 10⁵, 13 at
# n = 10⁴, instead of all 33 at once: 6 · 264 MB at n = 10⁶). Every cost of a structured product is linear in the
# number of columns, and a column solved alone stops at its own convergence, so blocking costs only the
# per-iteration overhead (measured at n = 10⁵, one MLL + gradient: 0.86–0.94 s CPU with one-column blocks, 0.86–1.3 s
# with ten; peak RSS of the step 500 → 420 MB).
_BLOCK_BYTES = 1 << 20


def _columns_per_block(n: int, itemsize: int = 8) -> int:
    return max(1, _BLOCK_BYTES // max(1, n * itemsize))


def _column_blocks(k: int, width: int):
    return [(s, min(k, s + width)) for s in range(0, k, width)]


def _fixed_weights(op) -> bool:
    """Whether ``op`` is interpolated with weights that need no gradient (inputs that do not require grad)."""
    return (
        isinstance(op, InterpolatedOperator) and not op.left_values.requires_grad and not op.right_values.requires_grad
    )


def _bilinear(op: Operator, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``Σ_j u_jᵀ op v_j`` per batch member, ``(*batch)``, for ``U, V (*batch, n, k)`` that need no gradient, with
    the graph of ``op``'s tensors.

    Interpolated ``W_1 B W_2ᵀ`` with fixed weights reduces to the grid, ``Σ_j (W_1ᵀu_j)ᵀ B (W_2ᵀv_j)``: the
    projections ``(*batch, m, k)`` carry no graph, so the graph holds ``O(m k)`` numbers instead of ``O(n k)``;
    scaled and summed operators are reduced term by term.
    """
    if _fixed_weights(op):
        with torch.no_grad():
            Ug = op.left_interp_t_matmul(U)  # W_1ᵀ U
            Vg = op.right_interp_t_matmul(V)  # W_2ᵀ V
        return _bilinear(op.base, Ug, Vg)
    if isinstance(op, ConstantMulOperator):
        return _bilinear(op.base, U, V) * op.constant
    if isinstance(op, SumOperator):
        return sum(_bilinear(p, U, V) for p in op.operators)
    return (U * op.matmul(V)).sum((-2, -1))


def _toeplitz_column(base: Operator):
    """The first column ``(*batch, m)`` of a Toeplitz ``base`` (or a one-factor Kronecker product of one), else None."""
    if isinstance(base, KroneckerProductOperator) and len(base.factors) == 1:
        base = base.factors[0]
    return base.column if isinstance(base, ToeplitzOperator) else None


def _diag_form(op: Operator, w: torch.Tensor) -> torch.Tensor:
    """``Σ_i w_i op_ii`` per batch member, ``(*batch)``, for ``w (*batch, n)`` that needs no gradient.

    For interpolated ``W B Wᵀ`` with fixed unbatched weights and a Toeplitz ``B = T(c)``,
    ``Σ_i w_i Σ_{a,b} v_ia v_ib c_{|j_ia − j_ib|} = Σ_δ h_δ c_δ`` with ``h_δ = Σ_{|j_ia − j_ib| = δ} w_i v_ia v_ib``
    accumulated without a graph in blocks of rows, so the graph holds ``m`` numbers instead of ``(n, k, k)``.
    """
    if isinstance(op, ConstantMulOperator):
        return _diag_form(op.base, w) * op.constant
    if isinstance(op, SumOperator):
        return sum(_diag_form(p, w) for p in op.operators)
    column = _toeplitz_column(op.base) if _fixed_weights(op) and op.symmetric else None
    if column is None or op.left_indices.dim() > 2:
        return (w * op.diagonal()).sum(-1)
    idx, val = op.left_indices, op.left_values
    m, batch = column.shape[-1], broadcast_shapes(w.shape[:-1], column.shape[:-1])
    with torch.no_grad():
        wb = w.expand(*batch, w.shape[-1]).reshape(-1, w.shape[-1])
        h = wb.new_zeros(wb.shape[0], m)
        for s in range(0, idx.shape[0], _DIAG_ROWS):
            i, v = idx[s : s + _DIAG_ROWS], val[s : s + _DIAG_ROWS].to(w.dtype)
            lag = (i.unsqueeze(-1) - i.unsqueeze(-2)).abs().reshape(-1)  # |j_ia − j_ib|, (rows · k²)
            weight = wb[:, s : s + _DIAG_ROWS, None, None] * (v.unsqueeze(-1) * v.unsqueeze(-2))
            h.index_add_(-1, lag, weight.reshape(wb.shape[0], -1))
        h = h.reshape(*batch, m)
    return (h * column).sum(-1)


# Rows per block of the diagonal form's lag accumulation (temporaries of ``rows · k²`` numbers).
_DIAG_ROWS = 1 << 14


class _Holder:
    """``A = base + diag(d)``, its preconditioner and the tensors behind ``base`` (the solve interface of
    :class:`~torchgp.linalg.iterative._System`, for ``_IterativeSolve``)."""

    def __init__(self, op: Operator):
        if isinstance(op, AddedDiagOperator):
            self.base, self.diag = op.base, op.diag
        else:
            self.base, self.diag = op, None
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device
        # CG (recurrences and products) in float64 for a float32 operator: the products of a structured operator
        # cost O(n + m log m), so float64 is cheap, and in float32 their round-off (~1e-7 ‖B‖, ‖B‖ ~ n for a
        # smooth kernel) stalls CG far above the tolerance (measured: SKI n = 10⁵, grid 10⁴, σ² = 0.05: 13 of 33
        # columns stuck at a relative residual of 0.2 with float32 products, float64 recurrences).
        solve = settings.solve_dtype.value()
        self.solve_dtype = solve or (torch.float64 if op.dtype == torch.float32 else op.dtype)
        wide = self.solve_dtype
        self.solve_base = self.base.detach()._map(lambda t: t.to(wide) if t.is_floating_point() else t)
        seen, self.tensors = set(), []
        for t in self.base._tensors():
            if id(t) not in seen and t.is_floating_point():
                seen.add(id(t))
                self.tensors.append(t)
        self._precond = None

    def matmul_fn(self):
        """``V ↦ (B + diag d) V`` without a graph, in the solve dtype."""
        base, dtype = self.solve_base, self.solve_dtype
        d = None if self.diag is None else self.diag.detach().to(dtype).unsqueeze(-1)

        def mm(V):
            out = base.matmul(V.to(dtype))
            if d is None:
                return out
            if out.shape == V.shape and out.is_contiguous():
                return out.addcmul_(d, V)  # a fresh product: the noise term added in place
            return out + d * V

        return mm

    def preconditioner(self, sampling: bool = False) -> PivotedCholeskyPreconditioner:
        """The pivoted-Cholesky preconditioner, built once; rebuilt when ``sampling`` needs the factor ``L`` that
        was dropped after the last use that needed it (only probes are drawn from ``L``; solves use ``W, D``)."""
        if self._precond is not None and sampling and self._precond.L is None:
            self._precond = None
        if self._precond is None:
            n, batch = self.shape[-1], self.shape[:-2]
            rank = min(_PRECOND_RANK, int(settings.max_preconditioner_size.value()))
            # residual trace below cg_tolerance · σ²: P⁻¹A is then within cg_tolerance of I, and the trace estimate's
            # remainder (A⁻¹z − P⁻¹z) as small as the solve asks for
            tol = float(settings.cg_tolerance.value())
            stop = None if self.diag is None else tol * self.diag.detach().amin()
            L = structured_pivoted_cholesky(self.solve_base, rank, abs_tol=stop)
            L = L.expand(*batch, n, L.shape[-1])
            with torch.no_grad():
                if self.diag is not None:
                    D = self.diag.detach().to(L.dtype).expand(*batch, n).clone()
                else:
                    D = (self.solve_base.diagonal().expand(*batch, n) - L.square().sum(-1)).clamp_min(0)
                floor = self.solve_base.diagonal().abs().mean().clamp_min(torch.finfo(L.dtype).tiny) * 1e-8
                D = D.clamp_min(floor)
            self._precond = PivotedCholeskyPreconditioner(L, D)
        return self._precond

    def bilinear_grads(self, U, V, needed, diag_weight=None) -> list:
        """Gradients of ``Σ_j u_jᵀ B(θ) v_j + Σ_i w_i B(θ)_ii`` w.r.t. each tensor θ behind ``B`` that is
        ``needed`` (else None); ``U, V (*batch, n, k)``, ``diag_weight`` ``(*batch, n)`` or None."""
        wanted = [t for t, need in zip(self.tensors, needed) if need]
        if not wanted:
            return [None] * len(self.tensors)
        leaves = {id(t): t.detach().requires_grad_(True) for t in wanted}
        with torch.enable_grad():
            base = self.base._map(lambda t: leaves.get(id(t), t.detach()))
            U, V = U.to(self.dtype), V.to(self.dtype)
            value = _bilinear(base, U, V).sum()
            if diag_weight is not None:
                value = value + _diag_form(base, diag_weight.to(self.dtype)).sum()
            grads = torch.autograd.grad(value, [leaves[id(t)] for t in wanted], allow_unused=True)
        it = iter(grads)
        out = []
        for t, need in zip(self.tensors, needed):
            g = next(it) if need else None
            out.append(None if g is None else g.sum_to_size(t.shape))
        return out

    def bilinear_grads_blocks(self, pairs, needed, diag_weight=None) -> list:
        """:meth:`bilinear_grads` of ``Σ_b Σ_j u_{bj}ᵀ B(θ) v_{bj}`` over an iterable of blocks ``(U_b, V_b)``
        (each ``(*batch, n, k_b)``), grouped into blocks of at most ``_columns_per_block(n)`` columns and
        differentiated one group at a time as the blocks arrive, so the graph of ``B``'s product holds
        ``O(n · block)`` numbers and no more than one group of columns is held; a group of one block is used as it
        is (no concatenated copy). The gradients are summed."""
        width = _columns_per_block(self.shape[-1], torch.finfo(self.dtype).bits // 8)
        total, cur, state = [None] * len(self.tensors), [], {"first": True, "cols": 0}

        def flush():
            U = cur[0][0] if len(cur) == 1 else torch.cat([u for u, _ in cur], -1)
            V = cur[0][1] if len(cur) == 1 else torch.cat([v for _, v in cur], -1)
            cur.clear()
            state["cols"] = 0
            grads = self.bilinear_grads(U, V, needed, diag_weight if state["first"] else None)
            state["first"] = False
            del U, V
            for i, g in enumerate(grads):
                total[i] = g if total[i] is None else (total[i] if g is None else total[i] + g)

        for u, v in pairs:
            batch_n = broadcast_shapes(u.shape[:-1], v.shape[:-1])
            for s, e in _column_blocks(u.shape[-1], width):
                if cur and state["cols"] + (e - s) > width:
                    flush()
                cur.append((u[..., s:e].expand(*batch_n, e - s), v[..., s:e].expand(*batch_n, e - s)))
                state["cols"] += e - s
                if state["cols"] >= width:
                    flush()
            del u, v
        if cur or state["first"]:
            if not cur:
                z = torch.zeros(*self.shape[:-1], 0, dtype=self.dtype, device=self.device)
                cur.append((z, z))
            flush()
        return total
