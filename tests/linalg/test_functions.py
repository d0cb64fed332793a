"""Top-level functions (``torchgp.inv_quad_logdet``, ...) against GPyTorch's on the same matrices and dense references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.linalg.operators import LowRankRootOperator, Operator

gpytorch = pytest.importorskip("gpytorch")
scipy_special = pytest.importorskip("scipy.special")

DT = torch.float64


@pytest.fixture
def A():
    W = torch.randn(2, 7, 7, generator=torch.Generator().manual_seed(0), dtype=DT)
    return W @ W.mT / 7 + torch.eye(7, dtype=DT)


@pytest.fixture
def B():
    return torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(1), dtype=DT)


def test_signatures_match_gpytorch():
    import inspect

    names = [
        "add_diagonal", "add_jitter", "dsmm", "inv_quad", "inv_quad_logdet", "logdet", "matmul", "solve",
        "inv_matmul", "root_decomposition", "root_inv_decomposition", "pivoted_cholesky", "sqrt_inv_matmul",
        "log_normal_cdf",
    ]  # fmt: skip
    for name in names:
        assert name in torchgp.__all__ and name in torchgp.functions.__all__
        ours = list(inspect.signature(getattr(torchgp, name)).parameters)
        theirs = list(inspect.signature(getattr(gpytorch, name)).parameters)
        assert ours == theirs, name


def test_inv_quad_logdet_and_friends_match_gpytorch(A, B):
    for kwargs in ({}, {"logdet": True}, {"reduce_inv_quad": False, "logdet": True}):
        ours = torchgp.inv_quad_logdet(A, B, **kwargs)
        theirs = gpytorch.inv_quad_logdet(A, B, **kwargs)
        for a, b in zip(ours, theirs):
            assert (a is None) == (b is None)
            if a is not None:
                assert_close(a, b)
    assert torchgp.inv_quad_logdet(A) == (None, None)
    assert torchgp.inv_quad_logdet(A, logdet=True)[0] is None
    assert_close(torchgp.inv_quad_logdet(A, logdet=True)[1], torch.logdet(A))
    assert_close(torchgp.inv_quad(A, B), gpytorch.inv_quad(A, B))
    assert_close(torchgp.inv_quad(A, B, reduce_inv_quad=False), gpytorch.inv_quad(A, B, reduce_inv_quad=False))
    assert_close(torchgp.logdet(A), gpytorch.logdet(A))
    assert_close(torchgp.logdet(A), torch.logdet(A))


def test_solves_match_gpytorch(A, B):
    L = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert_close(torchgp.solve(A, B), gpytorch.solve(A, B))
    assert_close(torchgp.solve(A, B), torch.linalg.solve(A, B))
    assert_close(torchgp.solve(A, B, L), gpytorch.solve(A, B, L))
    with pytest.warns(DeprecationWarning, match="solve"):
        assert_close(torchgp.inv_matmul(A, B, L), L @ torch.linalg.solve(A, B))
    assert_close(torchgp.sqrt_inv_matmul(A, B), gpytorch.sqrt_inv_matmul(A, B))
    for a, b in zip(torchgp.sqrt_inv_matmul(A, B, L), gpytorch.sqrt_inv_matmul(A, B, L)):
        assert_close(a, b)
    assert_close(torchgp.matmul(A, B), A @ B)
    assert_close(torchgp.matmul(LowRankRootOperator(B), B), B @ (B.mT @ B))


def test_roots_match_gpytorch(A):
    ours, theirs = torchgp.root_decomposition(A), gpytorch.root_decomposition(A)
    assert isinstance(ours, Operator)
    assert_close(ours.to_dense(), theirs.to_dense())
    assert_close(ours.root.to_dense(), theirs.root.to_dense())  # both Cholesky roots
    assert_close(torchgp.root_decomposition(A, method="symeig").to_dense(), A)
    inv = torchgp.root_inv_decomposition(A)
    assert_close(inv.to_dense(), gpytorch.root_inv_decomposition(A).to_dense())
    assert_close(inv.to_dense(), torch.linalg.inv(A))


def test_pivoted_cholesky_matches_gpytorch_and_is_differentiable(A):
    L, piv = torchgp.pivoted_cholesky(A, 4, return_pivots=True)
    L_ref, piv_ref = gpytorch.pivoted_cholesky(A, 4, return_pivots=True)
    assert_close(L, L_ref)
    assert torch.equal(piv, piv_ref)
    full = torchgp.pivoted_cholesky(A, 7)
    assert_close(full @ full.mT, A)
    X = A.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda X: torchgp.pivoted_cholesky((X + X.mT) / 2, 3), (X,), fast_mode=True)


def test_diagonal_helpers(A):
    d = torch.arange(1.0, 8.0, dtype=DT)
    out = torchgp.add_diagonal(A, d)
    assert isinstance(out, Operator)
    assert_close(out.to_dense(), A + torch.diag(d))
    jit = torchgp.add_jitter(A)
    assert isinstance(jit, torch.Tensor)
    assert_close(jit, gpytorch.add_jitter(A))
    assert_close(torchgp.add_jitter(A, 0.5), A + 0.5 * torch.eye(7, dtype=DT))
    assert isinstance(torchgp.add_jitter(LowRankRootOperator(A)), Operator)


def test_dsmm(A, B):
    S = A[0].clone()
    S[S.abs() < 0.3] = 0
    assert_close(torchgp.dsmm(S.to_sparse(), B[0]), S @ B[0])
    Sb = A.clone()
    Sb[Sb.abs() < 0.3] = 0
    assert_close(torchgp.dsmm(Sb.to_sparse(), B), Sb @ B)
    assert_close(torchgp.dsmm(Sb.to_sparse(), B), gpytorch.dsmm(Sb.to_sparse(), B))


def test_log_normal_cdf_matches_scipy_down_to_the_far_tail():
    x = torch.linspace(-40, 8, 481, dtype=DT)
    expected = scipy_special.log_ndtr(x.numpy())
    assert_close(torchgp.log_normal_cdf(x), expected)
    # (GPyTorch's own log_normal_cdf differs from scipy by up to 1e-3 near x = -1, so scipy is the reference.)
    xg = x.clone().requires_grad_(True)
    torchgp.log_normal_cdf(xg).sum().backward()
    assert torch.isfinite(xg.grad).all()
    # d/dx log Φ(x) = φ(x) / Φ(x), the inverse Mills ratio
    mills = np.exp(-0.5 * x.numpy() ** 2 - 0.5 * np.log(2 * np.pi) - expected)
    assert_close(xg.grad, mills)
    assert torch.autograd.gradcheck(
        torchgp.log_normal_cdf, (torch.tensor([-40.0, -7.5, -1.0, 0.0, 3.0], dtype=DT, requires_grad=True),)
    )
    x32 = torch.tensor([-40.0, -10.0, 0.0], requires_grad=True)
    y32 = torchgp.log_normal_cdf(x32)
    y32.sum().backward()
    assert torch.isfinite(y32).all() and torch.isfinite(x32.grad).all()
    assert_close(y32, scipy_special.log_ndtr(x32.detach().double().numpy()))


def test_lazy_evaluated_kernel_tensor_is_the_kernel_operator():
    k = torchgp.kernels.RBFKernel()
    out = k(torch.randn(4, 1))
    assert isinstance(out, torchgp.lazy.LazyEvaluatedKernelTensor)
    assert isinstance(out.evaluate_kernel(), Operator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(out.evaluate_kernel().to_dense(), out.to_dense())


def test_lazy_evaluated_kernel_tensor_takes_gpytorchs_arguments():
    k = torchgp.kernels.RBFKernel().double()
    X = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=DT)
    lazy = torchgp.lazy.LazyEvaluatedKernelTensor(X, X, k)
    ref = gpytorch.kernels.RBFKernel().double()(X, X).to_dense()  # both at the default lengthscale
    assert_close(lazy.to_dense(), ref)
    assert isinstance(lazy, torchgp.linalg.KernelOperator)
