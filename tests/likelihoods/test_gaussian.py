"""Gaussian likelihoods: homoskedastic, fixed (known) noise, heteroskedastic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import torchgp
from tests._tol import assert_close
from tests.models._models import ExactModel, data, rbf_numpy
from torchgp.distributions import MultivariateNormal
from torchgp.likelihoods import (
    FixedNoiseGaussianLikelihood,
    GaussianLikelihood,
    HeteroskedasticGaussianLikelihood,
    Likelihood,
)


def _f(n=5, batch=()):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    return MultivariateNormal(
        torch.randn(*batch, n, generator=g, dtype=torch.float64), A @ A.mT + torch.eye(n, dtype=torch.float64)
    )


def test_gaussian_marginal_adds_noise():
    lik = GaussianLikelihood().double()
    lik.noise = 0.3
    f = _f()
    y = lik(f)
    assert_close(y.covariance_matrix, f.covariance_matrix + 0.3 * torch.eye(5))
    assert_close(y.mean, f.mean)
    cond = lik(torch.zeros(4, dtype=torch.float64))
    assert isinstance(cond, torch.distributions.Normal)
    assert_close(cond.stddev, torch.full((4,), math.sqrt(0.3), dtype=torch.float64))


def test_gaussian_expected_log_prob_closed_form_equals_quadrature():
    lik = GaussianLikelihood().double()
    lik.noise = 0.2
    f = _f()
    y = torch.randn(5, dtype=torch.float64)
    closed = lik.expected_log_prob(y, f)
    quad = Likelihood.expected_log_prob(lik, y, f)  # the base class's Gauss–Hermite quadrature
    assert_close(closed, quad)
    s2 = f.variance + 0.2
    assert_close(lik.log_marginal(y, f), torch.distributions.Normal(f.mean, s2.sqrt()).log_prob(y))
    # quadrature of log ∫ p(y|f) q(f) df is accurate when q is narrow next to the noise
    lik.noise = 1.0
    q = MultivariateNormal(f.mean, 0.1 * torch.eye(5, dtype=torch.float64))
    assert_close(Likelihood.log_marginal(lik, y, q), lik.log_marginal(y, q))


def test_batched_noise():
    lik = GaussianLikelihood(batch_shape=torch.Size([3])).double()
    lik.noise = torch.tensor([[0.1], [0.2], [0.3]])
    y = lik(_f(batch=(3,)))
    assert_close(y.variance - _f(batch=(3,)).variance, torch.tensor([[0.1], [0.2], [0.3]]).expand(3, 5))


def test_fixed_noise_uses_known_per_point_noise():
    X, y = data(n=8)
    noise = torch.linspace(0.01, 0.2, 8, dtype=torch.float64)
    lik = FixedNoiseGaussianLikelihood(noise=noise)
    model = ExactModel(X, y, lik).double()
    model.initialize(**{"covar_module.base_kernel.lengthscale": 0.6, "covar_module.outputscale": 1.1})
    K = rbf_numpy(X.numpy(), X.numpy(), 0.6, 1.1) + np.diag(noise.numpy())
    expected = scipy.stats.multivariate_normal(np.zeros(8), K).logpdf(y.numpy())
    assert_close(model.log_likelihood(model(X), y), expected)
    assert not list(lik.parameters())
    model.eval()
    Xs = torch.randn(3, 1, dtype=torch.float64)
    f = model(Xs)
    new_noise = torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64)
    assert_close(lik(f, noise=new_noise).variance, f.variance + new_noise)
    with pytest.warns(UserWarning, match="mean training noise"):
        assert_close(lik(f).variance, f.variance + noise.mean())


def test_fixed_noise_with_learned_extra_noise():
    X, y = data(n=8)
    noise = torch.full((8,), 0.05, dtype=torch.float64)
    lik = FixedNoiseGaussianLikelihood(noise=noise, learn_additional_noise=True).double()
    lik.second_noise_covar.noise = 0.1
    f = _f(n=8)
    assert_close(lik(f).variance, f.variance + 0.15)
    model = ExactModel(X, y, lik).double()
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    (-mll(model(X), y)).backward()
    assert lik.second_noise_covar.raw_noise.grad is not None
    assert "likelihood.second_noise_covar.raw_noise" in dict(model.named_parameters())


def test_fixed_noise_validation():
    with pytest.raises(torchgp.errors.InputError, match="non-negative"):
        FixedNoiseGaussianLikelihood(noise=torch.tensor([0.1, -0.1]))
    with pytest.warns(torchgp.errors.NumericalWarning, match="raised to"):
        lik = FixedNoiseGaussianLikelihood(noise=torch.tensor([0.0, 0.1], dtype=torch.float64))
    assert lik.noise.min() > 0


def test_heteroskedastic_likelihood_in_an_exact_gp():
    X, y = data(n=10)

    class LogNoise(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([[0.5]], dtype=torch.float64))
            self.b = torch.nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))

        def forward(self, x):
            return (x @ self.w).squeeze(-1) + self.b

    lik = HeteroskedasticGaussianLikelihood(LogNoise()).double()
    model = ExactModel(X, y, lik).double()
    model.initialize(**{"covar_module.base_kernel.lengthscale": 0.6, "covar_module.outputscale": 1.1})
    noise = torch.nn.functional.softplus(X.squeeze(-1) * 0.5 - 2.0) + 1e-4
    assert_close(lik.noise(X), noise)
    K = rbf_numpy(X.numpy(), X.numpy(), 0.6, 1.1) + np.diag(noise.detach().numpy())
    expected = scipy.stats.multivariate_normal(np.zeros(10), K).logpdf(y.numpy())
    assert_close(model.log_likelihood(model(X), y), expected)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    assert_close(mll(model(X), y), expected / 10)
    (-mll(model(X), y)).backward()
    assert lik.noise_covar.noise_model.w.grad is not None
    model.eval()
    Xs = torch.randn(4, 1, dtype=torch.float64)
    f = model(Xs)
    noise_s = torch.nn.functional.softplus(Xs.squeeze(-1) * 0.5 - 2.0) + 1e-4
    assert_close(lik(f, Xs).variance, f.variance + noise_s)
    with pytest.raises(torchgp.errors.InputError, match="needs the inputs"):
        lik(f)
