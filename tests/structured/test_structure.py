"""AdditiveStructureKernel / ProductStructureKernel: sums and products over dimensions, with SKI inside."""

from __future__ import annotations

import torch

import torchgp
import torchgp as gpytorch
from tests._tol import assert_close
from tests.structured._models import GP
from torchgp.linalg.structured_solve import StructuredFactor, structured_factor

D64 = torch.float64


def _x(n, d, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=D64)


def test_additive_and_product_structure_equal_sums_and_products_over_columns():
    x, z = _x(20, 3), _x(15, 3, seed=1)
    base = gpytorch.kernels.MaternKernel(nu=2.5).double()
    base.lengthscale = 0.4
    cols = [base(x[:, i : i + 1], z[:, i : i + 1]).to_dense() for i in range(3)]
    add = gpytorch.kernels.AdditiveStructureKernel(base, num_dims=3)
    prod = gpytorch.kernels.ProductStructureKernel(base, num_dims=3)
    assert_close(add(x, z).to_dense(), cols[0] + cols[1] + cols[2])
    assert_close(prod(x, z).to_dense(), cols[0] * cols[1] * cols[2])
    diags = [base(x[:, i : i + 1], diag=True) for i in range(3)]
    assert_close(add(x, diag=True), diags[0] + diags[1] + diags[2])
    assert_close(prod(x, diag=True), prod(x).to_dense().diagonal())


def test_per_dimension_hyperparameters_with_a_batched_base_kernel():
    x = _x(12, 2)
    base = gpytorch.kernels.RBFKernel(batch_shape=torch.Size([2])).double()
    base.lengthscale = torch.tensor([[[0.3]], [[0.8]]], dtype=D64)
    k = gpytorch.kernels.AdditiveStructureKernel(base, num_dims=2)
    r0 = gpytorch.kernels.RBFKernel().double().initialize(lengthscale=0.3)(x[:, :1]).to_dense()
    r1 = gpytorch.kernels.RBFKernel().double().initialize(lengthscale=0.8)(x[:, 1:]).to_dense()
    assert_close(k(x).to_dense(), r0 + r1)


def test_additive_ski_approximates_the_additive_kernel_and_solves_through_its_products():
    x = _x(300, 4)
    y = torch.sin(5 * x).sum(-1)
    ski = gpytorch.kernels.AdditiveStructureKernel(
        gpytorch.kernels.GridInterpolationKernel(gpytorch.kernels.RBFKernel(), grid_size=200, num_dims=1), num_dims=4
    )
    model = GP(x, y, ski).double()
    model.initialize(**{"likelihood.noise": 0.05, "covar_module.base_kernel.base_kernel.lengthscale": 0.3})
    exact = gpytorch.kernels.AdditiveStructureKernel(gpytorch.kernels.RBFKernel(), num_dims=4).double()
    exact.base_kernel.lengthscale = 0.3
    assert (ski(x).to_dense() - exact(x).to_dense()).abs().max() < 1e-6
    cov = model.likelihood(model(x)).lazy_covariance_matrix
    with torchgp.settings.max_cholesky_size(100), torchgp.settings.cg_tolerance(1e-10):
        factor = structured_factor(cov)
        assert isinstance(factor, StructuredFactor)
        r = (y - model.mean_module(x)).unsqueeze(-1)
        quad, logdet = factor.inv_quad_logdet(r)
        params = list(model.parameters())
        g = torch.autograd.grad(quad + logdet, params, allow_unused=True)
    K = model.likelihood(model(x)).lazy_covariance_matrix.to_dense()
    L = torch.linalg.cholesky(K)
    quad_d = (r * torch.cholesky_solve(r, L)).sum()
    logdet_d = 2 * L.diagonal().log().sum()
    g_d = torch.autograd.grad(quad_d + logdet_d, params, allow_unused=True)
    assert abs(quad.item() - quad_d.item()) < 1e-6 * abs(quad_d.item())
    assert abs(logdet.item() - logdet_d.item()) < 1e-6 * abs(logdet_d.item())
    for a, b in zip(g, g_d):
        if b is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)
