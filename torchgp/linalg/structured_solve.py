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
from torchgp._shapes import broadcast_shapes
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
from torchgp.linalg.skip import LowRankCoreOperator
from torchgp.linalg.solvers import Factor
from torchgp.linalg.structured_system import (  # noqa: F401  (re-exported)
    _bilinear,
    _column_blocks,
    _columns_per_block,
    _diag_form,
    _Holder,
    structured_pivoted_cholesky,
)
from torchgp.linalg.toeplitz import ToeplitzOperator

__all__ = ["is_structured", "structured_factor", "StructuredFactor", "structured_pivoted_cholesky"]


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


class _StructuredInvQuadLogdet(torch.autograd.Function):
    """``(holder, want_logdet, rhs (*b, n, k), diag, *tensors) → (Σ_k r_kᵀA⁻¹r_k (*b), log|A| (*b))``.

    The right-hand sides and the probes are solved in column blocks (``_columns_per_block``), each probe block
    drawn, solved and reduced to its Lanczos quadrature before the next; ``A⁻¹z`` and ``P⁻¹z`` are kept for the
    backward in the operator's dtype.
    """

    @staticmethod
    def forward(ctx, holder: _Holder, want_logdet: bool, rhs, diag, *tensors):
        n = holder.shape[-1]
        batch = broadcast_shapes(holder.shape[:-2], rhs.shape[:-2])
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
