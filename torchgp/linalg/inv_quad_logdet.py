r"""The marginal likelihood's linear algebra: ``rᵀK⁻¹r`` and ``log|K|`` with an analytic backward.

The solver is chosen in one place, :mod:`torchgp.linalg.solvers` (Cholesky for n up to
``settings.max_cholesky_size``, Woodbury, Kronecker, iterative). On the Cholesky path the backward is the closed form
(R&W 2006, eq. 5.9 before the chain rule through K):

.. math::
    \frac{\partial}{\partial K}\big[g_q\, r^\top K^{-1} r + g_l \log|K|\big] = g_l K^{-1} - g_q\,\alpha\alpha^\top,
    \qquad \frac{\partial}{\partial r} = 2 g_q \alpha,\quad \alpha = K^{-1} r

computed with one inverse from the factor (:func:`~torchgp.linalg.cholesky.cholesky_inverse_plus_outer`, which
scales it and adds the rank-k term in the inverse's own buffer); autograd carries
``∂/∂K`` through the kernel's forward to every hyperparameter. Nothing is differentiated through the factorisation
itself.
"""

from __future__ import annotations

import math

import torch

from torchgp import settings
from torchgp.errors import ShapeError
from torchgp.linalg import _log
from torchgp.linalg.cholesky import (
    cholesky_inverse_plus_outer,
    cholesky_solve,
    psd_safe_cholesky_plus_diag,
    takes_potri,
)
from torchgp.linalg.operators import Operator, as_operator


class CholeskyInvQuadLogdet(torch.autograd.Function):
    """``(K (*b,n,n), σ² (*b,n) or None, r (*b,n,k)) → (Σ_k r_kᵀA⁻¹r_k (*b), log|A| (*b))``, ``A = K + diag σ²``.

    The noise enters separately so that ``K + diag σ²`` is formed once inside the forward
    (no n × n autograd nodes for it) and its gradient is the diagonal of ``∂/∂A``.
    """

    @staticmethod
    def forward(ctx, K, noise, rhs):
        _log.debug(
            "Cholesky of the marginal likelihood's %s matrix, %d right-hand sides", tuple(K.shape), rhs.shape[-1]
        )
        # K + diag σ² in one buffer, factorised in place; K itself (which the kernel's node may have saved) is untouched
        L = psd_safe_cholesky_plus_diag(K, noise)
        alpha = cholesky_solve(rhs, L)  # R&W Alg. 2.1 line 3: α = Lᵀ\(L\y)
        inv_quad = (rhs * alpha).sum((-2, -1))
        logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1).mul_(2)  # R&W Alg. 2.1 line 7
        ctx.save_for_backward(L, alpha)
        ctx.has_noise = noise is not None
        # an output the loss does not use has no gradient (None, not zeros): nothing to test on the host
        ctx.set_materialize_grads(False)
        return inv_quad, logdet

    @staticmethod
    def backward(ctx, g_quad, g_logdet):
        L, alpha = ctx.saved_tensors
        need_K, need_noise, need_rhs = ctx.needs_input_grad
        grad_A = grad_noise = grad_rhs = None
        if (need_K or need_noise) and (g_quad is not None or g_logdet is not None):
            # ∂/∂A = g_l A⁻¹ − g_q ααᵀ (R&W eq. 5.9), in the buffer of A⁻¹ (one inverse from the factor)
            if g_logdet is None:
                grad_A = (alpha * (-g_quad)[..., None, None]) @ alpha.mT
            elif torch.is_grad_enabled():  # this backward is itself recorded (create_graph): torch's routines
                grad_A = torch.cholesky_inverse(L) * g_logdet[..., None, None]
                if g_quad is not None:
                    grad_A = grad_A - (alpha * g_quad[..., None, None]) @ alpha.mT
            else:
                outer = (None, None) if g_quad is None else (alpha, -g_quad)
                grad_A = cholesky_inverse_plus_outer(L, g_logdet, *outer)
            if ctx.has_noise and need_noise:
                grad_noise = grad_A.diagonal(dim1=-2, dim2=-1).clone()
        if need_rhs and g_quad is not None:
            grad_rhs = alpha * (2 * g_quad)[..., None, None]
        return (grad_A if need_K else None), grad_noise, grad_rhs


class CholeskyGaussianLogProb(torch.autograd.Function):
    r"""``(K (*b,n,n), σ² (*b,n) or None, y (*b,n), μ (*b,n), w, c) → w (rᵀA⁻¹r + log|A|) + c (*b)``, ``r = y − μ``.

    ``A = K + diag σ²``; ``w`` and ``c`` are Python floats (``w = −½``, ``c = −½ n log 2π`` for the Gaussian log
    density; the exact MLL folds its ``1/n`` into both). One autograd node for what would otherwise be the residual,
    the two outputs of :class:`CholeskyInvQuadLogdet` and the affine map after them. With ``g_q = g_l = w g``
    the backward is the closed form above,

    .. math:: \frac{\partial}{\partial A} = w g\,(A^{-1} - \alpha\alpha^\top),\qquad
        \frac{\partial}{\partial y} = -\frac{\partial}{\partial \mu} = 2 w g\,\alpha

    (R&W 2006, eq. 5.9), with one inverse from the factor. ``y`` and ``μ`` broadcast against each other; ``K`` (and
    ``σ²``) must already carry the full batch shape.
    """

    @staticmethod
    def forward(ctx, K, noise, y, mean, w, c):
        _log.debug("Cholesky of the marginal likelihood's %s matrix, 1 right-hand side", tuple(K.shape))
        n = K.shape[-1]
        r = (y - mean).unsqueeze(-1)  # (*b, n, 1)
        if r.shape[:-2] != K.shape[:-2]:
            r = r.expand(*K.shape[:-2], n, 1)
        L = psd_safe_cholesky_plus_diag(K, noise)  # K + diag σ² in one buffer (K untouched)
        alpha = cholesky_solve(r, L)  # R&W Alg. 2.1 line 3: α = Lᵀ\(L\y)
        quad = (r * alpha).sum((-2, -1))
        logdet = L.diagonal(dim1=-2, dim2=-1).log().sum(-1).mul_(2)  # R&W Alg. 2.1 line 7
        ctx.save_for_backward(L, alpha)
        ctx.w, ctx.has_noise, ctx.y_shape, ctx.mean_shape = w, noise is not None, y.shape, mean.shape
        return quad.add_(logdet).mul_(w).add_(c)  # R&W eq. 2.30, times w

    @staticmethod
    def backward(ctx, g):
        L, alpha = ctx.saved_tensors
        need_K, need_noise, need_y, need_mean = ctx.needs_input_grad[:4]
        grad_A = grad_noise = grad_y = grad_mean = None
        w = ctx.w  # g_q = g_l = w g (*b): the weight of both the quadratic form and the log-determinant
        if need_K or need_noise:
            gw = g * w
            if torch.is_grad_enabled():  # this backward is itself recorded (create_graph): torch's routines
                grad_A = (torch.cholesky_inverse(L) - alpha @ alpha.mT) * gw[..., None, None]
            elif takes_potri(L):  # w g and −w g folded into potri's finishing pass
                grad_A = cholesky_inverse_plus_outer(L, gw, alpha, -gw)
            else:  # A⁻¹ − ααᵀ in the inverse's buffer (the GEMM's α = −1), then one scaling
                grad_A = cholesky_inverse_plus_outer(L, None, alpha, -1.0)
                grad_A = grad_A.mul_(gw if gw.dim() == 0 else gw[..., None, None])
            if ctx.has_noise and need_noise:
                grad_noise = grad_A.diagonal(dim1=-2, dim2=-1).clone()
        if need_y or need_mean:
            g2w = g * (2 * w)
            grad_r = alpha[..., 0] * (g2w if g2w.dim() == 0 else g2w[..., None])  # ∂/∂y = −∂/∂μ = 2 w g α, (*b, n)
            if need_y:
                grad_y = grad_r.sum_to_size(ctx.y_shape)
            if need_mean:
                grad_mean = (-grad_r).sum_to_size(ctx.mean_shape)
        return (grad_A if need_K else None), grad_noise, grad_y, grad_mean, None, None


def _as_matrix_rhs(op: Operator, rhs: torch.Tensor | None, name: str):
    n = op.shape[-1]
    if op.shape[-2] != n:
        raise ShapeError(f"{name} needs a square covariance; got shape {tuple(op.shape)}.")
    if rhs is None:
        return None, False
    vector = rhs.dim() == op.dim() - 1 or rhs.dim() == 1
    rhs_m = rhs.unsqueeze(-1) if vector else rhs
    if rhs_m.shape[-2] != n:
        raise ShapeError(
            f"{name}: rhs has {rhs_m.shape[-2]} rows but the covariance is {n}x{n} "
            f"(rhs shape {tuple(rhs.shape)}, covariance {tuple(op.shape)}); pass (*batch, {n}) or (*batch, {n}, k)."
        )
    return rhs_m, vector


def inv_quad_logdet(covariance, rhs: torch.Tensor | None = None, logdet: bool = True, reduce_inv_quad: bool = True):
    r"""``(rᵀK⁻¹r, log|K|)`` for a covariance ``K`` (tensor or operator), by the solver
    :func:`torchgp.linalg.solvers.choose_solver` picks (Cholesky with the closed-form backward above,
    Woodbury, Kronecker or iterative).

    Args:
        covariance: ``(*batch, n, n)`` tensor or :class:`~torchgp.linalg.operators.Operator`.
        rhs: ``(*batch, n)`` or ``(*batch, n, k)``; with k columns the quadratic forms are summed
            (unless ``reduce_inv_quad`` is False). None: only the log-determinant.
        logdet: whether the log-determinant is wanted (else ``None`` is returned in its place).
        reduce_inv_quad: sum the quadratic forms over the k columns (``(*batch)``) or keep them (``(*batch, k)``).

    Returns:
        ``(inv_quad (*batch), logdet (*batch))``; ``inv_quad`` is zeros when ``rhs`` is None.

    Both outputs are differentiable with respect to the covariance (and so every hyperparameter
    behind it) and ``rhs``.

    Under ``settings.skip_logdet_forward`` the log-determinant's value is returned as zeros while its gradient
    is kept: ``ld - ld.detach()`` on the exact solvers, and on the iterative path the Lanczos quadrature is not
    run at all (the probes are still solved, for the trace estimate of the gradient). GPyTorch drops the value
    only on its iterative path; here it is dropped on every path, so that a loss under the setting does not
    jump when n crosses ``settings.max_cholesky_size``.
    """
    from torchgp.linalg.solvers import factorize

    op = as_operator(covariance)
    rhs_m, vector = _as_matrix_rhs(op, rhs, "inv_quad_logdet")
    reduce = reduce_inv_quad or vector
    quad, ld = factorize(op).inv_quad_logdet(rhs_m, logdet=logdet, reduce=reduce)
    if ld is not None and settings.skip_logdet_forward.on():
        ld = ld - ld.detach()  # value 0 (exactly), gradient that of log|K|
    if not reduce_inv_quad and vector:
        quad = quad.unsqueeze(-1)
    return quad, ld


def gaussian_log_prob(covariance, value: torch.Tensor, mean: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    r"""``scale · log N(value; mean, K)``, ``(*batch)``, for a covariance ``K`` (tensor or operator).

    .. math:: \text{scale}\cdot\big(-\tfrac12\big)\big[(y-\mu)^\top K^{-1}(y-\mu) + \log|K| + n\log 2\pi\big]

    On the Cholesky path this is one autograd node (:class:`CholeskyGaussianLogProb`); elsewhere (other solvers,
    ``settings.skip_logdet_forward``, mixed dtypes) it is :func:`inv_quad_logdet` of ``value − mean``.

    Args:
        covariance: ``(*batch, n, n)`` tensor or :class:`~torchgp.linalg.operators.Operator`.
        value: ``(*batch, n)``; mean: ``(*batch, n)`` (the two broadcast).
        scale: a Python float multiplying the log density (the exact MLL's ``1/n``).

    Raises:
        ShapeError: ``value`` or ``mean`` does not end in the covariance's ``n``.
    """
    from torchgp.linalg.solvers import factorize

    op = as_operator(covariance)
    n = op.shape[-1]
    if value.shape[-1] != n or mean.shape[-1] != n:
        raise ShapeError(
            f"gaussian_log_prob: value {tuple(value.shape)} and mean {tuple(mean.shape)} must end in n = {n}, the "
            f"size of the {tuple(op.shape)} covariance; pass one entry per row of the covariance."
        )
    if not settings.skip_logdet_forward.on():
        fused = getattr(factorize(op), "gaussian_log_prob", None)
        w = -0.5 * scale
        out = None if fused is None else fused(value, mean, w, w * n * math.log(2 * math.pi))
        if out is not None:
            return out
    quad, logdet = inv_quad_logdet(op, (value - mean).unsqueeze(-1))
    out = -0.5 * (quad + logdet + n * math.log(2 * math.pi))
    return out if scale == 1.0 else out * scale


def solve(covariance, rhs: torch.Tensor) -> torch.Tensor:
    """``K⁻¹ rhs`` by the solver :func:`torchgp.linalg.solvers.choose_solver` picks.

    Args:
        covariance: ``(*batch, n, n)`` tensor or operator.
        rhs: ``(*batch, n, k)`` or ``(n,)``.

    Returns:
        Same shape as ``rhs`` (batch dimensions broadcast), differentiable through both arguments.
    """
    from torchgp.linalg.solvers import factorize

    op = as_operator(covariance)
    rhs_m, vector = _as_matrix_rhs(op, rhs, "solve")
    out = factorize(op).solve(rhs_m)
    return out.squeeze(-1) if vector else out
