r"""Batched preconditioned conjugate gradients that also yields Lanczos tridiagonal matrices (mBCG).

Why Lanczos comes from CG here rather than from a separate Lanczos run: the iterative marginal
likelihood needs both ``K⁻¹[r, z₁..z_t]`` (for the quadratic term and the Hutchinson trace in the
backward) and the Lanczos tridiagonal matrices of the probes (for the log-determinant). CG on a
probe already *is* Lanczos on it: its step sizes α_j and β_j determine the tridiagonal matrix
(Saad 2003, §6.7.3; Gardner et al. 2018, eq. (5) and Appendix A)

.. math::
    T_{jj} = \frac{1}{\alpha_j} + \frac{\beta_{j-1}}{\alpha_{j-1}},\qquad
    T_{j,j+1} = \frac{\sqrt{\beta_j}}{\alpha_j},

so one batched solve gives both with no extra kernel products, and with preconditioner ``P`` the
matrices are those of ``P^{-1/2} K P^{-1/2}`` started at ``P^{-1/2} b`` (which is what the
preconditioned quadrature in :mod:`torchgp.linalg.lanczos` uses). A separate Lanczos run would
double the number of kernel products, the dominant cost at large n.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchgp import _progress, _record, settings
from torchgp.errors import ConvergenceError, ConvergenceWarning, NotPSDError, ShapeError
from torchgp.linalg import _log

__all__ = ["CGInfo", "pcg"]

# Iterations without a 10 % fall of a column's best residual after which that column is stopped as stagnated
# (round-off floor or a near-singular system); it is then reported as not converged.
_STALL = 100  # 50 stopped a cond-1e6 system (unpreconditioned) that converges at 457 iterations


@dataclass
class CGInfo:
    """What a :func:`pcg` run did.

    Attributes:
        iterations: iterations run (the maximum over columns).
        residual: final relative residual ``‖b - Ax‖ / ‖b‖`` per column (recursive estimate), ``(*batch, k)``.
        converged: ``residual <= tol`` per column, ``(*batch, k)``.
        num_steps: iterations each column took, ``(*batch, k)`` (int64).
        alphas, betas: CG step sizes per iteration, ``(iterations, *batch, k)`` (0 once a column stopped);
            ``None`` unless ``record=True``.
        rz0: ``bᵀ P⁻¹ b`` per column, ``(*batch, k)``: the squared norm of the Lanczos start vector.
    """

    iterations: int
    residual: torch.Tensor
    converged: torch.Tensor
    num_steps: torch.Tensor
    alphas: torch.Tensor | None
    betas: torch.Tensor | None
    rz0: torch.Tensor


def _nonconvergence(iterations: int, residual: torch.Tensor, tol, active: torch.Tensor):
    tol = float(torch.as_tensor(tol).max()) if isinstance(tol, torch.Tensor) else tol
    worst = residual[active].max().item()
    msg = (
        f"Conjugate gradients did not converge: after {iterations} iterations the relative residual is "
        f"{worst:.3e} (tolerance {tol:.1e}) on {int(active.sum())} of {active.numel()} right-hand sides. "
        "Increase settings.max_cg_iterations or settings.max_preconditioner_size, use float64, or check that "
        "the noise is not tiny (an ill-conditioned K + σ²I converges slowly)."
    )
    if settings.cg_nonconvergence.value() == "raise":
        raise ConvergenceError(msg)
    _record.warn(msg, ConvergenceWarning, stacklevel=3)


def pcg(
    matmul_fn: Callable[[torch.Tensor], torch.Tensor],
    B: torch.Tensor,
    precond_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tol: float | torch.Tensor | None = None,
    max_iter: int | None = None,
    record: bool = False,
    x0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CGInfo]:
    r"""Solve ``A X = B`` for every column of ``B`` at once by preconditioned CG.

    Standard PCG (Golub & Van Loan 2013, Alg. 11.5.1) run on all columns in lockstep, each with its own
    α_j, β_j; a column stops updating once its relative residual is below ``tol``, or once it has
    stagnated (no 10 % fall of its best residual in 100 iterations; reported as not converged).

    Args:
        matmul_fn: ``V ↦ A V`` for ``V`` of shape ``(*batch, n, k)``; A symmetric positive definite.
        B: right-hand sides, ``(*batch, n, k)``.
        precond_fn: ``V ↦ P⁻¹ V`` (SPD ``P ≈ A``), or None for no preconditioning.
        tol: relative residual ``‖b - Ax‖/‖b‖`` to reach (default ``settings.cg_tolerance``); a float, or a
            tensor broadcastable to ``(*batch, k)`` for a tolerance per column.
        max_iter: iteration cap (default ``settings.max_cg_iterations``); under ``settings.terminate_cg_by_size``
            it is lowered to ``n`` (as GPyTorch's ``linear_cg``), the count at which CG converges in exact arithmetic.
        record: keep α/β of every iteration (for Lanczos quadrature).
        x0: initial guess ``(*batch, n, k)`` (a warm start; default zeros). CG then runs on the residual
            ``B - A x0`` (one extra product), and stops on ``‖B - A X‖ / ‖B‖`` as from zero. With ``record``,
            the α/β of a column started away from zero are those of its residual's Lanczos process, not of
            ``b``'s: only the columns whose ``x0`` is zero give ``b``'s Lanczos matrices.

    Returns:
        ``X`` ``(*batch, n, k)`` and a :class:`CGInfo`.

    Raises:
        NotPSDError: a search direction with ``pᵀAp ≤ 0`` was met: ``A`` is not positive definite.
        ConvergenceError: not converged and ``settings.cg_nonconvergence`` is ``'raise'`` (else a
            :class:`~torchgp.errors.ConvergenceWarning` is issued).
    """
    sharded = getattr(matmul_fn, "pcg", None)  # a product split over processes runs its own row-split CG
    if sharded is not None:
        return sharded(B, precond_fn, tol=tol, max_iter=max_iter, record=record, x0=x0)
    tol = settings.cg_tolerance.value() if tol is None else tol
    if max_iter is None:
        max_iter = int(settings.max_cg_iterations.value())  # not capped at n by default: round-off can need more
    if settings.terminate_cg_by_size.on():
        max_iter = min(max_iter, B.shape[-2])
    _log.debug(
        "CG: %d right-hand sides of a %d x %d system, batch %s, at most %d iterations",
        B.shape[-1],
        B.shape[-2],
        B.shape[-2],
        tuple(B.shape[:-2]),
        max_iter,
    )
    precond = precond_fn if precond_fn is not None else (lambda V: V)
    if x0 is not None and x0.shape != B.shape:
        raise ShapeError(f"pcg: x0 must have the shape of B, {tuple(B.shape)}; got {tuple(x0.shape)}.")
    bar = _progress.progress(max_iter, "torchgp: conjugate gradients")  # a no-op unless predicted > ~10 s
    X, state = cg_rows(matmul_fn, B, precond, tol, max_iter, record, x0, bar=bar)
    bar.close()
    return X, finish(state, tol, record)


def cg_rows(matmul_rows, B, precond, tol, max_iter: int, record: bool, x0=None, reduce=None, bar=None):
    """The PCG recurrences of :func:`pcg` on rows of the vectors; shared by it and the row-split CG.

    ``B``, ``x0`` and every vector are one block of rows ``(*batch, r, k)`` (all ``n`` rows in :func:`pcg`);
    ``matmul_rows`` and ``precond`` map such blocks to blocks, and ``reduce(tensors, what)``, when given, sums
    each per-column partial inner product ``(*batch, k)`` over the blocks in place (the processes of
    :mod:`torchgp.distributed.sharded_cg`). Every block then runs identical iterations.

    Returns:
        ``X`` (this block's rows) and the run's state for :func:`finish`.
    """

    def total(tensors, what):
        if reduce is not None:
            reduce(tensors, what)
        return tensors

    if x0 is None:
        X = torch.zeros_like(B)
        R = B.clone()
    else:
        X = x0.to(B.dtype).clone()
        R = B - matmul_rows(X)  # warm start: CG on A (X - x0) = B - A x0
    Z = precond(R)
    Pdir = Z.clone()
    rz, bb, rr = total([(R * Z).sum(-2), B.square().sum(-2), R.square().sum(-2)], "start")  # (*batch, k)
    rz0 = rz.clone()
    b_norm = bb.sqrt()
    safe_b = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    if x0 is None:
        residual = torch.where(b_norm > 0, torch.ones_like(b_norm), torch.zeros_like(b_norm))
    else:
        residual = torch.where(b_norm > 0, rr.sqrt() / safe_b, torch.zeros_like(b_norm))
        zero = (b_norm == 0).unsqueeze(-2)  # B = 0 has the solution 0 whatever the guess
        X.masked_fill_(zero, 0.0)
        R.masked_fill_(zero, 0.0)
    num_steps = torch.zeros(b_norm.shape, dtype=torch.long, device=B.device)
    alphas, betas = [], []
    active = residual > tol
    best = residual.clone()  # stagnation: a column whose residual has not fallen 10 % below its best
    since_best = torch.zeros_like(num_steps)  # in _STALL iterations stops (it can only burn kernel passes)
    it = 0
    for step in range(1, max_iter + 1):
        if not bool(active.any()):
            break
        it = step
        # Only the columns still running are multiplied and preconditioned (_running_columns). Under a cross-process
        # reduction every process holds the same `active` (its residuals are sums over all processes), so all take
        # the same columns.
        running = _running_columns(active)
        AP = _active_product(matmul_rows, Pdir, running)
        (pAp,) = total([(Pdir * AP).sum(-2)], "pᵀAp")
        bad = active & ~(pAp > 0)
        if bool(bad.any()):
            raise NotPSDError(
                f"Conjugate gradients met a direction p with pᵀKp = {pAp[bad].min().item():.3e} ≤ 0 at iteration "
                f"{it}: the covariance is not positive definite. A custom kernel must be a valid covariance "
                "function (check it with torchgp.check.check_kernel); if the matrix is only numerically "
                "singular, add noise or jitter (K + σ²I) or use float64."
            )
        # Golub & Van Loan Alg. 11.5.1: α = rᵀz / pᵀAp, x += αp, r -= αAp, β = r'ᵀz' / rᵀz, p = z' + βp.
        alpha = torch.where(active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
        X.addcmul_(alpha.unsqueeze(-2), Pdir)
        R.addcmul_(alpha.unsqueeze(-2), AP, value=-1.0)
        del AP
        Z = _active_precond(precond, R, Z, running)
        rz_new, rr = total([(R * Z).sum(-2), R.square().sum(-2)], "rᵀz")
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        Pdir = Z + beta.unsqueeze(-2) * Pdir
        rz = torch.where(active, rz_new, rz)
        num_steps += active.long()
        if record:
            alphas.append(alpha)
            betas.append(beta)
        residual = torch.where(active, rr.sqrt() / safe_b, residual)
        improved = residual < 0.9 * best
        best = torch.where(improved, residual, best)
        since_best = torch.where(improved, 0, since_best + 1)
        active = active & (residual > tol) & (since_best < _STALL)
        if bar is not None:
            bar.update()
    return X, (it, residual, num_steps, alphas, betas, rz0)


def _running_columns(active: torch.Tensor) -> torch.Tensor | None:
    """Indices of the columns active in some batch member of ``active (*batch, k)``, or None when all are (one sync)."""
    cols = active.reshape(-1, active.shape[-1]).any(0) if active.dim() > 1 else active
    return None if bool(cols.all()) else cols.nonzero().squeeze(-1)


def _active_product(matmul_rows, Pdir: torch.Tensor, running: torch.Tensor | None) -> torch.Tensor:
    """``A Pdir`` on the ``running`` columns (:func:`_running_columns`; None: all), zeros elsewhere, ``(*batch, n, k)``.

    A stopped column's step size is 0, so its product is never read; with per-column tolerances (e.g. probes
    looser than the data column) the columns that finished early then cost no kernel products. On the
    blockwise path a product's cost is about ``a + b·k`` per kernel entry (tile evaluation plus ``k`` GEMM
    columns), so dropping finished columns saves the ``b·k`` part.
    """
    if running is None:
        return matmul_rows(Pdir)
    AP = torch.zeros_like(Pdir)
    AP[..., running] = matmul_rows(Pdir[..., running])
    return AP


def _active_precond(precond, R: torch.Tensor, Z: torch.Tensor, running: torch.Tensor | None) -> torch.Tensor:
    """``P⁻¹R`` on the ``running`` columns (None: all); the others keep their previous ``Z`` (never read).

    A stopped column's β is 0 and its ``rᵀz`` is not updated, so its ``z`` is not used again. With the probes
    stopping at a looser tolerance than the data column, the preconditioner then solves for one column instead
    of ``1 + t`` over the last iterations: a rank-k pivoted-Cholesky solve costs ``4 n k`` flops per column
    (at n = 20,000, rank 1789, 33 columns about a tenth of a CG iteration's kernel pass).
    """
    if running is None:
        return precond(R)
    Z[..., running] = precond(R[..., running])
    return Z


def finish(state, tol, record: bool) -> CGInfo:
    """The :class:`CGInfo` of a :func:`cg_rows` run, reporting its columns that did not converge."""
    it, residual, num_steps, alphas, betas, rz0 = state
    if settings.verbose_linalg.on() and residual.numel():
        _log.debug("CG: %d iterations, worst relative residual %.3e", it, float(residual.max()))
    unconverged = residual > tol
    if bool(unconverged.any()):
        _nonconvergence(it, residual, tol, unconverged)
    return CGInfo(
        iterations=it,
        residual=residual,
        converged=~unconverged,
        num_steps=num_steps,
        alphas=torch.stack(alphas) if record and alphas else None,
        betas=torch.stack(betas) if record and betas else None,
        rz0=rz0,
    )
