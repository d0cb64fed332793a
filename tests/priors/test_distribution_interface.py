"""Priors as ``torch.distributions``: moments, log-densities, shapes and state_dicts equal GPyTorch's."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp import priors

F64 = torch.float64


def _t(*v):
    return torch.tensor(v[0] if len(v) == 1 else v, dtype=F64)


CASES = {
    "normal": (lambda lib: lib.priors.NormalPrior(_t(0.5), _t(2.0)), _t(-1.0, 0.3, 2.0)),
    "halfnormal": (lambda lib: lib.priors.HalfNormalPrior(_t(1.5)), _t(0.1, 0.3, 2.0)),
    "lognormal": (lambda lib: lib.priors.LogNormalPrior(_t(0.2), _t(0.7)), _t(0.1, 1.3, 2.0)),
    "gamma": (lambda lib: lib.priors.GammaPrior(_t(2.0), _t(3.0)), _t(0.1, 0.6, 2.0)),
    "halfcauchy": (lambda lib: lib.priors.HalfCauchyPrior(_t(1.5)), _t(0.1, 0.3, 2.0)),
    "uniform": (lambda lib: lib.priors.UniformPrior(_t(0.1), _t(3.0)), _t(0.5, 1.0, 2.9)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_torch_distribution_interface_matches_gpytorch(name):
    build, x = CASES[name]
    ours, ref = build(torchgp), build(gpytorch)
    assert isinstance(ours, torch.distributions.Distribution) and isinstance(ours, torch.nn.Module)
    assert_close(ours.log_prob(x), ref.log_prob(x))
    assert_close(ours.mean, ref.mean)
    assert_close(ours.variance, ref.variance)
    assert ours.batch_shape == ref.batch_shape and ours.event_shape == ref.event_shape
    assert type(ours.support) is type(ref.support)
    torch.manual_seed(0)
    assert ours.sample(torch.Size([3, 2])).shape == ref.sample(torch.Size([3, 2])).shape == (3, 2)
    if ref.has_rsample:
        assert ours.rsample(torch.Size([4])).shape == (4,)
    big = ours.expand(torch.Size([5]))
    assert type(big) is type(ours) and big.batch_shape == (5,)
    assert_close(big.log_prob(x[:1].expand(5)), ours.log_prob(x[:1]).expand(5))


def test_gamma_prior_examples_from_the_brief():
    p = priors.GammaPrior(2.0, 3.0)
    assert_close(p.mean, torch.tensor(2.0 / 3.0))
    assert_close(p.variance, torch.tensor(2.0 / 9.0))
    torch.manual_seed(0)
    s = p.sample(torch.Size([20000]))
    assert abs(s.mean().item() - 2 / 3) < 0.02
    r = priors.GammaPrior(torch.tensor(2.0, requires_grad=True), 3.0)
    assert isinstance(p.support, torch.distributions.constraints._GreaterThanEq)
    assert r.batch_shape == () and r.event_shape == ()


def test_prior_reflects_its_buffers_after_to_and_load():
    p = priors.NormalPrior(0.0, 1.0).double()
    assert p.mean.dtype == F64
    p.load_state_dict({"loc": _t(3.0), "scale": _t(2.0)})
    assert_close(p.mean, _t(3.0))
    assert_close(p.variance, _t(4.0))


def test_multivariate_normal_prior_matches_gpytorch_and_expands():
    loc = _t(0.1, -0.2)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    ours, ref = priors.MultivariateNormalPrior(loc, cov), gpytorch.priors.MultivariateNormalPrior(loc, cov)
    x = torch.randn(3, 2, dtype=F64)
    assert_close(ours.log_prob(x), ref.log_prob(x))
    assert ours.event_shape == (2,) and ours.batch_shape == ()
    big = ours.expand(torch.Size([4]))
    assert big.batch_shape == (4,) and big.sample().shape == (4, 2)
    # GPyTorch's layout stores the factor; it loads
    fresh = priors.MultivariateNormalPrior(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    fresh.load_state_dict(ref.state_dict())
    assert_close(fresh.covariance_matrix, cov)


def test_gpytorch_prior_state_dicts_load():
    pairs = [
        (priors.HalfNormalPrior(1.0), gpytorch.priors.HalfNormalPrior(2.5), "scale"),
        (priors.LogNormalPrior(0.0, 1.0), gpytorch.priors.LogNormalPrior(0.3, 0.4), "loc"),
        (priors.HalfCauchyPrior(1.0), gpytorch.priors.HalfCauchyPrior(0.7), "scale"),
        (priors.UniformPrior(0.0, 1.0), gpytorch.priors.UniformPrior(0.0, 1.0), "a"),
        (priors.SmoothedBoxPrior(0.0, 1.0), gpytorch.priors.SmoothedBoxPrior(0.5, 2.0, sigma=0.1), "b"),
        (priors.HorseshoePrior(1.0), gpytorch.priors.HorseshoePrior(0.3), "scale"),
        (priors.LKJPrior(3, 1.0), gpytorch.priors.LKJPrior(3, 1.0), "eta"),
    ]
    for ours, ref, name in pairs:
        ours.load_state_dict(ref.state_dict())
        if name == "loc":
            expected = ref.base_dist.loc
        else:
            expected = ref.low if name == "a" else getattr(ref, name)
        assert_close(
            getattr(ours, name).double(), torch.as_tensor(expected).double().reshape(getattr(ours, name).shape)
        )


def test_smoothed_box_matches_gpytorch():
    for a, b, sigma, x in [
        (_t(1.0), _t(3.0), _t(0.2), torch.tensor([[0.5], [2.0], [3.3]], dtype=F64)),
        (torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), _t(0.1), torch.rand(4, 2, dtype=F64) * 2 - 0.5),
    ]:
        ours, ref = priors.SmoothedBoxPrior(a, b, sigma), gpytorch.priors.SmoothedBoxPrior(a, b, sigma)
        assert_close(ours.log_prob(x), ref.log_prob(x))
        assert ours.event_shape == ref.event_shape and ours.batch_shape == ref.batch_shape
        assert ours.sample(torch.Size([3])).shape == ref.sample(torch.Size([3])).shape


def test_horseshoe_log_prob_matches_gpytorch_and_brackets_the_density():
    x = _t(0.05, 0.3, 1.0, 4.0)
    ours, ref = priors.HorseshoePrior(0.5), gpytorch.priors.HorseshoePrior(torch.tensor(0.5, dtype=F64))
    assert_close(ours.double().log_prob(x), ref.log_prob(x))
    # the approximation lies strictly between the Carvalho et al. bounds
    K = 1 / (2 * torch.pi**3) ** 0.5
    A = (0.5 / x) ** 2
    lp = ours.double().log_prob(x)
    assert torch.all(lp > torch.log(K / 2 * torch.log1p(4 * A))) and torch.all(lp < torch.log(K * torch.log1p(2 * A)))
    # as GPyTorch's, it is the unit-scale density at x / τ (no 1/τ factor: a constant in x)
    assert_close(lp, priors.HorseshoePrior(1.0).double().log_prob(x / 0.5))
    # with τ = 1 it is within the bounds' factor (¾ to 3/2) of the Monte-Carlo density ∫ N(x; 0, λ²) p(λ) dλ
    g = torch.Generator().manual_seed(0)
    lam = torch.distributions.HalfCauchy(torch.tensor(1.0, dtype=F64)).icdf(torch.rand(200000, generator=g, dtype=F64))
    mc = torch.distributions.Normal(0.0, lam.unsqueeze(-1)).log_prob(x).exp().mean(0)
    unit = priors.HorseshoePrior(1.0).double().log_prob(x)
    assert torch.all((unit - mc.log() > -0.29) & (unit - mc.log() < 0.41))


def test_horseshoe_interface_and_samples():
    p = priors.HorseshoePrior(torch.full((3,), 0.5, dtype=F64))
    assert p.batch_shape == (3,) and p.event_shape == ()
    assert p.rsample(torch.Size([10])).shape == (10, 3) and p.sample().shape == (3,)
    assert torch.isnan(p.mean).all() and torch.isinf(p.variance).all()
    assert p.expand(torch.Size([2, 3])).batch_shape == (2, 3)
    torch.manual_seed(0)
    s = priors.HorseshoePrior(0.5).sample(torch.Size([20000]))
    # |x| ≤ median: P(|x| < τ) for the horseshoe, by Monte Carlo on the hierarchy
    g = torch.Generator().manual_seed(1)
    lam = torch.distributions.HalfCauchy(1.0).icdf(torch.rand(200000, generator=g))
    ref = (2 * torch.distributions.Normal(0.0, 1.0).cdf(1.0 / lam) - 1).mean()
    assert abs((s.abs() < 0.5).float().mean().item() - ref.item()) < 0.015
    with pytest.raises(ValueError):
        priors.HorseshoePrior(-1.0, validate_args=True)
