"""Multitask variational strategies: LMC and independent outputs against GPyTorch and against their limits."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.errors import InputError

D = torch.float64


def lmc_model(lib, num_latents, num_tasks, m=6, lmc=True, seed=0):
    """GPyTorch's SVGP multitask tutorial model (LMC, or independent outputs when ``lmc`` is False)."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.rand(num_latents, m, 1, generator=g, dtype=D)
    L = torch.Size([num_latents])

    class Model(lib.models.ApproximateGP):
        def __init__(self):
            q = lib.variational.CholeskyVariationalDistribution(m, batch_shape=L)
            base = lib.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True)
            if lmc:
                strategy = lib.variational.LMCVariationalStrategy(base, num_tasks=num_tasks, num_latents=num_latents)
            else:
                strategy = lib.variational.IndependentMultitaskVariationalStrategy(base, num_tasks=num_tasks)
            super().__init__(strategy)
            self.mean_module = lib.means.ConstantMean(batch_shape=L)
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel(batch_shape=L), batch_shape=L)

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return Model().double()


def _same_parameters(ours, theirs, seed=1):
    for model in (ours, theirs):  # the first call initialises q(u) from the prior (at random): do it before
        model(torch.rand(2, 1, dtype=D))
    g = torch.Generator().manual_seed(seed)
    mine, other = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert mine.keys() == other.keys()
    with torch.no_grad():
        for k, p in mine.items():
            v = 0.3 * torch.randn(p.shape, generator=g, dtype=D)
            if k.endswith("inducing_points"):
                v = torch.rand(p.shape, generator=g, dtype=D)
            if k.endswith("chol_variational_covar"):
                v = torch.eye(p.shape[-1], dtype=D) + 0.1 * torch.randn(p.shape, generator=g, dtype=D).tril()
            p.copy_(v)
            other[k].copy_(v)


@pytest.mark.parametrize("lmc", [True, False], ids=["lmc", "independent"])
def test_outputs_kl_and_elbo_match_gpytorch(lmc):
    t = 3
    L = 2 if lmc else t
    ours, theirs = lmc_model(torchgp, L, t, lmc=lmc), lmc_model(gpytorch, L, t, lmc=lmc)
    _same_parameters(ours, theirs)
    x = torch.rand(7, 1, dtype=D)
    y = torch.randn(7, t, dtype=D)
    a, b = ours(x), theirs(x)
    assert a.event_shape == b.event_shape == (7, t)
    assert_close(a.mean, b.mean)
    assert_close(a.variance, b.variance)
    if lmc:
        assert_close(a.covariance_matrix, b.covariance_matrix)
        ta, tb = a.to_data_independent_dist(), b.to_data_independent_dist()
        assert_close(ta.covariance_matrix, tb.covariance_matrix.to_dense())
    assert_close(ours.variational_strategy.kl_divergence(), theirs.variational_strategy.kl_divergence())
    idx = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    ai, bi = ours(x, task_indices=idx), theirs(x, task_indices=idx)
    assert_close(ai.mean, bi.mean)
    assert_close(ai.covariance_matrix, bi.covariance_matrix)
    # the ELBO's terms: E_q log p(y | f) per point (a multitask Gaussian likelihood) and the KL
    lik_a = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=t).double()
    lik_b = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=t).double()
    assert_close(lik_a.expected_log_prob(y, a), lik_b.expected_log_prob(y, b))
    elbo_b = gpytorch.mlls.VariationalELBO(lik_b, theirs, num_data=50)(b, y)
    elbo_a = lik_a.expected_log_prob(y, a).sum(-1) / 7 - ours.variational_strategy.kl_divergence() / 50
    assert_close(elbo_a, elbo_b)
    # and through the objectives themselves, with (b, t) targets
    assert_close(torchgp.mlls.VariationalELBO(lik_a, ours, num_data=50)(a, y), elbo_b)
    pll_b = gpytorch.mlls.PredictiveLogLikelihood(lik_b, theirs, num_data=50)(b, y)
    assert_close(torchgp.mlls.PredictiveLogLikelihood(lik_a, ours, num_data=50)(a, y), pll_b)
    with pytest.raises(torchgp.errors.ShapeError, match="tasks"):
        torchgp.mlls.VariationalELBO(lik_a, ours, num_data=50)(a, y[:, :2])


def test_lmc_with_identity_mixing_equals_independent_svgps():
    t = 3
    lmc, ind = lmc_model(torchgp, t, t, lmc=True), lmc_model(torchgp, t, t, lmc=False)
    x = torch.rand(5, 1, dtype=D)
    lmc(x), ind(x)  # initialise both q(u)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for k, p in ind.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=D) if k.endswith("inducing_points") else 0.3 * p + 0.1)
        lmc.load_state_dict({**lmc.state_dict(), **ind.state_dict()})
        lmc.variational_strategy.lmc_coefficients.copy_(torch.eye(t, dtype=D))
    a, b = lmc(x), ind(x)
    assert_close(a.mean, b.mean)
    assert_close(a.variance, b.variance + lmc.variational_strategy._jitter(D))  # LMC's output jitter
    assert_close(lmc.variational_strategy.kl_divergence(), ind.variational_strategy.kl_divergence())
    y = torch.randn(5, t, dtype=D)
    lik = torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=t).double()
    with torch.no_grad():
        lmc.variational_strategy.jitter_val = 0.0
        assert_close(lik.expected_log_prob(y, lmc(x)), lik.expected_log_prob(y, ind(x)))


def test_errors():
    with pytest.raises(Exception, match="batch_shape"):
        lmc_model(torchgp, 2, 3, lmc=True).variational_strategy.__class__(
            torchgp.variational.VariationalStrategy(
                None,
                torch.rand(4, 1),
                torchgp.variational.CholeskyVariationalDistribution(4),
            ),
            num_tasks=3,
            num_latents=2,
        )
    model = lmc_model(torchgp, 2, 3)
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        model(torch.rand(2, 1, dtype=D), task_indices=torch.tensor([0, 5]))
