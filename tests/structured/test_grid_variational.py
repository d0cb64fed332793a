"""Grid-interpolation variational strategies: q(f) = N(W m, W S Wᵀ), the KL on the grid, KISS-GP classification."""

from __future__ import annotations

import torch

import torchgp as gpytorch
from tests._tol import assert_close
from torchgp.utils.interpolation import Interpolation

D64 = torch.float64


class GridModel(gpytorch.models.ApproximateGP):
    def __init__(self, grid_size, bounds, additive_dims=None):
        if additive_dims is None:
            q = gpytorch.variational.CholeskyVariationalDistribution(grid_size ** len(bounds))
            strategy = gpytorch.variational.GridInterpolationVariationalStrategy(self, grid_size, bounds, q)
        else:
            q = gpytorch.variational.CholeskyVariationalDistribution(grid_size, batch_shape=torch.Size([additive_dims]))
            strategy = gpytorch.variational.AdditiveGridInterpolationVariationalStrategy(
                self, grid_size, bounds, additive_dims, q, mixing_params=True
            )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _randomise_q(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = model.variational_strategy._variational_distribution
    with torch.no_grad():
        q.variational_mean.copy_(torch.randn(q.variational_mean.shape, generator=g, dtype=D64))
        q.chol_variational_covar.copy_(
            torch.eye(q.chol_variational_covar.shape[-1], dtype=D64)
            + 0.1 * torch.randn(q.chol_variational_covar.shape, generator=g, dtype=D64).tril()
        )


def _dense_w(x, grid):
    idx, val = Interpolation().interpolate(grid, x)
    m = 1
    for g in grid:
        m *= g.numel()
    return torch.zeros(x.shape[0], m, dtype=D64).scatter_add(-1, idx, val)


def test_grid_strategy_is_interpolated_q_and_kl_against_the_grid_prior():
    model = GridModel(8, [(0.0, 1.0), (0.0, 2.0)]).double()
    model.variational_strategy(torch.zeros(1, 2, dtype=D64))  # initialises q from the prior
    _randomise_q(model)
    strategy = model.variational_strategy
    Z = strategy.inducing_points
    assert Z.shape == (64, 2)
    x = torch.rand(10, 2, dtype=D64) * torch.tensor([1.0, 2.0], dtype=D64)
    out = model(x)
    q = strategy.variational_distribution
    W = _dense_w(x, strategy._grid(D64, "cpu"))
    assert_close(out.mean, W @ q.mean)
    assert_close(out.covariance_matrix, W @ q.covariance_matrix @ W.T)
    assert_close(out.variance, (W @ q.covariance_matrix @ W.T).diagonal())
    # grid points in the order of the interpolation indices: W at a grid point is its one-hot row
    assert_close(_dense_w(Z[[5, 17]], strategy._grid(D64, "cpu")), torch.eye(64, dtype=D64)[[5, 17]], loose=100)
    K = model.covar_module(Z).to_dense() + strategy._jitter(D64) * torch.eye(64, dtype=D64)
    p = torch.distributions.MultivariateNormal(torch.zeros(64, dtype=D64), K)
    ref = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(q.mean, q.covariance_matrix), p)
    assert_close(strategy.kl_divergence(), ref, loose=100)


def test_additive_strategy_sums_the_per_dimension_grids():
    model = GridModel(10, [(0.0, 1.0)], additive_dims=3).double()
    model.variational_strategy(torch.zeros(1, 3, dtype=D64))
    _randomise_q(model, seed=1)
    s = model.variational_strategy
    with torch.no_grad():
        s.mixing_params.copy_(torch.tensor([0.5, 1.0, 2.0], dtype=D64))
    x = torch.rand(7, 3, dtype=D64)
    out = model(x)
    q = s.variational_distribution
    grid = s._grid(D64, "cpu")
    mean = sum(s.mixing_params[i] * _dense_w(x[:, i : i + 1], grid) @ q.mean[i] for i in range(3))
    cov = sum(
        s.mixing_params[i] ** 2
        * _dense_w(x[:, i : i + 1], grid)
        @ q.covariance_matrix[i]
        @ _dense_w(x[:, i : i + 1], grid).T
        for i in range(3)
    )
    assert_close(out.mean, mean)
    assert_close(out.covariance_matrix, cov)
    assert s.kl_divergence().shape == ()


def test_kiss_gp_classification_trains():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 1, generator=g, dtype=D64)
    y = (torch.sin(8 * x[:, 0]) > 0).to(D64)
    model = GridModel(16, [(0.0, 1.0)]).double()
    # unwhitened q(u) on a grid: a lengthscale near the grid spacing keeps K_UU well conditioned for Adam
    model.covar_module.base_kernel.lengthscale = 0.1
    lik = gpytorch.likelihoods.BernoulliLikelihood()
    mll = gpytorch.mlls.VariationalELBO(lik, model, num_data=60)
    opt = torch.optim.Adam(list(model.parameters()) + list(lik.parameters()), lr=0.01)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    model.eval()
    with torch.no_grad():
        acc = ((lik(model(x)).mean > 0.5).to(D64) == y).to(D64).mean()
    assert acc > 0.8
