"""MultiDeviceKernel: row blocks on several devices give the base kernel's matrix, gradients and MLL."""

from __future__ import annotations

import pytest
import torch

import torchgp as gpytorch
from tests._tol import assert_close

D64 = torch.float64


def _kernels(devices):
    base = gpytorch.kernels.ScaleKernel(gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=2)).double()
    base.base_kernel.lengthscale = torch.tensor([[0.4, 0.7]], dtype=D64)
    return base, gpytorch.kernels.MultiDeviceKernel(base, devices)


def test_rows_on_several_devices_equal_the_base_kernel_with_gradients():
    base, multi = _kernels(["cpu", "cpu", "cpu"])
    x, z = torch.rand(11, 2, dtype=D64), torch.rand(6, 2, dtype=D64)
    assert_close(multi(x, z).to_dense(), base(x, z).to_dense())
    assert_close(multi(x, diag=True), base(x, diag=True))
    assert_close(multi.forward(x, z), base(x, z).to_dense())  # three row blocks of 4, 3, 4 rows
    g1 = torch.autograd.grad(multi(x, z).to_dense().sum(), list(base.parameters()))
    g2 = torch.autograd.grad(base(x, z).to_dense().sum(), list(base.parameters()))
    for a, b in zip(g1, g2):
        assert_close(a, b)
    assert "module.raw_outputscale" in multi.state_dict()  # GPyTorch's DataParallel key
    assert multi.base_kernel is base and multi.output_device == torch.device("cpu")


class Model(gpytorch.models.ExactGP):
    def __init__(self, x, y, covar):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _mll(covar, x, y):
    model = Model(x, y, covar).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    value = mll(model(x), y)
    return value, torch.autograd.grad(value, [p for p in covar.parameters()])


def test_exact_mll_with_a_multi_device_kernel_equals_the_base_kernels():
    base, multi = _kernels(["cpu", "cpu"])
    x = torch.rand(40, 2, dtype=D64)
    y = torch.sin(3 * x).sum(-1)
    v1, g1 = _mll(multi, x, y)
    v2, g2 = _mll(base, x, y)
    assert_close(v1, v2)
    for a, b in zip(g1, g2):
        assert_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_row_blocks_gather_on_the_output_device():
    devices = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())] * 2
    base, multi = _kernels(devices)
    base.cuda()
    x = torch.rand(9, 2, dtype=D64, device="cuda")
    out = multi(x).to_dense()
    assert out.device == devices[0]
    assert_close(out, base(x).to_dense())
