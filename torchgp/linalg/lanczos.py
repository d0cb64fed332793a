r"""Stochastic Lanczos quadrature (SLQ) for ``log|K|``, from the coefficients of batched CG.

With a preconditioner ``P`` (see :mod:`torchgp.linalg.pivoted_cholesky`),

.. math::
    \log|K| = \log|P| + \operatorname{tr}\log(\hat K),\qquad \hat K = P^{-1/2} K P^{-1/2},

and Hutchinson's estimator ``tr f(K̂) ≈ (1/t) Σ_i w_iᵀ f(K̂) w_i`` needs ``E[w wᵀ] = I``. Taking
``w = P^{-1/2} z`` with probes ``z`` of covariance ``P`` (``z = L ε₁ + D^{1/2} ε₂``, ε Rademacher)
satisfies it, and PCG on ``K x = z`` is exactly CG on ``K̂`` started at ``w``, whose Lanczos
matrix ``T`` (from :func:`torchgp.linalg.cg.pcg`) gives the Gauss quadrature (Golub & Meurant
2010; Ubaru, Chen & Saad 2017, eq. (6); Gardner et al. 2018, §4)

.. math::
    w^\top \log(\hat K)\, w \approx \lVert w\rVert^2\, e_1^\top \log(T)\, e_1
        = (z^\top P^{-1} z) \sum_k \tau_k^2 \log\lambda_k,

with ``(λ_k, τ_k)`` the eigenvalues and first eigenvector components of ``T``. Probes are drawn
from a ``torch.Generator`` with a fixed seed when ``settings.deterministic_probes`` is on, so
repeated calls give identical estimates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchgp import settings
from torchgp.linalg import _log
from torchgp.linalg.cg import CGInfo, pcg

__all__ = [
    "probe_generator",
    "rademacher",
    "lanczos_tridiag_from_cg",
    "jitter_tridiagonal",
    "lanczos_quadrature",
    "slq_logdet",
]

_PROBE_SEED = 20180926  # fixed seed of the deterministic probes (any constant works)


def probe_generator() -> torch.Generator:
    """A CPU generator: fixed seed under ``settings.deterministic_probes``, else seeded from torch's RNG."""
    gen = torch.Generator()
    if settings.deterministic_probes.on():
        gen.manual_seed(_PROBE_SEED)
    else:
        gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    return gen


def rademacher(shape, generator: torch.Generator, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Independent ±1 entries of the given shape (drawn on the CPU, then moved)."""
    signs = torch.randint(0, 2, tuple(shape), generator=generator, dtype=torch.int8)
    return (signs.to(dtype) * 2 - 1).to(device)


def lanczos_tridiag_from_cg(info: CGInfo, max_steps: int | None = None) -> torch.Tensor:
    r"""Lanczos tridiagonal matrices of every column of a recorded :func:`~torchgp.linalg.cg.pcg` run.

    Saad (2003) §6.7.3: ``T_jj = 1/α_j + β_{j-1}/α_{j-1}``, ``T_{j,j+1} = √β_j / α_j``. A column that
    stopped after ``s`` steps is padded with an identity block (eigenvalue 1, zero first component,
    so it adds nothing to the quadrature).

    Args:
        info: from ``pcg(..., record=True)``.
        max_steps: use at most this many Lanczos steps (default
            ``settings.max_lanczos_quadrature_iterations``).

    Returns:
        ``T`` of shape ``(*batch, k, m, m)``.
    """
    if info.alphas is None:
        raise ValueError("lanczos_tridiag_from_cg needs a CG run with record=True.")
    m_max = int(settings.max_lanczos_quadrature_iterations.value()) if max_steps is None else max_steps
    m = min(info.alphas.shape[0], m_max)
    alphas = info.alphas[:m].movedim(0, -1)  # (*batch, k, m)
    betas = info.betas[:m].movedim(0, -1)
    steps = info.num_steps.clamp_max(m).unsqueeze(-1)  # (*batch, k, 1)
    j = torch.arange(m, device=alphas.device)
    valid = j < steps
    safe_a = torch.where(valid, alphas, torch.ones_like(alphas))
    prev = torch.zeros_like(alphas)
    prev[..., 1:] = betas[..., :-1] / safe_a[..., :-1]
    diag = torch.where(valid, 1.0 / safe_a + prev, torch.ones_like(alphas))
    off_valid = (j[:-1] + 1) < steps
    off = torch.where(
        off_valid, betas[..., :-1].clamp_min(0).sqrt() / safe_a[..., :-1], torch.zeros_like(alphas[..., 1:])
    )
    return torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)


def jitter_tridiagonal(T: torch.Tensor) -> torch.Tensor:
    r"""``T + ε I`` with ``ε = settings.tridiagonal_jitter · min_j T_jj`` per matrix (GPyTorch's rule).

    GPyTorch adds this jitter to Lanczos tridiagonal matrices before eigendecomposing them for a root
    decomposition (``A ≈ Q T Qᵀ = S Sᵀ``), whose square roots of the eigenvalues it stabilises; it does not add it
    in the stochastic Lanczos quadrature of ``log|A|`` (:func:`lanczos_quadrature`), where it would bias the
    estimate (by about ``ε / λ_min`` per probe).

    Args:
        T: ``(*batch, m, m)`` symmetric tridiagonal matrices.

    Returns:
        ``(*batch, m, m)``; ``T`` itself when the jitter is 0 or ``m`` is 0.
    """
    jitter = float(settings.tridiagonal_jitter.value())
    if jitter == 0 or T.shape[-1] == 0:
        return T
    mins = T.diagonal(dim1=-2, dim2=-1).amin(-1).clamp_min(0)  # (*batch)
    return T + (jitter * mins)[..., None, None] * torch.eye(T.shape[-1], dtype=T.dtype, device=T.device)


def lanczos_quadrature(T: torch.Tensor, start_norm2: torch.Tensor, fn=torch.log) -> torch.Tensor:
    r"""``‖w‖² e₁ᵀ f(T) e₁`` for each tridiagonal ``T`` (Gauss quadrature of ``wᵀ f(A) w``).

    Eigenvalues that are not positive are clamped at the dtype's smallest positive number (no jitter, as in
    GPyTorch's quadrature; see :func:`jitter_tridiagonal`).

    Args:
        T: ``(*batch, k, m, m)``.
        start_norm2: ``‖w‖²`` of each start vector, ``(*batch, k)``.
        fn: the matrix function's scalar version (default ``log``).

    Returns:
        ``(*batch, k)``.
    """
    _log.debug(
        "Lanczos quadrature: eigendecomposing %d tridiagonal matrices of size %d", T[..., 0, 0].numel(), T.shape[-1]
    )
    evals, evecs = torch.linalg.eigh(T)
    evals = evals.clamp_min(torch.finfo(T.dtype).tiny)
    return start_norm2 * (evecs[..., 0, :].square() * fn(evals)).sum(-1)


def slq_logdet(
    matmul_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    batch_shape=torch.Size(),
    dtype: torch.dtype = torch.float64,
    device=None,
    preconditioner=None,
    num_probes: int | None = None,
    tol: float | None = None,
) -> torch.Tensor:
    """Stochastic Lanczos quadrature estimate of ``log|A|`` on its own (the marginal likelihood does
    this inside its single batched solve instead, see :mod:`torchgp.linalg.iterative`).

    Args:
        matmul_fn: ``V ↦ A V`` for ``(*batch, n, k)``; A symmetric positive definite.
        n: size of A.
        batch_shape: A's batch shape.
        dtype, device: of the probes.
        preconditioner: a :class:`~torchgp.linalg.pivoted_cholesky.PivotedCholeskyPreconditioner`, or None.
        num_probes: probe count (default ``settings.num_trace_samples``).
        tol: CG tolerance (default ``settings.cg_tolerance``).

    Returns:
        ``(*batch)`` estimates of ``log|A|``.
    """
    t = int(settings.num_trace_samples.value()) if num_probes is None else num_probes
    gen = probe_generator()
    if preconditioner is None:
        Z = rademacher((*batch_shape, n, t), gen, dtype, device)
        precond_fn, logdet_P = None, torch.zeros(batch_shape, dtype=dtype, device=device)
    else:
        Z = preconditioner.sample(t, gen)
        precond_fn, logdet_P = preconditioner.solve, preconditioner.logdet()
    _, info = pcg(matmul_fn, Z, precond_fn, tol=tol, record=True)
    quad = lanczos_quadrature(lanczos_tridiag_from_cg(info), info.rz0)
    return logdet_P + quad.mean(-1)
