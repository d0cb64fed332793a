r"""Sums of products of kernel matrices over all subsets up to a degree (additive GPs, Duvenaud et al. 2011)."""

from __future__ import annotations

import torch

from torchgp.errors import InputError

__all__ = ["sum_interaction_terms"]


def sum_interaction_terms(covars, max_degree: int | None = None, dim: int = -3) -> torch.Tensor:
    r"""Elementwise sum over all interaction terms of degree 1 to ``M`` of the matrices ``K_1..K_D``.

    .. math:: \sum_{m=1}^{M} e_m, \qquad e_m = \sum_{i_1 < \dots < i_m} K_{i_1} \odot \dots \odot K_{i_m},

    computed in O(D M) elementwise products by the Newton–Girard identities
    (Duvenaud et al. 2011, eq. 6): with power sums :math:`p_k = \sum_d K_d^{\odot k}`,
    :math:`e_m = \frac1m \sum_{k=1}^{m} (-1)^{k-1} e_{m-k} \odot p_k`, :math:`e_0 = 1`.

    Args:
        covars: tensor (or operator with ``to_dense``) holding the D matrices along ``dim``,
            e.g. ``(*batch, D, n, m)``.
        max_degree: largest interaction degree ``M`` (default ``D``).
        dim: the dimension holding the D matrices; must be negative.

    Returns:
        ``(*batch, n, m)``.
    """
    if dim >= 0:
        raise InputError(f"sum_interaction_terms: dim must be a negative integer (e.g. -3); got {dim}.")
    if not torch.is_tensor(covars):
        covars = covars.to_dense()
    D = covars.shape[dim]
    M = D if max_degree is None else int(max_degree)
    if M < 1:
        raise InputError(f"sum_interaction_terms: max_degree must be >= 1; got {max_degree}.")
    power = covars
    p = []
    for _ in range(M):
        p.append(power.sum(dim))
        power = power * covars
    e = [torch.ones_like(p[0])]
    for m in range(1, M + 1):
        acc = torch.zeros_like(p[0])
        for k in range(1, m + 1):
            acc = acc + (-1) ** (k - 1) * e[m - k] * p[k - 1]
        e.append(acc / m)
    return torch.stack(e[1:]).sum(0)
