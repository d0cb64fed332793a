"""MultivariateNormal: moments, lazy covariance, sampling, log_prob, batch shapes."""

from __future__ import annotations

import math

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.distributions import MultivariateNormal
from torchgp.errors import ShapeError


def _cov(*batch, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    return A @ A.mT + 0.5 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_moments_and_log_prob_match_torch(batch):
    mean = torch.randn(*batch, 4, dtype=torch.float64)
    cov = _cov(*batch)
    d = MultivariateNormal(mean, cov)
    ref = torch.distributions.MultivariateNormal(mean, cov)
    assert d.batch_shape == batch and d.event_shape == (4,)
    assert_close(d.mean, mean)
    assert_close(d.covariance_matrix, cov)
    assert_close(d.lazy_covariance_matrix.to_dense(), cov)
    assert_close(d.variance, cov.diagonal(dim1=-2, dim2=-1))
    assert_close(d.stddev, cov.diagonal(dim1=-2, dim2=-1).sqrt())
    lo, hi = d.confidence_region()
    assert_close(lo, mean - 2 * d.stddev)
    assert_close(hi, mean + 2 * d.stddev)
    x = torch.randn(5, *batch, 4, dtype=torch.float64)
    assert_close(d.log_prob(x), ref.log_prob(x))
    assert_close(d.entropy(), ref.entropy())


def test_lazy_kernel_covariance():
    X = torch.randn(6, 2, dtype=torch.float64)
    k = torchgp.kernels.RBFKernel().double()
    d = MultivariateNormal(torch.zeros(6, dtype=torch.float64), k(X))
    assert d.islazy
    assert_close(d.covariance_matrix, k(X).to_dense())
    assert_close(d.variance, torch.ones(6))


def test_rsample_is_mean_plus_L_eps_and_differentiable():
    mean = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    cov = _cov(3)
    d = MultivariateNormal(mean, cov)
    eps = torch.randn(7, 3, 4, dtype=torch.float64)
    s = d.rsample(torch.Size([7]), base_samples=eps)
    L = torch.linalg.cholesky(cov)
    assert_close(s, mean + (L @ eps.unsqueeze(-1)).squeeze(-1))
    s.sum().backward()
    assert_close(mean.grad, torch.full_like(mean, 7.0))
    assert d.sample(torch.Size([2, 5])).shape == (2, 5, 3, 4)
    assert not d.sample().requires_grad


def test_sample_statistics():
    cov = _cov(n=3)
    d = MultivariateNormal(torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64), cov)
    s = d.sample(torch.Size([20000]))
    assert (s.mean(0) - d.mean).abs().max() < 5 * cov.diagonal().max().sqrt() / math.sqrt(20000)
    emp = torch.cov(s.T)
    assert (emp - cov).abs().max() < 0.1 * cov.abs().max()


def test_indexing_and_expand():
    mean, cov = torch.randn(3, 4, dtype=torch.float64), _cov(3)
    d = MultivariateNormal(mean, cov)
    assert_close(d[1].mean, mean[1])
    assert_close(d[1].covariance_matrix, cov[1])
    e = MultivariateNormal(mean[0], cov[0]).expand(torch.Size([2]))
    assert e.batch_shape == (2,)


def test_broadcast_mean_over_batch_covariance():
    d = MultivariateNormal(torch.zeros(4, dtype=torch.float64), _cov(3))
    assert d.batch_shape == (3,) and d.mean.shape == (3, 4)


def test_arithmetic():
    mean, cov = torch.randn(4, dtype=torch.float64), _cov()
    d = MultivariateNormal(mean, cov)
    assert_close((d * 2).covariance_matrix, 4 * cov)
    assert_close((d + 1.0).mean, mean + 1)
    assert_close((d + d).covariance_matrix, 2 * cov)
    assert_close(d.add_jitter(0.1).covariance_matrix, cov + 0.1 * torch.eye(4))


def test_shape_errors():
    with pytest.raises(ShapeError, match=r"\(\*batch, 3, 3\)"):
        MultivariateNormal(torch.zeros(3), torch.eye(4))
    d = MultivariateNormal(torch.zeros(3), torch.eye(3))
    with pytest.raises(ShapeError, match="expected n = 3"):
        d.log_prob(torch.zeros(4))
