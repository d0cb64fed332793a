r"""Multi-shift MINRES and contour integral quadrature (CIQ) for ``K^{-1/2} b`` and ``K^{1/2} b``.

**msMINRES** (Pleiss et al. 2020, "Fast matrix square roots with applications to Gaussian processes and
Bayesian optimization", §3.2 and Alg. 1): the Krylov space ``span{b, Kb, K²b, …}`` is the same for every
shifted matrix ``K + σ_q I``, so one Lanczos recurrence

.. math:: K v_j = \beta_j v_{j-1} + \alpha_j v_j + \beta_{j+1} v_{j+1}

serves all shifts; each shift keeps only its own Givens rotations (the QR factorisation of
``T_{j+1,j} + σ_q Ĩ``) and search directions (Paige & Saunders 1975). One matrix product per iteration
solves all ``Q`` systems for all right-hand sides.

**CIQ** (Pleiss et al. 2020, eq. (5)–(6); Hale, Higham & Trefethen 2008, method 3): from

.. math:: K^{-1/2} = \frac{2}{\pi}\int_0^\infty (t^2 I + K)^{-1}\,dt

and the substitution ``t = √λ_min · sc(y | k')`` with ``k'² = 1 - λ_min/λ_max`` (so ``y ∈ [0, 𝒦(k'))``),
the midpoint rule with ``Q`` nodes ``y_q = (q - ½) 𝒦(k')/Q`` gives

.. math:: K^{-1/2} b \approx \sum_{q=1}^{Q} w_q\,(K + \sigma_q I)^{-1} b,\qquad
          \sigma_q = \lambda_{\min}\,\mathrm{sc}^2(y_q),\qquad
          w_q = \frac{2\sqrt{\lambda_{\min}}\,\mathcal K(k')}{\pi Q}\,\frac{\mathrm{dn}(y_q)}{\mathrm{cn}^2(y_q)},

whose error falls like ``exp(-2π² Q / (log(λ_max/λ_min) + 3))`` for every eigenvalue in
``[λ_min, λ_max]``. ``K^{1/2} b = K^{-1/2}(K b)``. The extreme eigenvalues come from a short Lanczos run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from torchgp import settings
from torchgp._shapes import broadcast_shapes
from torchgp.errors import ShapeError
from torchgp.linalg.lanczos import probe_generator

__all__ = [
    "minres",
    "lanczos_extreme_eigenvalues",
    "ciq_weights_and_shifts",
    "contour_integral_quad",
    "sqrt_matmul",
    "sqrt_inv_matmul",
    "ciq_mvn_samples",
]


def _tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny * 1e3


def minres(
    matmul_fn: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    shifts: torch.Tensor | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
) -> torch.Tensor:
    r"""Solve ``(K + σ_q I) X_q = B`` for every shift ``σ_q`` and every column of ``B`` at once (msMINRES).

    ``K`` must be symmetric; ``K + σ_q I`` may be indefinite but not singular. The columns and shifts stop
    together once every relative residual ``‖b - (K + σ_q I) x_q‖ / ‖b‖`` is below ``tol`` (tracked exactly by
    the recurrence, no extra product), or after ``max_iter`` iterations.

    Args:
        matmul_fn: ``V ↦ K V`` for ``V (*batch, n, k)``.
        rhs: ``B`` ``(*batch, n, k)``.
        shifts: ``(Q,)`` or ``(Q, *batch)``; default one shift of 0 (plain MINRES).
        tol: relative residual to reach (default ``settings.minres_tolerance``).
        max_iter: iteration cap (default ``settings.max_cg_iterations``; in floating point MINRES may need more
            than ``n`` iterations, since the Lanczos vectors lose orthogonality).

    Returns:
        ``X`` ``(Q, *batch, n, k)`` (``(*batch, n, k)`` when ``shifts`` is None).

    Shapes:
        ``rhs (*batch, n, k)``, ``shifts (Q, *batch)`` → ``(Q, *batch, n, k)``.
    """
    if rhs.dim() < 2:
        raise ShapeError(f"minres: rhs must have shape (*batch, n, k); got {tuple(rhs.shape)}.")
    squeeze = shifts is None
    if shifts is None:
        shifts = torch.zeros(1, dtype=rhs.dtype, device=rhs.device)
    shifts = torch.as_tensor(shifts, dtype=rhs.dtype, device=rhs.device)
    if shifts.dim() == 0:
        shifts = shifts.reshape(1)
    n = rhs.shape[-2]
    tol = settings.minres_tolerance.value() if tol is None else float(tol)
    if max_iter is None:
        max_iter = int(settings.max_cg_iterations.value())
    tiny = _tiny(rhs.dtype)
    if shifts.dim() == 1:  # the same shifts for every batch member
        shifts = shifts.reshape(-1, *([1] * (rhs.dim() - 2)))
    sig = shifts.reshape(*shifts.shape, 1, 1)  # (Q, *batch, 1, 1)

    # Lanczos start: v_1 = b / β_1 (Paige & Saunders 1975, §5)
    beta1 = rhs.norm(dim=-2, keepdim=True)  # (*batch, 1, k)
    v = rhs / beta1.clamp_min(tiny)
    v_prev = torch.zeros_like(v)
    beta = torch.zeros_like(beta1)  # β_j, the sub-diagonal entry coupling v_{j-1} and v_j
    lead = broadcast_shapes(sig.shape, beta1.unsqueeze(0).shape)
    X = torch.zeros(*lead[:-2], n, rhs.shape[-1], dtype=rhs.dtype, device=rhs.device)
    D_prev, D_prev2 = torch.zeros_like(X), torch.zeros_like(X)
    ones = torch.ones(lead, dtype=rhs.dtype, device=rhs.device)
    c_prev, c_prev2 = ones.clone(), ones.clone()
    s_prev, s_prev2 = torch.zeros_like(ones), torch.zeros_like(ones)
    phi_bar = beta1.unsqueeze(0) * ones  # residual norm of each (shift, column)
    scale = beta1.unsqueeze(0).clamp_min(tiny)

    for _ in range(max_iter):
        # one Lanczos step, shared by all shifts
        w = matmul_fn(v) - beta * v_prev
        alpha = (v * w).sum(-2, keepdim=True)
        w = w - alpha * v
        beta_next = w.norm(dim=-2, keepdim=True)
        # per shift: T_j + σ_q has diagonal α_j + σ_q; apply the two previous rotations to the new column
        a_s = alpha.unsqueeze(0) + sig
        eps_ = s_prev2 * beta
        delta_tilde = c_prev2 * beta
        delta = c_prev * delta_tilde + s_prev * a_s
        gamma_tilde = -s_prev * delta_tilde + c_prev * a_s
        # the new rotation eliminates β_{j+1}: [c s; -s c] [γ̃; β_{j+1}] = [γ; 0]
        gamma = torch.sqrt(gamma_tilde**2 + beta_next.unsqueeze(0) ** 2).clamp_min(tiny)
        c, s = gamma_tilde / gamma, beta_next.unsqueeze(0) / gamma
        tau = c * phi_bar
        phi_bar = -s * phi_bar
        # search direction d_j = (v_j - δ_j d_{j-1} - ε_j d_{j-2}) / γ_j and x_j = x_{j-1} + τ_j d_j
        D = (v.unsqueeze(0) - delta * D_prev - eps_ * D_prev2) / gamma
        X = X + tau * D
        D_prev2, D_prev = D_prev, D
        c_prev2, c_prev, s_prev2, s_prev = c_prev, c, s_prev, s
        if bool(((phi_bar.abs() / scale) <= tol).all()):
            break
        v_prev, v, beta = v, w / beta_next.clamp_min(tiny), beta_next
    return X[0] if squeeze else X


def lanczos_extreme_eigenvalues(
    matmul_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    batch_shape: torch.Size,
    dtype: torch.dtype,
    device=None,
    num_steps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimates of ``(λ_min, λ_max)`` ``(*batch)`` of a symmetric positive definite ``K`` by Lanczos.

    ``num_steps`` (default ``min(n, settings.max_lanczos_quadrature_iterations)``) Lanczos steps with full
    reorthogonalisation from a fixed-seed start vector (``settings.deterministic_probes``); the extreme Ritz
    values of the tridiagonal matrix bound the spectrum from inside. When fewer than ``n`` steps run, the
    smallest Ritz value may overestimate λ_min: it is halved, which costs CIQ little (its error depends on
    ``log(λ_max/λ_min)``) and keeps eigenvalues just below the estimate well integrated.
    """
    steps = min(n, int(settings.max_lanczos_quadrature_iterations.value()) if num_steps is None else num_steps)
    gen = probe_generator()
    v = torch.randn(*batch_shape, n, 1, generator=gen, dtype=dtype).to(device)
    v = v / v.norm(dim=-2, keepdim=True)
    basis = [v]
    alphas, betas = [], []
    v_prev, beta = torch.zeros_like(v), torch.zeros(*batch_shape, 1, 1, dtype=dtype, device=device)
    for j in range(steps):
        w = matmul_fn(v) - beta * v_prev
        alpha = (v * w).sum(-2, keepdim=True)
        w = w - alpha * v
        V = torch.cat(basis, -1)  # full reorthogonalisation (Golub & Van Loan 2013, §10.3.1)
        w = w - V @ (V.mT @ w)
        alphas.append(alpha)
        if j == steps - 1:
            break
        beta = w.norm(dim=-2, keepdim=True)
        betas.append(beta)
        v_prev, v = v, w / beta.clamp_min(_tiny(dtype))
        basis.append(v)
    a = torch.cat(alphas, -1).squeeze(-2)  # (*batch, s)
    T = torch.diag_embed(a)
    if betas:
        b = torch.cat(betas, -1).squeeze(-2)
        T = T + torch.diag_embed(b, 1) + torch.diag_embed(b, -1)
    eigs = torch.linalg.eigvalsh(T)
    lam_max = eigs[..., -1]
    lam_min = eigs[..., 0]
    if steps < n:
        lam_min = lam_min / 2
    lam_min = torch.maximum(lam_min, lam_max * torch.finfo(dtype).eps)
    return lam_min, lam_max


def _jacobi_elliptic(u: torch.Tensor, kc: torch.Tensor, iters: int = 40):
    r"""``sn, cn, dn (u | k)`` and the complete integral ``𝒦(k)`` by the AGM (Abramowitz & Stegun 16.4, 17.6).

    ``kc = √(1 - k²)``, the complementary modulus, is taken directly so that moduli close to 1 (very
    ill-conditioned matrices: ``k'² = 1 - λ_min/λ_max``) lose no accuracy. ``u`` broadcasts against ``kc``.
    """
    a, b = torch.ones_like(kc), kc
    c_list, a_list = [], []
    for _ in range(iters):  # a_{n+1} = (a_n + b_n)/2, b_{n+1} = √(a_n b_n), c_{n+1} = (a_n - b_n)/2
        a, b, c = (a + b) / 2, torch.sqrt(a * b), (a - b) / 2
        a_list.append(a)
        c_list.append(c)
        if bool((c.abs() <= torch.finfo(kc.dtype).eps * a).all()):
            break
    K = math.pi / (2 * a)
    N = len(a_list)
    phi = (2.0**N) * a * u  # φ_N = 2^N a_N u, then sin(2φ_{n-1} - φ_n) = (c_n/a_n) sin φ_n
    phis = [phi]
    for j in range(N - 1, -1, -1):
        phi = (phi + torch.asin((c_list[j] / a_list[j]) * torch.sin(phi))) / 2
        phis.append(phi)
    phi0, phi1 = phis[-1], phis[-2]
    sn, cn = torch.sin(phi0), torch.cos(phi0)
    dn = cn / torch.cos(phi1 - phi0)
    return sn, cn, dn, K


def ciq_weights_and_shifts(lam_min: torch.Tensor, lam_max: torch.Tensor, num_quad: int):
    r"""Weights ``w`` and shifts ``σ`` ``(Q, *batch)`` with ``K^{-1/2} ≈ Σ_q w_q (K + σ_q I)^{-1}`` (module eq.).

    Args:
        lam_min, lam_max: bounds of the spectrum ``(*batch)`` (positive).
        num_quad: the number ``Q`` of quadrature nodes.
    """
    lam_min = lam_min.to(torch.float64)
    lam_max = lam_max.to(torch.float64)
    kc = torch.sqrt(lam_min / lam_max).clamp(max=1.0)  # complementary modulus of k'² = 1 - λ_min/λ_max
    q = torch.arange(num_quad, dtype=torch.float64, device=lam_min.device).reshape(-1, *([1] * lam_min.dim()))
    _, _, _, K = _jacobi_elliptic(torch.zeros_like(kc), kc)
    y = (q + 0.5) * K / num_quad
    sn, cn, dn, _ = _jacobi_elliptic(y, kc.expand_as(y))
    shifts = lam_min * (sn / cn) ** 2
    weights = 2 * torch.sqrt(lam_min) * K / (math.pi * num_quad) * dn / cn**2
    return weights, shifts


def _as_matmul(K):
    if isinstance(K, torch.Tensor):
        return lambda V: K @ V
    return K.matmul


class _CIQ(torch.autograd.Function):
    r"""``K^{-1/2} B`` (``inverse``) or ``K^{1/2} B`` by CIQ, with the backward of the quadrature sum.

    With ``X_q = (K + σ_q)^{-1} C`` (``C = B``, or ``K B`` for the square root) and ``Y_q = (K + σ_q)^{-1} G``
    for the incoming gradient ``G``: ``d(Σ w_q X_q) = -Σ w_q (K + σ_q)^{-1} dK X_q`` gives
    ``∂/∂K = -Σ_q w_q Y_q X_qᵀ`` (symmetrised), ``∂/∂B = Σ_q w_q Y_q`` (``K Σ_q w_q Y_q`` for the square root,
    which also adds ``(Σ w_q Y_q) Bᵀ`` to ``∂/∂K``). Weights and shifts are held constant: the quadrature
    is accurate for any nearby spectrum bounds, so their derivative contributes at the quadrature error.
    """

    @staticmethod
    def forward(ctx, K, B, inverse, num_quad, tol, max_iter):
        with torch.no_grad():
            matmul = _as_matmul(K)
            lam_min, lam_max = lanczos_extreme_eigenvalues(matmul, K.shape[-1], K.shape[:-2], K.dtype, K.device)
            w, s = ciq_weights_and_shifts(lam_min, lam_max, num_quad)
            w = w.to(K.dtype).reshape(*w.shape, 1, 1)
            s = s.to(K.dtype)
            C = B if inverse else matmul(B)
            Xq = minres(matmul, C, s, tol=tol, max_iter=max_iter)
            out = (w * Xq).sum(0)
        ctx.save_for_backward(K, B, Xq, w, s)
        ctx.inverse, ctx.tol, ctx.max_iter = inverse, tol, max_iter
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, G):
        K, B, Xq, w, s = ctx.saved_tensors
        matmul = _as_matmul(K)
        Yq = minres(matmul, G.expand(*K.shape[:-2], *G.shape[-2:]).contiguous(), s, tol=ctx.tol, max_iter=ctx.max_iter)
        fG = (w * Yq).sum(0)  # K^{-1/2} G
        grad_K = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_K = -(w * (Yq @ Xq.mT)).sum(0)
            if not ctx.inverse:
                grad_K = grad_K + fG @ B.mT
            grad_K = (grad_K + grad_K.mT) / 2
        if ctx.needs_input_grad[1]:
            grad_B = fG if ctx.inverse else matmul(fG)
            grad_B = _sum_to(grad_B, B.shape)
        if grad_K is not None:
            grad_K = _sum_to(grad_K, K.shape)
        return grad_K, grad_B, None, None, None, None


def _sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    """Sum the broadcast batch dimensions of ``t`` down to ``shape``."""
    while t.dim() > len(shape):
        t = t.sum(0)
    for i, (a, b) in enumerate(zip(t.shape, shape)):
        if b == 1 and a != 1:
            t = t.sum(i, keepdim=True)
    return t


def contour_integral_quad(
    K: torch.Tensor,
    rhs: torch.Tensor,
    inverse: bool = True,
    num_contour_quadrature: int | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
) -> torch.Tensor:
    r"""``K^{-1/2} rhs`` (``inverse=True``) or ``K^{1/2} rhs`` by contour integral quadrature (module eq.).

    Costs ``O(n² k)`` per msMINRES iteration (one product with ``K`` for all quadrature shifts), no
    factorisation; differentiable in ``K`` and ``rhs`` (one more msMINRES run in the backward).

    Args:
        K: symmetric positive definite ``(*batch, n, n)``.
        rhs: ``(*batch, n, k)`` (or ``(*batch, n)``).
        inverse: ``K^{-1/2}`` if True, else ``K^{1/2}``.
        num_contour_quadrature: quadrature nodes ``Q`` (default ``settings.num_contour_quadrature``).
        tol: msMINRES relative residual (default ``settings.minres_tolerance``).
        max_iter: msMINRES iteration cap.

    Returns:
        ``(*batch, n, k)`` (``(*batch, n)`` for a vector ``rhs``).

    Raises:
        ShapeError: ``K`` not square, or ``rhs`` of a different ``n``.
    """
    if K.dim() < 2 or K.shape[-1] != K.shape[-2]:
        raise ShapeError(f"contour_integral_quad: K must be square (*batch, n, n); got {tuple(K.shape)}.")
    vector = rhs.dim() == 1 or (rhs.dim() == K.dim() - 1 and rhs.shape[:-1] == K.shape[:-2])
    B = rhs.unsqueeze(-1) if vector else rhs
    if B.shape[-2] != K.shape[-1]:
        raise ShapeError(
            f"contour_integral_quad: rhs {tuple(rhs.shape)} must have n = {K.shape[-1]} rows to match K "
            f"{tuple(K.shape)}; pass (*batch, n, k) or (*batch, n)."
        )
    batch = broadcast_shapes(K.shape[:-2], B.shape[:-2])
    K, B = K.expand(*batch, *K.shape[-2:]), B.expand(*batch, *B.shape[-2:])
    Q = int(settings.num_contour_quadrature.value() if num_contour_quadrature is None else num_contour_quadrature)
    out = _CIQ.apply(K, B, inverse, Q, tol, max_iter)
    return out.squeeze(-1) if vector else out


def sqrt_inv_matmul(K: torch.Tensor, rhs: torch.Tensor, **kwargs) -> torch.Tensor:
    """``K^{-1/2} rhs`` by CIQ: ``K (*batch, n, n)``, ``rhs (*batch, n, k)`` → ``(*batch, n, k)``."""
    return contour_integral_quad(K, rhs, inverse=True, **kwargs)


def sqrt_matmul(K: torch.Tensor, rhs: torch.Tensor, **kwargs) -> torch.Tensor:
    """``K^{1/2} rhs`` by CIQ: ``K (*batch, n, n)``, ``rhs (*batch, n, k)`` → ``(*batch, n, k)``."""
    return contour_integral_quad(K, rhs, inverse=False, **kwargs)


def ciq_mvn_samples(covariance: torch.Tensor, base_samples: torch.Tensor) -> torch.Tensor:
    """Zero-mean samples ``K^{1/2} ε`` ``(*sample, *batch, n)`` from ``ε (*sample, *batch, n)`` by CIQ.

    ``K^{1/2}`` is the symmetric square root, so ``cov(K^{1/2} ε) = K`` exactly up to the quadrature error;
    this is the sampler ``settings.ciq_samples`` selects (Pleiss et al. 2020, §4).
    """
    n = covariance.shape[-1]
    batch = covariance.shape[:-2]
    eps = base_samples.reshape(-1, *batch, n)  # (S, *batch, n)
    out = sqrt_matmul(covariance, eps.movedim(0, -1))  # (*batch, n, S)
    return out.movedim(-1, 0).reshape(base_samples.shape)
