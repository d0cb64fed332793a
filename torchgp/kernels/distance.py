"""Pairwise distances that are accurate at zero and have finite gradients there."""

from __future__ import annotations

import torch

# Below this many n·m·d elements, differences are formed directly (exact, no cancellation);
# above it, the centred Gram form ‖a‖² + ‖b‖² − 2aᵀb (BLAS speed) is used and clamped at 0.
_DIRECT_LIMIT = 2**15


def sq_dist(x1: torch.Tensor, x2: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Squared Euclidean distances ``(*batch, n, m)`` between rows of ``x1 (*batch, n, d)``, ``x2 (*batch, m, d)``.

    Exactly zero on the diagonal when ``x1 is x2``; never negative unless ``clamp=False``, which
    leaves round-off negatives of order ε‖x‖² (harmless inside ``exp``; saves two n × m passes).
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
    a2, b2 = a.pow(2).sum(-1, keepdim=True), b.pow(2).sum(-1).unsqueeze(-2)
    if a.dim() == 2:
        res = torch.addmm(a2 + b2, a, b.mT, alpha=-2)  # one fused pass: ‖a‖² + ‖b‖² − 2abᵀ
    else:
        res = (a @ b.mT).mul_(-2).add_(a2).add_(b2)  # in place on the fresh product
    if x2 is x1:
        res.diagonal(dim1=-2, dim2=-1).zero_()  # exact zeros (the gradient there is 0 too)
    return res.clamp_min(0) if clamp else res


def dist(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(*batch, n, m)``; the gradient at zero distance is 0, not NaN."""
    return sq_dist(x1, x2).clamp_min(1e-30).sqrt()
