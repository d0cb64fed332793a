r"""Closed-form KL divergence between two torchgp :class:`MultivariateNormal` distributions.

Registered with :func:`torch.distributions.kl_divergence`, so
``torch.distributions.kl_divergence(q, p)`` works for torchgp MVNs (as it does in GPyTorch).

.. math::
    \mathrm{KL}(N(m_q, S_q)\,\|\,N(m_p, S_p)) = \tfrac12\Big[\operatorname{tr}(S_p^{-1}S_q)
    + (m_p - m_q)^\top S_p^{-1}(m_p - m_q) - n + \log|S_p| - \log|S_q|\Big]
"""

from __future__ import annotations

import torch
from torch.distributions import register_kl

from torchgp._shapes import broadcast_shapes
from torchgp.distributions.multivariate_normal import MultivariateNormal
from torchgp.errors import ShapeError


def gaussian_kl(mean_q, chol_q, mean_p, chol_p) -> torch.Tensor:
    r"""KL(N(mean_q, L_q L_qᵀ) ‖ N(mean_p, L_p L_pᵀ)) from Cholesky factors.

    Args:
        mean_q: ``(*batch, n)``. chol_q: lower factor ``(*batch, n, n)``.
        mean_p: ``(*batch, n)``. chol_p: lower factor ``(*batch, n, n)``.

    Returns:
        ``(*batch)`` KL divergences.
    """
    n = mean_q.shape[-1]
    batch = broadcast_shapes(mean_q.shape[:-1], chol_q.shape[:-2], mean_p.shape[:-1], chol_p.shape[:-2])
    chol_p = chol_p.expand(*batch, n, n)
    # tr(S_p⁻¹ S_q) = ‖L_p⁻¹ L_q‖²_F; Mahalanobis term = ‖L_p⁻¹ (m_p - m_q)‖²
    rhs = torch.cat([chol_q.expand(*batch, n, n), (mean_p - mean_q).expand(*batch, n).unsqueeze(-1)], -1)
    sol = torch.linalg.solve_triangular(chol_p, rhs, upper=False)
    trace = sol[..., :n].pow(2).sum((-1, -2))
    maha = sol[..., n].pow(2).sum(-1)
    logdet_p = 2 * chol_p.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    logdet_q = 2 * chol_q.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)
    return 0.5 * (trace + maha - n + logdet_p - logdet_q)


@register_kl(MultivariateNormal, MultivariateNormal)
def kl_mvn_mvn(q: MultivariateNormal, p: MultivariateNormal) -> torch.Tensor:
    """``KL(q ‖ p)`` for torchgp MVNs with event shape ``(n,)``; result ``(*batch)``."""
    if q.event_shape != p.event_shape:
        raise ShapeError(
            f"kl_divergence(q, p): q has event shape {tuple(q.event_shape)} but p has {tuple(p.event_shape)}; "
            "both must be distributions over the same n points."
        )
    return gaussian_kl(q.mean, q.scale_tril, p.mean, p.scale_tril)
