"""Priors (log-densities against SciPy) and constraints (maps and their inverses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from tests._tol import assert_close
from torchgp import constraints, priors
from torchgp.errors import InputError

X = torch.tensor([0.05, 0.3, 1.0, 2.5, 7.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "prior, ref",
    [
        (priors.NormalPrior(0.5, 2.0), scipy.stats.norm(0.5, 2.0)),
        (
            priors.LogNormalPrior(torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)),
            scipy.stats.lognorm(s=0.7, scale=math.exp(0.2)),
        ),
        (priors.GammaPrior(3.0, 2.0), scipy.stats.gamma(a=3.0, scale=0.5)),
        (priors.HalfCauchyPrior(1.5), scipy.stats.halfcauchy(scale=1.5)),
        (priors.HalfNormalPrior(1.5), scipy.stats.halfnorm(scale=1.5)),
        (priors.UniformPrior(0.1, 3.0), scipy.stats.uniform(0.1, 2.9)),
    ],
    ids=["normal", "lognormal", "gamma", "halfcauchy", "halfnormal", "uniform"],
)
def test_log_prob_matches_scipy(prior, ref):
    prior = prior.double()
    got = prior.log_prob(X)
    assert_close(got, ref.logpdf(X.numpy()))
    s = prior.sample(torch.Size([4, 2]))
    assert s.shape == (4, 2)
    assert np.all(np.isfinite(ref.logpdf(s.numpy())))


def test_smoothed_box_is_normalised_and_flat_inside():
    p = priors.SmoothedBoxPrior(1.0, 3.0, sigma=0.2).double()
    assert p.event_shape == (1,) and p.batch_shape == ()  # GPyTorch: the box is the event
    inside = p.log_prob(torch.tensor([[1.2], [2.0], [2.9]], dtype=torch.float64))
    assert inside.shape == (3,)
    assert_close(inside, inside[0].expand(3))
    total, _ = scipy.integrate.quad(
        lambda x: math.exp(p.log_prob(torch.tensor([x], dtype=torch.float64)).item()), -5, 9, points=[1, 3]
    )
    assert abs(total - 1.0) < 1e-6
    assert p.log_prob(torch.tensor([3.4], dtype=torch.float64)) < inside[0]


def test_smoothed_box_moments_and_samples():
    p = priors.SmoothedBoxPrior(1.0, 3.0, sigma=0.4).double()

    def density(x):
        return math.exp(p.log_prob(torch.tensor([x], dtype=torch.float64)).item())

    var, _ = scipy.integrate.quad(lambda x: (x - 2.0) ** 2 * density(x), -8, 12, points=[1, 3])
    assert_close(p.mean, torch.tensor([2.0], dtype=torch.float64))
    assert_close(p.variance, torch.tensor([var], dtype=torch.float64), loose=1e2)
    torch.manual_seed(0)
    s = p.sample(torch.Size([40000]))
    assert s.shape == (40000, 1)
    p_tail = math.sqrt(2 * math.pi) * 0.4 / (2.0 + math.sqrt(2 * math.pi) * 0.4)
    outside = ((s < 1) | (s > 3)).double().mean().item()
    assert abs(outside - p_tail) < 4 * math.sqrt(p_tail * (1 - p_tail) / 40000)
    assert abs(s.var().item() - var) < 0.03 * var


def test_prior_batch_and_transform():
    p = priors.NormalPrior(torch.zeros(3), torch.ones(3))
    assert p.log_prob(torch.zeros(2, 3)).shape == (2, 3)
    pt = priors.NormalPrior(0.0, 1.0, transform=torch.log)
    assert_close(pt.log_prob(torch.tensor(math.e)), torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(1.0)))
    pe = p.expand(torch.Size([2, 3]))
    assert pe.loc.shape == (2, 3)


def test_prior_buffers_in_state_dict_and_dtype():
    p = priors.GammaPrior(2.0, 3.0)
    assert set(p.state_dict()) == {"concentration", "rate"}
    assert p.double().rate.dtype == torch.float64


# ------------------------------------------------------------------ constraints
CONSTRAINTS = [
    constraints.Positive(),
    constraints.GreaterThan(0.5),
    constraints.LessThan(-1.0),
    constraints.Interval(-2.0, 3.0),
]


@pytest.mark.parametrize("c", CONSTRAINTS, ids=lambda c: repr(c))
def test_transform_maps_into_range_and_inverts(c):
    c = c.double()
    raw = torch.linspace(-30, 30, 61, dtype=torch.float64)
    val = c.transform(raw)
    assert torch.all(torch.isfinite(val))
    assert c.check(val[20:41])  # away from the ends, where values round onto the bound
    assert torch.all(val >= c.lower_bound) and torch.all(val <= c.upper_bound)
    mid = raw[20:41]
    assert_close(c.inverse_transform(c.transform(mid)), mid, loose=100)
    assert torch.all(torch.diff(val) >= 0)  # monotone


@pytest.mark.parametrize(
    "c, bad",
    [
        (constraints.Positive(), 0.0),
        (constraints.GreaterThan(0.5), 0.4),
        (constraints.LessThan(-1.0), -0.5),
        (constraints.Interval(-2.0, 3.0), 3.0),
        (constraints.Interval(-2.0, 3.0), float("nan")),
    ],
)
def test_check_rejects_outside(c, bad):
    assert not c.check(torch.tensor([bad]))


def test_softplus_inverse_stable_at_extremes():
    c = constraints.Positive().double()
    for v in (1e-12, 1e-3, 1.0, 50.0, 1e6):
        t = torch.tensor(v, dtype=torch.float64)
        raw = c.inverse_transform(t)
        assert torch.isfinite(raw)
        assert_close(c.transform(raw), t)


def test_interval_needs_ordered_bounds():
    with pytest.raises(InputError, match="lower_bound < upper_bound"):
        constraints.Interval(1.0, 1.0)


def test_describe():
    assert constraints.GreaterThan(0.5).describe() == "> 0.5"
    assert constraints.LessThan(2.0).describe() == "< 2"
    assert constraints.Interval(0.0, 1.0).describe() == "in (0, 1)"
