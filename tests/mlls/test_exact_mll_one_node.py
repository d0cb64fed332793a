"""The exact MLL's hot path: the same numbers as GPyTorch with fewer autograd nodes; constraints read once."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close


def _data(n=20, d=3):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(4 * X.sum(-1)) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return X, y


def _mll(lib, X, y, kernel):
    class GP(lib.models.ExactGP):
        def __init__(self, lik):
            super().__init__(X, y, lik)
            self.mean_module = lib.means.ConstantMean()
            base = (
                lib.kernels.MaternKernel(nu=2.5, ard_num_dims=X.shape[-1])
                if kernel == "matern"
                else lib.kernels.RBFKernel(ard_num_dims=X.shape[-1])
            )
            self.covar_module = lib.kernels.ScaleKernel(base)

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = lib.likelihoods.GaussianLikelihood(noise_constraint=lib.constraints.GreaterThan(1e-6))
    model = GP(lik).double()
    model.initialize(
        **{
            "covar_module.base_kernel.lengthscale": torch.tensor([0.3, 0.5, 0.7]),
            "covar_module.outputscale": 1.3,
            "likelihood.noise": 0.05,
            "mean_module.constant": 0.2,
        }
    )
    model.train()
    return lib.mlls.ExactMarginalLogLikelihood(lik, model)


def _loss_and_grads(mll, X, y):
    mll.zero_grad()
    loss = -mll(mll.model(X), y)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in mll.model.named_parameters()}


def _dense_reference(mll, X, y, kernel):
    """The same loss from the raw parameters by plain autograd: softplus constraints, dense K, torch's MVN."""
    m = mll.model
    raw = {k: p.detach().clone().requires_grad_(True) for k, p in m.named_parameters()}
    F = torch.nn.functional
    ls = F.softplus(raw["covar_module.base_kernel.raw_lengthscale"])
    s = F.softplus(raw["covar_module.raw_outputscale"])
    noise = 1e-6 + F.softplus(raw["likelihood.noise_covar.raw_noise"])
    Z = X / ls
    r2 = (Z.unsqueeze(-2) - Z.unsqueeze(-3)).square().sum(-1)
    if kernel == "rbf":
        k = torch.exp(-0.5 * r2)
    else:
        r = (r2 + torch.eye(len(X), dtype=X.dtype)).sqrt() * (1 - torch.eye(len(X), dtype=X.dtype))  # R&W eq. 4.17
        k = (1 + 5**0.5 * r + 5.0 / 3.0 * r2) * torch.exp(-(5**0.5) * r)
    A = s * k + noise * torch.eye(len(X), dtype=X.dtype)
    mean = raw["mean_module.raw_constant"].expand(len(X))
    loss = -torch.distributions.MultivariateNormal(mean, A).log_prob(y) / len(X)
    loss.backward()
    return loss.detach(), {k: t.grad for k, t in raw.items()}


@pytest.mark.parametrize("kernel", ["rbf", "matern"])
def test_loss_and_gradients_equal_dense_autograd_and_gpytorch(kernel):
    X, y = _data()
    ours = _mll(torchgp, X, y, kernel)
    loss, grads = _loss_and_grads(ours, X, y)
    ref_loss, ref_grads = _dense_reference(ours, X, y, kernel)
    assert_close(loss, ref_loss)
    for name, g in grads.items():
        assert_close(g, ref_grads[name])
    with gpytorch.settings.max_cholesky_size(10**9):
        gp_loss, gp_grads = _loss_and_grads(_mll(gpytorch, X, y, kernel), X, y)
    assert set(grads) == set(gp_grads)
    # GPyTorch's own rounding (its constraint bounds and distances) differs from both by a few 1e-8
    assert_close(loss, gp_loss, loose=10)
    for name, g in grads.items():
        assert_close(g, gp_grads[name], loose=10)


def test_the_log_density_is_one_node_under_the_loss():
    X, y = _data()
    mll = _mll(torchgp, X, y, "matern")
    loss = -mll(mll.model(X), y)
    ((density, _),) = loss.grad_fn.next_functions
    assert type(density).__name__ == "CholeskyGaussianLogProbBackward"  # no residual, affine or 1/n nodes


def test_priors_are_still_added_and_divided_by_n():
    X, y = _data()
    mll = _mll(torchgp, X, y, "rbf")
    plain = mll(mll.model(X), y)
    mll.model.covar_module.register_prior(
        "outputscale_prior", torchgp.priors.GammaPrior(2.0, 1.5), lambda m: m.outputscale
    )
    with_prior = mll(mll.model(X), y)
    log_p = torch.distributions.Gamma(2.0, 1.5).log_prob(mll.model.covar_module.outputscale.detach())
    assert_close(with_prior.detach(), plain.detach() + log_p / X.shape[0])


def test_positive_reads_its_bound_again_after_a_change():
    c = torchgp.constraints.Positive()
    raw = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    assert torch.equal(c.transform(raw), torch.nn.functional.softplus(raw))
    with torch.no_grad():
        c.lower_bound.fill_(0.5)  # a new version of the buffer: the bound is read again
    assert_close(c.transform(raw), 0.5 + torch.nn.functional.softplus(raw))
    c.load_state_dict({"lower_bound": torch.tensor(0.0), "upper_bound": torch.tensor(float("inf"))})
    assert torch.equal(c.transform(raw), torch.nn.functional.softplus(raw))
    g = torchgp.constraints.GreaterThan(1e-3)
    assert_close(g.transform(raw), 1e-3 + torch.nn.functional.softplus(raw))
