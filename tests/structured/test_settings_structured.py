"""Settings that change the structured kernels: ``use_toeplitz`` (grid covariances) and ``use_keops``."""

from __future__ import annotations

import pytest
import torch

import torchgp
import torchgp as gpytorch
from tests.structured._models import GP
from torchgp.errors import KernelMemoryError
from torchgp.linalg import DenseOperator, KernelOperator
from torchgp.linalg.toeplitz import ToeplitzOperator
from torchgp.utils.grid import create_data_from_grid

D64 = torch.float64


def _data(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=D64)
    return x, torch.sin(5 * x).sum(-1) + 0.1 * torch.randn(n, generator=g, dtype=D64)


def _ski_model(n=300, d=1, grid=80):
    x, y = _data(n, d)
    base = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())
    covar = gpytorch.kernels.GridInterpolationKernel(base, grid, num_dims=d, grid_bounds=[(-0.05, 1.05)] * d)
    model = GP(x, y, covar).double()
    model.initialize(**{"covar_module.base_kernel.base_kernel.lengthscale": 0.3, "likelihood.noise": 0.05})
    return model, x, y


def _mll_and_grads(model, x, y):
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    value = mll(model(x), y)
    return value, torch.autograd.grad(value, list(model.parameters()))


def test_use_toeplitz_is_on_by_default_as_in_gpytorch():
    import gpytorch as reference

    assert torchgp.settings.use_toeplitz.on() == reference.settings.use_toeplitz.on()


@pytest.mark.parametrize("d, grid", [(1, 80), (2, 12)])
def test_use_toeplitz_off_gives_dense_grid_factors_with_the_same_products(d, grid):
    model, x, _ = _ski_model(n=200, d=d, grid=grid)
    op_t = model.covar_module(x)
    with torchgp.settings.use_toeplitz(False):
        op_d = model.covar_module(x)
    assert all(isinstance(f, ToeplitzOperator) for f in op_t.base.factors)
    assert all(isinstance(f, DenseOperator) for f in op_d.base.factors)
    V = torch.randn(200, 3, generator=torch.Generator().manual_seed(1), dtype=D64)
    torch.testing.assert_close(op_d.matmul(V), op_t.matmul(V), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(op_d.to_dense(), op_t.to_dense(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(op_d.diagonal(), op_t.diagonal(), rtol=1e-10, atol=1e-10)


def test_use_toeplitz_off_gives_the_same_ski_mll_and_gradients_on_the_iterative_path():
    model, x, y = _ski_model(n=300)
    model.train()
    with torchgp.settings.max_cholesky_size(100), torchgp.settings.cg_tolerance(1e-10):
        value_t, grads_t = _mll_and_grads(model, x, y)
        with torchgp.settings.use_toeplitz(False):
            value_d, grads_d = _mll_and_grads(model, x, y)
    exact, _ = _mll_and_grads(model, x, y)  # Cholesky on the dense W K_UU Wᵀ + σ²I
    assert abs(value_d.item() - value_t.item()) < 1e-10 * abs(value_t.item())
    for a, b in zip(grads_d, grads_t):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert abs(value_d.item() - exact.item()) < 1e-4 * abs(exact.item())  # the stochastic log-determinant


def test_use_toeplitz_off_grid_kernel_on_grid_inputs_is_dense_kronecker_and_exact():
    grid = [torch.linspace(0, 1, 10, dtype=D64), torch.linspace(-1, 1, 7, dtype=D64)]
    X = create_data_from_grid(grid)
    y = torch.sin(3 * X).sum(-1)
    base = gpytorch.kernels.RBFKernel(ard_num_dims=2).double()
    base.lengthscale = torch.tensor([[0.4, 0.7]], dtype=D64)
    model = GP(X, y, gpytorch.kernels.GridKernel(base, grid)).double()
    model.likelihood.noise = 0.1
    with torchgp.settings.use_toeplitz(False):
        K = model.covar_module(X)
        assert all(isinstance(f, DenseOperator) for f in K.factors)
        value, _ = _mll_and_grads(model, X, y)
    dense = GP(X, y, base).double()
    dense.likelihood.noise = 0.1
    exact, _ = _mll_and_grads(dense, X, y)
    torch.testing.assert_close(K.to_dense(), base(X).to_dense(), rtol=1e-10, atol=1e-10)
    assert abs(value.item() - exact.item()) < 1e-8 * abs(exact.item())


def _keops_pair(n=200):
    x, y = _data(n, 2)
    keops = GP(x, y, gpytorch.kernels.ScaleKernel(gpytorch.kernels.keops.RBFKernel(ard_num_dims=2))).double()
    plain = GP(x, y, gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2))).double()
    keops.initialize(**{"likelihood.noise": 0.05, "covar_module.base_kernel.lengthscale": 0.4})
    plain.load_state_dict(keops.state_dict())
    return keops, plain, x, y


def test_use_keops_off_evaluates_the_matrix_with_the_same_mll_gradients_and_predictions():
    keops, plain, x, y = _keops_pair()
    assert isinstance(keops.covar_module.base_kernel(x), KernelOperator)
    ref, g_ref = _mll_and_grads(plain, x, y)
    with torchgp.settings.use_keops(False):
        assert isinstance(keops.covar_module.base_kernel(x), DenseOperator)
        assert isinstance(keops.covar_module(x), DenseOperator)
        value, grads = _mll_and_grads(keops, x, y)
    assert abs(value.item() - ref.item()) < 1e-10 * abs(ref.item())
    for a, b in zip(grads, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    xs = torch.rand(5, 2, generator=torch.Generator().manual_seed(3), dtype=D64)
    keops.eval()
    plain.eval()
    with torch.no_grad(), torchgp.settings.use_keops(False):
        pred, pred_ref = keops(xs), plain(xs)
        torch.testing.assert_close(pred.mean, pred_ref.mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(pred.variance, pred_ref.variance, rtol=1e-10, atol=1e-12)


def test_use_keops_off_needs_the_whole_matrix_which_on_never_forms():
    keops, _, x, y = _keops_pair(n=300)
    small = torchgp.settings.max_dense_memory(300 * 300 * 8 // 4)  # a quarter of the n × n float64 matrix
    with torchgp.settings.max_cholesky_size(100), torchgp.settings.kernel_block_size(64), small:
        value, _ = _mll_and_grads(keops, x, y)  # on: tiles, the matrix never formed
        assert torch.isfinite(value)
        with torchgp.settings.use_keops(False), pytest.raises(KernelMemoryError):
            keops.covar_module(x)
