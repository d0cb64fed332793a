r"""Kernels on distributional inputs: :math:`k(p, p') = \exp(-d(p, p')/\ell)` for a divergence d."""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchgp.errors import ShapeError
from torchgp.kernels.kernel import Kernel


class DistributionalInputKernel(Kernel):
    r"""Exponentiated distance between input distributions.

    .. math:: k(p, p') = \exp\!\big(-d(p, p') / \ell\big)

    Args:
        distance_function: ``d(x1 (*batch, n, e), x2 (*batch, m, e)) → (*batch, n, m)``, where each
            row of ``e`` numbers parametrises one distribution. It must broadcast over leading batch
            dimensions (the diagonal is computed on aligned pairs).
        lengthscale_prior, lengthscale_constraint, batch_shape, active_dims: as :class:`Kernel`.

    Shapes:
        ``x1 (*batch, n, e)``, ``x2 (*batch, m, e)`` → ``(*batch, n, m)``.
    """

    has_lengthscale = True

    def __init__(self, distance_function: Callable, **kwargs):
        if distance_function is None or not callable(distance_function):
            raise TypeError("DistributionalInputKernel needs a callable distance_function(x1, x2) -> (*batch, n, m).")
        super().__init__(**kwargs)
        self.distance_function = distance_function

    def forward(self, x1, x2, **params):
        return torch.exp(-self.distance_function(x1, x2) / self.lengthscale)


def _split_gaussians(x: torch.Tensor):
    """``x (*batch, n, 2k)`` → means ``(*batch, n, k)`` and log-variances ``(*batch, n, k)``."""
    if x.shape[-1] % 2:
        raise ShapeError(
            "GaussianSymmetrizedKLKernel: each input row must hold k means then k log-variances (2k columns); "
            f"got {x.shape[-1]} columns."
        )
    k = x.shape[-1] // 2
    return x[..., :k], x[..., k:]


def _sym_kl_terms(mu1, logvar1, mu2, logvar2, eps: float) -> torch.Tensor:
    r"""Per-dimension :math:`KL(p_1\Vert p_2) + KL(p_2\Vert p_1)` for Gaussians (broadcasting shapes).

    .. math:: \tfrac12\big(v_1/v_2 + v_2/v_1 - 2 + (\mu_1 - \mu_2)^2 (1/v_1 + 1/v_2)\big),\quad v = \epsilon + e^{\log v}
    """
    v1, v2 = eps + logvar1.exp(), eps + logvar2.exp()
    ratio = v1 / v2
    return 0.5 * (ratio + ratio.reciprocal() - 2 + (mu1 - mu2).pow(2) * (v1.reciprocal() + v2.reciprocal()))


def symmetrized_kl(x1: torch.Tensor, x2: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Symmetrised KL divergence between diagonal Gaussians, ``(*batch, n, 2k) × (*batch, m, 2k) → (*batch, n, m)``.

    Rows hold k means then k log-variances; ``eps`` is added to every variance.
    """
    mu1, lv1 = _split_gaussians(x1)
    mu2, lv2 = _split_gaussians(x2)
    terms = _sym_kl_terms(mu1.unsqueeze(-2), lv1.unsqueeze(-2), mu2.unsqueeze(-3), lv2.unsqueeze(-3), eps)
    return terms.sum(-1)


class GaussianSymmetrizedKLKernel(DistributionalInputKernel):
    r"""Kernel between diagonal Gaussians by their symmetrised KL divergence (Moreno et al. 2003).

    .. math::
        k(p, p') = \exp\!\big(-[KL(p\Vert p') + KL(p'\Vert p)] / \ell\big),\quad
        KL + KL = \sum_j \tfrac12\big(\tfrac{v_j}{v'_j} + \tfrac{v'_j}{v_j} - 2
        + (\mu_j - \mu'_j)^2 (\tfrac1{v_j} + \tfrac1{v'_j})\big)

    Each input row is ``[μ_1..μ_k, log v_1..log v_k]`` (variances get ``+1e-8``).

    Args:
        lengthscale_prior, lengthscale_constraint, batch_shape, active_dims: as :class:`Kernel`.

    Shapes:
        ``x1 (*batch, n, 2k)``, ``x2 (*batch, m, 2k)`` → ``(*batch, n, m)``.
    """

    def __init__(self, **kwargs):
        super().__init__(distance_function=symmetrized_kl, **kwargs)

    def forward_diag(self, x1, x2, **params):
        mu1, lv1 = _split_gaussians(x1)
        mu2, lv2 = _split_gaussians(x2)
        d = _sym_kl_terms(mu1, lv1, mu2, lv2, 1e-8).sum(-1)  # (*batch, n)
        return torch.exp(-d / self.lengthscale[..., 0])
