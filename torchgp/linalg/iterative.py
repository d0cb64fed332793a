r"""The iterative path of the marginal likelihood: PCG + stochastic Lanczos quadrature, blockwise backward.

Forward (Gardner et al. 2018, §4, "mBCG"): one batched preconditioned CG on ``[r, z₁..z_t]`` gives
``α = K⁻¹r`` (so ``rᵀK⁻¹r``), ``K⁻¹z_i`` and the Lanczos matrices of the probes, from which
``log|K| = log|P| + tr log(P^{-1/2} K P^{-1/2})`` is estimated (see :mod:`torchgp.linalg.lanczos`).

Backward (R&W 2006, eq. 5.9 before the ½ and the sign): with upstream gradients ``g_q``, ``g_l``,

.. math::
    \frac{\partial}{\partial\theta}\big[g_q\, r^\top K^{-1} r + g_l \log|K|\big]
      = -g_q\, \alpha^\top \frac{\partial K}{\partial\theta} \alpha + g_l \operatorname{tr}\Big(K^{-1}\frac{\partial K}{\partial\theta}\Big).

The trace is Hutchinson's estimator with the probes ``z`` (``E[zzᵀ] = P``) already solved in the
forward, ``E[(K⁻¹z)ᵀ ∂K (P⁻¹z)] = tr(K⁻¹ ∂K P⁻¹ P) = tr(K⁻¹∂K)`` (Gardner et al. 2018, §4.1), with
the preconditioner as a control variate: by Woodbury ``P⁻¹ = D⁻¹ - W Wᵀ``, so
``tr(P⁻¹∂K) = Σ_i D_i⁻¹ ∂K_ii - Σ_j w_jᵀ ∂K w_j`` is computed exactly and

.. math::
    \operatorname{tr}(K^{-1}\partial K) \approx c\,\operatorname{tr}(P^{-1}\partial K)
      + \frac1t \sum_i (K^{-1}z_i - c\,P^{-1}z_i)^\top\, \partial K\, (P^{-1}z_i),

unbiased for any fixed ``c`` since ``E[(P⁻¹z)(P⁻¹z)ᵀ] = P⁻¹``. When ``P ≈ K`` (a rank-k factor that
captures the spectrum) ``c ≈ 1`` removes nearly all the Hutchinson variance (measured: 14 % → < 0.1 %
gradient error at n = 3000, t = 32); when ``P`` is poor the weight is faded to 0 (plain
Hutchinson), since ``c = 1`` was measured to increase the error there (see ``_control_coefficient``).
The control variate uses the rank-``k_c`` leading part ``P_c`` of ``P`` (``k_c ≤ 256``, the first
``k_c`` columns of ``W``), so its ``O(n² k_c)`` backward cost does not grow with the adaptive rank of
``P``; the estimator stays unbiased for any fixed ``A = P_c⁻¹`` as ``E[(A z)(P⁻¹z)ᵀ] = A``.
Warm starts (Lin et al. 2024; :mod:`torchgp.linalg.warm_start`, ``settings.cg_warm_start``): a later call on
the same training inputs starts CG on ``[r, z]`` from the previous call's solutions, and runs cold copies
of the probes in the same lockstep CG to a looser tolerance only for the Lanczos matrices (``_warm_pcg``).
The probe columns stop at ``settings.cg_probe_tolerance`` (default ``min(100 · cg_tolerance, 1e-2)``), the data
columns at ``settings.cg_tolerance``: the trace estimate's Hutchinson noise is far above the CG error of a probe
solved to 1e-2 (measured, see the setting), and finished columns cost no kernel products (:func:`pcg`).
Under ``settings.skip_logdet_forward`` the log-determinant's value is not computed (zeros are returned, its gradient
is the same trace estimate): the probes are solved only for the backward, no Lanczos matrices are recorded, and a
warm-started call runs only the warm ``[r, z]`` columns.

All terms are bilinear forms ``Σ_j u_jᵀ (∂K/∂θ) v_j``, differentiated block by block
(:func:`torchgp.linalg.blockwise.operator_bilinear_grads`); the noise diagonal ``d`` of
``K + diag(d)`` gets ``-g_q α² + g_l diag(K⁻¹)`` with ``diag(K⁻¹)`` estimated the same way.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg import warm_start
from torchgp.linalg.blockwise import operator_bilinear_grads
from torchgp.linalg.cg import pcg
from torchgp.linalg.iterative_system import _diag_grad, _System, preconditioner_rank  # noqa: F401  (re-exported)
from torchgp.linalg.lanczos import lanczos_quadrature, lanczos_tridiag_from_cg, probe_generator
from torchgp.linalg.operators import KernelOperator, Operator

__all__ = ["iterative_inv_quad_logdet", "iterative_solve"]

# Rank of the control variate in the trace estimate (see _IterativeInvQuadLogdet.backward): about the former fixed
# preconditioner rank (200), at which it took the n = 3000 gradient error from 14 % to < 0.1 %. Its backward cost is
# O(n² · rank), so it does not follow the preconditioner's rank (1790 at n = 10⁵ would be ~50 CG iterations' worth).
_CONTROL_RANK = 256


def _row_blocks(W: torch.Tensor, rows: int = 8192):
    """``(slice, W[..., slice, :])`` over blocks of ``rows`` rows of ``W (*batch, n, k)``."""
    n = W.shape[-2]
    for i in range(0, n, rows):
        s = slice(i, min(i + rows, n))
        yield s, W[..., s, :]


def _control_coefficient(KinvZ: torch.Tensor, PinvZ: torch.Tensor, AZ: torch.Tensor) -> torch.Tensor:
    """Weight ``c ∈ [0, 1]`` of the control variate ``tr(A∂K)`` (``A ≈ K⁻¹``, ``AZ = A Z``), ``(*batch, 1, 1)``.

    The variance-optimal weight ``Cov(a, b) / Var(b)`` for the per-probe estimates
    ``a_i = (K⁻¹z_i)ᵀ(P⁻¹z_i)`` of ``tr(K⁻¹)`` and ``b_i = (A z_i)ᵀ(P⁻¹z_i)`` of ``tr(A)`` (the noise
    direction, where it costs O(n t)); it is used for every parameter. ``c → 1`` as ``A → K⁻¹``.
    """
    t = KinvZ.shape[-1]
    if t < 2:
        return KinvZ.new_zeros(*KinvZ.shape[:-2], 1, 1)
    a = (KinvZ * PinvZ).sum(-2)
    b = (AZ * PinvZ).sum(-2)
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    var_b = b.square().sum(-1)
    c = torch.where(var_b > 0, (a * b).sum(-1) / var_b.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(var_b))
    # The noise direction is a poor proxy for the others when P is far from K: measured at
    # ρ = ‖K⁻¹Z - AZ‖/‖K⁻¹Z‖ = 0.16 the control variate raised the lengthscale-gradient error from
    # 3 % to 35 %, at ρ = 0.002 it lowered it from 14 % to 0.03 %. So it is faded out between ρ = 0.01 and 0.05.
    rho = (KinvZ - AZ).norm(dim=(-2, -1)) / KinvZ.norm(dim=(-2, -1)).clamp_min(torch.finfo(b.dtype).tiny)
    fade = ((0.05 - rho) / 0.04).clamp(0, 1)
    return (c.clamp(0, 1) * fade)[..., None, None]


# The probes' default tolerance relative to cg_tolerance, and its cap (settings.cg_probe_tolerance).
_PROBE_TOL_FACTOR, _PROBE_TOL_CAP = 100.0, 1e-2


def probe_tolerance() -> float:
    """The relative residual the probe columns stop at: ``settings.cg_probe_tolerance``, never tighter than
    ``settings.cg_tolerance`` (``None``: ``min(100 · cg_tolerance, 1e-2)``, but at least ``cg_tolerance``)."""
    tol = float(settings.cg_tolerance.value())
    probe = settings.cg_probe_tolerance.value()
    if probe is None:
        probe = min(_PROBE_TOL_FACTOR * tol, _PROBE_TOL_CAP)
    return max(tol, float(probe))


def _column_tolerances(k: int, t: int, like: torch.Tensor) -> torch.Tensor | float:
    """Per-column tolerances of ``[r (k columns), z (t columns)]``: ``cg_tolerance`` then :func:`probe_tolerance`."""
    tol, probe = float(settings.cg_tolerance.value()), probe_tolerance()
    if t == 0 or probe == tol:
        return tol
    return torch.cat([like.new_full((k,), tol), like.new_full((t,), probe)])


def _warm_pcg(system: _System, B: torch.Tensor, X0: torch.Tensor, Z: torch.Tensor, precond, k: int):
    """PCG on ``B = [r, z]`` from ``X0`` and, in the same lockstep run, cold on the probes ``Z`` for SLQ.

    Lanczos quadrature needs CG started from zero (its matrices are those of the start vector), so the
    ``t`` probes run twice: warm to the solve tolerance (for ``K⁻¹z`` in the gradient) and cold to
    ``√tol``, only for their Lanczos matrices. Gauss quadrature with ``m`` nodes is exact for polynomials
    of degree ``2m - 1`` (Golub & Meurant 2010, ch. 6), so its error falls about as the square of
    CG's: at ``√tol`` it is as accurate as the solve. The two groups share every kernel pass.

    Returns:
        ``X (*batch, n, k + 2t)`` and the :class:`~torchgp.linalg.cg.CGInfo` (recorded when ``Z`` has columns).
    """
    tol = float(settings.cg_tolerance.value())
    t = Z.shape[-1]
    warm_tols = _column_tolerances(k, B.shape[-1] - k, B)
    if t == 0:
        return pcg(system.matmul_fn(), B, precond.solve, tol=warm_tols, x0=X0)
    cols = B.shape[-1]
    warm_tols = torch.as_tensor(warm_tols, dtype=B.dtype, device=B.device).expand(cols)
    cold = max(math.sqrt(tol), probe_tolerance())
    tols = torch.cat([warm_tols, B.new_full((t,), cold)])
    return pcg(
        system.matmul_fn(),
        torch.cat([B, Z], -1),
        precond.solve,
        tol=tols,
        record=True,
        x0=torch.cat([X0, torch.zeros_like(Z)], -1),
    )


class _IterativeInvQuadLogdet(torch.autograd.Function):
    """``(system, rhs (*b,n,k), diag, *inputs) → (Σ_k r_kᵀK⁻¹r_k (*b), log|K| (*b))``."""

    @staticmethod
    def forward(ctx, system: _System, want_logdet: bool, logdet_value: bool, rhs, diag, *inputs):
        dtype, n = system.dtype, system.shape[-1]
        batch = broadcast_shapes(system.shape[:-2], rhs.shape[:-2])
        k = rhs.shape[-1]
        t = int(settings.num_trace_samples.value()) if want_logdet else 0
        key = warm_start.system_key(system.base, k, t, batch, dtype)
        X0, pivots = warm_start.cache.get(key, k)
        precond = system.preconditioner(pivots)
        rhs_w = rhs.detach().to(dtype).expand(*batch, n, k)
        Z = precond.sample(t, probe_generator()).to(dtype).expand(*batch, n, t) if t else rhs_w[..., :0]
        precond.forget_factor()  # L is public only for the probes; solves and the backward's W_c use it through R
        B = torch.cat([rhs_w, Z], -1)
        # Without the log-determinant's value (settings.skip_logdet_forward) the probes need only their solves
        # K⁻¹z for the backward's trace estimate: no Lanczos matrices, and a warm start runs no cold copies.
        quadrature = want_logdet and logdet_value
        if X0 is None:
            # One batched PCG on [r, z₁..z_t] (Gardner et al. 2018, Alg. 2 / eq. (6)).
            tols = _column_tolerances(k, t, B)  # the probes may stop earlier (settings.cg_probe_tolerance)
            X, info = pcg(system.matmul_fn(), B, precond.solve, tol=tols, record=quadrature)
            lanczos = k  # the probes' Lanczos matrices are those of columns k..k+t
        else:
            X, info = _warm_pcg(system, B, X0, Z if quadrature else Z[..., :0], precond, k)
            lanczos = k + t  # the cold copies of the probes come last
        X = X[..., : k + t]
        warm_start.cache.put(key, X, precond.pivots)
        alpha, KinvZ = X[..., :k], X[..., k:]
        inv_quad = (rhs_w * alpha).sum((-2, -1))
        if quadrature:
            T = lanczos_tridiag_from_cg(info)[..., lanczos:, :, :]
            quad = lanczos_quadrature(T, info.rz0[..., lanczos:])  # ‖P^{-1/2}z‖² e₁ᵀ log(T) e₁ per probe
            logdet = precond.logdet().to(dtype).expand(batch) + quad.mean(-1)
        else:
            logdet = torch.zeros(batch, dtype=dtype, device=rhs.device)
        ctx.system, ctx.precond, ctx.t = system, precond, t
        ctx.pieces = None  # (P⁻¹Z, W_c, D⁻¹, full rank): formed by the first backward, kept for a retained graph
        ctx.save_for_backward(alpha, KinvZ, Z)
        ctx.rhs_shape = rhs.shape
        return inv_quad.to(rhs.dtype), logdet.to(rhs.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_quad, g_logdet):
        alpha, KinvZ, Z = ctx.saved_tensors
        system, t = ctx.system, ctx.t
        dtype = alpha.dtype
        g_q = g_quad.to(dtype)[..., None, None]
        g_l = g_logdet.to(dtype)[..., None, None] if t else None
        need_rhs, need_diag = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        need_inputs = ctx.needs_input_grad[5:]
        wanted = [x for x, need in zip(system.inputs, need_inputs) if need]
        # The bilinear forms are evaluated in the kernel's dtype (kernel_bilinear_grads casts to it), so they are
        # formed in it: at n = 10⁵ the n × (1 + t + 256) factors are 231 MB each in float64, half in float32.
        bdtype = system.base.dtype if isinstance(system.base, KernelOperator) else dtype
        k = alpha.shape[-1]

        grad_rhs = (2 * g_q * alpha).sum_to_size(ctx.rhs_shape) if need_rhs else None  # ∂ rᵀK⁻¹r/∂r = 2α
        g_d = -(g_q * alpha.square()).sum(-1)  # ∂/∂d of -g_q αᵀ diag(∂d) α
        diag_weight = None
        Vc = None  # the factor V of the stacked bilinear form Σ_j u_jᵀ ∂K v_j, allocated once at its full width
        if g_l is not None:
            if ctx.pieces is None:
                precond = ctx.precond
                PinvZ = precond.solve(Z)
                # Control variate A = P_c⁻¹, the inverse of the rank-k_c leading part of the preconditioner:
                # its Woodbury factor is exactly the first k_c columns of W (R is lower triangular), and any fixed
                # A keeps the estimator unbiased, E[(A z)(P⁻¹z)ᵀ] = A P P⁻¹ = A. tr(A ∂K) costs a bilinear form
                # of rank k_c in the backward (O(n² k_c)), so k_c is capped (_CONTROL_RANK) however large P is.
                kc = min(_CONTROL_RANK, precond.rank)
                shape = broadcast_shapes(alpha.shape[:-1], Z.shape[:-1])
                Wc_p = None
                if wanted and precond.D_inv.dtype == bdtype and precond.D_inv.shape[:-1] == shape[:-1]:
                    # written straight into V's control columns: no separate n × k_c copy (sharded: gathered)
                    Vc = torch.empty(*shape, k + t + kc, dtype=bdtype, device=alpha.device)
                    # release: the factor is freed before the columns are gathered (sharded), so the n/p × rank
                    # array and the n × k_c one are never held together
                    Wc_p = precond.leading_factor(kc, out=Vc[..., k + t :], release=True)
                if Wc_p is None:
                    Wc_p = precond.leading_factor(kc, release=True)  # all n rows (assembled when sharded), P's dtype
                ctx.pieces = (PinvZ, Wc_p, precond.D_inv, Wc_p.shape[-1] == precond.rank)
                ctx.precond = None  # the preconditioner's n × rank factor is not needed again: free it now
                del precond
            PinvZ, Wc_p, D_inv, full_rank = ctx.pieces
            # A Z and diag(A) in the solve dtype, by blocks of rows: no whole n × k_c copy of W_c in it
            # (102 MB at n = 5·10⁴ in float64, plus its square).
            if full_rank:
                AZ = PinvZ
            else:
                WtZ = sum(w.to(dtype).mT @ Z[..., rows, :] for rows, w in _row_blocks(Wc_p))
                AZ = D_inv.to(dtype).unsqueeze(-1) * Z
                for rows, w in _row_blocks(Wc_p):
                    AZ[..., rows, :] -= w.to(dtype) @ WtZ
                del WtZ
            c = _control_coefficient(KinvZ, PinvZ, AZ)  # (*batch, 1, 1)
            # tr(K⁻¹∂K) ≈ c tr(A∂K) + (1/t) Σ (K⁻¹z - c A z)ᵀ ∂K (P⁻¹z), with
            # tr(A∂K) = Σ_i D_i⁻¹ ∂K_ii - Σ_j w_jᵀ ∂K w_j exactly (module docstring).
            delta = KinvZ - c * AZ
            del AZ
            diag_A = D_inv.to(dtype) - torch.cat([w.to(dtype).square().sum(-1) for _, w in _row_blocks(Wc_p)], -1)
            use_control = bool((c != 0).any())  # else the rank-k_c columns would only add zeros (and cost)
            if use_control:
                diag_weight = (g_l * c)[..., 0] * D_inv.to(dtype)
            # diag(K⁻¹) ≈ c diag(A) + (1/t) Σ (K⁻¹z - c A z) ⊙ P⁻¹z
            g_d = g_d + g_l[..., 0] * (c[..., 0] * diag_A + (delta * PinvZ).sum(-1) / t)
        grad_diag = _diag_grad(system.diag, g_d, need_diag)

        grads = iter([])
        if wanted:
            # U = [-g_q α | g_l δ / t | -g_l c W_c], V = [α | P⁻¹Z | W_c], filled column slice by slice (no concatenated
            # copies, no scaled copy of W_c).
            if g_l is None:
                Uc, Vc = (-g_q * alpha).to(bdtype), alpha.to(bdtype)
            else:
                kc = Wc_p.shape[-1] if use_control else 0
                shape = broadcast_shapes(alpha.shape[:-1], delta.shape[:-1])
                if Vc is None or Vc.shape[:-1] != shape:
                    Vc = torch.empty(*shape, k + t + Wc_p.shape[-1], dtype=bdtype, device=alpha.device)
                if use_control and Vc[..., k + t :].data_ptr() != Wc_p.data_ptr():
                    Vc[..., k + t :].copy_(Wc_p)
                Vc[..., :k].copy_(alpha)
                Vc[..., k : k + t].copy_(PinvZ)
                Vc = Vc[..., : k + t + kc]
                Uc = torch.empty_like(Vc)
                Uc[..., :k].copy_(-g_q * alpha)
                Uc[..., k : k + t].copy_(g_l * delta / t)
                del delta
                if use_control:
                    Uc[..., k + t :].copy_(Vc[..., k + t :]).mul_(-(g_l * c).to(bdtype))
            grads = iter(operator_bilinear_grads(system.base, wanted, Uc, Vc, diag_weight))
            del Uc, Vc
        rest = [next(grads) if need else None for need in need_inputs]
        return (None, None, None, grad_rhs, grad_diag, *rest)


def _check(op: Operator, rhs: torch.Tensor, name: str):
    n = op.shape[-1]
    if op.shape[-2] != n:
        raise ShapeError(f"{name} needs a square covariance; got shape {tuple(op.shape)}.")
    if rhs.dim() < 2 or rhs.shape[-2] != n:
        raise ShapeError(
            f"{name}: rhs must have shape (*batch, {n}, k) to match the {n}x{n} covariance; got {tuple(rhs.shape)}."
        )


def iterative_inv_quad_logdet(op: Operator, rhs: torch.Tensor, logdet: bool = True, logdet_value: bool = True):
    r"""``(Σ_k r_kᵀK⁻¹r_k, log|K|)`` by preconditioned CG and stochastic Lanczos quadrature.

    ``K`` is never held whole when it is a large :class:`~torchgp.linalg.operators.KernelOperator`
    (memory ``O(n · (block + t + rank))``). Gradients flow to ``rhs``, the noise diagonal of an
    :class:`~torchgp.linalg.operators.AddedDiagOperator`, and the kernel's parameters and inputs
    (or the tensor of a :class:`~torchgp.linalg.operators.DenseOperator`). Accuracy is governed by
    ``settings.cg_tolerance``, ``num_trace_samples``, ``max_preconditioner_size`` and
    ``max_lanczos_quadrature_iterations``; with ``settings.deterministic_probes`` (default) repeated
    calls give identical results, unless ``settings.cg_warm_start`` is on (then a call starts CG from the
    previous one's solutions and reuses its preconditioner pivots: the same answer to the CG tolerance).

    Args:
        op: ``(*batch, n, n)``: ``AddedDiagOperator(KernelOperator | DenseOperator, d)``, a
            ``KernelOperator`` or a ``DenseOperator``; symmetric positive definite.
        rhs: ``(*batch, n, k)``.
        logdet: whether to estimate ``log|K|`` (else zeros are returned for it and no probes are used).
        logdet_value: with ``logdet``, whether its value is computed (stochastic Lanczos quadrature). False
            (``settings.skip_logdet_forward``): zeros are returned in its place, but its gradient, the trace
            estimate ``tr(K⁻¹ ∂K)``, flows as usual; the forward then skips the quadrature, and under
            ``settings.cg_warm_start`` CG runs only the warm-started columns.

    Returns:
        ``inv_quad (*batch)``, ``logdet (*batch)``.

    Raises:
        NotPSDError: CG found K indefinite.
        ConvergenceError: CG did not converge and ``settings.cg_nonconvergence`` is ``'raise'``.
    """
    _check(op, rhs, "iterative_inv_quad_logdet")
    system = _System(op)
    diag = system.diag
    return _IterativeInvQuadLogdet.apply(system, bool(logdet), bool(logdet_value), rhs, diag, *system.inputs)


class _IterativeSolve(torch.autograd.Function):
    """``(system, rhs (*b,n,k), diag, *inputs) → K⁻¹ rhs``; backward is another solve (K symmetric).

    ``system`` is a :class:`_System` or any object with its solve interface (see there).
    """

    @staticmethod
    def forward(ctx, system, rhs, diag, *inputs):
        precond = getattr(system, "solve_preconditioner", system.preconditioner)()
        batch = broadcast_shapes(system.shape[:-2], rhs.shape[:-2])
        B = rhs.detach().to(system.solve_dtype).expand(*batch, *rhs.shape[-2:])
        X, _ = pcg(system.matmul_fn(), B, precond.solve, tol=settings.eval_cg_tolerance.value())
        ctx.system, ctx.precond, ctx.rhs_shape, ctx.rhs_dtype = system, precond, rhs.shape, rhs.dtype
        ctx.save_for_backward(X)
        return X.to(rhs.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, G):
        (X,) = ctx.saved_tensors
        system = ctx.system
        # d(K⁻¹b) = K⁻¹ db - K⁻¹ dK K⁻¹ b: with Y = K⁻¹G, ∂/∂b = Y, ∂/∂K = -Y Xᵀ.
        G = G.to(X.dtype).expand(X.shape)
        Y, _ = pcg(system.matmul_fn(), G, ctx.precond.solve, tol=settings.eval_cg_tolerance.value())
        grad_rhs = Y.to(ctx.rhs_dtype).sum_to_size(ctx.rhs_shape) if ctx.needs_input_grad[1] else None
        grad_diag = _diag_grad(system.diag, -(Y * X).sum(-1), ctx.needs_input_grad[2])
        return (None, grad_rhs, grad_diag, *system.bilinear_grads(-Y, X, ctx.needs_input_grad[3:]))


def iterative_solve(op: Operator, rhs: torch.Tensor) -> torch.Tensor:
    """``K⁻¹ rhs`` by preconditioned CG to ``settings.eval_cg_tolerance``, differentiable.

    Args:
        op: ``(*batch, n, n)`` symmetric positive definite operator (as for :func:`iterative_inv_quad_logdet`).
        rhs: ``(*batch, n, k)`` or ``(*batch, n)``.

    Returns:
        Same shape as ``rhs`` (batch dimensions broadcast with ``op``'s).
    """
    vector = rhs.dim() == len(op.shape) - 1
    rhs_m = rhs.unsqueeze(-1) if vector else rhs
    _check(op, rhs_m, "iterative_solve")
    system = _System(op)
    out = _IterativeSolve.apply(system, rhs_m, system.diag, *system.inputs)
    return out.squeeze(-1) if vector else out
