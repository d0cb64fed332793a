"""NegativeBinomialLikelihood: torch.distributions' NB under GPyTorch's mean link; quadrature; gradients."""

from __future__ import annotations

import gpytorch
import torch

import torchgp
from tests._tol import assert_close

D64 = torch.float64


def _q(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, generator=g, dtype=D64)
    var = 0.1 + torch.rand(n, generator=g, dtype=D64)
    return mean, var


def test_log_prob_equals_torch_negative_binomial_and_gpytorch():
    lik = torchgp.likelihoods.NegativeBinomialLikelihood().double()
    lik.probs = 0.3
    f = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=D64)
    y = torch.tensor([0.0, 1.0, 4.0, 9.0], dtype=D64)
    k = torch.nn.functional.softplus(f) * 0.7 / 0.3
    ref = torch.distributions.NegativeBinomial(total_count=k, probs=torch.tensor(0.3, dtype=D64)).log_prob(y)
    assert_close(lik(f).log_prob(y), ref)
    g = gpytorch.likelihoods.NegativeBinomialLikelihood().double()
    g.probs = torch.tensor(0.3, dtype=D64)
    assert_close(lik(f).log_prob(y), g(f).log_prob(y))
    # the mean link: E[y | f] = softplus(f), Var[y | f] = softplus(f) / (1 - p)
    assert_close(lik(f).mean, torch.nn.functional.softplus(f))
    assert_close(lik(f).variance, torch.nn.functional.softplus(f) / 0.7)
    lik.num_failures_param = True
    assert_close(
        lik(f).log_prob(y),
        torch.distributions.NegativeBinomial(
            torch.nn.functional.softplus(f), probs=torch.tensor(0.3, dtype=D64)
        ).log_prob(y),
    )


def test_expected_log_prob_matches_gpytorch_and_a_fine_grid():
    lik = torchgp.likelihoods.NegativeBinomialLikelihood().double()
    lik.probs = 0.6
    g = gpytorch.likelihoods.NegativeBinomialLikelihood().double()
    g.probs = torch.tensor(0.6, dtype=D64)
    mean, var = _q()
    y = torch.tensor([0.0, 2.0, 1.0, 5.0, 3.0], dtype=D64)
    q = torchgp.distributions.MultivariateNormal(mean, torch.diag(var))
    ours = lik.expected_log_prob(y, q)
    ref = g.expected_log_prob(y, gpytorch.distributions.MultivariateNormal(mean, torch.diag(var)))
    assert_close(ours, ref, loose=100)  # GPyTorch's Gauss-Hermite nodes are float32-accurate
    # an independent integral: trapezoid rule over ±10σ on 20001 points
    s = torch.linspace(-10, 10, 20001, dtype=D64).unsqueeze(-1)
    f = mean + var.sqrt() * s
    dens = torch.exp(-0.5 * s**2) / (2 * torch.pi) ** 0.5
    grid = torch.trapezoid(lik(f).log_prob(y) * dens, s.squeeze(-1), dim=0)
    torch.testing.assert_close(ours, grid, rtol=1e-6, atol=1e-6)


class _ELP(torch.nn.Module):
    """``lik.expected_log_prob(y, N(mean, diag var))`` as a module, so functional_call can swap raw_probs."""

    def __init__(self, lik):
        super().__init__()
        self.lik = lik

    def forward(self, y, mean, var):
        return self.lik.expected_log_prob(y, torchgp.distributions.MultivariateNormal(mean, torch.diag_embed(var)))


def test_gradcheck_expected_log_prob():
    module = _ELP(torchgp.likelihoods.NegativeBinomialLikelihood().double())
    y = torch.tensor([0.0, 2.0, 1.0], dtype=D64)
    mean, var = _q(3, seed=2)
    raw = torch.tensor([0.4], dtype=D64, requires_grad=True)

    def fn(m, v, r):
        return torch.func.functional_call(module, {"lik.raw_probs": r}, (y, m, v))

    assert torch.autograd.gradcheck(fn, (mean.requires_grad_(True), var.requires_grad_(True), raw))
