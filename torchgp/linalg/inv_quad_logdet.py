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

import torch

from torchgp import settings
from torchgp._shapes import any_nonzero
from torchgp.errors import ShapeError
from torchgp.linalg import _log
from torchgp.linalg.cholesky import cholesky_inverse_plus_outer, cholesky_solve, psd_safe_cholesky_plus_diag
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
        logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # R&W Alg. 2.1 line 7
        ctx.save_for_backward(L, alpha)
        ctx.has_noise = noise is not None
        return inv_quad, logdet

    @staticmethod
    def backward(ctx, g_quad, g_logdet):
        L, alpha = ctx.saved_tensors
        grad_A = grad_noise = grad_rhs = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # ∂/∂A = g_l A⁻¹ − g_q ααᵀ (R&W eq. 5.9), in the buffer of A⁻¹ (one inverse from the factor)
            if g_logdet is not None and any_nonzero(g_logdet):
                if torch.is_grad_enabled():  # this backward is itself recorded (create_graph): torch's routines
                    grad_A = (
                        torch.cholesky_inverse(L) * g_logdet[..., None, None]
                        - (alpha * g_quad[..., None, None]) @ alpha.mT
                    )
                else:
                    grad_A = cholesky_inverse_plus_outer(L, g_logdet, alpha, -g_quad)
            else:
                grad_A = (alpha * (-g_quad)[..., None, None]) @ alpha.mT
            if ctx.has_noise and ctx.needs_input_grad[1]:
                grad_noise = grad_A.diagonal(dim1=-2, dim2=-1).clone()
        if ctx.needs_input_grad[2]:
            grad_rhs = 2 * g_quad[..., None, None] * alpha
        return (grad_A if ctx.needs_input_grad[0] else None), grad_noise, grad_rhs


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
