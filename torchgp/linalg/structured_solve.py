r"""Iterative solves and log-determinants of structured operators through their own fast products.

For ``A = B + diag(d)`` with ``B`` an operator whose ``matmul`` is cheap and differentiable (interpolated
``W K_UU Wᵀ`` with Toeplitz or Kronecker-Toeplitz ``K_UU``, a bare Toeplitz or Kronecker-Toeplitz matrix),
preconditioned CG on ``[r, z₁..z_t]`` gives ``α = A⁻¹r`` and the Lanczos matrices of the probes, so
``log|A| ≈ log|P| + (1/t) Σ_i ‖z_i‖²_{P⁻¹} e₁ᵀ log(T_i) e₁`` (Gardner et al. 2018, §4, stochastic Lanczos
quadrature), every product at the operator's own cost (``O(n + m log m)`` for SKI).

Backward (R&W 2006, eq. 5.9 before the ½ and the sign), with upstream gradients ``g_q``, ``g_l``:

.. math::
    \partial_\theta\big[g_q\, r^\top A^{-1} r + g_l \log|A|\big]
      = -g_q\, \alpha^\top (\partial_\theta B)\, \alpha
        + \frac{g_l}{t} \sum_i (A^{-1} z_i)^\top (\partial_\theta B)\, (P^{-1} z_i),

Hutchinson's estimator with ``E[z zᵀ] = P`` (Gardner et al. 2018, §4.1), here with the preconditioner as a
control variate: ``P⁻¹ = D⁻¹ − Ŵ Ŵᵀ`` (Woodbury), so ``tr(P⁻¹∂B) = Σ_i D_i⁻¹ ∂B_ii − Σ_j ŵ_jᵀ ∂B ŵ_j`` is
exact and only the remainder is estimated,

.. math::
    \operatorname{tr}(A^{-1}\partial B) \approx \operatorname{tr}(P^{-1}\partial B)
      + \frac1t \sum_i (A^{-1}z_i - P^{-1}z_i)^\top \partial B\, (P^{-1}z_i),

unbiased as ``E[(P⁻¹z)(P⁻¹z)ᵀ] = P⁻¹``, and exact when ``P = A`` (a preconditioner that captures ``B``); when
``P`` is far from ``A`` the control variate is faded out (``_control_weight``).
All terms are bilinear forms ``Σ_j u_jᵀ B(θ) v_j`` (plus ``Σ_i D_i⁻¹ B_ii``), differentiated by autograd
through ``B``'s matmul and diagonal (FFT and sparse interpolation), so the grid matrix is never formed.
The noise ``d`` gets ``-g_q α² + g_l [diag(P⁻¹) + (1/t) Σ_i (A⁻¹z_i − P⁻¹z_i) ∘ (P⁻¹z_i)]``.

The preconditioner is ``P = L Lᵀ + diag(d)`` with ``L`` a rank-``k`` pivoted Cholesky factor of ``B`` built
from ``k`` columns ``B e_p`` (Harbrecht et al. 2012; Gardner et al. 2018, §4.2).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from torchgp import settings
from torchgp.linalg.cg import pcg
from torchgp.linalg.interpolated import InterpolatedOperator
from torchgp.linalg.iterative import _diag_grad, _IterativeSolve
from torchgp.linalg.lanczos import lanczos_quadrature, lanczos_tridiag_from_cg, probe_generator
from torchgp.linalg.operators import (
    AddedDiagOperator,
    ConstantMulOperator,
    KroneckerProductOperator,
    Operator,
    SumOperator,
)
from torchgp.linalg.pivoted_cholesky import PivotedCholeskyPreconditioner
from torchgp.linalg.skip import LowRankCoreOperator
from torchgp.linalg.solvers import Factor
from torchgp.linalg.toeplitz import ToeplitzOperator

__all__ = ["is_structured", "structured_factor", "StructuredFactor", "structured_pivoted_cholesky"]

# Largest rank of the pivoted-Cholesky preconditioner (also capped by settings.max_preconditioner_size): each
# pivot costs one product with B (O(n + m log m) for SKI) and O(n k) for the update. The factorisation stops
# earlier once the residual trace is below settings.cg_tolerance times the smallest noise.
_PRECOND_RANK = 64


def is_structured(op) -> bool:
    """Whether ``op`` (or the base of ``op + diag(d)``) is an operator solved by its own fast products here."""
    base = op.base if isinstance(op, AddedDiagOperator) else op
    if isinstance(base, (InterpolatedOperator, ToeplitzOperator, LowRankCoreOperator)):
        return True
    if isinstance(base, (SumOperator, ConstantMulOperator)):  # additive SKI, a scaled SKI kernel
        parts = base.operators if isinstance(base, SumOperator) else [base.base]
        return all(is_structured(p) for p in parts)
    return isinstance(base, KroneckerProductOperator) and all(isinstance(f, ToeplitzOperator) for f in base.factors)


def _constant_diag(d: torch.Tensor) -> bool:
    """Whether the diagonal ``d (*batch, n)`` is one value per batch member, known from its shape or strides."""
    return d.dim() == 0 or d.shape[-1] == 1 or d.stride(-1) == 0


def structured_factor(op) -> Factor | None:
    """The factorisation :func:`torchgp.linalg.solvers.factorize` should use for a structured ``op``, else None.

    * ``⊗ A_i + σ² I`` (a Kronecker product plus a constant diagonal, e.g. :class:`~torchgp.kernels.GridKernel`
      with a Gaussian likelihood): the exact per-factor eigendecomposition of
      :class:`~torchgp.linalg.KroneckerProductAddedDiag`, whatever ``n``;
    * interpolated, Toeplitz or Kronecker-Toeplitz operators (plus a diagonal) above
      ``settings.max_cholesky_size``: :class:`StructuredFactor` (CG through their fast products); below it
      Cholesky on the dense matrix is exact and cheap, so None is returned.
    """
    if not isinstance(op, Operator):
        return None
    if (
        isinstance(op, AddedDiagOperator)
        and getattr(op, "diag_factors", None) is None
        and isinstance(op.base, KroneckerProductOperator)
        and all(f.shape[-1] == f.shape[-2] for f in op.base.factors)
        and _constant_diag(op.diag)
    ):
        from torchgp.linalg.operators import KroneckerProductAddedDiag
        from torchgp.linalg.solvers import factorize

        return factorize(KroneckerProductAddedDiag(op.base, op.diag[..., :1] if op.diag.dim() else op.diag))
    if is_structured(op) and op.shape[-1] > settings.max_cholesky_size.value():
        return StructuredFactor(op)
    return None


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
    m, batch = column.shape[-1], torch.broadcast_shapes(w.shape[:-1], column.shape[:-1])
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
            batch_n = torch.broadcast_shapes(u.shape[:-1], v.shape[:-1])
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


def _control_weight(AinvZ: torch.Tensor, PinvZ: torch.Tensor) -> torch.Tensor:
    """Weight ``c ∈ [0, 1]`` of the control variate, ``(*batch, 1, 1)``: 1 when ``P⁻¹z`` is within 1 % of ``A⁻¹z``,
    faded to 0 (plain Hutchinson) at 5 %, where a poor ``P`` would add variance instead of removing it (measured:
    a diagonal ``P`` on SKI gave 50× the gradient's size in error with ``c = 1``, 10 % with ``c = 0``).
    The norms are accumulated over column blocks, in float64."""
    diff2 = AinvZ.new_zeros(AinvZ.shape[:-2], dtype=torch.float64)
    norm2 = diff2.clone()
    for s, e in _column_blocks(AinvZ.shape[-1], _columns_per_block(AinvZ.shape[-2], AinvZ.element_size())):
        a = AinvZ[..., s:e].to(torch.float64)
        diff2 = diff2 + (a - PinvZ[..., s:e].to(torch.float64)).square().sum((-2, -1))
        norm2 = norm2 + a.square().sum((-2, -1))
    rho = (diff2 / norm2.clamp_min(torch.finfo(torch.float64).tiny)).sqrt()
    return ((0.05 - rho) / 0.04).clamp(0, 1)[..., None, None]


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


class _StructuredInvQuadLogdet(torch.autograd.Function):
    """``(holder, want_logdet, rhs (*b, n, k), diag, *tensors) → (Σ_k r_kᵀA⁻¹r_k (*b), log|A| (*b))``.

    The right-hand sides and the probes are solved in column blocks (``_columns_per_block``), each probe block
    drawn, solved and reduced to its Lanczos quadrature before the next; ``A⁻¹z`` and ``P⁻¹z`` are kept for the
    backward in the operator's dtype.
    """

    @staticmethod
    def forward(ctx, holder: _Holder, want_logdet: bool, rhs, diag, *tensors):
        n = holder.shape[-1]
        batch = torch.broadcast_shapes(holder.shape[:-2], rhs.shape[:-2])
        k = rhs.shape[-1]
        t = int(settings.num_trace_samples.value()) if want_logdet else 0
        precond = holder.preconditioner(sampling=t > 0)
        dtype, keep = holder.solve_dtype, holder.dtype
        width = _columns_per_block(n, torch.finfo(dtype).bits // 8)
        mm = holder.matmul_fn()
        R = rhs.detach().to(dtype).expand(*batch, n, k)
        # the saved solves are written block by block into tensors allocated once (no list of blocks + copy)
        alpha = R.new_empty(*batch, n, k, dtype=keep)
        inv_quad = R.new_zeros(batch)
        for s, e in _column_blocks(k, width):
            X, _ = pcg(mm, R[..., s:e], precond.solve)
            inv_quad = inv_quad + (R[..., s:e] * X).sum((-2, -1))
            alpha[..., s:e] = X
            del X
        AinvZ = R.new_empty(*batch, n, t, dtype=keep)
        PinvZ = R.new_empty(*batch, n, t, dtype=keep)
        if t:
            gen, quads = probe_generator(), []
            for s, e in _column_blocks(t, width):
                Z = precond.sample(e - s, gen).to(dtype).expand(*batch, n, e - s)
                X, info = pcg(mm, Z, precond.solve, record=True)
                T = lanczos_tridiag_from_cg(info)
                quads.append(lanczos_quadrature(T, info.rz0))  # ‖z‖²_{P⁻¹} e₁ᵀ log(T) e₁ per probe
                AinvZ[..., s:e] = X
                del X, info, T
                PinvZ[..., s:e] = precond.solve(Z)
                del Z
            logdet = precond.logdet().to(dtype).expand(batch) + torch.cat(quads, -1).mean(-1)
            precond.forget_factor()  # the probes are drawn: the backward needs only W and D (n × k numbers freed)
        else:
            logdet = R.new_zeros(batch)
        ctx.holder, ctx.t, ctx.rhs_shape, ctx.rhs_dtype = holder, t, rhs.shape, rhs.dtype
        ctx.save_for_backward(alpha, AinvZ, PinvZ)
        return inv_quad.to(rhs.dtype), logdet.to(rhs.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_quad, g_logdet):
        alpha, AinvZ, PinvZ = ctx.saved_tensors
        holder, t = ctx.holder, ctx.t
        dtype = holder.dtype  # the gradient is that of the operator's own products: in its dtype
        alpha = alpha.to(dtype)
        g_q = g_quad.to(dtype)[..., None, None]
        g_d = [-(g_q * alpha.square()).sum(-1)]
        diag_weight, blocks = None, [[(-g_q * alpha, alpha)]]  # bilinear forms Σ_j u_jᵀ ∂B v_j as (U, V) blocks
        if t:
            precond = holder.preconditioner()
            g_l = g_logdet.to(dtype)[..., None, None]
            What = precond.W.to(dtype)
            c = _control_weight(AinvZ, PinvZ).to(dtype)
            diag_weight = (c * g_l)[..., 0] * precond.D_inv.to(dtype)  # tr(D⁻¹ ∂B) = Σ_i D_i⁻¹ ∂B_ii
            g_d.append(g_l[..., 0] * c[..., 0] * precond.inv_diagonal().to(dtype))
            blocks.append([(-(c * g_l) * What, What)])

            def probe_pairs():  # the Hutchinson remainder, one column block at a time (never all t at once)
                for s, e in _column_blocks(t, _columns_per_block(alpha.shape[-2], alpha.element_size())):
                    Pz = PinvZ[..., s:e].to(dtype)
                    resid = Pz * -c  # g_l (A⁻¹z − c P⁻¹z) / t, built in place
                    resid.add_(AinvZ[..., s:e].to(dtype)).mul_(g_l / t)
                    g_d.append((resid * Pz).sum(-1))
                    yield resid, Pz
                    del resid, Pz

            blocks.append(probe_pairs())
        grads = holder.bilinear_grads_blocks(
            (pair for block in blocks for pair in block), ctx.needs_input_grad[4:], diag_weight
        )
        grad_rhs = (2 * g_q * alpha).to(ctx.rhs_dtype).sum_to_size(ctx.rhs_shape) if ctx.needs_input_grad[2] else None
        grad_diag = _diag_grad(holder.diag, sum(g_d), ctx.needs_input_grad[3])
        return (None, None, grad_rhs, grad_diag, *grads)


class StructuredFactor(Factor):
    """``A = B + diag(d)`` solved by preconditioned CG with ``B``'s own products (see the module docstring).

    ``solve`` runs to ``settings.eval_cg_tolerance``; ``inv_quad_logdet`` to ``settings.cg_tolerance`` with
    ``settings.num_trace_samples`` probes (deterministic with ``settings.deterministic_probes``).
    """

    kind = "iterative"

    def __init__(self, op: Operator):
        super().__init__(op)
        self.holder = _Holder(op)

    def solve(self, rhs):
        h = self.holder
        out = _IterativeSolve.apply(h, rhs, h.diag, *h.tensors)  # CG through B's products, backward by CG
        h.preconditioner().forget_factor()  # solves use only W and D
        return out

    def inv_quad_logdet(self, rhs=None, logdet=True, reduce=True):
        if not reduce and rhs is not None:
            return super().inv_quad_logdet(rhs, logdet, reduce)
        h, n = self.holder, self.shape[-1]
        rhs_m = (
            torch.zeros(*self.op.batch_shape, n, 1, dtype=self.op.dtype, device=self.op.device) if rhs is None else rhs
        )
        quad, ld = _StructuredInvQuadLogdet.apply(h, bool(logdet), rhs_m, h.diag, *h.tensors)
        return quad, (ld if logdet else None)

    def logdet(self):
        return self.inv_quad_logdet(None, logdet=True)[1]
