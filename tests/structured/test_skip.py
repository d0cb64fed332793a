"""SKIP (ProductStructureKernel over a 1-D GridInterpolationKernel): low-rank Hadamard products, never n × n."""

from __future__ import annotations

import pytest
import torch

import torchgp
import torchgp as gpytorch
from torchgp.linalg.interpolated import InterpolatedOperator
from torchgp.linalg.skip import HadamardLowRankOperator, LowRankCoreOperator, lanczos_projection, skip_product

D64 = torch.float64


class Model(gpytorch.models.ExactGP):
    def __init__(self, x, y, lik, covar):
        super().__init__(x, y, lik)
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _model(n=150, d=2, grid=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=D64)
    y = torch.sin(3 * x).prod(-1) + 0.1 * torch.randn(n, generator=gen, dtype=D64)
    ski = gpytorch.kernels.GridInterpolationKernel(
        gpytorch.kernels.RBFKernel(), grid_size=grid, num_dims=1, grid_bounds=[(-0.1, 1.1)]
    )
    covar = gpytorch.kernels.ScaleKernel(gpytorch.kernels.ProductStructureKernel(ski, num_dims=d))
    model = Model(x, y, gpytorch.likelihoods.GaussianLikelihood(), covar).double()
    model.initialize(**{"covar_module.base_kernel.base_kernel.base_kernel.lengthscale": 0.5, "likelihood.noise": 0.05})
    return model, x, y


def _dense_product_kernel(model, x):
    """``∏_i W_i K_UU Wᵢᵀ`` (dense): the product kernel whose interpolated factors SKIP compresses."""
    prod = model.covar_module.base_kernel
    with torchgp.settings.max_cholesky_size(10**6):
        K = prod(x).to_dense()
    return model.covar_module.outputscale * K


def _dense_mll(model, x, y):
    n = x.shape[0]
    A = _dense_product_kernel(model, x) + model.likelihood.noise * torch.eye(n, dtype=D64)
    L = torch.linalg.cholesky(A)
    a = torch.cholesky_solve(y.unsqueeze(-1), L)
    return -0.5 * (
        (y.unsqueeze(-1) * a).sum() + 2 * L.diagonal().log().sum() + n * torch.log(torch.tensor(2 * torch.pi))
    )


@pytest.mark.parametrize("block", [1 << 22, 50])  # one row block, or blocks of 2-3 rows
def test_hadamard_low_rank_products_equal_the_dense_element_wise_product(monkeypatch, block):
    from torchgp.linalg import skip

    monkeypatch.setattr(skip, "_BLOCK_NUMEL", block)
    gen = torch.Generator().manual_seed(0)
    Q1 = torch.linalg.qr(torch.randn(40, 5, generator=gen, dtype=D64))[0]
    Q2 = torch.linalg.qr(torch.randn(40, 4, generator=gen, dtype=D64))[0]
    A1, A2 = torch.randn(5, 5, generator=gen, dtype=D64), torch.randn(4, 4, generator=gen, dtype=D64)
    a, b = LowRankCoreOperator(Q1, A1 @ A1.mT), LowRankCoreOperator(Q2, A2 @ A2.mT)
    H = HadamardLowRankOperator(a, b)
    V = torch.randn(40, 3, generator=gen, dtype=D64)
    dense = a.to_dense() * b.to_dense()
    torch.testing.assert_close(H.matmul(V), dense @ V, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(H.diagonal(), dense.diagonal(), rtol=1e-10, atol=1e-10)
    # a full-rank projection of the product reproduces it
    W = torch.linalg.qr(torch.randn(40, 6, generator=gen, dtype=D64))[0]
    torch.testing.assert_close(H.project(W), W.mT @ dense @ W, rtol=1e-10, atol=1e-10)
    P = lanczos_projection(H, 21)  # rank(H) ≤ 20, plus the start vector's null-space part
    torch.testing.assert_close(P.to_dense(), dense, rtol=1e-8, atol=1e-8)


def test_skip_mll_and_gradients_approach_the_dense_product_kernel_gp_as_the_rank_grows():
    model, x, y = _model()
    exact = _dense_mll(model, x, y)
    (g_exact,) = torch.autograd.grad(exact, model.covar_module.base_kernel.base_kernel.base_kernel.raw_lengthscale)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    errors, grad_errors = [], []
    with torchgp.settings.max_cholesky_size(50), torchgp.settings.deterministic_probes(True):
        for rank in (5, 15, 60):
            with torchgp.settings.max_root_decomposition_size(rank), torchgp.settings.num_trace_samples(64):
                assert isinstance(model.covar_module(x), LowRankCoreOperator)
                value = mll(model(x), y) * x.shape[0]
                (g,) = torch.autograd.grad(
                    value, model.covar_module.base_kernel.base_kernel.base_kernel.raw_lengthscale
                )
            errors.append(abs(value.item() - exact.item()))
            grad_errors.append((g - g_exact).abs().item())
    assert errors[0] > errors[1] > errors[2]  # measured: 58, 0.5, 4e-6 (|exact| = 50)
    assert errors[-1] < 1e-5 * abs(exact.item()), errors
    assert grad_errors[0] > grad_errors[-1]  # measured: 3.4, 1e-5 (exact 5.07)
    assert grad_errors[-1] < 1e-4 * abs(g_exact.item()), (grad_errors, g_exact)


def test_skip_predictions_approach_the_dense_product_kernel_gp():
    model, x, y = _model(n=120)
    xs = torch.rand(9, 2, generator=torch.Generator().manual_seed(5), dtype=D64)
    n = x.shape[0]
    joint = _dense_product_kernel(model, torch.cat([x, xs]))
    A = joint[:n, :n] + model.likelihood.noise * torch.eye(n, dtype=D64)
    mean_ref = joint[n:, :n] @ torch.linalg.solve(A, y)
    model.eval()
    with torch.no_grad(), torchgp.settings.max_cholesky_size(50), torchgp.settings.max_root_decomposition_size(80):
        mean = model(xs).mean
    assert (mean - mean_ref).abs().max() < 1e-3 * mean_ref.abs().max()


def test_skip_never_forms_an_n_by_n_matrix(monkeypatch):
    model, x, y = _model(n=400, grid=25)

    def refuse(self):
        raise AssertionError(f"dense {tuple(self.shape)} formed")

    monkeypatch.setattr(InterpolatedOperator, "_dense", refuse)
    monkeypatch.setattr(LowRankCoreOperator, "_dense", refuse)
    monkeypatch.setattr(HadamardLowRankOperator, "_dense", refuse)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with torchgp.settings.max_cholesky_size(50), torchgp.settings.max_root_decomposition_size(10):
        K = model.covar_module.base_kernel(x)
        assert isinstance(K, LowRankCoreOperator)
        assert K.Q.shape == (400, 10) and K.core.shape == (10, 10)  # O(n r) storage
        loss = -mll(model(x), y)
        loss.backward()
    assert torch.isfinite(loss)
    assert model.covar_module.base_kernel.base_kernel.base_kernel.raw_lengthscale.grad is not None


def test_skip_product_of_one_factor_is_its_lanczos_projection():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(60, 1, generator=gen, dtype=D64)
    k = gpytorch.kernels.GridInterpolationKernel(gpytorch.kernels.RBFKernel(), 20, num_dims=1).double()
    K = k(x.unsqueeze(0))  # (1, 60, 60): one factor
    out = skip_product(K, 25)
    torch.testing.assert_close(out.to_dense(), K.to_dense()[0], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("bad", [(3, 4), (4, 3)])
def test_low_rank_core_operator_checks_shapes(bad):
    from torchgp.errors import ShapeError

    with pytest.raises(ShapeError):
        LowRankCoreOperator(torch.zeros(10, 3), torch.zeros(*bad))
