"""Derivative kernels and means: blocks equal autograd derivatives of the base kernel; GPs on values + gradients."""

from __future__ import annotations

import gpytorch
import pytest
import torch
from torch.autograd.functional import hessian, jacobian

import torchgp
from tests._tol import assert_close
from torchgp.kernels import Matern52KernelGrad, PolynomialKernelGrad, RBFKernelGrad, RBFKernelGradGrad

D = torch.float64
LS = torch.tensor([0.6, 1.3], dtype=D)


def rbf(a, b):
    return torch.exp(-0.5 * (((a - b) / LS) ** 2).sum())


def matern52(a, b):
    r = (((a - b) / LS) ** 2).sum().clamp_min(1e-300).sqrt()
    return (1 + 5**0.5 * r + 5 / 3 * r**2) * torch.exp(-(5**0.5) * r)


def poly(a, b):
    return (a @ b + 0.7) ** 3


def _pair_blocks(base, a, b, d: int, second: bool) -> torch.Tensor:
    """``(C, C)`` covariances of ``[f, ∇f, (∂²f/∂x_i²)]`` at ``a`` with the same at ``b``, by autograd."""
    C = 1 + (2 if second else 1) * d
    K = torch.zeros(C, C, dtype=D)
    g = slice(1, d + 1)
    K[0, 0] = base(a, b)
    K[g, 0] = jacobian(lambda u: base(u, b), a)
    K[0, g] = jacobian(lambda v: base(a, v), b)
    K[g, g] = jacobian(lambda v: jacobian(lambda u: base(u, v), a, create_graph=True), b)  # [i, j] = ∂_i ∂'_j
    if second:

        def d2a(u, v):  # ∂²k/∂u_i², (d,)
            return hessian(lambda w: base(w, v), u, create_graph=True).diagonal()

        def d2b(u, v):  # ∂²k/∂v_j², (d,)
            return hessian(lambda w: base(u, w), v, create_graph=True).diagonal()

        s = slice(d + 1, 2 * d + 1)
        K[s, 0] = d2a(a, b)
        K[0, s] = d2b(a, b)
        K[s, g] = jacobian(lambda v: d2a(a, v), b)  # [i, j] = ∂_i² ∂'_j
        K[g, s] = jacobian(lambda u: d2b(u, b), a).mT  # [i, j] = ∂_i ∂'_j²
        K[s, s] = torch.stack([hessian(lambda v, i=i: d2a(a, v)[i], b).diagonal() for i in range(d)])
    return K


def _reference(base, x1, x2, second: bool):
    """The derivative kernel of ``base`` by autograd, one pair of points at a time, in the interleaved order."""
    n, m, d = x1.shape[0], x2.shape[0], x1.shape[1]
    C = 1 + (2 if second else 1) * d
    K = torch.zeros(n, C, m, C, dtype=D)
    for p in range(n):
        for q in range(m):
            K[p, :, q, :] = _pair_blocks(base, x1[p], x2[q], d, second)
    return K.reshape(n * C, m * C)


def _kernel(cls):
    if cls is PolynomialKernelGrad:
        k = PolynomialKernelGrad(power=3).double()
        k.offset = 0.7
    else:
        k = cls(ard_num_dims=2).double()
        k.lengthscale = LS
    return k


CASES = [(RBFKernelGrad, rbf, False), (Matern52KernelGrad, matern52, False), (PolynomialKernelGrad, poly, False),
         (RBFKernelGradGrad, rbf, True)]  # fmt: skip


@pytest.mark.parametrize("cls, base, second", CASES, ids=lambda c: getattr(c, "__name__", str(c)))
def test_blocks_equal_autograd_derivatives_of_the_base_kernel(cls, base, second):
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(3, 2, generator=g, dtype=D), torch.rand(2, 2, generator=g, dtype=D)
    k = _kernel(cls)
    assert_close(k(x1, x2).to_dense(), _reference(base, x1, x2, second))
    assert k.num_outputs_per_input(x1, x2) == (5 if second else 3)
    full = k(x1).to_dense()
    assert_close(k(x1, diag=True), full.diagonal())
    x3 = torch.rand(3, 2, generator=g, dtype=D)
    assert_close(k(x1, x3, diag=True), k(x1, x3).to_dense().diagonal())
    assert_close(full, full.mT)
    assert torch.linalg.eigvalsh(full).min() > -1e-10


@pytest.mark.parametrize("cls", [RBFKernelGrad, Matern52KernelGrad, PolynomialKernelGrad, RBFKernelGradGrad])
def test_gradcheck_inputs_and_hyperparameters(cls):
    k = _kernel(cls)
    g = torch.Generator().manual_seed(1)
    x1 = torch.rand(3, 2, generator=g, dtype=D, requires_grad=True)
    x2 = torch.rand(2, 2, generator=g, dtype=D, requires_grad=True)
    name, raw = next(iter(k.named_parameters()))

    def f(x1, x2, raw):
        return torch.func.functional_call(k, {name: raw}, (x1, x2)).to_dense()

    assert torch.autograd.gradcheck(f, (x1, x2, raw.detach().clone().requires_grad_(True)))


@pytest.mark.parametrize("cls", [RBFKernelGrad, Matern52KernelGrad, PolynomialKernelGrad, RBFKernelGradGrad])
def test_kernels_match_gpytorch(cls):
    x = torch.rand(4, 2, dtype=D)
    ours = _kernel(cls)
    theirs = getattr(gpytorch.kernels, cls.__name__)(**({"power": 3} if cls is PolynomialKernelGrad else
                                                       {"ard_num_dims": 2})).double()  # fmt: skip
    theirs.load_state_dict(ours.state_dict(), strict=False)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(dict(ours.named_parameters())[name])
    assert_close(ours(x).to_dense(), theirs(x).to_dense())


def test_means_match_gpytorch():
    x = torch.rand(5, 3, dtype=D)
    for name, kw in [("ConstantMeanGrad", {}), ("ConstantMeanGradGrad", {}), ("LinearMeanGrad", {"input_size": 3}),
                     ("LinearMeanGradGrad", {"input_size": 3})]:  # fmt: skip
        ours, theirs = getattr(torchgp.means, name)(**kw).double(), getattr(gpytorch.means, name)(**kw).double()
        with torch.no_grad():
            for pname, p in ours.named_parameters():
                p.copy_(torch.randn_like(p))
                dict(theirs.named_parameters())[pname].copy_(p)
        assert_close(ours(x), theirs(x))


def _derivative_gp(X, Y):
    d = X.shape[-1]

    class GPWithDerivatives(torchgp.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = torchgp.means.ConstantMeanGrad()
            self.covar_module = RBFKernelGrad(ard_num_dims=d)

        def forward(self, x):
            return torchgp.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=d + 1, has_global_noise=False)
    return GPWithDerivatives(X, Y, lik).double()


def test_gp_on_values_and_gradients_predicts_both():
    # f(x) = sin(2 x_1) cos(x_2) and its gradient, 20 points in [0, 2]², noise 1e-4
    def f(X):
        v = torch.sin(2 * X[:, 0]) * torch.cos(X[:, 1])
        g1 = 2 * torch.cos(2 * X[:, 0]) * torch.cos(X[:, 1])
        g2 = -torch.sin(2 * X[:, 0]) * torch.sin(X[:, 1])
        return torch.stack([v, g1, g2], -1)

    g = torch.Generator().manual_seed(0)
    X = 2 * torch.rand(20, 2, generator=g, dtype=D)
    model = _derivative_gp(X, f(X))
    with torch.no_grad():
        model.covar_module.lengthscale = torch.tensor([0.6, 1.0], dtype=D)
        model.likelihood.task_noises = torch.full((3,), 1e-4, dtype=D)
    model.train()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(10):
        opt.zero_grad()
        (-mll(model(X), f(X))).backward()
        opt.step()
    model.eval()
    Xs = 0.2 + 1.6 * torch.rand(20, 2, generator=g, dtype=D)
    with torch.no_grad():
        pred = model(Xs)
    err = (pred.mean - f(Xs)).abs()
    assert pred.mean.shape == pred.variance.shape == (20, 3)
    assert err[:, 0].max() < 0.02 and err[:, 1:].max() < 0.1  # values and gradients both recovered
    assert bool((pred.variance > 0).all())


def _gpytorch_derivative_gp(X, Y):
    class GPWithDerivatives(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMeanGrad()
            self.covar_module = gpytorch.kernels.RBFKernelGrad(ard_num_dims=X.shape[-1])

        def forward(self, x):
            return gpytorch.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=X.shape[-1] + 1, has_global_noise=False)
    return GPWithDerivatives(X, Y, lik).double()


def test_derivative_gp_and_its_fantasy_match_gpytorch():
    g = torch.Generator().manual_seed(2)
    X, Y = torch.rand(6, 2, generator=g, dtype=D), torch.randn(6, 3, generator=g, dtype=D)
    ours, theirs = _derivative_gp(X, Y), _gpytorch_derivative_gp(X, Y)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=D))
            dict(theirs.named_parameters())[name].copy_(p)
    for model in (ours, theirs):
        model.train()
    with gpytorch.settings.max_cholesky_size(10**6):
        a = torchgp.mlls.ExactMarginalLogLikelihood(ours.likelihood, ours)(ours(X), Y)
        b = gpytorch.mlls.ExactMarginalLogLikelihood(theirs.likelihood, theirs)(theirs(X), Y)
    assert_close(a, b)
    Xs = torch.rand(4, 2, generator=g, dtype=D)
    Xq, Yq = torch.rand(2, 2, generator=g, dtype=D), torch.randn(2, 3, generator=g, dtype=D)
    for model in (ours, theirs):
        model.eval()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False):
        pa, pb = ours(Xs), theirs(Xs)
        assert_close(pa.mean, pb.mean)
        assert_close(pa.variance, pb.variance)
        # GPyTorch 1.15.2's get_fantasy_model fails on multitask models: its reference is the GP conditioned on all
        # n + q points with the same hyperparameters, which is what a fantasy model is
        fa = ours.get_fantasy_model(Xq, Yq)
        fb = _gpytorch_derivative_gp(torch.cat([X, Xq]), torch.cat([Y, Yq]))
        fb.load_state_dict(theirs.state_dict())
        fb.eval()
        qa, qb = fa(Xs), fb(Xs)
    assert_close(qa.mean, qb.mean)
    assert_close(qa.variance, qb.variance)
    assert fa.train_targets.shape == (8, 3)


def test_gpytorch_derivative_tutorial_model_with_scale_kernel():
    g = torch.Generator().manual_seed(3)
    X, Y = torch.rand(7, 2, generator=g, dtype=D), torch.randn(7, 3, generator=g, dtype=D)

    def build(lib):
        class GPWithDerivatives(lib.models.ExactGP):
            def __init__(self, x, y, likelihood):
                super().__init__(x, y, likelihood)
                self.mean_module = lib.means.ConstantMeanGrad()
                self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernelGrad(ard_num_dims=2))

            def forward(self, x):
                return lib.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))

        return GPWithDerivatives(X, Y, lib.likelihoods.MultitaskGaussianLikelihood(num_tasks=3)).double()

    ours, theirs = build(torchgp), build(gpytorch)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=D))
            dict(theirs.named_parameters())[name].copy_(p)
    ours.train()
    theirs.train()
    with gpytorch.settings.max_cholesky_size(10**6):
        a = torchgp.mlls.ExactMarginalLogLikelihood(ours.likelihood, ours)(ours(X), Y)
        b = gpytorch.mlls.ExactMarginalLogLikelihood(theirs.likelihood, theirs)(theirs(X), Y)
    assert_close(a, b)
    ours.eval()
    theirs.eval()
    Xs = torch.rand(3, 2, generator=g, dtype=D)
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False):
        pa, pb = ours.likelihood(ours(Xs)), theirs.likelihood(theirs(Xs))
    assert_close(pa.mean, pb.mean)
    assert_close(pa.variance, pb.variance)
