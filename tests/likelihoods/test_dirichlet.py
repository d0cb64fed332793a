"""DirichletClassificationLikelihood: Milios et al. (2018) targets and noise, GPyTorch's numbers, the tutorial."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close

D64 = torch.float64


def test_targets_and_noise_follow_the_lognormal_moment_match():
    labels = torch.tensor([0, 2, 1, 2, 0, 3])
    lik = torchgp.likelihoods.DirichletClassificationLikelihood(labels, alpha_epsilon=0.05, dtype=D64)
    assert lik.num_classes == 4 and lik.transformed_targets.shape == (4, 6) and lik.noise.shape == (4, 6)
    for i, c in enumerate(labels.tolist()):
        for j in range(4):
            alpha = 0.05 + (1.0 if j == c else 0.0)
            s2 = math.log(1 / alpha + 1)  # eq. 7
            assert abs(lik.noise[j, i].item() - s2) < 1e-12
            assert abs(lik.transformed_targets[j, i].item() - (math.log(alpha) - s2 / 2)) < 1e-12  # eq. 8
    ref = gpytorch.likelihoods.DirichletClassificationLikelihood(labels, alpha_epsilon=0.05, dtype=D64)
    assert_close(lik.transformed_targets, ref.transformed_targets)
    assert_close(lik.noise, ref.noise)


def test_log_prob_is_normal_with_the_fixed_noise_and_new_labels_set_new_noise():
    labels = torch.tensor([1, 0, 1])
    lik = torchgp.likelihoods.DirichletClassificationLikelihood(labels, dtype=D64)
    f = torch.randn(2, 3, dtype=D64)
    y = lik.transformed_targets
    ref = torch.distributions.Normal(f, lik.noise.sqrt()).log_prob(y)
    assert_close(lik(f).log_prob(y), ref)
    g = gpytorch.likelihoods.DirichletClassificationLikelihood(labels, dtype=D64)
    assert_close(lik(f).log_prob(y), g(f).log_prob(y))
    mvn = torchgp.distributions.MultivariateNormal(
        torch.zeros(2, 2, dtype=D64), torch.eye(2, dtype=D64).expand(2, 2, 2)
    )
    new = lik(mvn, targets=torch.tensor([0, 1]))
    expected = torchgp.likelihoods.DirichletClassificationLikelihood(torch.tensor([0, 1]), dtype=D64).noise
    assert_close(new.variance, 1 + expected)


def test_learned_extra_noise_and_gradcheck_expected_log_prob():
    labels = torch.tensor([0, 1, 1, 0])
    lik = torchgp.likelihoods.DirichletClassificationLikelihood(labels, learn_additional_noise=True, dtype=D64).double()
    assert lik.second_noise_covar.noise.shape[0] == 2  # one extra noise per class
    y = lik.transformed_targets
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 4, generator=g, dtype=D64, requires_grad=True)
    var = (0.1 + torch.rand(2, 4, generator=g, dtype=D64)).requires_grad_(True)
    raw = lik.second_noise_covar.raw_noise.detach().clone().requires_grad_(True)

    class ELP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lik = lik

        def forward(self, m, v):
            return self.lik.expected_log_prob(y, torchgp.distributions.MultivariateNormal(m, torch.diag_embed(v)))

    module = ELP()

    def fn(m, v, r):
        return torch.func.functional_call(module, {"lik.second_noise_covar.raw_noise": r}, (m, v))

    assert torch.autograd.gradcheck(fn, (mean, var, raw))
    s2 = lik.noise + lik.second_noise
    closed = -0.5 * ((y - mean) ** 2 + var) / s2 - 0.5 * torch.log(2 * math.pi * s2)
    assert_close(module(mean, var), closed)


def test_bad_labels_are_refused():
    with pytest.raises(torchgp.errors.ShapeError, match=r"\(n,\)"):
        torchgp.likelihoods.DirichletClassificationLikelihood(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(torchgp.errors.InputError, match="integers"):
        torchgp.likelihoods.DirichletClassificationLikelihood(torch.tensor([0.5, 1.0]))


def _blobs(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.8]], dtype=D64)
    X = centres[labels] + 0.35 * torch.randn(n, 2, generator=g, dtype=D64)
    return X, labels


def test_classification_tutorial_pattern_trains_predicts_and_matches_gpytorch():
    X, labels = _blobs()

    def build(lib, likelihood):
        class DirichletGPModel(lib.models.ExactGP):
            def __init__(self, train_x, train_y, likelihood, num_classes):
                super().__init__(train_x, train_y, likelihood)
                batch = torch.Size((num_classes,))
                self.mean_module = lib.means.ConstantMean(batch_shape=batch)
                self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(batch_shape=batch), batch_shape=batch)

            def forward(self, x):
                return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        return DirichletGPModel(X, likelihood.transformed_targets, likelihood, likelihood.num_classes).double()

    lik = torchgp.likelihoods.DirichletClassificationLikelihood(labels, learn_additional_noise=True, dtype=D64)
    model = build(torchgp, lik)
    glik = gpytorch.likelihoods.DirichletClassificationLikelihood(labels, learn_additional_noise=True, dtype=D64)
    gmodel = build(gpytorch, glik)
    mll = torchgp.mlls.ExactMarginalLogLikelihood(lik, model)
    gmll = gpytorch.mlls.ExactMarginalLogLikelihood(glik, gmodel)
    assert_close(mll(model(X), lik.transformed_targets), gmll(gmodel(X), glik.transformed_targets))

    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(20):
        optimizer.zero_grad()
        loss = -mll(model(X), lik.transformed_targets).sum()
        loss.backward()
        optimizer.step()
    model.eval()
    Xt, yt = _blobs(15, seed=1)
    with torch.no_grad():
        dist = model(Xt)
        assert dist.mean.shape == (3, 15)
        samples = dist.sample(torch.Size((64,))).exp()
        probabilities = (samples / samples.sum(-2, keepdim=True)).mean(0)
    assert torch.allclose(probabilities.sum(0), torch.ones(15, dtype=D64))
    assert (probabilities.argmax(0) == yt).double().mean() >= 0.9


def test_fantasy_likelihood_covers_the_new_labels():
    lik = torchgp.likelihoods.DirichletClassificationLikelihood(torch.tensor([0, 1, 1]), dtype=D64)
    fant = lik.get_fantasy_likelihood(targets=torch.tensor([1, 0]))
    ref = torchgp.likelihoods.DirichletClassificationLikelihood(torch.tensor([0, 1, 1, 1, 0]), dtype=D64)
    assert_close(fant.noise, ref.noise)
    assert_close(fant.transformed_targets, ref.transformed_targets)
    assert lik.noise.shape == (2, 3)  # the original is unchanged
