"""KISS-GP predictions from grid caches (LOVE on the grid): equal to the dense SKI posterior, O(m k) storage."""

from __future__ import annotations

import torch

import torchgp as gpytorch
from tests._tol import assert_close
from torchgp.linalg.interpolated import InterpolatedOperator
from torchgp.models.love import SKIPredictionCache

D64 = torch.float64


def _problem(n=300, grid=60, seed=0, noise=0.05):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen, dtype=D64)
    y = torch.sin(6 * x).squeeze(-1) + 0.1 * torch.randn(n, generator=gen, dtype=D64)
    xs = torch.linspace(0.02, 0.98, 23, dtype=D64).unsqueeze(-1)
    base = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
    k = gpytorch.kernels.GridInterpolationKernel(base, grid_size=grid, num_dims=1, grid_bounds=[(-0.05, 1.05)])
    k = k.double()
    k.base_kernel.base_kernel.lengthscale = 0.2
    k.base_kernel.outputscale = 1.3
    return k, x, y, xs, noise


def _dense_reference(k, x, y, xs, noise):
    """The SKI posterior from the dense matrices ``W K_UU Wᵀ + σ²I`` (R&W 2006, Alg. 2.1)."""
    n = x.shape[0]
    joint = k(torch.cat([x, xs])).to_dense()
    K, Ksx, Kss = joint[:n, :n], joint[n:, :n], joint[n:, n:]
    Khat = K + noise * torch.eye(n, dtype=D64)
    mean = Ksx @ torch.linalg.solve(Khat, y)
    var = Kss.diagonal() - (Ksx * torch.linalg.solve(Khat, Ksx.mT).mT).sum(-1)
    return mean, var


def _cache(k, x, y, noise, rank):
    train = k(x)
    assert isinstance(train, InterpolatedOperator)
    Khat = train.to_dense() + noise * torch.eye(x.shape[0], dtype=D64)
    alpha = torch.linalg.solve(Khat, y.unsqueeze(-1))

    def noisy_matmul(v):
        return train.matmul(v) + noise * v

    return SKIPredictionCache(train, noisy_matmul, alpha, rank), train


def _test_weights(k, xs):
    op = k(xs)
    return op.left_indices, op.left_values, op.diagonal()


def test_grid_cached_mean_and_love_variance_equal_the_dense_ski_posterior():
    k, x, y, xs, noise = _problem()
    mean_ref, var_ref = _dense_reference(k, x, y, xs, noise)
    # rank(W K_UU Wᵀ) ≤ m = 60, so K + σ²I has at most 61 distinct eigenvalues and 61 Lanczos steps are exact
    cache, _ = _cache(k, x, y, noise, rank=61)
    idx, val, prior_var = _test_weights(k, xs)
    assert_close(cache.mean(idx, val), mean_ref, loose=1e2)
    assert_close(prior_var - cache.variance_reduction(idx, val), var_ref, loose=1e3)


def test_low_rank_love_cache_approaches_the_exact_variances_as_the_rank_grows():
    k, x, y, xs, noise = _problem()
    _, var_ref = _dense_reference(k, x, y, xs, noise)
    idx, val, prior_var = _test_weights(k, xs)
    errors = []
    for rank in (5, 15, 30):
        cache, _ = _cache(k, x, y, noise, rank)
        errors.append((prior_var - cache.variance_reduction(idx, val) - var_ref).abs().max().item())
    assert errors[0] > errors[-1]
    assert errors[-1] < 1e-3 * var_ref.max().item()


def test_cache_is_on_the_grid_and_a_test_point_never_touches_the_training_data():
    k, x, y, xs, noise = _problem(n=400, grid=50)
    cache, train = _cache(k, x, y, noise, rank=20)
    m = train.base.shape[-1]
    assert cache.covar_cache.shape == (m, 20)  # m × k, not n × k
    assert cache.mean_cache.shape == (m, 1)
    idx, val, _ = _test_weights(k, xs)
    calls = []
    original = InterpolatedOperator.matmul

    def spy(self, rhs):
        calls.append(self.shape)
        return original(self, rhs)

    InterpolatedOperator.matmul = spy
    try:
        red = cache.variance_reduction(idx, val)
        mean = cache.mean(idx, val)
    finally:
        InterpolatedOperator.matmul = original
    assert calls == []  # only the test points' 4 weights each and the m-row caches
    assert red.shape == mean.shape == (xs.shape[0],)
    # the same caches from twice the training data: same storage, test cost unchanged
    k2, x2, y2, _, _ = _problem(n=800, grid=50, seed=1)
    cache2, _ = _cache(k2, x2, y2, noise, rank=20)
    assert cache2.covar_cache.shape == cache.covar_cache.shape


def test_cache_needs_an_interpolated_covariance():
    import pytest

    with pytest.raises(TypeError, match="InterpolatedOperator"):
        SKIPredictionCache(torch.eye(3, dtype=D64), lambda v: v, torch.zeros(3, 1, dtype=D64), 2)


class _SKIModel(gpytorch.models.ExactGP):
    def __init__(self, x, y, lik, kernel):
        super().__init__(x, y, lik)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = kernel

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _fitted_model():
    k, x, y, xs, noise = _problem()
    lik = gpytorch.likelihoods.GaussianLikelihood().double()
    lik.noise = noise
    model = _SKIModel(x, y, lik, k).double().eval()
    model.mean_module.constant = 0.3
    return model, k, x, y, xs, noise


def test_ski_model_predicts_from_the_grid_caches_and_equals_the_dense_posterior():
    model, k, x, y, xs, noise = _fitted_model()
    c = 0.3
    mean_ref, var_ref = _dense_reference(k, x, y - c, xs, noise)
    with torch.no_grad():
        out = model(xs)
        with gpytorch.settings.fast_pred_var(), gpytorch.settings.max_root_decomposition_size(61):
            love = model(xs)
            cov = love.lazy_covariance_matrix
            # mean, variance and covariance come from the grid caches: no row of K(X*, X) is evaluated
            cov.cross.block_fn = None
            love_var, love_cov = love.variance, love.covariance_matrix
    assert_close(out.mean, mean_ref + c)
    assert_close(out.variance, var_ref, loose=1e3)
    assert_close(love.mean, mean_ref + c)
    # rank ≥ distinct eigenvalues of K + σ²I: LOVE through the grid cache is exact
    assert_close(love_var, var_ref, loose=1e3)
    assert_close(love_cov, out.covariance_matrix, loose=1e3)
    assert cov._ski.covar_cache.shape[-2:] == (60, 61)  # m × k: the per-point cost does not grow with n
