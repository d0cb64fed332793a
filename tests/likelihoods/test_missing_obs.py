"""GaussianLikelihoodWithMissingObs: NaN targets contribute nothing; the rest is GaussianLikelihood's."""

from __future__ import annotations

import warnings

import gpytorch
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data

D64 = torch.float64


def _q(n=6):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(n, generator=g, dtype=D64)
    var = 0.1 + torch.rand(n, generator=g, dtype=D64)
    return mean, var


def test_missing_points_contribute_nothing_and_the_rest_is_gaussian():
    lik = torchgp.likelihoods.GaussianLikelihoodWithMissingObs().double()
    lik.noise = 0.2
    plain = torchgp.likelihoods.GaussianLikelihood().double()
    plain.noise = 0.2
    mean, var = _q()
    y = torch.tensor([0.1, float("nan"), -0.3, 1.2, float("nan"), 0.0], dtype=D64)
    q = torchgp.distributions.MultivariateNormal(mean, torch.diag(var))
    obs = ~torch.isnan(y)
    for method in ("expected_log_prob", "log_marginal"):
        ours = getattr(lik, method)(y, q)
        assert torch.all(ours[~obs] == 0)
        assert_close(ours[obs], getattr(plain, method)(y.nan_to_num(0.0), q)[obs])
    with warnings.catch_warnings():  # GPyTorch deprecates its class; the numbers are what is compared
        warnings.simplefilter("ignore", DeprecationWarning)
        g = gpytorch.likelihoods.GaussianLikelihoodWithMissingObs().double()
    g.noise = torch.tensor(0.2, dtype=D64)
    gq = gpytorch.distributions.MultivariateNormal(mean, torch.diag(var))
    assert_close(lik.expected_log_prob(y, q), g.expected_log_prob(y, gq))
    assert_close(lik.log_marginal(y, q), g.log_marginal(y, gq))


def test_gradcheck_expected_log_prob_with_missing_points():
    lik = torchgp.likelihoods.GaussianLikelihoodWithMissingObs().double()
    y = torch.tensor([0.1, float("nan"), -0.3], dtype=D64)
    mean, var = _q(3)

    class ELP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lik = lik

        def forward(self, m, v):
            return self.lik.expected_log_prob(y, torchgp.distributions.MultivariateNormal(m, torch.diag_embed(v)))

    module = ELP()
    raw = lik.noise_covar.raw_noise.detach().clone().requires_grad_(True)

    def fn(m, v, r):
        return torch.func.functional_call(module, {"lik.noise_covar.raw_noise": r}, (m, v))

    assert torch.autograd.gradcheck(fn, (mean.requires_grad_(True), var.requires_grad_(True), raw))


def test_exact_gp_with_it_conditions_on_the_observed_points():
    X, y = data(n=9)
    y_nan = y.clone()
    y_nan[[2, 5]] = float("nan")
    keep = [i for i in range(9) if i not in (2, 5)]
    hypers = {"likelihood.noise": 0.1, "covar_module.base_kernel.lengthscale": 0.5}
    with torchgp.settings.observation_nan_policy("mask"):  # lets the model hold NaN targets
        model = ExactModel(X, y_nan, torchgp.likelihoods.GaussianLikelihoodWithMissingObs()).double()
    model.initialize(**hypers)
    sub = ExactModel(X[keep], y[keep], torchgp.likelihoods.GaussianLikelihood()).double().initialize(**hypers)
    value = torchgp.mlls.ExactMarginalLogLikelihood(model.likelihood, model)(model(X), y_nan)  # default policy
    ref = torchgp.mlls.ExactMarginalLogLikelihood(sub.likelihood, sub)(sub(X[keep]), y[keep])
    assert_close(value * 9, ref * 7)
    x = torch.linspace(-1, 1, 4, dtype=D64)
    assert_close(model.eval()(x).mean, sub.eval()(x).mean)
