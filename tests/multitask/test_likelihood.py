"""Multitask Gaussian likelihoods: noise structure, conditionals and variational terms against dense references."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.distributions import MultitaskMultivariateNormal
from torchgp.likelihoods import FixedGaussianNoise, MultitaskGaussianLikelihood, _MultitaskGaussianLikelihoodBase
from torchgp.linalg.kronecker_solve import kronecker_sum

D = torch.float64


def _latent(n, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n * t, n * t, generator=g, dtype=D)
    return MultitaskMultivariateNormal(torch.randn(n, t, generator=g, dtype=D), A @ A.mT / (n * t))


@pytest.mark.parametrize("rank", [0, 2])
def test_base_likelihood_with_a_per_point_noise_model(rank):
    n, t = 4, 3
    d = torch.linspace(0.1, 0.4, n, dtype=D)
    lik = _MultitaskGaussianLikelihoodBase(num_tasks=t, noise_covar=FixedGaussianNoise(d), rank=rank).double()
    C = lik._eval_corr_matrix() if rank else torch.eye(t, dtype=D)
    assert_close(C.diagonal(), torch.ones(t, dtype=D))  # a correlation: unit diagonal
    f = _latent(n, t)
    marg = lik(f)
    assert_close(marg.covariance_matrix, f.covariance_matrix + torch.kron(torch.diag(d), C))
    y = torch.randn(n, t, dtype=D)
    ref = torch.distributions.MultivariateNormal(marg.loc, marg.covariance_matrix).log_prob(y.reshape(-1))
    assert_close(marg.log_prob(y), ref)


@pytest.mark.parametrize("rank", [0, 1])
def test_conditional_expected_log_prob_and_log_marginal_match_gpytorch(rank):
    n, t = 5, 3
    ours = MultitaskGaussianLikelihood(num_tasks=t, rank=rank).double()
    theirs = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=t, rank=rank).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=D))
            dict(theirs.named_parameters())[name].copy_(p)
    f = _latent(n, t)
    y = torch.randn(n, t, dtype=D)
    ref_f = gpytorch.distributions.MultitaskMultivariateNormal(f.mean, f.covariance_matrix)
    assert_close(ours(f).covariance_matrix, theirs(ref_f).covariance_matrix.to_dense())
    samples = torch.randn(2, n, t, dtype=D)
    if rank == 0:
        assert_close(ours(samples).log_prob(y), theirs(samples).log_prob(y))
    if rank == 0:
        assert_close(ours.expected_log_prob(y, f), theirs.expected_log_prob(y, ref_f))
    else:
        # E_q log N(y_i; f_i, Σ) = −½[(y_i − m_i)ᵀΣ⁻¹(y_i − m_i) + tr(Σ⁻¹ S_i) + log|2πΣ|] with the task noise's
        # correlations (GPyTorch 1.15.2 keeps only the diagonal of Σ here)
        Sigma = ours._eval_covar_matrix()
        P = torch.linalg.inv(Sigma)
        S = f.to_data_independent_dist(jitter_val=0.0).covariance_matrix
        r = y - f.mean
        quad = torch.einsum("ia,ab,ib->i", r, P, r) + torch.einsum("ab,iba->i", P, S)
        expected = -0.5 * (quad + torch.logdet(2 * torch.pi * Sigma))
        assert_close(ours.expected_log_prob(y, f), expected)
    assert_close(ours.log_marginal(y, f), theirs.log_marginal(y, ref_f))


def test_noise_structure_keeps_the_kronecker_solver_and_setters_work():
    lik = MultitaskGaussianLikelihood(num_tasks=2, rank=1).double()
    lik.noise = 0.3
    lik.task_noise_covar = torch.tensor([[1.0, 0.5], [0.5, 0.25]], dtype=D)  # rank one
    assert_close(lik.task_noise_covar, torch.tensor([[1.0, 0.5], [0.5, 0.25]], dtype=D))
    assert_close(lik._eval_covar_matrix(), lik.task_noise_covar + 0.3 * torch.eye(2, dtype=D))
    k = torchgp.kernels.MultitaskKernel(torchgp.kernels.RBFKernel(), num_tasks=2).double()
    x = torch.rand(4, 1, dtype=D)
    marg = lik(MultitaskMultivariateNormal(torch.zeros(4, 2, dtype=D), k(x)))
    assert kronecker_sum(marg.lazy_covariance_matrix) is not None
    y = torch.randn(4, 2, dtype=D)
    ref = torch.distributions.MultivariateNormal(marg.loc, marg.lazy_covariance_matrix.to_dense())
    assert_close(marg.log_prob(y), ref.log_prob(y.reshape(-1)))
