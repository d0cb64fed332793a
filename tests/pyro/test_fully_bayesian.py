"""Fully Bayesian exact GPs (GPyTorch's tutorial): priors sampled by NUTS, samples loaded as a batch of models."""

from __future__ import annotations

import copy

import pytest
import torch

import torchgp
from tests._tol import assert_close
from tests.pyro._models import draw_data, exact_gp

pyro = pytest.importorskip("pyro")

SITES = {
    "likelihood.noise_covar.noise_prior": "likelihood.noise",
    "mean_module.mean_prior": "mean_module.constant",
    "covar_module.outputscale_prior": "covar_module.outputscale",
    "covar_module.base_kernel.lengthscale_prior": "covar_module.base_kernel.lengthscale",
}


def _value(model, dotted):
    *path, leaf = dotted.split(".")
    for part in path:
        model = getattr(model, part)
    return getattr(model, leaf)


def test_sample_sites_are_named_as_gpytorch_and_differentiable():
    import gpytorch

    X, y = draw_data(8)
    model = exact_gp(torchgp, X, y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(model.pyro_sample_from_prior).get_trace()
    theirs = pyro.poutine.trace(exact_gp(gpytorch, X, y).pyro_sample_from_prior).get_trace()
    assert set(trace.stochastic_nodes) == set(theirs.stochastic_nodes) == set(SITES)
    sampled = trace.nodes["_RETURN"]["value"]
    for site, dotted in SITES.items():
        value = trace.nodes[site]["value"]
        assert value.shape == theirs.nodes[site]["value"].shape
        assert_close(_value(sampled, dotted), value.expand_as(_value(sampled, dotted)))
    # the sampled copy is a function of the site values (d lengthscale / d site = 1); the original is unchanged
    site = trace.nodes["covar_module.base_kernel.lengthscale_prior"]["value"]
    leaf = site.detach().requires_grad_(True)
    copy_ = pyro.poutine.condition(model.pyro_sample_from_prior, {"covar_module.base_kernel.lengthscale_prior": leaf})()
    (grad,) = torch.autograd.grad(copy_.covar_module.base_kernel.lengthscale.sum(), leaf)
    assert_close(grad, torch.ones_like(grad), loose=1e3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _nuts_model(model):
    def pyro_model(x, y):
        sampled = model.pyro_sample_from_prior()
        output = sampled.likelihood(sampled(x))
        pyro.sample("obs", output, obs=y)
        return y

    return pyro_model


@pytest.mark.filterwarnings("ignore::UserWarning")  # NUTS' step-size search visits extreme lengthscales
def test_nuts_lengthscale_posterior_concentrates_at_the_generating_value():
    X, y = draw_data(25, ell=0.2, noise=1e-2, seed=0)
    model = exact_gp(torchgp, X, y)  # lengthscale prior LogNormal(log 0.5, 0.5): 0.2 is 1.8σ below its median
    pyro.set_rng_seed(0)
    kernel = pyro.infer.NUTS(_nuts_model(model), max_tree_depth=4)
    mcmc = pyro.infer.MCMC(kernel, num_samples=50, warmup_steps=40, disable_progbar=True)
    mcmc.run(X, y)
    samples = mcmc.get_samples()
    ell = samples["covar_module.base_kernel.lengthscale_prior"].flatten()
    assert ell.shape == (50,)
    assert 0.15 < ell.median().item() < 0.27
    # concentrated: the posterior's log-spread is well under the prior's (0.5)
    assert ell.log().std().item() < 0.25
    noise = samples["likelihood.noise_covar.noise_prior"].flatten()
    assert 0.002 < noise.median().item() < 0.05


def test_load_from_samples_gives_a_batch_equal_to_the_loop():
    X, y = draw_data(12)
    model = exact_gp(torchgp, X, y)
    S = 5
    samples = {
        "covar_module.base_kernel.lengthscale_prior": torch.linspace(0.1, 0.5, S, dtype=torch.float64).view(S, 1, 1),
        "covar_module.outputscale_prior": torch.linspace(0.5, 2.0, S, dtype=torch.float64),
        "likelihood.noise_covar.noise_prior": torch.linspace(0.005, 0.05, S, dtype=torch.float64).view(S, 1),
        "mean_module.mean_prior": torch.linspace(-0.5, 0.5, S, dtype=torch.float64),
    }
    base = copy.deepcopy(model)
    model.pyro_load_from_samples(samples)
    model.eval()
    Xs = torch.linspace(-0.1, 1.1, 7, dtype=torch.float64)
    batch = model(Xs.unsqueeze(0).expand(S, 7).unsqueeze(-1))
    noisy = model.likelihood(batch)
    assert batch.mean.shape == (S, 7) and noisy.variance.shape == (S, 7)
    for s in range(S):
        one = copy.deepcopy(base)
        one.initialize(**{dotted: samples[site][s] for site, dotted in SITES.items()})
        one.eval()
        pred = one(Xs)
        torch.testing.assert_close(batch.mean[s], pred.mean, rtol=0, atol=1e-10)
        torch.testing.assert_close(batch.covariance_matrix[s], pred.covariance_matrix, rtol=0, atol=1e-10)
        torch.testing.assert_close(noisy.variance[s], one.likelihood(pred).variance, rtol=0, atol=1e-10)
    # the model averaged over the samples predicts as GPyTorch's batch of the same samples
    import gpytorch

    theirs = exact_gp(gpytorch, X, y)
    theirs.pyro_load_from_samples({k: v.clone() for k, v in samples.items()})
    theirs.eval()
    with gpytorch.settings.fast_computations(False, False, False):
        ref = theirs(Xs.unsqueeze(0).expand(S, 7).unsqueeze(-1))
    torch.testing.assert_close(batch.mean.mean(0), ref.mean.mean(0), rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(batch.variance, ref.variance, rtol=1e-6, atol=1e-8)


def test_load_from_samples_checks_the_values():
    X, y = draw_data(6)
    model = exact_gp(torchgp, X, y)
    bad = {"covar_module.base_kernel.lengthscale_prior": torch.tensor([[[0.3]], [[-0.1]]], dtype=torch.float64)}
    with pytest.raises(torchgp.errors.InputError, match="lengthscale"):
        model.pyro_load_from_samples(bad)
    # the values were checked before any was written: the lengthscale is as before
    assert model.covar_module.base_kernel.lengthscale.shape == (1, 1)


def test_setting_closures_of_every_kind():
    # a closure prior with a setting closure that calls initialize on a raw name, and one with no setting closure
    class Scaled(torchgp.Module):
        def __init__(self):
            super().__init__()
            self.register_parameter("raw_a", torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)))
            self.register_prior(
                "a_prior",
                torchgp.priors.NormalPrior(torch.tensor(1.0, dtype=torch.float64), 0.1),
                lambda m: m.raw_a.exp(),
                lambda m, v: m.initialize(raw_a=v.log()),
            )

    module = Scaled()
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(module.pyro_sample_from_prior).get_trace()
    site = trace.nodes["a_prior"]["value"]
    sampled = trace.nodes["_RETURN"]["value"]
    assert site.shape == (2,)
    assert_close(sampled.raw_a.exp(), site)
    leaf = site.detach().requires_grad_(True)
    copy_ = pyro.poutine.condition(module.pyro_sample_from_prior, {"a_prior": leaf})()
    (grad,) = torch.autograd.grad(copy_.raw_a.sum(), leaf)  # d log(v) / dv = 1 / v
    assert_close(grad, 1 / leaf.detach())
    assert torch.equal(module.raw_a, torch.zeros(2, dtype=torch.float64))

    module.register_prior("b_prior", torchgp.priors.NormalPrior(0.0, 1.0), lambda m: m.raw_a.sum())
    with pytest.raises(torchgp.errors.InputError, match="b_prior has no setting closure"):
        module.pyro_sample_from_prior()
