r"""``GridInterpolationVariationalStrategy``: KISS-GP for variational (e.g. classification) models.

The inducing points are the ``m = g^d`` points of a fixed regular grid ``U`` and ``q(u) = N(m_u, S)``
(unwhitened). A function value is interpolated from the grid, ``f(x) ≈ w(x)ᵀ u`` with local cubic weights
(Wilson & Nickisch 2015, eq. 5; Wilson et al. 2016, "stochastic variational deep kernel learning", §3), so

.. math::
    q(f(X)) = N\big(W_X m_u,\; W_X S W_X^\top\big),\qquad
    \mathrm{KL}\big(q(u) \,\|\, p(u)\big),\quad p(u) = N(\mu(U), K_{UU} + \varepsilon I),

``O(b 4^d)`` per minibatch point for the mean and variance (``4^d`` weights per row) and one ``O(m³)`` KL.
"""

from __future__ import annotations

import torch

from torchgp.distributions import MultivariateNormal
from torchgp.distributions.kl import gaussian_kl
from torchgp.errors import InputError, ShapeError
from torchgp.linalg.cholesky import psd_safe_cholesky
from torchgp.linalg.interpolated import InterpolatedOperator
from torchgp.linalg.operators import DenseOperator
from torchgp.utils.grid import create_grid
from torchgp.utils.interpolation import Interpolation, left_interp
from torchgp.variational.variational_strategy import _VariationalStrategy

__all__ = ["GridInterpolationVariationalStrategy"]


def grid_points(grid: list[torch.Tensor]) -> torch.Tensor:
    """All points of the grid, ``(Π g_i, d)``, the LAST dimension fastest (the order of interpolation indices)."""
    if len(grid) == 1:
        return grid[0].unsqueeze(-1)
    return torch.cartesian_prod(*grid)


class GridInterpolationVariationalStrategy(_VariationalStrategy):
    r"""Variational strategy whose inducing points are a regular grid, read by cubic interpolation.

    Args:
        model: the :class:`~torchgp.models.ApproximateGP` whose ``forward`` gives the prior.
        grid_size: grid points per dimension ``g`` (at least 4 for cubic interpolation).
        grid_bounds: ``(lower, upper)`` per input dimension; the grid reaches one spacing beyond them.
        variational_distribution: over ``m = g^d`` values (e.g. ``CholeskyVariationalDistribution(g ** d)``).

    Shapes:
        ``strategy(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)``; ``inducing_points`` is the grid
        ``(g^d, d)`` (a buffer: the grid is fixed).
    """

    _whitened = False

    def __init__(self, model, grid_size, grid_bounds, variational_distribution):
        grid_bounds = [tuple(float(v) for v in b) for b in grid_bounds]
        if int(grid_size) < 4:
            raise InputError(f"grid_size must be at least 4 for cubic interpolation; got {grid_size}.")
        grid = create_grid([int(grid_size)] * len(grid_bounds), grid_bounds, dtype=torch.get_default_dtype())
        super().__init__(model, grid_points(grid), variational_distribution, learn_inducing_locations=False)
        self.register_buffer("grid", torch.stack(grid, -1))  # (g, d): column i is dimension i's grid (GPyTorch's)
        self.grid_size = int(grid_size)
        self.grid_bounds = tuple(grid_bounds)
        self.num_dims = len(grid_bounds)

    def _grid(self, dtype, device) -> list[torch.Tensor]:
        return [self.grid[:, i].to(dtype=dtype, device=device) for i in range(self.num_dims)]

    def _interpolation(self, x: torch.Tensor):
        """``(indices, values)`` ``(*batch, b, 4^d)`` of ``x (*batch, b, d)`` on the grid."""
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.shape[-1] != self.num_dims:
            raise ShapeError(
                f"{type(self).__name__} has a {self.num_dims}-D grid but got inputs with {x.shape[-1]} features "
                f"(shape {tuple(x.shape)}); give grid_bounds one (lower, upper) pair per input dimension."
            )
        idx, val = Interpolation().interpolate(self._grid(x.dtype, x.device), x.reshape(-1, x.shape[-1]))
        return idx.reshape(*x.shape[:-1], -1), val.reshape(*x.shape[:-1], -1)

    def _jitter(self, dtype) -> float:
        """The jitter of ``p(u)``, 10⁻³ (GPyTorch's): the interpolation grid is dense, so ``K_UU`` is near-singular."""
        return 1e-3

    @property
    def prior_distribution(self) -> MultivariateNormal:
        """``p(u) = N(μ(U), K_UU + 10⁻³ I)``, ``(*batch, m)``: it initialises ``q(u)`` and enters the KL."""
        prior = self._prior_at_inducing()
        K = prior.covariance_matrix
        eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
        return MultivariateNormal(prior.mean, K + self._jitter(K.dtype) * eye)

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        """``q(f(x)) = N(W_x m_u, W_x S W_xᵀ)``, ``(*batch, b)``; the model's prior if ``prior=True``."""
        if prior:
            return self.model.forward(x, **kwargs)
        self._initialize()
        idx, val = self._interpolation(x)
        q_mean, q_chol = self._variational_distribution.mean_and_scale_tril()
        mean = left_interp(idx, val, q_mean.unsqueeze(-1)).squeeze(-1)  # W_x m_u
        S = q_chol @ q_chol.mT
        return MultivariateNormal(mean, InterpolatedOperator(DenseOperator(S), idx, val))

    def kl_divergence(self) -> torch.Tensor:
        """``KL(q(u) ‖ p(u))``, ``(*batch)``."""
        prior = self.prior_distribution
        q_mean, q_chol = self._variational_distribution.mean_and_scale_tril()
        return gaussian_kl(q_mean, q_chol, prior.mean, psd_safe_cholesky(prior.covariance_matrix))
