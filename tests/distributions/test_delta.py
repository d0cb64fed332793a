"""``Delta`` against GPyTorch's, and the ``Distribution`` / ``base_distributions`` names."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.distributions import Delta


@pytest.mark.parametrize("event_dim", [0, 1, 2])
def test_delta_matches_gpytorch(event_dim):
    torch.manual_seed(0)
    v = torch.randn(3, 2, dtype=torch.float64)
    x = v.clone()
    x[1, 0] += 1.0
    ours, ref = Delta(v, event_dim=event_dim), gpytorch.distributions.Delta(v, event_dim=event_dim)
    assert ours.batch_shape == ref.batch_shape and ours.event_shape == ref.event_shape
    assert torch.equal(ours.log_prob(x), ref.log_prob(x))
    assert torch.equal(ours.log_prob(v), ref.log_prob(v))
    assert ours.sample(torch.Size([4])).shape == ref.sample(torch.Size([4])).shape
    assert torch.equal(ours.mean, v) and torch.equal(ours.variance, torch.zeros_like(v))


def test_delta_log_density_expand_and_rsample_gradient():
    v = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    d = Delta(v, log_density=torch.tensor([0.1, 0.2], dtype=torch.float64), validate_args=True)
    assert_close(d.log_prob(v.detach()), torch.tensor([0.1, 0.2], dtype=torch.float64))
    e = d.expand(torch.Size([3, 2]))
    assert e.batch_shape == (3, 2) and e.log_prob(v.detach()).shape == (3, 2)
    d.rsample(torch.Size([5])).sum().backward()
    assert_close(v.grad, torch.full((2,), 5.0, dtype=torch.float64))
    with pytest.raises(torchgp.errors.ShapeError):
        Delta(v.detach(), event_dim=2)
    with pytest.raises(torchgp.errors.ShapeError):
        Delta(v.detach(), log_density=torch.zeros(3), validate_args=True)


def test_kl_delta_mvn_is_minus_log_density():
    v = torch.tensor([0.3, -0.2], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    q = torchgp.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)
    kl = torch.distributions.kl_divergence(Delta(v, event_dim=1), q)
    ref = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov).log_prob(v)
    assert_close(kl, -ref)


def test_distribution_names():
    mvn = torchgp.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))
    assert isinstance(mvn, torchgp.distributions.Distribution)
    assert isinstance(Delta(torch.zeros(1)), torchgp.distributions.Distribution)
    assert torchgp.distributions.base_distributions.Normal is torch.distributions.Normal
