"""Cholesky factorisation with jitter escalation and a diagnosis when it fails."""

from __future__ import annotations

import torch

from torchgp import _record, settings
from torchgp._shapes import any_nonzero
from torchgp.errors import NotPSDError, NumericalWarning


def diagnose_not_psd(A: torch.Tensor) -> str:
    """A sentence on why ``A`` (``(*batch, n, n)``) cannot be factorised, with the fix."""
    if not torch.all(torch.isfinite(A)):
        return (
            "the matrix contains NaN or inf: a hyperparameter or an input is non-finite "
            "(check the training data and model.non_finite_parameters())."
        )
    eig = torch.linalg.eigvalsh(A.detach().to(torch.float64))
    lo, hi = eig[..., 0].min().item(), eig[..., -1].max().item()
    if lo < -1e-6 * max(abs(hi), 1e-300):
        return (
            f"the matrix is indefinite (smallest eigenvalue {lo:.3g}, largest {hi:.3g}): the kernel is not "
            "a valid covariance function. For a custom kernel, check its forward with "
            "torchgp.check.check_kernel(kernel)."
        )
    cond = hi / max(lo, 1e-300)
    return (
        f"the matrix is numerically singular (eigenvalues from {lo:.3g} to {hi:.3g}, condition number "
        f"{cond:.2g}). Likely causes: duplicate or near-duplicate inputs with a tiny noise, a lengthscale "
        "that grew far beyond the data's range, or float32 precision. Fixes: use float64, put a floor "
        "on the noise (likelihood.noise_covar.register_constraint('raw_noise', GreaterThan(1e-4))), "
        "or remove duplicate inputs."
    )


def psd_safe_cholesky(A: torch.Tensor, jitter: float | None = None, max_tries: int | None = None) -> torch.Tensor:
    """Lower Cholesky factor of ``A``, adding diagonal jitter if the plain factorisation fails.

    The k-th retry adds ``jitter · 10^k · mean(diag A)`` to the diagonal and warns with
    :class:`~torchgp.errors.NumericalWarning` saying how much was added.

    Args:
        A: symmetric positive (semi-)definite matrices, ``(*batch, n, n)``.
        jitter: first relative jitter (default ``settings.cholesky_jitter.value(A.dtype)``).
        max_tries: retries before giving up (default ``settings.cholesky_max_tries``).

    Returns:
        ``L`` with ``L Lᵀ = A (+ jitter I)``, ``(*batch, n, n)``.

    Raises:
        NotPSDError: still not factorisable; the message says why and how to fix it.
    """
    L, info = torch.linalg.cholesky_ex(A)
    if not any_nonzero(info):
        return L
    base = settings.cholesky_jitter.value(A.dtype) if jitter is None else jitter
    tries = settings.cholesky_max_tries.value() if max_tries is None else max_tries
    scale = A.diagonal(dim1=-2, dim2=-1).abs().mean(-1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    if torch.all(torch.isfinite(A)):
        for k in range(tries):
            added = base * 10**k * scale  # (*batch, 1)
            L, info = torch.linalg.cholesky_ex(A + added.unsqueeze(-1) * eye)
            if not torch.any(info):
                _record.warn(
                    f"The {A.shape[-1]}x{A.shape[-1]} matrix was not positive definite in {A.dtype}; added "
                    f"jitter {added.max().item():.2e} ({base * 10**k:.0e} of its mean diagonal) to the "
                    "diagonal. "
                    + (
                        "If this repeats, use float64 or a larger noise floor."
                        if A.dtype != torch.float64
                        else "Common for posterior covariances on dense grids; during training, consider a "
                        "larger noise floor or removing near-duplicate inputs."
                    ),
                    NumericalWarning,
                    stacklevel=3,
                )
                return L
    raise NotPSDError(
        f"Cholesky factorisation of a {tuple(A.shape)} matrix failed"
        + (
            f" even with jitter up to {base * 10 ** (tries - 1):.0e} of its mean diagonal"
            if torch.all(torch.isfinite(A))
            else ""
        )
        + f": {diagnose_not_psd(A)}"
    )
