"""Priors as Pyro distributions: the same draws and densities, transforms by change of variables."""

from __future__ import annotations

import math

import pytest
import torch

import torchgp
from tests._tol import assert_close
from torchgp.errors import InputError

pyro = pytest.importorskip("pyro")

PRIORS = [
    lambda: torchgp.priors.NormalPrior(torch.tensor(0.3), torch.tensor(1.5)),
    lambda: torchgp.priors.GammaPrior(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.5])),
    lambda: torchgp.priors.LogNormalPrior(torch.tensor(0.0), torch.tensor(0.7)),
    lambda: torchgp.priors.HalfCauchyPrior(torch.tensor(1.0)),
    lambda: torchgp.priors.SmoothedBoxPrior(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]), 0.1),
    lambda: torchgp.priors.HorseshoePrior(torch.tensor(0.5)),
    lambda: torchgp.priors.MultivariateNormalPrior(torch.zeros(2), torch.tensor([[1.0, 0.3], [0.3, 2.0]])),
    lambda: torchgp.priors.LKJCholeskyFactorPrior(3, 1.5),
]


@pytest.mark.parametrize("make", PRIORS)
def test_pyro_distribution_is_the_prior(make):
    prior = make().double()
    dist = prior.pyro_distribution()
    assert isinstance(dist, pyro.distributions.TorchDistribution)
    assert dist.batch_shape == prior.batch_shape and dist.event_shape == prior.event_shape
    x = prior.sample(torch.Size([7]))
    assert_close(dist.log_prob(x), prior.log_prob(x))
    assert dist.sample(torch.Size([3])).shape == x[:3].shape
    expanded = dist.expand(torch.Size([4]) + prior.batch_shape)
    assert expanded.sample().shape == torch.Size([4]) + prior.batch_shape + prior.event_shape


def test_transform_by_change_of_variables():
    # transform t = exp: x = log z with z ~ Gamma(2, 1); p(x) = Gamma(e^x; 2, 1) e^x (Jacobian e^x)
    base = torch.distributions.Gamma(torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    prior = torchgp.priors.GammaPrior(2.0, 1.0, transform=torch.distributions.ExpTransform()).double()
    dist = prior.pyro_distribution()
    x = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    assert_close(dist.log_prob(x), base.log_prob(x.exp()) + x)
    pyro.set_rng_seed(0)
    z = dist.sample(torch.Size([20000])).exp()
    assert abs(z.mean().item() - 2.0) < 0.05  # E z = α/β = 2, standard error √2/√20000 = 0.01


def test_plain_callable_transform_is_refused():
    prior = torchgp.priors.GammaPrior(2.0, 1.0, transform=torch.exp)
    with pytest.raises(InputError, match="torch.distributions.transforms.Transform"):
        prior.pyro_distribution()


def test_nuts_samples_a_prior():
    # NUTS on the prior alone: the draws' mean is the prior's, log N(0.5, 0.2²)
    prior = torchgp.priors.LogNormalPrior(math.log(0.5), 0.2).double()

    def model():
        pyro.sample("x", prior.pyro_distribution())

    pyro.set_rng_seed(1)
    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(model, max_tree_depth=3), 300, warmup_steps=100, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"]
    assert abs(x.log().mean().item() - math.log(0.5)) < 0.06  # ~3 standard errors of 300 correlated draws
