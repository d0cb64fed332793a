"""Cholesky factorisation with jitter escalation and a diagnosis when it fails; the inverse from the factor."""

from __future__ import annotations

import torch

from torchgp import _record, settings
from torchgp._shapes import any_nonzero
from torchgp.errors import NotPSDError, NumericalWarning
from torchgp.linalg import _log
from torchgp.linalg._lapack import openblas_threads, scipy_routine


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
    _log.debug("Cholesky of %s %s", _log.shape(A), A.dtype)
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


# Smallest n, per dtype, at which LAPACK's ``potri`` through scipy beats ``torch.cholesky_inverse`` on CPU. Measured
# on a 2-core AMD EPYC VM, one thread, torch 2.13 (MKL) against scipy's bundled OpenBLAS, symmetrisation included,
# interleaved medians of 41 (potri ÷ torch): float64 n = 256 / 384 / 512 / 768: 1.14 / 0.95 / 0.63 / 0.89, float32
# 1.40 / 1.18 / 0.99 / 0.87; at n = 2000 0.79 (float64) and 0.80 (float32). Below it torch's routine is as fast or
# faster, and batches of small matrices (32 × 100 × 100: 1.9 ms against 2.0 ms) gain nothing.
POTRI_MIN_N = {torch.float64: 512, torch.float32: 768}
_LOWER_MASKS: dict = {}  # (n, device) → boolean lower-triangle mask, the last few sizes only


def _lower_mask(n: int, device) -> torch.Tensor:
    key = (n, str(device))
    mask = _LOWER_MASKS.get(key)
    if mask is None:
        if len(_LOWER_MASKS) >= 2:
            _LOWER_MASKS.clear()
        mask = _LOWER_MASKS[key] = torch.ones(n, n, dtype=torch.bool, device=device).tril_()
    return mask


def cholesky_inverse(L: torch.Tensor) -> torch.Tensor:
    """``A⁻¹ = L⁻ᵀ L⁻¹`` from the lower Cholesky factor ``L`` of ``A``, by the fastest exact route.

    On CPU, for float32/float64 and ``n ≥ POTRI_MIN_N[dtype]``, LAPACK's ``potri`` (scipy) inverts a column-major copy of
    each batch member's factor in place, with scipy's OpenBLAS held to torch's thread count, and the lower triangle
    it fills is mirrored in one pass; otherwise, on CUDA, and whenever autograd must differentiate through it (grad
    mode on and ``L`` requiring a gradient), it is :func:`torch.cholesky_inverse`. Both give ``A⁻¹`` to rounding.

    Args:
        L: lower-triangular factors, ``(*batch, n, n)``.

    Returns:
        The symmetric inverses, ``(*batch, n, n)``.
    """
    n = L.shape[-1]
    potri = scipy_routine("potri", L.dtype) if L.device.type == "cpu" and n >= POTRI_MIN_N.get(L.dtype, n + 1) else None
    if potri is None or (torch.is_grad_enabled() and L.requires_grad):
        return torch.cholesky_inverse(L)
    flat = L.detach().reshape(-1, n, n)
    mask = _lower_mask(n, L.device)
    out = torch.empty((flat.shape[0], n, n), dtype=L.dtype)
    with openblas_threads(torch.get_num_threads()):
        for b in range(flat.shape[0]):
            buf = flat[b].mT.clone(memory_format=torch.contiguous_format).mT  # column-major copy of L
            _, info = potri(buf.numpy(), lower=1, overwrite_c=1)  # lower triangle of A⁻¹, in place
            if info != 0:
                return torch.cholesky_inverse(L)
            torch.where(mask, buf, buf.mT, out=out[b])  # A⁻¹ is symmetric: mirror the lower triangle
    return out.reshape(L.shape)
