"""Pairwise distances that are accurate at zero and have finite gradients there."""

from __future__ import annotations

import torch

# Below this many n·m·d elements, differences are formed directly (exact, no cancellation);
# above it, the centred Gram form ‖a‖² + ‖b‖² − 2aᵀb (BLAS speed) is used and clamped at 0.
_DIRECT_LIMIT = 2**15


def sq_dist(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(*batch, n, m)`` between rows of ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)``.

    Exactly zero on the diagonal when ``x1 is x2``; never negative.
    """
    n, m, d = x1.shape[-2], x2.shape[-2], x1.shape[-1]
    if n * m * d <= _DIRECT_LIMIT:
        return (x1.unsqueeze(-2) - x2.unsqueeze(-3)).pow(2).sum(-1)
    # Centring at the mean of x1 removes the cancellation that large offsets cause.
    # (mean over finite entries only: a NaN test row must not turn every other row into NaN)
    x1d = x1.detach()
    finite = torch.isfinite(x1d)
    shift = torch.where(finite, x1d, 0).sum(-2, keepdim=True) / finite.sum(-2, keepdim=True).clamp_min(1)
    a = x1 - shift
    b = a if x2 is x1 else x2 - shift
    res = a.pow(2).sum(-1, keepdim=True) - 2 * (a @ b.mT) + b.pow(2).sum(-1).unsqueeze(-2)
    if x2 is x1:
        res = res - torch.diag_embed(res.diagonal(dim1=-2, dim2=-1))
    return res.clamp_min(0)


def dist(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(*batch, n, m)``; the gradient at zero distance is 0, not NaN."""
    return sq_dist(x1, x2).clamp_min(1e-30).sqrt()
