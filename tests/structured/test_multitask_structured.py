"""Kronecker multitask GPs over structured data kernels: GPyTorch's ``kronecker_multitask_sgpr`` and
``kronecker_multitask_ski`` patterns, checked against the dense Kronecker computation and against GPyTorch."""

from __future__ import annotations

import math

import gpytorch as reference
import pytest
import torch

import torchgp
from tests._tol import assert_close

D64 = torch.float64
T = 2  # tasks


def _data(n=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen, dtype=D64)
    y = torch.stack([torch.sin(6 * x[:, 0]), torch.cos(6 * x[:, 0])], -1) + 0.1 * torch.randn(
        n, T, generator=gen, dtype=D64
    )
    return x, y


def _model(gp, kind, x, y):
    lik = gp.likelihoods.MultitaskGaussianLikelihood(num_tasks=T)

    class KroneckerMultitask(gp.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, lik)
            self.mean_module = gp.means.MultitaskMean(gp.means.ConstantMean(), num_tasks=T)
            if kind == "ski":
                data = gp.kernels.GridInterpolationKernel(
                    gp.kernels.RBFKernel(), grid_size=50, num_dims=1, grid_bounds=[(-0.1, 1.1)]
                )
            else:
                data = gp.kernels.InducingPointKernel(
                    gp.kernels.ScaleKernel(gp.kernels.RBFKernel()), inducing_points=x[:10].clone(), likelihood=lik
                )
            self.covar_module = gp.kernels.MultitaskKernel(data, num_tasks=T, rank=1)

        def forward(self, z):
            return gp.distributions.MultitaskMultivariateNormal(self.mean_module(z), self.covar_module(z))

    return KroneckerMultitask().double(), lik


def _set(model):
    model.covar_module.task_covar_module.covar_factor.data = torch.tensor([[0.9], [-0.4]], dtype=D64)
    model.covar_module.task_covar_module.raw_var.data = torch.tensor([-1.0, 0.3], dtype=D64)
    model.likelihood.raw_task_noises.data = torch.tensor([-2.5, -2.0], dtype=D64)
    model.likelihood.raw_noise.data = torch.tensor([-3.0], dtype=D64)
    model.mean_module.base_means[0].constant.data.fill_(0.1)


def _dense_mll(model, x, y):
    """``log N(vec y | vec μ, K_data ⊗ B + I ⊗ diag(σ²_task + σ²))`` / (n t), plus the SGPR trace term."""
    n = x.shape[0]
    model.train()
    data = model.covar_module.data_covar_module(x).to_dense()
    B = model.covar_module.task_covar_module.covar_matrix.to_dense()
    noise = model.likelihood.task_noises + model.likelihood.noise
    K = torch.kron(data, B) + torch.diag(noise.repeat(n))  # interleaved: tasks fastest
    r = (y - model.mean_module(x)).reshape(-1)
    L = torch.linalg.cholesky(K)
    a = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
    value = -0.5 * (r @ a + 2 * L.diagonal().log().sum() + n * T * math.log(2 * math.pi))
    kern = model.covar_module.data_covar_module
    if isinstance(kern, torchgp.kernels.InducingPointKernel):
        gap = kern.base_kernel(x, diag=True) - data.diagonal()
        value = value - 0.5 * (gap.unsqueeze(-1) / noise).sum()
    return value / (n * T)


def _dense_predict(model, x, y, xs):
    n = x.shape[0]
    model.eval()
    joint = model.covar_module(torch.cat([x, xs])).to_dense()
    noise = model.likelihood.task_noises + model.likelihood.noise
    Kxx = joint[: n * T, : n * T] + torch.diag(noise.repeat(n))
    Ksx, Kss = joint[n * T :, : n * T], joint[n * T :, n * T :]
    r = (y - model.mean_module(x)).reshape(-1)
    mean = model.mean_module(xs).reshape(-1) + Ksx @ torch.linalg.solve(Kxx, r)
    var = Kss.diagonal() - (Ksx * torch.linalg.solve(Kxx, Ksx.mT).mT).sum(-1) + noise.repeat(xs.shape[0])
    return mean.reshape(-1, T), var.reshape(-1, T)


def _run(gp, kind, x, y, xs, state=None):
    model, lik = _model(gp, kind, x, y)
    if state is None:
        _set(model)
    else:
        model.load_state_dict(state)
    mll = gp.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train()
    value = mll(model(x), y)
    params = dict(model.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(value, list(params.values()), allow_unused=True)))
    model.eval()
    with torch.no_grad():
        pred = lik(model(xs))
    return model, value, grads, pred.mean, pred.variance


@pytest.mark.parametrize("kind", ["ski", "sgpr"])
def test_kronecker_multitask_structured_mll_and_predictions_equal_the_dense_kronecker_computation(kind):
    x, y = _data()
    xs = torch.linspace(0.0, 1.0, 7, dtype=D64).unsqueeze(-1)
    model, value, _, mean, var = _run(torchgp, kind, x, y, xs)
    with torch.no_grad():
        assert_close(value, _dense_mll(model, x, y), loose=1e2)
        mean_ref, var_ref = _dense_predict(model, x, y, xs)
    assert_close(mean, mean_ref, loose=1e2)
    assert_close(var, var_ref, loose=1e2)


@pytest.mark.parametrize("kind", ["ski", "sgpr"])
def test_kronecker_multitask_structured_matches_gpytorch_on_the_same_parameters(kind):
    x, y = _data()
    xs = torch.linspace(0.0, 1.0, 7, dtype=D64).unsqueeze(-1)
    model, value, grads, mean, var = _run(torchgp, kind, x, y, xs)
    _, value_ref, grads_ref, mean_ref, var_ref = _run(reference, kind, x, y, xs, state=model.state_dict())
    assert abs(value.item() - value_ref.item()) < 1e-6 * abs(value_ref.item())
    for name, g_ref in grads_ref.items():
        if g_ref is not None:
            torch.testing.assert_close(grads[name], g_ref, rtol=1e-5, atol=1e-7, msg=name)
    # GPyTorch's SKI predictions run CG (to its tolerance); torchgp's are exact at this size
    loose = 1e-5 if kind == "ski" else 1e-8
    torch.testing.assert_close(mean, mean_ref, rtol=loose, atol=loose)
    torch.testing.assert_close(var, var_ref, rtol=loose, atol=loose)


@pytest.mark.parametrize("kind", ["ski", "sgpr"])
def test_kronecker_multitask_structured_trains(kind):
    x, y = _data(n=40)
    model, lik = _model(torchgp, kind, x, y)
    _set(model)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.train()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        assert_close(-mll(model(x), y), -_dense_mll(model, x, y), loose=1e2)
