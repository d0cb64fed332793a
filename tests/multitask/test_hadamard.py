"""Hadamard multitask GPs: ``k_x(x, x') B[i, i']`` with task indices as a second input."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.multitask._models import D, icm_model, toy_data
from torchgp.errors import InputError


def hadamard_model(lib, X, tasks, y, t, likelihood=None):
    """GPyTorch's Hadamard multitask tutorial model: ``covar_x(x).mul(covar_i(i))``."""

    class Hadamard(lib.models.ExactGP):
        def __init__(self, x, i, y, likelihood):
            super().__init__((x, i), y, likelihood)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.RBFKernel()
            self.task_covar_module = lib.kernels.IndexKernel(num_tasks=t, rank=1)

        def forward(self, x, i):
            covar = self.covar_module(x).mul(self.task_covar_module(i))
            return lib.distributions.MultivariateNormal(self.mean_module(x), covar)

    likelihood = lib.likelihoods.HadamardGaussianLikelihood(num_tasks=t) if likelihood is None else likelihood
    return Hadamard(X, tasks, y, likelihood).double()


def _grid(X, t, dtype=torch.long):
    """Every input with every task, point-major (the interleaved order of the Kronecker model)."""
    n = X.shape[0]
    return X.repeat_interleave(t, 0), torch.arange(t).repeat(n).unsqueeze(-1).to(dtype)


def _set_same(model_a, model_b, seed=2):
    g = torch.Generator().manual_seed(seed)
    theirs = dict(model_b.named_parameters())
    with torch.no_grad():
        for name, p in model_a.named_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            theirs[name].copy_(p)


@pytest.mark.parametrize("index_dtype", [torch.long, D])
def test_hadamard_mll_matches_gpytorch_and_predictions_match_dense(index_dtype):
    X, Y = toy_data(n=5, t=3)
    Xg, Ig = _grid(X, 3)
    y = Y.reshape(-1)
    ours = hadamard_model(torchgp, Xg, Ig.to(index_dtype), y, 3)
    theirs = hadamard_model(gpytorch, Xg, Ig, y, 3)
    _set_same(ours, theirs)
    values = []
    for lib, model, tasks in ((torchgp, ours, Ig.to(index_dtype)), (gpytorch, theirs, Ig)):
        model.train()
        mll = lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        with gpytorch.settings.max_cholesky_size(10**6):
            value = mll(model(Xg, tasks), y, tasks)
        value.backward()
        values.append((value.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    assert_close(values[0][0], values[1][0])
    for k in values[0][1]:
        assert_close(values[0][1][k], values[1][1][k])
    # predictions against R&W Alg. 2.1 with each row's task noise (GPyTorch's own eval mode hands the
    # likelihood the first input, x, as the task indices of a two-input model, so it is no reference here)
    Xs, Is = _grid(torch.rand(4, 1, dtype=D), 3)
    ours.eval()
    with torch.no_grad():
        out = ours(Xs, Is.to(index_dtype))
        noisy = ours.likelihood(out, Is.to(index_dtype))
        B = ours.task_covar_module.covar_matrix
        c, noise = ours.mean_module.constant, ours.likelihood.noise

        def k(a, ia, b, ib):
            return ours.covar_module(a, b).to_dense() * B[ia[:, 0]][:, ib[:, 0]]

        K = k(Xg, Ig, Xg, Ig) + torch.diag(noise[Ig[:, 0]])
        K_sx, K_ss = k(Xs, Is, Xg, Ig), k(Xs, Is, Xs, Is)
        mean = c + K_sx @ torch.linalg.solve(K, y - c)
        var = K_ss.diagonal() - (K_sx * torch.linalg.solve(K, K_sx.mT).mT).sum(-1)
    assert_close(out.mean, mean)
    assert_close(out.variance, var)
    assert_close(noisy.variance, var + noise[Is[:, 0]])


def test_hadamard_full_inputs_with_task_feature_index_match_gpytorch():
    X, Y = toy_data(n=5, t=3)
    Xg, Ig = _grid(X, 3, dtype=D)
    Z = torch.cat([Xg, Ig], -1)  # one input tensor, the task in its last column
    y = Y.reshape(-1)

    def build(lib):
        class Hadamard(lib.models.ExactGP):
            def __init__(self, z, y, likelihood):
                super().__init__(z, y, likelihood)
                self.mean_module = lib.means.ConstantMean()
                self.covar_module = lib.kernels.RBFKernel(active_dims=[0])
                self.task_covar_module = lib.kernels.IndexKernel(num_tasks=3, rank=1, active_dims=[1])

            def forward(self, z):
                covar = self.covar_module(z).mul(self.task_covar_module(z))
                return lib.distributions.MultivariateNormal(self.mean_module(z), covar)

        lik = lib.likelihoods.HadamardGaussianLikelihood(num_tasks=3, task_feature_index=-1)
        return Hadamard(Z, y, lik).double()

    ours, theirs = build(torchgp), build(gpytorch)
    _set_same(ours, theirs)
    values = []
    for lib, model in ((torchgp, ours), (gpytorch, theirs)):
        model.train()
        mll = lib.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        with gpytorch.settings.max_cholesky_size(10**6):
            value = mll(model(Z), y, Z)
        value.backward()
        values.append((value.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    assert_close(values[0][0], values[1][0])
    for k in values[0][1]:
        assert_close(values[0][1][k], values[1][1][k])
    Xs, Is = _grid(torch.rand(4, 1, dtype=D), 3, dtype=D)
    Zs = torch.cat([Xs, Is], -1)
    preds = []
    for model in (ours, theirs):
        model.eval()
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**6), gpytorch.settings.fast_pred_var(False):
            out = model.likelihood(model(Zs), Zs)
        preds.append((out.mean, out.variance))
    for a, b in zip(*preds):
        assert_close(a, b)


def test_hadamard_on_the_full_grid_equals_the_kronecker_model():
    n, t = 6, 3
    X, Y = toy_data(n=n, t=t)
    Xg, Ig = _grid(X, t)
    had = hadamard_model(torchgp, Xg, Ig, Y.reshape(-1), t)
    kron = icm_model(torchgp, X, Y, rank=1, lik_rank=0, has_global_noise=False)
    with torch.no_grad():
        had.covar_module.lengthscale = 0.3
        had.task_covar_module.covar_factor.copy_(torch.tensor([[1.0], [0.5], [-0.7]], dtype=D))
        had.task_covar_module.var = torch.tensor([0.2, 0.3, 0.4], dtype=D)
        had.mean_module.constant = 0.1
        had.likelihood.noise = torch.tensor([0.05, 0.1, 0.2], dtype=D)
        kron.covar_module.data_covar_module.lengthscale = 0.3
        kron.covar_module.task_covar_module.load_state_dict(had.task_covar_module.state_dict())
        for m in kron.mean_module.base_means:
            m.constant = 0.1
        kron.likelihood.task_noises = torch.tensor([0.05, 0.1, 0.2], dtype=D)
    for m in (had, kron):
        m.train()
    mll_h = torchgp.mlls.ExactMarginalLogLikelihood(had.likelihood, had)(had(Xg, Ig), Y.reshape(-1))
    mll_k = torchgp.mlls.ExactMarginalLogLikelihood(kron.likelihood, kron)(kron(X), Y)
    assert_close(mll_h, mll_k)
    Xs = torch.rand(4, 1, dtype=D)
    Xsg, Isg = _grid(Xs, t)
    for m in (had, kron):
        m.eval()
    with torch.no_grad():
        ph = had.likelihood(had(Xsg, Isg), Isg)
        pk = kron.likelihood(kron(Xs))
    assert_close(ph.mean, pk.mean.reshape(-1))
    assert_close(ph.variance, pk.variance.reshape(-1))


def test_task_index_errors():
    lik = torchgp.likelihoods.HadamardGaussianLikelihood(num_tasks=2)
    f = torchgp.distributions.MultivariateNormal(torch.zeros(3, dtype=D), torch.eye(3, dtype=D))
    with pytest.raises(InputError, match=r"in \[0, 2\)"):
        lik(f, torch.tensor([[0], [1], [2]]))
    with pytest.raises(InputError, match="integers"):
        lik(f, torch.tensor([[0.0], [0.5], [1.0]], dtype=D))
    with pytest.raises(InputError, match="task indices"):
        lik(f)
    k = torchgp.kernels.IndexKernel(num_tasks=2)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        k(torch.tensor([[0.0], [3.0]])).to_dense()
