"""KISS-GP (GridInterpolationKernel) and GridKernel: convergence, the MLL and its gradients, predictions, bad input."""

from __future__ import annotations

import pytest
import torch

import torchgp
import torchgp as gpytorch
from tests._tol import assert_close
from torchgp.errors import InputError, ShapeError
from torchgp.linalg import solvers
from torchgp.linalg.structured_solve import StructuredFactor, structured_factor
from torchgp.utils.grid import create_data_from_grid

D64 = torch.float64


class SKIModel(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, covar):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _ski(n=300, grid=100, d=1, seed=0, noise=0.05):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=D64)
    y = torch.sin(6 * x).sum(-1) + 0.1 * torch.randn(n, generator=gen, dtype=D64)
    base = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=d))
    covar = gpytorch.kernels.GridInterpolationKernel(base, grid_size=grid, num_dims=d, grid_bounds=[(-0.05, 1.05)] * d)
    lik = gpytorch.likelihoods.GaussianLikelihood()
    model = SKIModel(x, y, lik, covar).double()
    model.initialize(**{"covar_module.base_kernel.base_kernel.lengthscale": 0.3, "likelihood.noise": noise})
    return model, x, y


@pytest.fixture
def routed(monkeypatch):
    """The solver choice with structured operators routed to their own factorisations."""
    original = solvers.factorize

    def factorize(op):
        f = structured_factor(solvers.as_operator(op))
        return f if f is not None else original(op)

    monkeypatch.setattr(solvers, "factorize", factorize)


def test_ski_converges_at_the_cubic_interpolation_rate():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(60, 1, generator=gen, dtype=D64)
    exact = gpytorch.kernels.RBFKernel().double()(x).to_dense()
    errors = []
    for g in (20, 40, 80, 160):
        k = gpytorch.kernels.GridInterpolationKernel(gpytorch.kernels.RBFKernel(), g, num_dims=1).double()
        errors.append((k(x).to_dense() - exact).abs().max().item())
    rates = [a / b for a, b in zip(errors, errors[1:])]
    assert all(r > 5 for r in rates), (errors, rates)  # halving h divides the error by ~2³
    assert errors[-1] < 1e-6


def test_ski_2d_is_kronecker_of_toeplitz_and_approximates_the_kernel():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(40, 2, generator=gen, dtype=D64)
    base = gpytorch.kernels.RBFKernel(ard_num_dims=2).double()
    base.lengthscale = torch.tensor([[0.3, 0.5]], dtype=D64)
    k = gpytorch.kernels.GridInterpolationKernel(base, 60, num_dims=2).double()
    op = k(x)
    assert isinstance(op.base, torchgp.linalg.KroneckerProductOperator)
    assert all(isinstance(f, torchgp.linalg.toeplitz.ToeplitzOperator) for f in op.base.factors)
    assert (op.to_dense() - base(x).to_dense()).abs().max() < 1e-5


def _dense_mll_terms(model, x, y):
    K = model.covar_module(x).to_dense() + model.likelihood.noise * torch.eye(len(x), dtype=D64)
    r = y - model.mean_module(x)
    L = torch.linalg.cholesky(K)
    return (r @ torch.cholesky_solve(r[:, None], L))[0], 2 * L.diagonal().log().sum()


def test_structured_inv_quad_logdet_and_gradients_equal_dense(routed):
    model, x, y = _ski(n=400)
    model.train()
    with torchgp.settings.max_cholesky_size(100), torchgp.settings.cg_tolerance(1e-10):
        cov = model.likelihood(model(x)).lazy_covariance_matrix
        factor = solvers.factorize(cov)
        assert isinstance(factor, StructuredFactor)
        quad, logdet = factor.inv_quad_logdet((y - model.mean_module(x)).unsqueeze(-1))
        params = [p for p in model.parameters()]
        g_fast = torch.autograd.grad(quad + logdet, params)
    quad_d, logdet_d = _dense_mll_terms(model, x, y)
    g_dense = torch.autograd.grad(quad_d + logdet_d, params)
    assert_close(quad, quad_d, loose=100)
    assert abs((logdet - logdet_d) / logdet_d) < 1e-6
    for a, b in zip(g_fast, g_dense):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max())), (a, b)


@pytest.mark.parametrize("d, grid", [(1, 100), (2, 25)])
def test_ski_mll_through_the_iterative_path_equals_the_cholesky_path(routed, d, grid):
    model, x, y = _ski(n=400, grid=grid, d=d)
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    exact = mll(model(x), y)
    g_exact = torch.autograd.grad(exact, list(model.parameters()))
    with torchgp.settings.max_cholesky_size(100), torchgp.settings.cg_tolerance(1e-10):
        fast = mll(model(x), y)
        g_fast = torch.autograd.grad(fast, list(model.parameters()))
    assert abs(fast.item() - exact.item()) < 1e-6 * abs(exact.item())
    for a, b in zip(g_fast, g_exact):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6), (a, b)


def test_ski_predictions_equal_the_dense_ski_posterior(routed):
    model, x, y = _ski(n=300)
    xs = torch.linspace(0.05, 0.95, 17, dtype=D64).unsqueeze(-1)
    Kxx = model.covar_module(x).to_dense() + model.likelihood.noise * torch.eye(300, dtype=D64)
    Ksx = model.covar_module(xs, x).to_dense()
    c = model.mean_module.constant
    mean = c + Ksx @ torch.linalg.solve(Kxx, y - c)
    var = model.covar_module(xs, diag=True) - (Ksx * torch.linalg.solve(Kxx, Ksx.T).T).sum(-1)
    model.eval()
    with torch.no_grad():
        pred = model(xs)
        assert_close(pred.mean, mean.detach(), loose=10)
        assert_close(pred.variance, var.detach(), loose=10)
    model.train()
    model.eval()
    with torch.no_grad(), torchgp.settings.max_cholesky_size(100):
        pred = model(xs)
        assert_close(pred.mean, mean.detach(), loose=1e3)


def test_grid_kernel_on_grid_inputs_equals_the_exact_gp():
    grid = [torch.linspace(0, 1, 12, dtype=D64), torch.linspace(-1, 1, 9, dtype=D64)]
    X = create_data_from_grid(grid)
    y = torch.sin(3 * X[:, 0]) * torch.cos(2 * X[:, 1])
    base = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2))
    exact_model = SKIModel(X, y, gpytorch.likelihoods.GaussianLikelihood(), base).double()
    grid_kernel = gpytorch.kernels.GridKernel(base, grid)
    grid_model = SKIModel(X, y, gpytorch.likelihoods.GaussianLikelihood(), grid_kernel).double()
    for m in (exact_model, grid_model):
        m.initialize(**{"likelihood.noise": 0.01})
    base.base_kernel.lengthscale = torch.tensor([[0.3, 0.6]], dtype=D64)
    op = grid_kernel(X)
    assert isinstance(op, torchgp.linalg.KroneckerProductOperator)
    assert_close(op.to_dense(), base(X).to_dense())
    cov = grid_model.likelihood(grid_model(X)).lazy_covariance_matrix
    factor = structured_factor(cov) or solvers.factorize(cov)  # σ²I kept as Kronecker structure either way
    assert factor.kind == "kronecker"
    r = (y - grid_model.mean_module(X)).unsqueeze(-1)
    quad, logdet = factor.inv_quad_logdet(r)
    quad_d, logdet_d = _dense_mll_terms(exact_model, X, y)
    assert_close(quad, quad_d)
    assert_close(logdet, logdet_d)
    for m in (exact_model, grid_model):
        m.eval()
    xs = torch.rand(5, 2, dtype=D64)
    with torch.no_grad():
        assert_close(grid_model(xs).mean, exact_model(xs).mean)


def test_grid_kernel_off_grid_inputs_use_the_base_kernel():
    grid = [torch.linspace(0, 1, 5, dtype=D64)]
    k = gpytorch.kernels.GridKernel(gpytorch.kernels.RBFKernel(), grid).double()
    x = torch.rand(7, 1, dtype=D64)
    assert_close(k(x).to_dense(), k.base_kernel(x).to_dense())


def test_bad_input_gets_clear_errors():
    rbf = gpytorch.kernels.RBFKernel()
    with pytest.raises(InputError, match="at least 4"):
        gpytorch.kernels.GridInterpolationKernel(rbf, grid_size=3, num_dims=1)
    with pytest.raises(InputError, match="num_dims"):
        gpytorch.kernels.GridInterpolationKernel(rbf, grid_size=10)
    k = gpytorch.kernels.GridInterpolationKernel(rbf, grid_size=10, num_dims=1).double()
    with pytest.raises(ShapeError, match="num_dims=1"):
        k(torch.rand(5, 2, dtype=D64))
    k = gpytorch.kernels.GridInterpolationKernel(rbf, grid_size=10, grid_bounds=[(0.0, 1.0)]).double()
    with pytest.raises(InputError, match="outside the grid"):
        k(torch.tensor([[0.5], [3.0]], dtype=D64))


def test_a_data_following_grid_moves_to_cover_new_data():
    k = gpytorch.kernels.GridInterpolationKernel(gpytorch.kernels.RBFKernel(), grid_size=50, num_dims=1).double()
    x = 10 + 5 * torch.rand(30, 1, dtype=D64)
    exact = k.base_kernel(x).to_dense()
    assert (k(x).to_dense() - exact).abs().max() < 1e-3
    assert k.grid[0][0] < x.min() and k.grid[0][-1] > x.max()


def test_float32_ski_solves_in_float64_and_matches_the_float64_mll(routed):
    model, x, y = _ski(n=2000, grid=400)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    exact = mll(model(x), y).item()  # float64, Cholesky
    model32 = model.float()
    with torchgp.settings.max_cholesky_size(100):
        value = mll(model32(x.float()), y.float())
    assert value.dtype == torch.float32
    assert abs(value.item() - exact) < 1e-3 * abs(exact)


def test_love_variances_for_ski_equal_the_exact_ski_variances(routed):
    model, x, y = _ski(n=300)
    xs = torch.linspace(0.05, 0.95, 17, dtype=D64).unsqueeze(-1)
    model.eval()
    with torch.no_grad():
        exact = model(xs).variance  # Cholesky
    model.train()
    model.eval()
    with torch.no_grad(), torchgp.settings.max_cholesky_size(100), torchgp.settings.fast_pred_var():
        love = model(xs).variance  # LOVE's Lanczos root through the operator's products
    assert_close(love, exact, loose=1e3)


def test_scale_kernel_over_ski_keeps_the_interpolated_structure():
    """``ScaleKernel(GridInterpolationKernel(...))`` stays ``s · W K_UU Wᵀ`` (never an n × n kernel operator)."""
    from torchgp import kernels as K
    from torchgp.linalg.interpolated import InterpolatedOperator

    X = torch.rand(40, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    base = K.GridInterpolationKernel(K.RBFKernel(), grid_size=30, num_dims=1).double()
    k = K.ScaleKernel(base).double()
    k.outputscale = 2.3
    out = k(X)
    assert isinstance(out, InterpolatedOperator)
    torch.testing.assert_close(out.to_dense(), 2.3 * base(X).to_dense(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(k(X, diag=True), 2.3 * base(X, diag=True), rtol=1e-12, atol=1e-12)
    (out.diagonal().sum()).backward()
    assert k.raw_outputscale.grad is not None and torch.isfinite(k.raw_outputscale.grad)
