"""The fused stationary node's backward with a column-major incoming gradient (the Cholesky backward's inverse)."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp import settings


def _kernel(name):
    base = (
        torchgp.kernels.MaternKernel(nu=2.5, ard_num_dims=3)
        if name == "matern"
        else torchgp.kernels.RBFKernel(ard_num_dims=3)
    )
    k = torchgp.kernels.ScaleKernel(base).double()
    k.initialize(**{"base_kernel.lengthscale": torch.tensor([0.4, 0.6, 0.9]), "outputscale": 1.7})
    return k


def _grads(kernel, X, G, fused):
    kernel.zero_grad()
    Xg = X.clone().requires_grad_(True)
    with settings.fused_kernels(fused):
        K = kernel(Xg).to_dense()
    K.backward(G)
    return [Xg.grad, *(p.grad.clone() for p in kernel.parameters())]


@pytest.mark.parametrize("name", ["rbf", "matern"])
@pytest.mark.parametrize("n", [20, 90])  # the few-operations route and the two-products route of the backward
@pytest.mark.parametrize("symmetric_G", [True, False])
def test_column_major_gradient_gives_plain_autograd_gradients(name, n, symmetric_G):
    g = torch.Generator().manual_seed(n)
    X = torch.rand(n, 3, generator=g, dtype=torch.float64)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    G = M + M.mT if symmetric_G else M
    G_col = G.mT.contiguous().mT  # the same values, column-major
    assert not G_col.is_contiguous() and G_col.mT.is_contiguous()
    kernel = _kernel(name)
    ref = _grads(kernel, X, G, fused=False)
    for given in (G, G_col):
        for ours, expected in zip(_grads(kernel, X, given, fused=True), ref):
            assert_close(ours, expected)
