r"""``AdditiveGridInterpolationVariationalStrategy``: additive KISS-GP for variational models.

Each of ``d`` input dimensions has its own function on one shared 1-D grid, ``f(x) = Σ_i c_i f_i(x_i)``
(Duvenaud et al. 2011; Gardner et al. 2018 for SKI in additive structure), with independent
``q(u_i) = N(m_i, S_i)`` (a variational distribution of ``batch_shape = (d,)``) and optional mixing weights
``c_i``:

.. math::
    q(f(X)) = N\Big(\sum_i c_i W_{X_i} m_i,\ \sum_i c_i^2\, W_{X_i} S_i W_{X_i}^\top\Big).

With ``sum_output=False`` the ``d`` components are returned as a batch ``(d, b)``.
"""

from __future__ import annotations

import torch
from torch import nn

from torchgp.distributions import MultivariateNormal
from torchgp.errors import ShapeError
from torchgp.variational.grid_interpolation_variational_strategy import GridInterpolationVariationalStrategy

__all__ = ["AdditiveGridInterpolationVariationalStrategy"]


class AdditiveGridInterpolationVariationalStrategy(GridInterpolationVariationalStrategy):
    """A 1-D grid variational strategy applied to each of ``num_dim`` inputs, summed (or kept apart).

    Args:
        model: the :class:`~torchgp.models.ApproximateGP` (its ``forward`` gives the 1-D prior).
        grid_size: points of the 1-D grid.
        grid_bounds: ``[(lower, upper)]``, the bounds of the one grid (shared by all dimensions).
        num_dim: ``d``, the number of input dimensions.
        variational_distribution: over ``grid_size`` values with ``batch_shape = (d,)``.
        mixing_params: learn one weight ``c_i`` per dimension (initialised to ``1/d``).
        sum_output: return the sum over dimensions ``(*batch, b)`` (else ``(*batch, d, b)``).

    Shapes:
        ``strategy(x (*batch, b, d))`` → ``MultivariateNormal`` ``(*batch, b)`` (``(*batch, d, b)`` unsummed).
    """

    def __init__(
        self, model, grid_size, grid_bounds, num_dim, variational_distribution, mixing_params=False, sum_output=True
    ):
        grid_bounds = list(grid_bounds)
        if len(grid_bounds) != 1:
            raise ShapeError(
                f"AdditiveGridInterpolationVariationalStrategy uses one 1-D grid for all {num_dim} dimensions: pass "
                f"grid_bounds as [(lower, upper)]; got {len(grid_bounds)} pairs."
            )
        super().__init__(model, grid_size, grid_bounds, variational_distribution)
        self.num_dim = int(num_dim)
        self.sum_output = bool(sum_output)
        if mixing_params:
            self.register_parameter("mixing_params", nn.Parameter(torch.ones(self.num_dim) / self.num_dim))
        else:
            self.mixing_params = None

    def __call__(self, x: torch.Tensor, prior: bool = False, **kwargs) -> MultivariateNormal:
        if prior:
            return self.model.forward(x, **kwargs)
        if x.shape[-1] != self.num_dim:
            raise ShapeError(f"Expected inputs with num_dim = {self.num_dim} columns; got shape {tuple(x.shape)}.")
        columns = x.mT.unsqueeze(-1)  # (*batch, d, b, 1): one 1-D problem per dimension
        out = super().__call__(columns, **kwargs)
        mean, cov = out.mean, out.lazy_covariance_matrix
        if self.mixing_params is not None:
            c = self.mixing_params
            mean = mean * c.unsqueeze(-1)
            cov = cov._scale(c.pow(2))  # c_i² W S_i Wᵀ for each batch member i
        if not self.sum_output:
            return MultivariateNormal(mean, cov)
        return MultivariateNormal(mean.sum(-2), cov.sum(-3))

    def kl_divergence(self) -> torch.Tensor:
        """``Σ_i KL(q(u_i) ‖ p(u_i))`` over the dimensions (``(*batch, d)`` kept apart when ``sum_output=False``)."""
        kl = super().kl_divergence()
        return kl.sum(-1) if self.sum_output else kl
