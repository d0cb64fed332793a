"""ExactMarginalLogLikelihood: SciPy's logpdf / n, plus the priors' log-densities / n."""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
from torch.func import functional_call

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data, make_model, rbf_numpy


def _scipy_mll(X, y, ell, s, c, noise):
    K = rbf_numpy(X.numpy(), X.numpy(), ell, s) + noise * np.eye(len(X))
    return scipy.stats.multivariate_normal(np.full(len(X), c), K).logpdf(y.numpy()) / len(X)


def test_mll_equals_scipy_over_n():
    model, X, y = make_model(n=14, d=1)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    assert_close(mll(model(X), y), _scipy_mll(X, y, 0.7, 1.3, 0.2, 0.05))
    assert_close(mll(model(X), y.unsqueeze(-1)), _scipy_mll(X, y, 0.7, 1.3, 0.2, 0.05))


def test_priors_change_the_mll_by_their_log_density_over_n():
    X, y = data(n=10)
    priors = {
        "ls": torchgp.priors.GammaPrior(3.0, 6.0),
        "os": torchgp.priors.LogNormalPrior(0.0, 1.0),
        "noise": torchgp.priors.HalfCauchyPrior(0.5),
        "const": torchgp.priors.NormalPrior(0.0, 2.0),
    }
    kernel = torchgp.kernels.ScaleKernel(
        torchgp.kernels.RBFKernel(lengthscale_prior=priors["ls"]), outputscale_prior=priors["os"]
    )
    lik = torchgp.likelihoods.GaussianLikelihood(noise_prior=priors["noise"])
    mean = torchgp.means.ConstantMean(constant_prior=priors["const"])
    model = ExactModel(X, y, lik, kernel=kernel, mean=mean).double()
    model.initialize(
        **{
            "covar_module.base_kernel.lengthscale": 0.7,
            "covar_module.outputscale": 1.3,
            "likelihood.noise": 0.05,
            "mean_module.constant": 0.2,
        }
    )
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    log_prior = (
        priors["ls"].log_prob(torch.tensor(0.7)).double()
        + priors["os"].log_prob(torch.tensor(1.3)).double()
        + priors["noise"].log_prob(torch.tensor(0.05)).double()
        + priors["const"].log_prob(torch.tensor(0.2)).double()
    )
    expected = _scipy_mll(X, y, 0.7, 1.3, 0.2, 0.05) + log_prior.item() / 10
    assert_close(mll(model(X), y), expected, loose=1e3)  # priors' parameters are float32
    assert len(list(model.named_priors())) == 4
    # the prior term moves with its parameter (and its gradient reaches the parameter)
    mll(model(X), y).backward()
    assert model.mean_module.raw_constant.grad is not None


def test_mll_gradient_matches_autograd_through_dense_reference():
    model, X, y = make_model(n=9)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    mll(model(X), y).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    raw = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    ell = torch.nn.functional.softplus(raw["covar_module.base_kernel.raw_lengthscale"])
    s = torch.nn.functional.softplus(raw["covar_module.raw_outputscale"])
    noise = torch.nn.functional.softplus(raw["likelihood.noise_covar.raw_noise"]) + 1e-4
    c = raw["mean_module.raw_constant"]
    d2 = (X - X.mT).pow(2)
    K = s * torch.exp(-0.5 * d2 / ell.pow(2)) + noise * torch.eye(9, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(c.expand(9), K).log_prob(y) / 9
    ref.backward()
    for n in ours:
        assert_close(ours[n], raw[n].grad)


def test_mll_gradcheck_over_hyperparameters():
    model, X, y = make_model(n=7)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in model.named_parameters())

    def f(*ps):
        out = functional_call(model, dict(zip(names, ps)), (X,))
        with torch.enable_grad():
            return functional_call(mll, {f"model.{n}": p for n, p in zip(names, ps)}, (out, y))

    assert torch.autograd.gradcheck(f, params)


def test_batch_mll_shape():
    X, y = data(n=6, batch=(2,))
    lik = torchgp.likelihoods.GaussianLikelihood(batch_shape=torch.Size([2]))
    model = ExactModel(X, y, lik, batch_shape=torch.Size([2])).double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    out = mll(model(X), y)
    assert out.shape == (2,)
    for i in range(2):
        li = torchgp.likelihoods.GaussianLikelihood()
        mi = ExactModel(X[i], y[i], li).double()
        assert_close(out[i], torchgp.mlls.ExactMarginalLogLikelihood(li, mi)(mi(X[i]), y[i]))


def test_log_likelihood_is_mll_times_n_without_priors():
    model, X, y = make_model(n=11)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    assert_close(model.log_likelihood(model(X), y), 11 * mll(model(X), y))
