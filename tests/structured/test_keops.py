"""keops-named kernels: the dense kernels' MLL, gradients and predictions, with the n × n matrix never formed."""

from __future__ import annotations

import pytest
import torch

import torchgp
import torchgp as gpytorch
from tests._tol import assert_close
from torchgp.errors import KernelMemoryError

D64 = torch.float64
N = 500


class Model(gpytorch.models.ExactGP):
    def __init__(self, x, y, covar):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(covar)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _data(d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, d, generator=g, dtype=D64)
    y = torch.sin(4 * x).sum(-1) + 0.1 * torch.randn(N, generator=g, dtype=D64)
    return x, y


CASES = {
    "rbf": (
        lambda: gpytorch.kernels.keops.RBFKernel(ard_num_dims=2),
        lambda: gpytorch.kernels.RBFKernel(ard_num_dims=2),
    ),
    "matern": (lambda: gpytorch.kernels.keops.MaternKernel(nu=1.5), lambda: gpytorch.kernels.MaternKernel(nu=1.5)),
    "periodic": (lambda: gpytorch.kernels.keops.PeriodicKernel(), lambda: gpytorch.kernels.PeriodicKernel()),
}


def _pair(name):
    x, y = _data()
    keops_model = Model(x, y, CASES[name][0]()).double()
    dense_model = Model(x, y, CASES[name][1]()).double()
    keops_model.initialize(**{"likelihood.noise": 0.05, "covar_module.base_kernel.lengthscale": 0.4})
    dense_model.load_state_dict(keops_model.state_dict())
    return keops_model, dense_model, x, y


def test_keops_kernels_are_gpytorchs_names_and_the_dense_maths():
    assert issubclass(gpytorch.kernels.keops.RBFKernel, gpytorch.kernels.keops.KeOpsKernel)
    x, _ = _data()
    k, ref = CASES["rbf"][0]().double(), CASES["rbf"][1]().double()
    k.load_state_dict(ref.state_dict())
    assert_close(k(x[:50]).to_dense(), ref(x[:50]).to_dense())


def _iterative(tiled: bool):
    """The iterative path; ``tiled``: 64-point tiles and no dense n × n matrix allowed (``to_dense`` would raise)."""
    from contextlib import ExitStack

    stack = ExitStack()
    stack.enter_context(torchgp.settings.max_cholesky_size(100))
    stack.enter_context(torchgp.settings.cg_tolerance(1e-11))
    stack.enter_context(torchgp.settings.eval_cg_tolerance(1e-12))
    if tiled:
        stack.enter_context(torchgp.settings.kernel_block_size(64))
        stack.enter_context(torchgp.settings.max_dense_memory(N * N * 8 // 4))
    return stack


def _mll_and_grads(model, x, y):
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    value = mll(model(x), y)
    return value, torch.autograd.grad(value, list(model.parameters()))


@pytest.mark.parametrize("name", list(CASES))
def test_keops_mll_and_gradients_equal_the_dense_kernels(name):
    keops_model, dense_model, x, y = _pair(name)
    exact, g_exact = _mll_and_grads(dense_model, x, y)  # Cholesky
    with _iterative(tiled=False):
        dense_it, g_dense_it = _mll_and_grads(dense_model, x, y)  # CG on the evaluated dense matrix
    with _iterative(tiled=True):
        with pytest.raises(KernelMemoryError):
            keops_model.covar_module(x).to_dense()  # the matrix cannot even be formed here
        value, grads = _mll_and_grads(keops_model, x, y)
    # the same estimator on tiles as on the dense matrix: equal to round-off and the CG tolerance
    assert abs(value.item() - dense_it.item()) < 1e-8 * abs(dense_it.item())
    for a, b in zip(grads, g_dense_it):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-8), (a, b)
    # and the exact (Cholesky) values within the stochastic log-determinant's accuracy
    assert abs(value.item() - exact.item()) < 1e-3 * abs(exact.item())
    for a, b in zip(grads, g_exact):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-3), (a, b)


def test_keops_predictions_equal_the_dense_kernels():
    keops_model, dense_model, x, y = _pair("rbf")
    xs = torch.rand(7, 2, dtype=D64)
    for m in (keops_model, dense_model):
        m.eval()
    with torch.no_grad():
        ref = dense_model(xs)
        with _iterative(tiled=True):
            pred = keops_model(xs)
            mean = pred.mean
    assert_close(mean, ref.mean, loose=100)
