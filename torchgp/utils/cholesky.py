"""``psd_safe_cholesky`` with GPyTorch's signature (``gpytorch.utils.cholesky``)."""

from __future__ import annotations

import torch

from torchgp.linalg.cholesky import psd_safe_cholesky as _psd_safe_cholesky

__all__ = ["psd_safe_cholesky"]


def psd_safe_cholesky(
    A: torch.Tensor,
    upper: bool = False,
    out: torch.Tensor | None = None,
    jitter: float | None = None,
    max_tries: int | None = None,
) -> torch.Tensor:
    """Cholesky factor of ``A``, adding escalating diagonal jitter if the plain factorisation fails.

    See :func:`torchgp.linalg.psd_safe_cholesky` for how the jitter grows and what is warned; the jitter is
    relative to the mean of ``diag A`` (GPyTorch adds it as an absolute value), so it suits any scale of ``A``.

    Args:
        A: symmetric positive (semi-)definite matrices ``(*batch, n, n)``.
        upper: return the upper factor ``U = Lᵀ`` (``Uᵀ U = A``) instead of ``L``.
        out: optional tensor of shape ``(*batch, n, n)`` that receives the factor.
        jitter: first relative jitter (default ``settings.cholesky_jitter.value(A.dtype)``).
        max_tries: jitter escalations before :class:`~torchgp.errors.NotPSDError`.

    Returns:
        the factor, ``(*batch, n, n)`` (``out`` itself when given).
    """
    L = _psd_safe_cholesky(A, jitter=jitter, max_tries=max_tries)
    if upper:
        L = L.mT
    if out is not None:
        out.copy_(L)
        return out
    return L
