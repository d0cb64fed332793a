"""Expected log-likelihoods: quadrature vs Monte Carlo vs closed forms; gradcheck of every parameter."""

from __future__ import annotations

import pytest
import torch

import torchgp
from tests._tol import tol
from torchgp.distributions import MultivariateNormal
from torchgp.errors import InputError

N_MC = 400_000


def _q(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, generator=g, dtype=torch.float64) * 0.8
    var = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.05
    return MultivariateNormal(mean, torch.diag(var))


def _targets(name, n=6):
    g = torch.Generator().manual_seed(1)
    if name == "bernoulli":
        return torch.tensor([0, 1, 1, 0, 1, 0], dtype=torch.float64)[:n]
    if name == "poisson":
        return torch.tensor([0, 1, 3, 2, 0, 5], dtype=torch.float64)[:n]
    if name == "beta":
        return torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return torch.randn(n, generator=g, dtype=torch.float64)


LIKELIHOODS = {
    "bernoulli": torchgp.likelihoods.BernoulliLikelihood,
    "student_t": torchgp.likelihoods.StudentTLikelihood,
    "laplace": torchgp.likelihoods.LaplaceLikelihood,
    "poisson": torchgp.likelihoods.PoissonLikelihood,
    "beta": torchgp.likelihoods.BetaLikelihood,
    "gaussian": torchgp.likelihoods.GaussianLikelihood,
}


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_expected_log_prob_matches_monte_carlo(name):
    lik = LIKELIHOODS[name]().double()
    q, y = _q(), _targets(name)
    elp = lik.expected_log_prob(y, q)
    torch.manual_seed(0)
    f = q.mean + q.stddev * torch.randn(N_MC, 6, dtype=torch.float64)
    mc = lik(f).log_prob(y)
    se = mc.std(0) / N_MC**0.5
    assert elp.shape == (6,)
    assert torch.all((elp - mc.mean(0)).abs() < 5 * se + 1e-6), (elp, mc.mean(0), se)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_expected_log_prob_matches_numerical_integration(name):
    """Closed forms (Gaussian, Poisson, Laplace) and quadrature (others) against a fine trapezoid rule."""
    lik = LIKELIHOODS[name]().double()
    q, y = _q(), _targets(name)
    t = torch.linspace(-12, 12, 40001, dtype=torch.float64).unsqueeze(-1)
    f = q.mean + q.stddev * t
    dens = torch.exp(-0.5 * t**2) / (2 * torch.pi) ** 0.5
    ref = torch.trapezoid(lik(f).log_prob(y) * dens, t.squeeze(-1), dim=0)
    torch.testing.assert_close(lik.expected_log_prob(y, q), ref, **tol(torch.float64, 1e2))


def test_gaussian_expected_log_prob_closed_form():
    lik = torchgp.likelihoods.GaussianLikelihood().double()
    lik.noise = 0.3
    q, y = _q(), _targets("gaussian")
    expect = (
        -0.5 * torch.log(2 * torch.pi * torch.tensor(0.3, dtype=torch.float64))
        - 0.5 * ((y - q.mean) ** 2 + q.variance) / 0.3
    )
    torch.testing.assert_close(lik.expected_log_prob(y, q), expect, **tol(torch.float64))


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_log_marginal_matches_monte_carlo(name):
    lik = LIKELIHOODS[name]().double()
    q, y = _q(), _targets(name)
    lm = lik.log_marginal(y, q)
    torch.manual_seed(0)
    f = q.mean + q.stddev * torch.randn(N_MC, 6, dtype=torch.float64)
    mc = torch.logsumexp(lik(f).log_prob(y), 0) - torch.log(torch.tensor(float(N_MC), dtype=torch.float64))
    torch.testing.assert_close(lm, mc, rtol=0, atol=2e-2)


def test_bernoulli_marginal_closed_form_and_labels():
    lik = torchgp.likelihoods.BernoulliLikelihood()
    q = _q()
    p = lik(q).probs
    f = q.mean + q.stddev * torch.randn(N_MC, 6, dtype=torch.float64)
    torch.testing.assert_close(p, torch.special.ndtr(f).mean(0), rtol=0, atol=5e-3)
    y01 = _targets("bernoulli")
    torch.testing.assert_close(lik.expected_log_prob(y01, q), lik.expected_log_prob(2 * y01 - 1, q))
    with pytest.raises(InputError, match=r"\{0, 1\}"):
        lik.expected_log_prob(torch.tensor([0.0, 2.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64), q)


PARAM_LIKELIHOODS = {
    "student_t": (torchgp.likelihoods.StudentTLikelihood, ["raw_deg_free", "raw_noise"]),
    "laplace": (torchgp.likelihoods.LaplaceLikelihood, ["raw_noise"]),
    "beta": (torchgp.likelihoods.BetaLikelihood, ["raw_scale"]),
}


@pytest.mark.parametrize("name", sorted(PARAM_LIKELIHOODS))
def test_gradcheck_parameters(name):
    """gradcheck (float64) of E_q[log p(y | f)] w.r.t. every raw likelihood parameter."""
    cls, names = PARAM_LIKELIHOODS[name]
    lik = cls().double()
    q, y = _q(), _targets(name)
    originals = {n: lik._parameters[n] for n in names}

    def f(*raw):
        try:
            for n, r in zip(names, raw):
                lik._parameters[n] = r  # swap the parameter for the gradcheck input
            return lik.expected_log_prob(y, q)
        finally:
            lik._parameters.update(originals)

    inputs = tuple(originals[n].detach().clone().add_(0.3).requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_gradcheck_variational_inputs(name):
    """gradcheck (float64) of the expected log-likelihood w.r.t. q's mean and variance."""
    lik = LIKELIHOODS[name]().double()
    y = _targets(name)
    q0 = _q()
    mean = q0.mean.clone().requires_grad_(True)
    log_var = q0.variance.log().clone().requires_grad_(True)

    def f(mean, log_var):
        return lik.expected_log_prob(y, MultivariateNormal(mean, torch.diag_embed(log_var.exp())))

    assert torch.autograd.gradcheck(f, (mean, log_var))


def test_priors_on_likelihood_parameters_enter_the_objective():
    lik = torchgp.likelihoods.StudentTLikelihood(noise_prior=torchgp.priors.GammaPrior(2.0, 2.0))
    assert torch.isfinite(torch.as_tensor(lik.log_prior()))
    assert any(name.endswith("noise_prior") for name, *_ in lik.named_priors())


def test_softmax_likelihood_shapes_and_monte_carlo():
    torch.manual_seed(0)
    lik = torchgp.likelihoods.SoftmaxLikelihood(num_features=3, num_classes=4).double()
    mean = torch.randn(3, 5, dtype=torch.float64)
    q = MultivariateNormal(mean, 0.1 * torch.eye(5, dtype=torch.float64).expand(3, 5, 5))
    y = torch.tensor([0, 1, 2, 3, 1])
    with torchgp.settings.num_likelihood_samples(20000):
        elp = lik.expected_log_prob(y, q)
        out = lik(q)  # GPyTorch: the Categorical at each of the 20000 draws of f
        probs = out.probs.mean(0)
    assert isinstance(out, torch.distributions.Categorical) and out.batch_shape == (20000, 5)
    assert elp.shape == (5,) and probs.shape == (5, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, dtype=torch.float64))
    f = mean.mT + 0.1**0.5 * torch.randn(200000, 5, 3, dtype=torch.float64)
    ref = lik(f).log_prob(y).mean(0)
    torch.testing.assert_close(elp, ref, rtol=0, atol=2e-2)
    with pytest.raises(InputError):
        lik.expected_log_prob(torch.tensor([0, 1, 2, 4, 1]), q)
