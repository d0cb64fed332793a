"""ScaleKernel, sums and products (``k1 + k2``, ``k1 * k2``), and kernels written by users."""

from __future__ import annotations

import pytest
import torch

from tests._tol import assert_close
from torchgp import kernels, priors
from torchgp.errors import ShapeError

X = torch.randn(6, 2, dtype=torch.float64)
Z = torch.randn(4, 2, dtype=torch.float64)


def _pair():
    k1 = kernels.RBFKernel().double()
    k2 = kernels.PeriodicKernel().double()
    k1.lengthscale, k2.lengthscale, k2.period_length = 0.6, 1.2, 2.0
    return k1, k2


def test_sum_and_product_operators():
    k1, k2 = _pair()
    assert isinstance(k1 + k2, kernels.AdditiveKernel) and isinstance(k1 * k2, kernels.ProductKernel)
    assert_close((k1 + k2)(X, Z).to_dense(), k1(X, Z).to_dense() + k2(X, Z).to_dense())
    assert_close((k1 * k2)(X, Z).to_dense(), k1(X, Z).to_dense() * k2(X, Z).to_dense())
    assert_close(kernels.AdditiveKernel(k1, k2, k1)(X).to_dense(), 2 * k1(X).to_dense() + k2(X).to_dense())
    nested = (k1 + k2) + k1
    assert len(nested.kernels) == 3  # flattened
    assert {n for n, _ in (k1 * k2).named_parameters()} == {
        "kernels.0.raw_lengthscale",
        "kernels.1.raw_lengthscale",
        "kernels.1.raw_period_length",
    }


def test_scale_kernel():
    k1, _ = _pair()
    s = kernels.ScaleKernel(k1, outputscale_prior=priors.GammaPrior(2.0, 0.5)).double()
    s.outputscale = 2.5
    assert_close(s(X, Z).to_dense(), 2.5 * k1(X, Z).to_dense())
    assert_close(s(X, diag=True), torch.full((6,), 2.5, dtype=torch.float64))
    assert s.outputscale.shape == ()
    with pytest.raises(TypeError, match="ScaleKernel needs a torchgp Kernel"):
        kernels.ScaleKernel(torch.nn.Linear(2, 2))


def test_additive_kernels_on_separate_dims():
    k = kernels.RBFKernel(active_dims=[0]) + kernels.RBFKernel(active_dims=[1])
    k = k.double()
    ref = kernels.RBFKernel().double()
    assert_close(k(X).to_dense(), ref(X[:, :1]).to_dense() + ref(X[:, 1:]).to_dense())


class DiagAwareKernel(kernels.Kernel):
    """A user kernel that takes **params and ignores diag (GPyTorch tolerates this)."""

    def forward(self, x1, x2, **params):
        return torch.exp(-torch.cdist(x1, x2))


class BadShapeKernel(kernels.Kernel):
    def forward(self, x1, x2):
        return torch.ones(3, 3, dtype=x1.dtype)


def test_user_kernel_diag_and_shape_checks():
    k = DiagAwareKernel()
    assert_close(k(X, Z[:6].repeat(2, 1)[:6], diag=True), k(X, Z.repeat(2, 1)[:6]).to_dense().diagonal())
    assert_close(k(X, diag=True), torch.ones(6, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"BadShapeKernel.forward returned shape \(3, 3\).*expected \(\*batch, 6, 4\)"):
        BadShapeKernel()(X, Z).to_dense()
    with pytest.raises(NotImplementedError, match="must implement forward"):
        kernels.Kernel()(X).to_dense()
