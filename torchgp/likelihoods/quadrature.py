r"""Gauss–Hermite quadrature of expectations under independent Gaussians.

.. math:: \mathbb E_{f\sim N(\mu,\sigma^2)}[g(f)] \approx \sum_k \frac{w_k}{\sqrt\pi}\, g(\mu + \sqrt2\,\sigma\, t_k)

with ``(t_k, w_k)`` the Gauss–Hermite nodes and weights (``numpy.polynomial.hermite.hermgauss``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from torchgp import settings


@lru_cache(maxsize=16)
def _nodes(num_locs: int):
    t, w = np.polynomial.hermite.hermgauss(num_locs)
    return t, w / math.sqrt(math.pi)


class GaussHermiteQuadrature1D(torch.nn.Module):
    """``E[g(f)]`` for ``f ~ N(mean, variance)`` elementwise (GPyTorch name).

    Args:
        num_locs: number of nodes (default ``settings.num_gauss_hermite_locs``).

    Shapes:
        ``forward(g, dist)`` with ``dist.mean``, ``dist.variance`` of shape ``(*batch, n)``; ``g``
        maps ``(k, *batch, n)`` function values to ``(k, *batch, n[, ...])``; result ``(*batch, n[, ...])``.
    """

    def __init__(self, num_locs: int | None = None):
        super().__init__()
        self.num_locs = num_locs

    def locations_weights(self, dtype, device):
        t, w = _nodes(self.num_locs or settings.num_gauss_hermite_locs.value())
        return torch.as_tensor(t, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)

    def forward(self, func, gaussian_dists):
        mean, var = gaussian_dists.mean, gaussian_dists.variance
        t, w = self.locations_weights(mean.dtype, mean.device)
        shape = (-1,) + (1,) * mean.dim()
        f = mean + math.sqrt(2.0) * var.sqrt() * t.view(shape)  # (k, *batch, n)
        vals = func(f)
        w = w.view((-1,) + (1,) * (vals.dim() - 1))
        return (w * vals).sum(0)
