"""PyroGP: Pyro's ELBO of the GP's model and guide is N × VariationalELBO, and SVI learns with it."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import assert_close

pyro = pytest.importorskip("pyro")


def pyro_svgp(lib, Z, likelihood, num_data, name_prefix="gp", beta=1.0):
    class SVGP(lib.models.PyroGP):
        def __init__(self):
            q = lib.variational.CholeskyVariationalDistribution(Z.shape[-2])
            strategy = lib.variational.VariationalStrategy(self, Z, q, learn_inducing_locations=True)
            super().__init__(strategy, likelihood, num_data, name_prefix=name_prefix, beta=beta)
            self.mean_module = lib.means.ConstantMean()
            self.covar_module = lib.kernels.ScaleKernel(lib.kernels.RBFKernel())

        def forward(self, x):
            return lib.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return SVGP().double()


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, generator=g, dtype=torch.float64)
    return X, torch.sin(6 * X[:, 0]) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)


def _perturb(model, seed=1):
    model(torch.zeros(1, 1, dtype=torch.float64))  # the strategy initialises q(u) to p(u) on its first call
    g = torch.Generator().manual_seed(seed)
    q = model.variational_strategy._variational_distribution
    with torch.no_grad():
        q.variational_mean.copy_(3 * torch.randn(q.variational_mean.shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_pyro_elbo_equals_num_data_times_variational_elbo(beta):
    X, y = _data()
    n, b = X.shape[0], 20  # a minibatch of b points of N = n: the observed site is scaled by N / b
    model = pyro_svgp(torchgp, X[:6].clone(), torchgp.likelihoods.GaussianLikelihood().double(), n, beta=beta)
    _perturb(model)
    mll = torchgp.mlls.VariationalELBO(model.likelihood, model, num_data=n, beta=beta)
    expected = -n * mll(model(X[:b]), y[:b]).item()
    pyro.set_rng_seed(0)
    # analytic KL(q(u) || p(u)) (mean-field ELBO); E_q[log p(y | f)] by 4000 Monte Carlo draws of f
    elbo = pyro.infer.TraceMeanField_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    got = elbo.loss(model.model, model.guide, X[:b], y[:b])
    assert abs(got - expected) < 0.005 * abs(expected), (got, expected)
    # Monte Carlo KL as well (Trace_ELBO, as GPyTorch's examples train)
    got_mc = pyro.infer.Trace_ELBO(num_particles=4000, vectorize_particles=True).loss(
        model.model, model.guide, X[:b], y[:b]
    )
    assert abs(got_mc - expected) < 0.01 * abs(expected), (got_mc, expected)


def test_pyro_elbo_matches_gpytorch_pyro_gp():
    import gpytorch

    X, y = _data()
    ours = pyro_svgp(torchgp, X[:6].clone(), torchgp.likelihoods.GaussianLikelihood().double(), 30)
    _perturb(ours)
    theirs = pyro_svgp(gpytorch, X[:6].clone(), gpytorch.likelihoods.GaussianLikelihood().double(), 30)
    theirs.load_state_dict(ours.state_dict())
    losses = []
    for model in (ours, theirs):
        pyro.set_rng_seed(0)
        elbo = pyro.infer.TraceMeanField_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
        losses.append(elbo.loss(model.model, model.guide, X, y))
    assert abs(losses[0] - losses[1]) < 0.005 * abs(losses[1]), losses


def test_svi_learns_a_classifier():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(40, 1, generator=g, dtype=torch.float64) * 2 - 1
    y = (torch.sin(4 * X[:, 0]) > 0).to(torch.float64)
    Z = torch.linspace(-1, 1, 6, dtype=torch.float64).unsqueeze(-1)
    model = pyro_svgp(torchgp, Z, torchgp.likelihoods.BernoulliLikelihood(), 40, "clf")
    assert model.likelihood.num_data == 40 and model.likelihood.name_prefix == "clf"
    model.covar_module.base_kernel.lengthscale = 0.3
    mll = torchgp.mlls.VariationalELBO(model.likelihood, model, num_data=40)
    start = mll(model(X), y).item()
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    svi = pyro.infer.SVI(
        model.model,
        model.guide,
        pyro.optim.Adam({"lr": 0.1}),
        pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=True),
    )
    losses = [svi.step(X, y) for _ in range(40)]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert mll(model(X), y).item() > start + 0.1
    model.eval()
    with torch.no_grad():
        p = model.likelihood(model(X)).mean
    assert ((p > 0.5).to(torch.float64) == y).double().mean().item() >= 0.85


def test_approximate_gp_pyro_model_and_guide_sites():
    # a plain ApproximateGP inside a user's Pyro program: the u sites, the log-prior factor, masked f
    X, y = _data(n=10)

    class SVGP(torchgp.models.ApproximateGP):
        def __init__(self):
            q = torchgp.variational.CholeskyVariationalDistribution(4)
            super().__init__(torchgp.variational.VariationalStrategy(self, X[:4].clone(), q))
            self.mean_module = torchgp.means.ConstantMean()
            self.covar_module = torchgp.kernels.RBFKernel(lengthscale_prior=torchgp.priors.GammaPrior(3.0, 6.0))

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = SVGP().double()
    _perturb(model)
    model_trace = pyro.poutine.trace(model.pyro_model).get_trace(X, name_prefix="g")
    guide_trace = pyro.poutine.trace(model.pyro_guide).get_trace(X, name_prefix="g")
    assert model_trace.nodes["g.u"]["value"].shape == guide_trace.nodes["g.u"]["value"].shape == (4,)
    log_prior = model.covar_module.lengthscale_prior.log_prob(model.covar_module.lengthscale).sum()
    assert_close(model_trace.nodes["g.log_prior"]["fn"].log_factor, log_prior.detach())
    q_f = guide_trace.nodes["_RETURN"]["value"]
    assert q_f.batch_shape == (10,) and q_f.event_shape == ()
    assert_close(q_f.mean, model(X).mean.detach())
    # the u sites' densities are p(u) and q(u): their difference at a draw is the KL's Monte Carlo term
    u = guide_trace.nodes["g.u"]["value"]
    q_u, p_u = model.variational_strategy.variational_distribution, model.variational_strategy.prior_distribution
    assert_close(guide_trace.nodes["g.u"]["fn"].log_prob(u), q_u.log_prob(u).detach())
    assert_close(model_trace.nodes["g.u"]["fn"].log_prob(u), p_u.log_prob(u).detach())


def test_multitask_pyro_gp_elbo():
    # t independent GPs (IndependentMultitaskVariationalStrategy) with a multitask Gaussian likelihood
    t, n = 2, 12
    X = torch.linspace(0, 1, n, dtype=torch.float64).unsqueeze(-1)
    Y = torch.stack([torch.sin(6 * X[:, 0]), torch.cos(6 * X[:, 0])], -1)
    batch = torch.Size([t])

    class MultitaskSVGP(torchgp.models.PyroGP):
        def __init__(self):
            q = torchgp.variational.CholeskyVariationalDistribution(5, batch_shape=batch)
            Z = torch.linspace(0, 1, 5, dtype=torch.float64).view(1, 5, 1).repeat(t, 1, 1)
            base = torchgp.variational.VariationalStrategy(self, Z, q)
            strategy = torchgp.variational.IndependentMultitaskVariationalStrategy(base, num_tasks=t)
            super().__init__(strategy, torchgp.likelihoods.MultitaskGaussianLikelihood(num_tasks=t), n, "mt")
            self.mean_module = torchgp.means.ConstantMean(batch_shape=batch)
            kernel = torchgp.kernels.RBFKernel(batch_shape=batch)
            self.covar_module = torchgp.kernels.ScaleKernel(kernel, batch_shape=batch)

        def forward(self, x):
            return torchgp.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    model = MultitaskSVGP().double()
    model(X[:1])
    with torch.no_grad():
        model.variational_strategy.base_variational_strategy._variational_distribution.variational_mean.add_(1.0)
    expected = -n * torchgp.mlls.VariationalELBO(model.likelihood, model, num_data=n)(model(X), Y).item()
    pyro.set_rng_seed(0)
    elbo = pyro.infer.TraceMeanField_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    got = elbo.loss(model.model, model.guide, X, Y)
    assert abs(got - expected) < 0.005 * abs(expected), (got, expected)
