"""``likelihood(q(f))`` returns GPyTorch's type and shape; ``_OneDimensionalLikelihood`` integrates by quadrature."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import torchgp
from tests._tol import assert_close

F64 = torch.float64
S = 7


def _q(lib, batch=(), n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = 0.5 * torch.randn(*batch, n, generator=g, dtype=F64)
    A = torch.randn(*batch, n, n, generator=g, dtype=F64) * 0.3
    cov = A @ A.mT + 0.2 * torch.eye(n, dtype=F64)
    return lib.distributions.MultivariateNormal(mean, cov)


LIKELIHOODS = ["BernoulliLikelihood", "BetaLikelihood", "LaplaceLikelihood", "PoissonLikelihood", "StudentTLikelihood"]


@pytest.mark.parametrize("batch", [(), (2,)])
@pytest.mark.parametrize("name", LIKELIHOODS + ["GaussianLikelihood"])
def test_type_and_shape_equal_gpytorch(name, batch):
    ours, ref = getattr(torchgp.likelihoods, name)().double(), getattr(gpytorch.likelihoods, name)().double()
    with torchgp.settings.num_likelihood_samples(S), gpytorch.settings.num_likelihood_samples(S):
        a, b = ours(_q(torchgp, batch)), ref(_q(gpytorch, batch))
    assert isinstance(a, type(b)) or type(a).__name__ == type(b).__name__
    assert a.batch_shape == b.batch_shape and a.event_shape == b.event_shape
    assert a.mean.shape == b.mean.shape and a.variance.shape == b.variance.shape
    f = torch.zeros(3, *batch, 5, dtype=F64)
    assert type(ours(f)).__name__.strip("_").endswith(type(ref(f)).__name__.split(".")[-1])
    assert ours(f).batch_shape == ref(f).batch_shape


def test_softmax_type_and_shape_equal_gpytorch():
    ours = torchgp.likelihoods.SoftmaxLikelihood(num_features=3, num_classes=4).double()
    ref = gpytorch.likelihoods.SoftmaxLikelihood(num_features=3, num_classes=4).double()
    with torchgp.settings.num_likelihood_samples(S), gpytorch.settings.num_likelihood_samples(S):
        a, b = ours(_q(torchgp, (3,))), ref(_q(gpytorch, (3,)))
    # GPyTorch returns Pyro's Categorical (a torch Categorical subclass) when pyro-ppl is installed
    assert type(a) is torch.distributions.Categorical and isinstance(b, torch.distributions.Categorical)
    assert a.batch_shape == b.batch_shape == (S, 5) and a.probs.shape == b.probs.shape


def _predictive_moments(out):
    """Mean and variance of the mixture (1/S) Σ_s p(y | f_s) (law of total variance)."""
    return out.mean.mean(0), out.variance.mean(0) + out.mean.var(0, unbiased=False)


def _quadrature_moments(lik, q, locs=60):
    quad = torchgp.likelihoods.GaussHermiteQuadrature1D(locs)
    m = quad(lambda f: lik(f).mean, q)
    second = quad(lambda f: lik(f).variance + lik(f).mean ** 2, q)
    return m, second - m**2


@pytest.mark.parametrize("name", ["BetaLikelihood", "LaplaceLikelihood", "PoissonLikelihood", "StudentTLikelihood"])
def test_predictive_moments_within_monte_carlo_error(name):
    torch.manual_seed(0)
    lik = getattr(torchgp.likelihoods, name)().double()
    if name == "StudentTLikelihood":
        lik.deg_free = 5.0
    q = _q(torchgp)
    with torchgp.settings.num_likelihood_samples(40000):
        mean, var = _predictive_moments(lik(q))
    ref_mean, ref_var = _quadrature_moments(lik, q)
    assert_close(mean, ref_mean, loose=4e6)  # 4e-2 relative: Monte-Carlo error at 40000 draws
    assert_close(var, ref_var, loose=1e7)
    # and GPyTorch's own sampled predictive agrees with ours (same parameters)
    ref_lik = getattr(gpytorch.likelihoods, name)().double()
    ref_lik.load_state_dict(lik.state_dict())
    with gpytorch.settings.num_likelihood_samples(40000):
        g_mean, _ = _predictive_moments(ref_lik(_q(gpytorch)))
    assert_close(mean, g_mean, loose=4e6)


def test_bernoulli_marginal_is_gpytorchs_closed_form():
    a = torchgp.likelihoods.BernoulliLikelihood()(_q(torchgp))
    b = gpytorch.likelihoods.BernoulliLikelihood()(_q(gpytorch))
    assert_close(a.probs, b.probs)


class _ExpTorchgp(torchgp.likelihoods._OneDimensionalLikelihood):
    def forward(self, f):
        return torch.distributions.Exponential(rate=torch.exp(-f))


class _ExpGpytorch(gpytorch.likelihoods._OneDimensionalLikelihood):
    def forward(self, f):
        return torch.distributions.Exponential(rate=torch.exp(-f))


def test_one_dimensional_likelihood_subclass_equals_gpytorch():
    y = torch.tensor([0.3, 1.0, 2.5, 0.1, 4.0], dtype=F64)
    ours, ref = _ExpTorchgp(), _ExpGpytorch()
    q, q_ref = _q(torchgp), _q(gpytorch)
    # GPyTorch keeps its Gauss–Hermite nodes in float32: agreement to ~1e-7
    assert_close(ours.expected_log_prob(y, q), ref.expected_log_prob(y, q_ref), loose=1e2)
    assert_close(ours.log_marginal(y, q), ref.log_marginal(y, q_ref), loose=1e2)
    # closed form: E[log p] = -E[f] - y E[e^{-f}] = -μ - y e^{-μ + σ²/2}
    mu, var = q.mean, q.variance
    assert_close(ours.expected_log_prob(y, q), -mu - y * torch.exp(-mu + var / 2), loose=1e2)
    with torchgp.settings.num_likelihood_samples(S):
        out = ours(q)
    assert isinstance(out, torch.distributions.Exponential) and out.batch_shape == (S, 5)
    assert isinstance(torchgp.likelihoods.BetaLikelihood(), torchgp.likelihoods._OneDimensionalLikelihood)


def test_one_dimensional_likelihood_trains_an_svgp():
    from tests.variational._helpers import SVGP

    torch.manual_seed(0)
    X = torch.linspace(0, 1, 20, dtype=F64).unsqueeze(-1)
    y = torch.distributions.Exponential(torch.exp(-torch.sin(4 * X.squeeze(-1)))).sample()
    model, lik = SVGP(X[::4].clone()).double(), _ExpTorchgp()
    mll = torchgp.mlls.VariationalELBO(lik, model, num_data=20)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = -mll(model(X), y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first


TARGETS = {
    "BernoulliLikelihood": torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0], dtype=F64),
    "BetaLikelihood": torch.tensor([0.1, 0.5, 0.7, 0.95, 0.3], dtype=F64),
    "LaplaceLikelihood": torch.tensor([0.1, -0.5, 0.7, 1.95, 0.3], dtype=F64),
    "PoissonLikelihood": torch.tensor([0.0, 1.0, 3.0, 0.0, 7.0], dtype=F64),
    "StudentTLikelihood": torch.tensor([0.1, -0.5, 0.7, 1.95, 0.3], dtype=F64),
}


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_conditional_and_expected_log_prob_equal_gpytorch(name):
    ours, ref = getattr(torchgp.likelihoods, name)().double(), getattr(gpytorch.likelihoods, name)().double()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3)
    ours.load_state_dict(ref.state_dict())
    y = TARGETS[name]
    f = torch.linspace(-2, 2, 5, dtype=F64)
    assert_close(ours(f).log_prob(y), ref(f).log_prob(y))
    assert_close(ours(f).mean, ref(f).mean)
    q, q_ref = _q(torchgp), _q(gpytorch)
    # Bernoulli: GPyTorch's log_normal_cdf approximates log Φ in the far tail (ours: log_ndtr, exact);
    # Laplace: ours is the closed form, GPyTorch's a 20-node quadrature of the kink |y - f| (error ~1e-2).
    # Both are checked against fine trapezoid rules in tests/variational/test_likelihoods.py.
    if name not in ("BernoulliLikelihood", "LaplaceLikelihood"):
        assert_close(ours.expected_log_prob(y, q), ref.expected_log_prob(y, q_ref), loose=1e2)
    assert_close(ours.log_marginal(y, q), ref.log_marginal(y, q_ref), loose=1e2)
